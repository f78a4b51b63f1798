import { randomBytes } from 'node:crypto';
import { createClient, type RealtimeChannel, type SupabaseClient } from '@supabase/supabase-js';
import { getFreePort, startRealtimeServer, type RealtimeLimits, type RealtimeServer } from '@bfg/local';
import { newUser } from './claims.ts';
import { createTestDatabase, type TestDatabase } from './db.ts';
import { addMember } from './factories.ts';
import { signJwt } from './jwt.ts';
import { Inbox } from './wait.ts';

export interface FollowedChannel {
  /** Subscribe statuses in order: SUBSCRIBED, CHANNEL_ERROR, TIMED_OUT, CLOSED. */
  statuses: Inbox<string>;
  /** The errors that came with CHANNEL_ERROR statuses, in order. */
  errors: Error[];
  /** The channel's `system` messages in order (feed subscribed, feed errors, shutdowns). */
  system: Inbox<Record<string, unknown>>;
  /**
   * Resolves on the next "Subscribed to PostgreSQL": the moment the postgres_changes feed is
   * really live. Realtime replies to the join (SUBSCRIBED) before it subscribes the feed, so a
   * change committed between the two is not delivered; tests wait for this instead.
   */
  feedLive(what?: string, timeoutMs?: number): Promise<void>;
}

/** Subscribes `channel` (its bindings set up), recording statuses and system messages. */
export function follow(channel: RealtimeChannel): FollowedChannel {
  const statuses = new Inbox<string>();
  const system = new Inbox<Record<string, unknown>>();
  const errors: Error[] = [];
  channel.on('system', {}, (payload: Record<string, unknown>) => system.push(payload));
  channel.subscribe((status, error) => {
    if (error) errors.push(error);
    statuses.push(String(status));
  });
  return {
    statuses,
    errors,
    system,
    async feedLive(what = 'the postgres_changes feed', timeoutMs = 10_000) {
      for (;;) {
        const message = await system.next(`${what} to be subscribed`, timeoutMs);
        if (message['extension'] === 'postgres_changes' && message['status'] === 'ok') return;
        if (message['extension'] === 'postgres_changes')
          throw new Error(`${what} failed: ${String(message['message'])}`);
      }
    },
  };
}

export interface RealtimeFixture {
  db: TestDatabase;
  server: RealtimeServer;
  secret: string;
  anonKey: string;
  logs: string[];
  /** A supabase-js client; with a token, every join carries it (as after sign-in). */
  client(accessToken?: string): Promise<SupabaseClient>;
  /** A signed-in user's token: a member of `member`, an admin, or with another `role` claim. */
  userToken(options?: { member?: string; admin?: boolean; role?: string; expiresIn?: number }): Promise<string>;
  /** Removes every client's channels (after each test). */
  reset(): Promise<void>;
  close(): Promise<void>;
}

/** A test database with the local Realtime server on it, for supabase-js tests. */
export async function startRealtimeFixture(
  options: { limits?: Partial<RealtimeLimits> } = {},
): Promise<RealtimeFixture> {
  const db = await createTestDatabase();
  const secret = randomBytes(32).toString('hex');
  const logs: string[] = [];
  const server = await startRealtimeServer({
    port: await getFreePort(),
    jwtSecret: secret,
    sql: db.sql,
    databaseUrl: db.url,
    log: (m) => logs.push(m),
    ...(options.limits ? { limits: options.limits } : {}),
  });
  const anonKey = await signJwt(secret, { role: 'anon', iss: 'supabase' });
  const clients: SupabaseClient[] = [];
  return {
    db,
    server,
    secret,
    anonKey,
    logs,
    async client(accessToken) {
      // The accessToken callback, not setAuth(): supabase-js' auth client would reset a token set
      // once back to the anon key when it reports its (empty) initial session.
      let token = accessToken ?? anonKey;
      const supabase = createClient(server.url, anonKey, { accessToken: () => Promise.resolve(token) });
      const setAuth = supabase.realtime.setAuth.bind(supabase.realtime);
      supabase.realtime.setAuth = async (next?: string | null) => {
        if (next) token = next;
        await setAuth();
      };
      await supabase.realtime.setAuth();
      clients.push(supabase);
      return supabase;
    },
    async userToken({ member, admin, role, expiresIn } = {}) {
      const id = await newUser(db.sql);
      if (member) await addMember(db.sql, member, id);
      return signJwt(
        secret,
        {
          sub: id,
          role: role ?? 'authenticated',
          email: `${id}@example.test`,
          app_metadata: admin ? { provider: 'email', role: 'admin' } : { provider: 'email' },
        },
        expiresIn ?? 3600,
      );
    },
    async reset() {
      for (const c of clients.splice(0)) await c.removeAllChannels();
    },
    async close() {
      for (const c of clients.splice(0)) await c.removeAllChannels();
      await server.close();
      await db.drop();
    },
  };
}
