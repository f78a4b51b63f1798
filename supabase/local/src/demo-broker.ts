import type { EventEmitter } from 'node:events';
import net from 'node:net';
import { Aedes } from 'aedes';
import { LocalStackError, coerceError } from './errors.ts';

export interface DemoBrokerOptions {
  port: number;
  host?: string;
  /** Where broker-level errors go (e.g. from aedes' periodic will sweep); default: stderr. */
  onError?: (err: Error) => void;
}

export interface DemoBroker {
  readonly port: number;
  readonly host: string;
  readonly url: string;
  /** Ends every client connection and the listening socket; resolves once both are closed. */
  close(): Promise<void>;
}

/**
 * The embedded MQTT broker `npm start` and the tests use when no real broker is around: aedes
 * over plain TCP with its default in-memory persistence, so retained messages, subscriptions of
 * persistent sessions (clean: false) and their offline QoS 1 queues work — until the process
 * ends. It is a demo broker: no TLS, no authentication.
 */
export async function startDemoBroker(options: DemoBrokerOptions): Promise<DemoBroker> {
  const { port, host = '127.0.0.1' } = options;
  const onError = options.onError ?? ((err: Error) => console.error(`demo MQTT broker: ${err.message}`));

  // aedes 1.x has no default export any more: the broker must be created (and its persistence
  // set up) asynchronously before it handles connections.
  const broker = await Aedes.createBroker();
  // An 'error' event without a listener would throw and take the whole process down. aedes'
  // typings list only its own events, so listen through the EventEmitter it extends.
  const emitter: EventEmitter = broker;
  emitter.on('error', (err: unknown) => onError(coerceError(err)));

  // aedes closes the connections of registered clients; a socket that has not sent CONNECT yet
  // is not a client, so we track every socket to be able to end them all on close().
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    broker.handle(socket);
  });

  try {
    await listen(server, port, host);
  } catch (err) {
    await closeBroker(broker);
    throw err;
  }
  // Errors after listening (rare: e.g. EMFILE on accept) must not crash the process either.
  server.on('error', onError);

  let closing: Promise<void> | undefined;
  return {
    port,
    host,
    url: `mqtt://${host.includes(':') ? `[${host}]` : host}:${port}`,
    close() {
      closing ??= (async () => {
        // Stop accepting first, so nobody connects while the clients are being closed.
        const serverClosed = new Promise<void>((resolve, reject) => {
          server.close((err) => (err ? reject(err) : resolve()));
        });
        await closeBroker(broker);
        for (const socket of sockets) socket.destroy();
        await serverClosed;
      })();
      return closing;
    },
  };
}

/** Listens on host:port, turning a taken port into an error the operator can act on. */
function listen(server: net.Server, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      if (err.code === 'EADDRINUSE') {
        reject(
          new LocalStackError(
            `Port ${port} on ${host} is already in use, so the demo MQTT broker cannot listen there. ` +
              `Stop whatever uses it or choose another port (BFG_MQTT_PORT).`,
          ),
        );
      } else if (err.code === 'EACCES') {
        reject(
          new LocalStackError(
            `Not allowed to listen on port ${port} on ${host} (ports below 1024 need privileges); choose another port (BFG_MQTT_PORT).`,
          ),
        );
      } else {
        reject(
          new LocalStackError(
            `The demo MQTT broker cannot listen on ${host}:${port}: ${err.message}. Check BFG_LISTEN_HOST and BFG_MQTT_PORT.`,
            { cause: err },
          ),
        );
      }
    };
    server.once('error', onError);
    server.listen({ port, host }, () => {
      server.off('error', onError);
      resolve();
    });
  });
}

/** aedes' close() takes a callback: it closes every client, then its message emitter. */
function closeBroker(broker: Aedes): Promise<void> {
  return new Promise((resolve) => broker.close(() => resolve()));
}
