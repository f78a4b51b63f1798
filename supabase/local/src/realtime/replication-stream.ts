import type { Duplex } from 'node:stream';
import postgres, { type Sql } from 'postgres';
import { decodePgOutput, type PgOutputMessage } from './pgoutput.ts';

/**
 * One logical replication session: a temporary pgoutput slot on the given publications (as
 * Supabase Realtime's — nothing is replayed after a reconnect), the CopyBoth stream, standby
 * status updates, and flow control: `pause()` stops reading the socket, so Postgres keeps the WAL
 * instead of this process buffering it. Messages are handed over in order, one at a time.
 */
export interface ReplicationSession {
  /** Stop reading from Postgres (the consumer is behind); `resume()` reads on. */
  pause(): void;
  resume(): void;
  /** Reports `lsn` as flushed: everything before it was handled and its WAL may be recycled. */
  confirm(lsn: bigint): void;
  /** Resolves when the stream ends or fails (then the session is over). */
  readonly closed: Promise<Error | undefined>;
  end(): Promise<void>;
}

const STATUS_INTERVAL_MS = 10_000;

/**
 * `caughtUp()` says whether every change handed to `onMessage` was handled: then the session
 * may confirm up to the server's WAL end from keepalives, not just up to the last commit. It
 * must: at shutdown Postgres waits for its walsenders' clients to confirm everything sent.
 */
export async function openReplicationSession(
  url: string,
  publications: string[],
  onMessage: (message: PgOutputMessage) => void,
  caughtUp: () => boolean,
): Promise<ReplicationSession> {
  // The stream does not always end when the socket under it does (Postgres killed): the
  // connection's close is the other signal that the session is over.
  let markClosed: (err: Error | undefined) => void = () => undefined;
  const closed = new Promise<Error | undefined>((resolve) => (markClosed = resolve));
  const sql: Sql = postgres(url, {
    max: 1,
    onclose: () => markClosed(new Error('the replication connection closed')),
    connect_timeout: 5,
    onnotice: () => undefined,
    fetch_types: false,
    idle_timeout: 0,
    // Timestamps in the WAL's text output follow the session's TimeZone; Realtime's JSON is UTC.
    // DateStyle/IntervalStyle pinned too: the value conversion reads ISO text.
    connection: {
      replication: 'database',
      TimeZone: 'UTC',
      DateStyle: 'ISO, MDY',
      IntervalStyle: 'postgres',
      application_name: 'bfg-realtime',
    },
  } as postgres.Options<Record<string, postgres.PostgresType>>);
  let stream: Duplex | undefined;
  try {
    const slot = `bfg_realtime_${Math.random().toString(36).slice(2, 10)}`;
    const [created] = await sql.unsafe<{ consistent_point: string }[]>(
      `CREATE_REPLICATION_SLOT ${slot} TEMPORARY LOGICAL pgoutput NOEXPORT_SNAPSHOT`,
    );
    const names = publications.map((p) => p.replaceAll("'", "''")).join(',');
    // unsafe: replication commands take no parameters; the slot name is ours, publication names are quoted.
    stream = (await sql
      .unsafe(
        `START_REPLICATION SLOT ${slot} LOGICAL ${created!.consistent_point} (proto_version '1', publication_names '${names}')`,
      )
      .writable()) as unknown as Duplex;
  } catch (err) {
    await sql.end({ timeout: 1 }).catch(() => undefined);
    throw err;
  }
  const replication = stream;

  let confirmed = 0n;
  let received = 0n;
  const sendStatus = (replyRequested = false) => {
    if (caughtUp() && received > confirmed) confirmed = received;
    const frame = Buffer.alloc(34);
    frame[0] = 0x72; // 'r'
    frame.writeBigUInt64BE(received, 1); // written
    frame.writeBigUInt64BE(confirmed, 9); // flushed
    frame.writeBigUInt64BE(confirmed, 17); // applied
    frame.writeBigInt64BE((BigInt(Date.now()) - 946_684_800_000n) * 1000n, 25);
    frame[33] = replyRequested ? 1 : 0;
    replication.write(frame);
  };
  const status = setInterval(() => sendStatus(), STATUS_INTERVAL_MS);
  status.unref();

  replication.on('data', (frame: Buffer) => {
    if (frame[0] === 0x77) {
      // 'w' XLogData: start LSN, end LSN, clock, then the message
      const end = frame.readBigUInt64BE(9);
      if (end > received) received = end;
      onMessage(decodePgOutput(frame.subarray(25)));
    } else if (frame[0] === 0x6b) {
      // 'k' keepalive
      const end = frame.readBigUInt64BE(1);
      if (end > received) received = end;
      if (frame[17]) sendStatus();
    }
  });
  replication.once('error', (err: Error) => markClosed(err));
  replication.once('close', () => markClosed(undefined));
  void closed.then(() => clearInterval(status));

  return {
    pause: () => void replication.pause(),
    resume: () => void replication.resume(),
    confirm(lsn) {
      if (lsn > confirmed) confirmed = lsn;
    },
    closed,
    async end() {
      clearInterval(status);
      replication.destroy();
      await sql.end({ timeout: 1 }).catch(() => undefined);
    },
  };
}
