'use strict';
// AWS Signature Version 4 checks for s3rver, which takes any V4 signature from a known access
// key and serves anonymous requests. With this middleware the devstack's S3 behaves like S3 on
// the points the platform depends on: a request must be signed with the right secret, for the
// host it is sent to, and a presigned URL works only unaltered (s3rver itself checks expiry).
// V2 signatures are left to s3rver, which verifies them.

const { createHash, createHmac, timingSafeEqual } = require('crypto');
const AWSAccount = require('s3rver/lib/models/account');
const S3Error = require('s3rver/lib/models/error');

const ALGORITHM = 'AWS4-HMAC-SHA256';

function rfc3986(text) {
  return encodeURIComponent(text).replace(
    /[!'()*]/g,
    (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase(),
  );
}

function decode(text) {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

function canonicalQuery(rawQuery, skip) {
  return rawQuery
    .split('&')
    .filter(Boolean)
    .map((pair) => {
      const at = pair.indexOf('=');
      const key = decode(at < 0 ? pair : pair.slice(0, at));
      const value = at < 0 ? '' : decode(pair.slice(at + 1));
      return [rfc3986(key), rfc3986(value)];
    })
    .filter(([key]) => key !== skip)
    .sort(([ka, va], [kb, vb]) => (ka < kb ? -1 : ka > kb ? 1 : va < vb ? -1 : va > vb ? 1 : 0))
    .map(([key, value]) => `${key}=${value}`)
    .join('&');
}

// The path as the client sent it, and the same path re-encoded the canonical way: a client
// whose HTTP library re-quoted the URL signed one of the two.
function canonicalPaths(rawPath) {
  const normalized = rawPath.split('/').map((s) => rfc3986(decode(s))).join('/');
  return normalized === rawPath ? [rawPath] : [rawPath, normalized];
}

function canonicalHeaders(headers, signedHeaders) {
  return signedHeaders
    .map((name) => {
      const value = headers[name];
      const text = Array.isArray(value) ? value.join(',') : value === undefined ? '' : value;
      return `${name}:${String(text).trim().replace(/\s+/g, ' ')}\n`;
    })
    .join('');
}

function hmac(key, data) {
  return createHmac('sha256', key).update(data, 'utf8').digest();
}

function signature(secret, scope, amzDate, canonicalRequest) {
  const [date, region, service, terminator] = scope.split('/');
  const hashed = createHash('sha256').update(canonicalRequest, 'utf8').digest('hex');
  const stringToSign = [ALGORITHM, amzDate, scope, hashed].join('\n');
  let key = hmac('AWS4' + secret, date);
  for (const part of [region, service, terminator]) key = hmac(key, part);
  return hmac(key, stringToSign).toString('hex');
}

function sameHex(a, b) {
  const x = Buffer.from(a, 'utf8');
  const y = Buffer.from(b, 'utf8');
  return x.length === y.length && timingSafeEqual(x, y);
}

function parseHeaderAuth(headers) {
  const value = headers['authorization'];
  const rest = value.slice(ALGORITHM.length).trim();
  const parts = new Map(
    rest.split(',').map((part) => {
      const [key, ...v] = part.trim().split('=');
      return [key, v.join('=')];
    }),
  );
  if (!parts.get('Credential') || !parts.get('SignedHeaders') || !parts.get('Signature')) {
    throw new S3Error('AuthorizationHeaderMalformed', 'The authorization header is malformed.');
  }
  return {
    credential: parts.get('Credential'),
    signedHeaders: parts.get('SignedHeaders'),
    provided: parts.get('Signature'),
    amzDate: headers['x-amz-date'] || '',
    payloadHash: headers['x-amz-content-sha256'] || 'UNSIGNED-PAYLOAD',
    skip: null,
  };
}

function parseQueryAuth(query) {
  if (query['X-Amz-Algorithm'] !== ALGORITHM) {
    throw new S3Error('AuthorizationQueryParametersError', `X-Amz-Algorithm must be ${ALGORITHM}.`);
  }
  return {
    credential: query['X-Amz-Credential'] || '',
    signedHeaders: query['X-Amz-SignedHeaders'] || '',
    provided: query['X-Amz-Signature'] || '',
    amzDate: query['X-Amz-Date'] || '',
    payloadHash: query['X-Amz-Content-Sha256'] || 'UNSIGNED-PAYLOAD',
    skip: 'X-Amz-Signature',
  };
}

function verify(ctx, auth) {
  const [accessKeyId, ...scopeParts] = auth.credential.split('/');
  const scope = scopeParts.join('/');
  const account = AWSAccount.registry.get(accessKeyId);
  if (!account) {
    throw new S3Error(
      'InvalidAccessKeyId',
      'The AWS Access Key Id you provided does not exist in our records.',
      { AWSAccessKeyId: accessKeyId },
    );
  }
  const secret = account.accessKeys.get(accessKeyId);
  const [rawPath, rawQuery = ''] = ctx.req.url.split(/\?(.*)/s);
  const signedHeaders = auth.signedHeaders.split(';');
  const tail = [
    canonicalQuery(rawQuery, auth.skip),
    canonicalHeaders(ctx.req.headers, signedHeaders),
    auth.signedHeaders,
    auth.payloadHash,
  ];
  const matches = canonicalPaths(rawPath).some((path) =>
    sameHex(signature(secret, scope, auth.amzDate, [ctx.method, path, ...tail].join('\n')),
      auth.provided),
  );
  if (!matches) {
    throw new S3Error(
      'SignatureDoesNotMatch',
      'The request signature we calculated does not match the signature you provided. ' +
        'Check your key and signing method.',
      { AWSAccessKeyId: accessKeyId },
    );
  }
}

// Koa middleware: rejects unsigned requests and V4 signatures that do not verify.
module.exports = function sigv4({ allowAnonymous = false } = {}) {
  return async function verifySigV4(ctx, next) {
    if (ctx.method === 'OPTIONS') return next();
    const header = ctx.req.headers['authorization'];
    if (header && header.startsWith(ALGORITHM)) {
      verify(ctx, parseHeaderAuth(ctx.req.headers));
    } else if ('X-Amz-Algorithm' in ctx.query) {
      verify(ctx, parseQueryAuth(ctx.query));
    } else if (!header && !('Signature' in ctx.query) && !allowAnonymous) {
      throw new S3Error('AccessDenied', 'Access Denied: the request is not signed.');
    }
    return next();
  };
};
