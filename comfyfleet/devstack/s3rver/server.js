'use strict';
// The devstack's persistent S3 server: s3rver storing objects under a directory, with the
// devstack's fixed dev credentials instead of s3rver's built-in S3RVER/S3RVER pair.
// Signatures are verified (sigv4.js) and unsigned requests refused, as S3 does; multipart
// uploads check parts and can be aborted (multipart.js), as in S3.
// Configured by environment (see comfyfleet/devstack/s3.py):
//   S3RVER_ADDRESS, S3RVER_PORT, S3RVER_DIRECTORY, S3RVER_ACCESS_KEY, S3RVER_SECRET_KEY,
//   S3RVER_ALLOW_ANONYMOUS=1 to serve unsigned requests too.

const S3rver = require('s3rver');
const AWSAccount = require('s3rver/lib/models/account');
const sigv4 = require('./sigv4');
const multipart = require('./multipart');

function required(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`missing environment variable ${name}`);
    process.exit(2);
  }
  return value;
}

AWSAccount.DUMMY_ACCOUNT.revokeAccessKey('S3RVER');
AWSAccount.DUMMY_ACCOUNT.createKeyPair(
  required('S3RVER_ACCESS_KEY'),
  required('S3RVER_SECRET_KEY'),
);

const server = new S3rver({
  address: required('S3RVER_ADDRESS'),
  port: Number(required('S3RVER_PORT')),
  directory: required('S3RVER_DIRECTORY'),
  vhostBuckets: false,
  silent: false,
});
// Right after s3rver's request logger, so refused requests are logged too.
server.middleware.splice(1, 0, sigv4({ allowAnonymous: process.env.S3RVER_ALLOW_ANONYMOUS === '1' }));
// Then multipart uploads with S3's checks, which s3rver itself lacks.
server.middleware.splice(2, 0, multipart(server.store));

server.run().then(
  ({ address, port }) => console.log(`s3rver listening on ${address}:${port}`),
  (err) => {
    console.error(err.code === 'EADDRINUSE' ? `EADDRINUSE: ${err.message}` : err);
    process.exit(1);
  },
);

function shutdown(signal) {
  console.log(`s3rver stopping on ${signal}`);
  server.close().then(() => process.exit(0));
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
