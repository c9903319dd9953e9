'use strict';
// Multipart uploads as S3 does them, where s3rver 3.7 falls short. s3rver stores parts and
// concatenates them on CompleteMultipartUpload, but it completes with any ETags (a part it never
// received makes an InternalError), takes parts smaller than 5 MiB, accepts parts out of order,
// creates an upload on the fly for an unknown upload id, and has no AbortMultipartUpload. This
// middleware answers those cases as S3 and MinIO do, so the platform is tested against their
// semantics: NoSuchUpload, InvalidPart, InvalidPartOrder, EntityTooSmall, and DELETE ?uploadId.

const fs = require('fs');
const path = require('path');
const { Readable } = require('stream');
const xmlParser = require('fast-xml-parser');
const S3Error = require('s3rver/lib/models/error');

// S3's smallest part, except for the last one.
const MIN_PART_BYTES = 5 * 1024 * 1024;

function noSuchUpload() {
  return new S3Error(
    'NoSuchUpload',
    'The specified upload does not exist. The upload ID may be invalid, or the upload may ' +
      'have been aborted or completed.',
  );
}

function invalidPart(number) {
  return new S3Error(
    'InvalidPart',
    'One or more of the specified parts could not be found. The part may not have been ' +
      "uploaded, or the specified entity tag may not match the part's entity tag.",
    { PartNumber: String(number) },
  );
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function listedParts(xml) {
  if (xmlParser.validate(xml) !== true) return null;
  const body = xmlParser.parse(xml);
  const complete = body && body.CompleteMultipartUpload;
  if (!complete || !complete.Part) return null;
  return [].concat(complete.Part).map((part) => ({
    number: Number(part.PartNumber),
    etag: String(part.ETag).replace(/"/g, ''),
  }));
}

// Throws what S3 answers when the listed parts cannot make the object.
function checkParts(uploadDir, parts) {
  parts.forEach((part, index) => {
    if (index > 0 && part.number <= parts[index - 1].number) {
      throw new S3Error(
        'InvalidPartOrder',
        'The list of parts was not in ascending order. The parts list must be specified in ' +
          'order of the part number.',
      );
    }
    const partPath = path.join(uploadDir, String(part.number));
    let md5;
    try {
      md5 = fs.readFileSync(`${partPath}.md5`, 'utf8');
    } catch {
      throw invalidPart(part.number);
    }
    if (md5 !== part.etag) throw invalidPart(part.number);
    const isLast = index === parts.length - 1;
    if (!isLast && fs.statSync(partPath).size < MIN_PART_BYTES) {
      throw new S3Error(
        'EntityTooSmall',
        'Your proposed upload is smaller than the minimum allowed object size.',
        { PartNumber: String(part.number), MinSizeAllowed: String(MIN_PART_BYTES) },
      );
    }
  });
}

// Koa middleware for path-style requests (/bucket/key) that carry ?uploadId=.
module.exports = function multipart(store) {
  return async function s3Multipart(ctx, next) {
    if (!('uploadId' in ctx.query)) return next();
    const bucket = decodeURIComponent(ctx.path.split('/')[1] || '');
    const uploadDir = path.join(
      store.getResourcePath(bucket, undefined, 'uploads'),
      String(ctx.query.uploadId),
    );
    if (!bucket || !fs.existsSync(path.join(uploadDir, 'key'))) throw noSuchUpload();
    if (ctx.method === 'DELETE') {
      fs.rmSync(uploadDir, { recursive: true, force: true });
      ctx.status = 204;
      return undefined;
    }
    if (ctx.method === 'POST') {
      const body = await readBody(ctx.req);
      const parts = listedParts(body.toString('utf8'));
      if (parts) checkParts(uploadDir, parts);
      // s3rver's own handler reads the body again.
      ctx.req = Readable.from([body]);
    }
    return next();
  };
};
