import type { TransactionSql } from 'postgres';
import type { Db } from '../db.ts';

/**
 * The lease of one broker session: slot 0 is the connection row itself, slots 1, 2, … are the
 * member sessions of a shared connection (mqtt_connection_member). `epoch` is the fencing token
 * the acquisition got (supabase/migrations/20261202000400_connection_leases.sql).
 */
export interface LeaseToken {
  connectionId: string;
  slot: number;
  epoch: string;
}

/** One lease as every instance sees it when it plans (see lease-plan.ts). */
export interface LeaseUnit {
  connectionId: string;
  slot: number;
  /** The connection has a share group (its slots are spread over the instances). */
  shared: boolean;
  owner: string | null;
  /** Released, never held, or expired: an acquisition may take it. */
  claimable: boolean;
}

/** The channel a release notifies on, so that other instances take the connections at once. */
export const LEASE_CHANNEL = 'mqtt_connection:lease';

const ttl = (ms: number) => `${Math.max(1, Math.round(ms))} milliseconds`;

function columns(tokens: readonly { connectionId: string; slot: number; epoch?: string }[]) {
  return {
    ids: tokens.map((t) => t.connectionId),
    slots: tokens.map((t) => t.slot),
    epochs: tokens.map((t) => t.epoch ?? '0'),
  };
}

/**
 * The heartbeat of this instance and the renewal of the given leases, in one statement. Returns
 * the keys (`leaseKey`) of the leases still held; the others were taken over (or the connection
 * deleted). A lease is renewed whether or not it expired meanwhile: if nobody took it, it is
 * still ours.
 */
export async function renewLeases(
  sql: Db,
  instance: string,
  ttlMs: number,
  held: readonly LeaseToken[],
): Promise<Set<string>> {
  const { ids, slots, epochs } = columns(held);
  const rows = await sql<{ connectionId: string; slot: number }[]>`
    with heartbeat as (
      insert into ingestor_instance (id, lease_expires_at) values (${instance}, now() + ${ttl(ttlMs)}::interval)
      on conflict (id) do update set heartbeat_at = now(), lease_expires_at = excluded.lease_expires_at
    ),
    t as (select * from unnest(${ids}::bigint[], ${slots}::int[], ${epochs}::bigint[]) as t (id, slot, epoch)),
    c as (
      update mqtt_connection c set lease_expires_at = now() + ${ttl(ttlMs)}::interval
      from t
      where t.slot = 0 and c.id = t.id and c.owner_instance = ${instance} and c.lease_epoch = t.epoch
      returning c.id, 0 as slot
    ),
    m as (
      update mqtt_connection_member m set lease_expires_at = now() + ${ttl(ttlMs)}::interval
      from t
      where t.slot > 0 and m.connection_id = t.id and m.slot = t.slot and m.owner_instance = ${instance}
        and m.lease_epoch = t.epoch
      returning m.connection_id as id, m.slot
    )
    select id::text as "connectionId", slot from c
    union all
    select id::text, slot from m`;
  return new Set(rows.map((r) => leaseKey(r.connectionId, r.slot)));
}

/** Every lease of the active connections, and the instances counted as live. */
export async function loadLeaseState(sql: Db): Promise<{ units: LeaseUnit[]; live: string[] }> {
  const units = await sql<LeaseUnit[]>`
    select c.id::text as "connectionId", 0 as slot, c.share_group is not null as shared, c.owner_instance as owner,
           (c.owner_instance is null or c.lease_expires_at is null or c.lease_expires_at < now()) as claimable
    from mqtt_connection c
    where c.is_active
    union all
    select m.connection_id::text, m.slot, c.share_group is not null, m.owner_instance,
           (m.owner_instance is null or m.lease_expires_at is null or m.lease_expires_at < now())
    from mqtt_connection_member m
    join mqtt_connection c on c.id = m.connection_id
    where c.is_active
    order by 1, 2`;
  const live = await sql<{ id: string }[]>`select id from ingestor_instance where lease_expires_at > now() order by id`;
  return { units: [...units], live: live.map((r) => r.id) };
}

/**
 * Takes the given leases where they are still free (released or expired) and no holder is in a
 * write transaction for them (the exclusive try-lock that hold_leases' shared lock excludes);
 * each one taken gets a new epoch. Rows another statement has locked are skipped, not waited for:
 * the next round tries again.
 */
export async function acquireLeases(
  sql: Db,
  instance: string,
  ttlMs: number,
  wanted: readonly { connectionId: string; slot: number }[],
): Promise<LeaseToken[]> {
  if (wanted.length === 0) return [];
  const { ids, slots } = columns(wanted);
  const rows = await sql<LeaseToken[]>`
    with t as (select * from unnest(${ids}::bigint[], ${slots}::int[]) as t (id, slot)),
    free_c as (
      select c.id from mqtt_connection c
      join t on t.slot = 0 and t.id = c.id
      where c.is_active and (c.owner_instance is null or c.lease_expires_at is null or c.lease_expires_at < now())
      order by c.id
      for no key update of c skip locked
    ),
    c as (
      update mqtt_connection c
      set owner_instance = ${instance}, lease_expires_at = now() + ${ttl(ttlMs)}::interval, lease_epoch = c.lease_epoch + 1
      from free_c
      where c.id = free_c.id and pg_try_advisory_xact_lock(private.lease_lock_key(c.id, 0))
      returning c.id, 0 as slot, c.lease_epoch
    ),
    free_m as (
      select m.connection_id, m.slot from mqtt_connection_member m
      join t on t.slot = m.slot and t.id = m.connection_id
      where (m.owner_instance is null or m.lease_expires_at is null or m.lease_expires_at < now())
        and exists (select 1 from mqtt_connection x where x.id = m.connection_id and x.is_active)
      order by m.connection_id, m.slot
      for no key update of m skip locked
    ),
    m as (
      update mqtt_connection_member m
      set owner_instance = ${instance}, lease_expires_at = now() + ${ttl(ttlMs)}::interval, lease_epoch = m.lease_epoch + 1
      from free_m
      where m.connection_id = free_m.connection_id and m.slot = free_m.slot
        and pg_try_advisory_xact_lock(private.lease_lock_key(m.connection_id, m.slot))
      returning m.connection_id as id, m.slot, m.lease_epoch
    )
    select id::text as "connectionId", slot, lease_epoch::text as epoch from c
    union all
    select id::text, slot, lease_epoch::text from m`;
  return [...rows];
}

/**
 * Adds member session `slot` to a shared connection, held by this instance; null when another
 * instance created that slot first (or the connection is no longer shared and active).
 */
export async function createMemberLease(
  sql: Db,
  instance: string,
  ttlMs: number,
  connectionId: string,
  slot: number,
): Promise<LeaseToken | null> {
  const [row] = await sql<LeaseToken[]>`
    insert into mqtt_connection_member (connection_id, slot, owner_instance, lease_expires_at, lease_epoch)
    select c.id, ${slot}, ${instance}, now() + ${ttl(ttlMs)}::interval, 1
    from mqtt_connection c
    where c.id = ${connectionId} and c.is_active and c.share_group is not null
    on conflict do nothing
    returning connection_id::text as "connectionId", slot, lease_epoch::text as epoch`;
  return row ?? null;
}

/**
 * Gives the leases up (owner and expiry cleared, epoch kept) and notifies LEASE_CHANNEL, so that
 * other instances take them at once; with `deregister`, the instance's row goes too (it stops).
 */
export async function releaseLeases(
  sql: Db,
  instance: string,
  tokens: readonly LeaseToken[],
  options: { deregister?: boolean; idleTimeoutMs: number },
): Promise<void> {
  const { ids, slots, epochs } = columns(tokens);
  await sql.begin(async (tx) => {
    await boundIdleTransaction(tx, options.idleTimeoutMs);
    await tx`
      with t as (select * from unnest(${ids}::bigint[], ${slots}::int[], ${epochs}::bigint[]) as t (id, slot, epoch)),
      c as (
        update mqtt_connection c set owner_instance = null, lease_expires_at = null
        from t
        where t.slot = 0 and c.id = t.id and c.owner_instance = ${instance} and c.lease_epoch = t.epoch
        returning 1
      )
      update mqtt_connection_member m set owner_instance = null, lease_expires_at = null
      from t
      where t.slot > 0 and m.connection_id = t.id and m.slot = t.slot and m.owner_instance = ${instance}
        and m.lease_epoch = t.epoch`;
    if (options.deregister) await tx`delete from ingestor_instance where id = ${instance}`;
    await tx`select pg_notify(${LEASE_CHANNEL}, ${JSON.stringify({ instance, released: tokens.length })})`;
  });
}

/**
 * The first statement of a transaction that locks connection rows: if this process is paused (or
 * vanishes) mid-transaction, Postgres ends the transaction after `ms` idle, so its row locks
 * cannot keep a takeover out (acquisitions skip locked rows) past the lease.
 */
export async function boundIdleTransaction(tx: TransactionSql, ms: number): Promise<void> {
  await tx`select set_config('idle_in_transaction_session_timeout', ${String(Math.round(ms))}, true)`;
}

/** Tells the other instances that one joined, so that they hand over their share at once. */
export async function announceInstance(sql: Db, instance: string, ttlMs: number): Promise<void> {
  await sql.begin(async (tx) => {
    await tx`
      insert into ingestor_instance (id, lease_expires_at) values (${instance}, now() + ${ttl(ttlMs)}::interval)
      on conflict (id) do update set heartbeat_at = now(), lease_expires_at = excluded.lease_expires_at`;
    await tx`select pg_notify(${LEASE_CHANNEL}, ${JSON.stringify({ instance, joined: true })})`;
  });
}

/**
 * The fence of a write transaction (first statement in it): of `tokens`, the `fenceKey`s of those
 * this instance still holds, locked against takeover until the transaction ends.
 */
export async function holdLeases(
  tx: TransactionSql,
  instance: string,
  tokens: readonly LeaseToken[],
  idleTimeoutMs: number,
): Promise<Set<string>> {
  const { ids, slots, epochs } = columns(tokens);
  const rows = await tx<LeaseToken[]>`
    select connection_id::text as "connectionId", slot, epoch::text as epoch
    from private.hold_leases(${instance}, ${ids}::bigint[], ${slots}::int[], ${epochs}::bigint[], ${Math.round(idleTimeoutMs)}::int)`;
  return new Set(rows.map(fenceKey));
}

/** A lease with its epoch: what a write is fenced by. */
export function fenceKey(token: LeaseToken): string {
  return `${token.connectionId}/${token.slot}@${token.epoch}`;
}

export function leaseKey(connectionId: string, slot: number): string {
  return `${connectionId}/${slot}`;
}
