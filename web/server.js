// Production entry of the dashboard: `node web/server.js` (after `npm run build`).
//
// adapter-node's own entry (build/index.js) takes the request's protocol from PROTOCOL_HEADER
// and otherwise assumes https; SvelteKit 3 then rejects every form post made over plain http (the
// CSRF check compares the Origin header with that guess). This entry serves the same handler and
// states the protocol: `x-forwarded-proto` from a TLS-terminating proxy when there is one, else
// BFG_WEB_PROTOCOL (default http, for loopback and the local stack).
import http from 'node:http';

// Before the handler is imported: adapter-node reads its settings when the module loads.
process.env.PROTOCOL_HEADER ??= 'x-forwarded-proto';
const { handler } = await import('./build/handler.js');
const protocolHeader = process.env.PROTOCOL_HEADER.toLowerCase();
const protocol = process.env.BFG_WEB_PROTOCOL ?? 'http';
const host = process.env.HOST ?? '127.0.0.1';
const port = Number(process.env.PORT ?? 3000);

const server = http.createServer((req, res) => {
  req.headers[protocolHeader] ??= protocol;
  handler(req, res, () => {
    res.statusCode = 404;
    res.end('Not found');
  });
});

server.listen(port, host, () =>
  console.log(`Listening on ${protocol}://${host.includes(':') ? `[${host}]` : host}:${port}`),
);

// Graceful stop: finish open requests, close idle keep-alive sockets; force after 10 s.
let stopping = false;
function stop() {
  if (stopping) process.exit(1);
  stopping = true;
  server.close(() => process.exit(0));
  server.closeIdleConnections();
  setTimeout(() => {
    server.closeAllConnections();
    process.exit(0);
  }, 10_000).unref();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
