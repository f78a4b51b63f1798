import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { coerceError } from './errors.ts';
import type { HealthReport } from './health.ts';
import type { Logger } from './logger.ts';

export interface HttpRoutes {
  health(): Promise<HealthReport>;
  metrics(): Promise<{ contentType: string; body: string }>;
}

export interface RunningHttpServer {
  readonly address: { host: string; port: number };
  close(): Promise<void>;
}

/**
 * The ingestor's small HTTP server: `GET /healthz` (200 healthy, 503 not; JSON saying why) and
 * `GET /metrics` (Prometheus text format). Nothing else; it serves no secrets and takes no input.
 */
export async function startHttpServer(
  options: { host: string; port: number },
  routes: HttpRoutes,
  logger: Logger,
): Promise<RunningHttpServer> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path !== '/healthz' && path !== '/metrics') {
      send(res, 404, 'text/plain; charset=utf-8', 'not found: try /healthz or /metrics\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('allow', 'GET, HEAD');
      send(res, 405, 'text/plain; charset=utf-8', 'method not allowed\n');
      return;
    }
    const answer =
      path === '/healthz'
        ? routes.health().then((report) => ({
            status: report.healthy ? 200 : 503,
            contentType: 'application/json',
            body: `${JSON.stringify(report)}\n`,
          }))
        : routes.metrics().then(({ contentType, body }) => ({ status: 200, contentType, body }));
    answer.then(
      ({ status, contentType, body }) => send(res, status, contentType, req.method === 'HEAD' ? '' : body),
      (err: unknown) => {
        logger.error({ err: coerceError(err), path }, 'HTTP route failed');
        send(res, 500, 'text/plain; charset=utf-8', 'internal error\n');
      },
    );
  });
  // Probes and scrapers reconnect every time; an idle keep-alive socket must not hold up stop().
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', (err) => logger.error({ err }, 'HTTP server error'));
  const { address, port } = server.address() as AddressInfo;
  logger.info({ host: address, port }, 'HTTP server listening (/healthz, /metrics)');
  return {
    address: { host: address, port },
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

function send(res: http.ServerResponse, status: number, contentType: string, body: string): void {
  res.statusCode = status;
  res.setHeader('content-type', contentType);
  res.setHeader('cache-control', 'no-store');
  res.end(body);
}
