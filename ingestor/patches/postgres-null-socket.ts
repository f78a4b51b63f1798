#!/usr/bin/env node
/**
 * postinstall: guards postgres.js (3.4.9, the newest release) against an uncatchable crash when
 * the database connection drops while a small write is queued: `nextWrite` runs from
 * `setImmediate` after `closed()` nulled the socket and throws "Cannot read properties of null
 * (reading 'write')" outside any query (porsager/postgres#1154, #1208; fixes proposed in #1168,
 * #1209, not released). The ingestor must survive database outages, and our own outage test hit
 * it, so until a release carries a fix this adds the missing null check. By then `closed()` has
 * already rejected the queries in flight with CONNECTION_CLOSED, so dropping the buffer is safe.
 *
 * Idempotent; fails loudly if the code it patches has changed (a new postgres.js version: check
 * whether the fix landed, then remove this script).
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const MARKER = '/* bfg: null-socket guard */';
const ORIGINAL = '  function nextWrite(fn) {\n    const x = socket.write(chunk, fn)';
const PATCHED = `  function nextWrite(fn) {\n    ${MARKER} if (!socket) { nextWriteTimer !== null && clearImmediate(nextWriteTimer); chunk = nextWriteTimer = null; return false }\n    const x = socket.write(chunk, fn)`;

// The package's ESM entry is <root>/src/index.js.
const root = path.resolve(path.dirname(fileURLToPath(import.meta.resolve('postgres'))), '..');
for (const file of ['src/connection.js', 'cjs/src/connection.js']) {
  const target = path.join(root, file);
  if (!fs.existsSync(target)) continue;
  const text = fs.readFileSync(target, 'utf8');
  if (text.includes(MARKER)) continue;
  if (!text.includes(ORIGINAL)) {
    throw new Error(
      `${target}: nextWrite changed; check whether postgres.js fixed the null-socket crash and drop ingestor/patches/postgres-null-socket.ts`,
    );
  }
  fs.writeFileSync(target, text.replace(ORIGINAL, PATCHED));
  console.log(`patched ${path.relative(process.cwd(), target)} (null-socket guard)`);
}
