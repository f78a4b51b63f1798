import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { gunzipSync } from 'node:zlib';

export interface FakeSentry {
  /** A DSN pointing here (project 1). */
  dsn: string;
  /** GET it for every envelope received so far, as a JSON array of strings (from another process). */
  receivedUrl: string;
  /** The envelopes received so far, as text (in the process that started it). */
  readonly envelopes: readonly string[];
  close(): Promise<void>;
}

/**
 * A stand-in for Sentry's ingest endpoint on loopback: accepts envelopes (`/api/<project>/envelope/`)
 * and lists them, so a test can check that an unexpected error was reported — with no network.
 * Used by the e2e stack (the dashboard's reports) and the ingestor's observability test.
 */
export async function startFakeSentry(): Promise<FakeSentry> {
  const envelopes: string[] = [];
  const server = http.createServer((req, res) => {
    if (req.method === 'GET' && req.url === '/received') {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify(envelopes));
      return;
    }
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      envelopes.push((req.headers['content-encoding'] === 'gzip' ? gunzipSync(body) : body).toString('utf8'));
      res.setHeader('content-type', 'application/json');
      res.end('{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    dsn: `http://e2epublickey@127.0.0.1:${port}/1`,
    receivedUrl: `http://127.0.0.1:${port}/received`,
    envelopes,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
