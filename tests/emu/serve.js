// SPDX-License-Identifier: Apache-2.0
// serve.js: starts one local AWS emulator bound to 127.0.0.1 on a free
// port and prints "PORT <n>" once it accepts connections.
//   node serve.js kinesis <dir|->   kinesalite (its CLI cannot bind to loopback)
//   node serve.js dynamodb <dir|->  dynalite
//   node serve.js s3 <dir>          s3rver (needs --openssl-legacy-provider on Node >= 17)
// "-" means in memory. Stops on SIGTERM/SIGINT.
'use strict';
const kind = process.argv[2];
const dir = process.argv[3] && process.argv[3] !== '-' ? process.argv[3] : undefined;
const host = '127.0.0.1';

function ready(port) {
  process.stdout.write('PORT ' + port + '\n');
}

function fail(err) {
  process.stderr.write('serve.js ' + kind + ': ' + (err && err.stack || err) + '\n');
  process.exit(1);
}

// A client that goes away mid-request (the tests kill -9 workers on
// purpose) makes dynalite throw from its request 'error' handler
// ("aborted", ECONNRESET), which would kill the whole emulator and every
// test after it; a real service just drops that request. Only that error
// is survived, and it is logged; anything else still ends the process.
process.on('uncaughtException', (err) => {
  if (err && err.code === 'ECONNRESET' && err.message === 'aborted') {
    process.stderr.write('serve.js ' + kind + ': a client went away mid-request (ignored)\n');
    return;
  }
  fail(err);
});

let server;
if (kind === 'kinesis') {
  const opts = { createStreamMs: 0, deleteStreamMs: 0, updateStreamMs: 0, shardLimit: 200 };
  if (dir) opts.path = dir;
  server = require('kinesalite')(opts);
  server.listen(0, host, (err) => err ? fail(err) : ready(server.address().port));
} else if (kind === 'dynamodb') {
  const opts = { createTableMs: 0, deleteTableMs: 0, updateTableMs: 0 };
  if (dir) opts.path = dir;
  server = require('dynalite')(opts);
  server.listen(0, host, (err) => err ? fail(err) : ready(server.address().port));
} else if (kind === 's3') {
  if (!dir) fail('s3 needs a data directory');
  const S3rver = require('s3rver');
  // s3rver's DeleteObject removes the key's directories once they are
  // empty, racing a PutObject that has just made the same directory and
  // not yet opened its file: the put's write stream fails with ENOENT and
  // nothing handles it, which killed the whole emulator (reproduced with
  // concurrent PUTs and DELETEs under one prefix). Real S3 has no
  // directories; listings here walk files only, so empty directories are
  // invisible and left in place.
  const FilesystemStore = require('s3rver/lib/stores/filesystem');
  const fsp = require('fs').promises;
  FilesystemStore.prototype.deleteObject = async function (bucket, key) {
    await Promise.all(['object', 'object.md5', 'metadata.json'].map((kind) =>
      fsp.unlink(this.getResourcePath(bucket, key, kind)).catch((err) => {
        if (err.code !== 'ENOENT') throw err;
      })));
  };
  const s3 = new S3rver({ port: 0, address: host, directory: dir, silent: true });
  s3.run().then((addr) => { server = s3; ready(addr.port); }, fail);
} else {
  fail('unknown emulator "' + kind + '" (kinesis, dynamodb, s3)');
}

function stop() {
  try { if (server && server.close) server.close(); } catch (e) { /* exiting anyway */ }
  process.exit(0);
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
