import fc from 'fast-check';
import type postgres from 'postgres';
import { afterEach, describe, expect, it } from 'vitest';
import {
  acquireLeases,
  boundIdleTransaction,
  holdLeases,
  planLeases,
  renewLeases,
  type LeaseUnit,
} from '@bfg/ingestor';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';
import { newConnection, newSite } from '../support/factories.ts';
import { startIngestor, type RunningIngestor } from '../support/ingestor.ts';
import { startMosquitto } from '../support/mosquitto.ts';
import { waitFor } from '../support/wait-for.ts';

/**
 * Connection leases (issue 14): how instances spread the connections (the plan, on random tables,
 * and three real instances), and the fence that keeps an instance that lost a lease from writing.
 * The faults — killed, paused and terminated processes, restarts — are in ingestor-faults.test.ts.
 */

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => undefined);
});

async function database(): Promise<TestDatabase> {
  const db = await createTestDatabase();
  cleanups.push(() => db.drop());
  return db;
}

async function activeConnection(sql: postgres.Sql, port = 1883): Promise<string> {
  const site = await newSite(sql);
  const { id } = await newConnection(sql, site.id, { port, isActive: true });
  return id;
}

describe('the lease plan', () => {
  /**
   * A table of leases and the instances following the plan in turns, in any order: a dead
   * instance's leases are free, a shed lease is released, an acquisition takes a free lease, an
   * added member needs a free slot number — as the SQL does it.
   */
  interface Unit {
    connectionId: string;
    slot: number;
    shared: boolean;
    owner: string | null;
  }

  /** One turn of each instance in `order`; `avoid` holds what each handed over in the previous round. */
  function round(units: Unit[], live: string[], order: string[], avoid: Map<string, Set<string>>): boolean {
    let changed = false;
    const handedOver = new Map<string, Set<string>>();
    for (const me of order) {
      const view: LeaseUnit[] = units.map((u) => ({
        ...u,
        claimable: u.owner === null || !live.includes(u.owner),
      }));
      const held = new Set(units.filter((u) => u.owner === me).map((u) => `${u.connectionId}/${u.slot}`));
      const plan = planLeases({ me, units: view, live, held, takeExpired: true, avoid: avoid.get(me) ?? new Set() });
      handedOver.set(me, new Set(plan.shed));
      for (const key of plan.shed) {
        const unit = units.find((u) => `${u.connectionId}/${u.slot}` === key)!;
        unit.owner = null;
        changed = true;
      }
      for (const { connectionId, slot } of plan.acquire) {
        const unit = units.find((u) => u.connectionId === connectionId && u.slot === slot)!;
        if (unit.owner === null || !live.includes(unit.owner)) {
          unit.owner = me;
          changed = true;
        }
      }
      for (const { connectionId, slot } of plan.create) {
        if (units.some((u) => u.connectionId === connectionId && u.slot === slot)) continue;
        units.push({ connectionId, slot, shared: true, owner: me });
        changed = true;
      }
    }
    avoid.clear();
    for (const [me, keys] of handedOver) avoid.set(me, keys);
    return changed;
  }

  it('converges, on random tables, to every lease held by a live instance and nobody above its fair share', () => {
    const instances = ['a', 'b', 'c', 'd', 'e'];
    const arbitrary = fc.record({
      connections: fc.array(
        fc.record({ shared: fc.boolean(), members: fc.nat(4), owners: fc.array(fc.constantFrom(...instances, null)) }),
        { maxLength: 12 },
      ),
      live: fc.subarray(instances, { minLength: 1 }),
      orders: fc.array(fc.array(fc.nat(100), { minLength: 5, maxLength: 5 }), { minLength: 30, maxLength: 30 }),
    });
    fc.assert(
      fc.property(arbitrary, ({ connections, live, orders }) => {
        const units: Unit[] = [];
        connections.forEach((c, i) => {
          for (let slot = 0; slot <= c.members; slot++)
            units.push({ connectionId: String(i + 1), slot, shared: c.shared, owner: c.owners[slot] ?? null });
        });
        // Rounds with the instances in a random order each, until nothing changes.
        let rounds = 0;
        const avoid = new Map<string, Set<string>>();
        for (const order of orders) {
          const turn = [...live].sort((x, y) => order[instances.indexOf(x)]! - order[instances.indexOf(y)]!);
          if (!round(units, live, turn, avoid) && [...avoid.values()].every((keys) => keys.size === 0)) break;
          rounds += 1;
        }
        expect(rounds).toBeLessThan(orders.length);
        // Settled: every lease held by a live instance, and one more round changes nothing.
        for (const u of units) expect(live).toContain(u.owner);
        expect(round(units, live, live, new Map())).toBe(false);
        const pools = new Map<string, Unit[]>();
        for (const u of units) {
          const name = !u.shared && u.slot === 0 ? '' : u.connectionId;
          pools.set(name, [...(pools.get(name) ?? []), u]);
        }
        for (const [name, pool] of pools) {
          const share = Math.ceil(pool.length / live.length);
          const counts = live.map((i) => pool.filter((u) => u.owner === i).length);
          // Nobody above the fair share (rounded up), and the counts one apart at most.
          expect(Math.max(...counts)).toBeLessThanOrEqual(share);
          expect(Math.max(...counts) - Math.min(...counts)).toBeLessThanOrEqual(1);
          // A shared connection has a member on every live instance.
          if (name !== '' && pool[0]!.shared) expect(Math.min(...counts)).toBeGreaterThanOrEqual(1);
        }
      }),
      { numRuns: process.env['BFG_FAULTS'] === 'long' ? 20_000 : 1_000 },
    );
  });
});

describe('leases in the database', () => {
  it('keeps a takeover out while the holder writes, and refuses the holder once taken over', async () => {
    const db = await database();
    const id = await activeConnection(db.sql);
    const [a] = await acquireLeases(db.sql, 'a', 60_000, [{ connectionId: id, slot: 0 }]);
    expect(a).toEqual({ connectionId: id, slot: 0, epoch: '1' });
    // Another instance may not take a lease that has not run out…
    expect(await acquireLeases(db.sql, 'b', 60_000, [{ connectionId: id, slot: 0 }])).toEqual([]);
    await db.sql`update mqtt_connection set lease_expires_at = now() - interval '1 second' where id = ${id}`;

    // …nor one whose holder is in a write transaction, expired or not: the fence's lock waits for it.
    let release!: () => void;
    const writing = new Promise<void>((resolve) => {
      release = resolve;
    });
    let fencedInside: Set<string> | undefined;
    const transaction = db.sql.begin(async (tx) => {
      fencedInside = await holdLeases(tx, 'a', [a!], 10_000);
      await writing;
    });
    await waitFor('the write transaction to hold the lease', () => fencedInside);
    expect([...fencedInside!]).toEqual([`${id}/0@1`]);
    expect(await acquireLeases(db.sql, 'b', 60_000, [{ connectionId: id, slot: 0 }])).toEqual([]);
    release();
    await transaction;

    const [b] = await acquireLeases(db.sql, 'b', 60_000, [{ connectionId: id, slot: 0 }]);
    expect(b).toEqual({ connectionId: id, slot: 0, epoch: '2' });
    // The old holder: nothing to renew, nothing to write.
    expect(await renewLeases(db.sql, 'a', 60_000, [a!])).toEqual(new Set());
    expect(await db.sql.begin((tx) => holdLeases(tx, 'a', [a!], 10_000))).toEqual(new Set());
    expect(await renewLeases(db.sql, 'b', 60_000, [b!])).toEqual(new Set([`${id}/0`]));
    const [row] = await db.sql<{ owner: string; epoch: string }[]>`
      select owner_instance as owner, lease_epoch::text as epoch from mqtt_connection where id = ${id}`;
    expect(row).toEqual({ owner: 'b', epoch: '2' });
  });

  it.each([
    ['a write transaction (its fence lock)', 'write'],
    ['a status transaction (its row lock)', 'status'],
  ] as const)('ends %s left idle by a paused holder, so that no lock outlives the lease', async (_what, kind) => {
    const db = await database();
    const id = await activeConnection(db.sql);
    const [a] = await acquireLeases(db.sql, 'a', 60_000, [{ connectionId: id, slot: 0 }]);
    await db.sql`update mqtt_connection set lease_expires_at = now() - interval '1 second' where id = ${id}`;
    let pid = 0;
    const started = performance.now();
    const transaction = db.sql.begin(async (tx) => {
      if (kind === 'write') {
        await holdLeases(tx, 'a', [a!], 300);
      } else {
        await boundIdleTransaction(tx, 300);
        await tx`update mqtt_connection set status = 'connected' where id = ${id}`;
      }
      pid = (await tx<{ pid: number }[]>`select pg_backend_pid() as pid`)[0]!.pid;
      // Expired, but taken by nobody while the holder's transaction has it.
      expect(await acquireLeases(db.sql, 'b', 60_000, [{ connectionId: id, slot: 0 }])).toEqual([]);
      // Idle in the transaction from here on, as a process stopped between two statements is.
      await new Promise(() => undefined);
    });
    await expect(transaction).rejects.toMatchObject({ code: 'CONNECTION_CLOSED' });
    const ended = performance.now() - started;
    expect(await db.sql`select 1 from pg_stat_activity where pid = ${pid}`).toHaveLength(0);
    expect(ended).toBeLessThan(5_000);
    expect(await acquireLeases(db.sql, 'b', 60_000, [{ connectionId: id, slot: 0 }])).toHaveLength(1);
  });
});

describe('instances sharing the connections', () => {
  it('spreads seven connections over three instances, and on a stop the others take its share at once', async () => {
    const db = await database();
    const mosquitto = await startMosquitto();
    cleanups.push(() => mosquitto.stop());
    const ids: string[] = [];
    for (let i = 0; i < 7; i++) ids.push(await activeConnection(db.sql, mosquitto.port));

    const owners = async () =>
      db.sql<{ id: string; owner: string | null; status: string }[]>`
        select id::text, owner_instance as owner, status from mqtt_connection order by id`;
    const spread = (rows: { owner: string | null; status: string }[]) => {
      const counts = new Map<string, number>();
      for (const r of rows)
        if (r.owner && r.status === 'connected') counts.set(r.owner, (counts.get(r.owner) ?? 0) + 1);
      return counts;
    };
    const instances = new Map<string, RunningIngestor>();
    const start = async (name: string) => {
      const run = await startIngestor(db.url, { BFG_INSTANCE_ID: name, BFG_LEASE_TAKEOVER_S: '10' });
      instances.set(name, run);
      cleanups.push(async () => {
        if (instances.delete(name)) await run.stop();
      });
    };

    await start('i1');
    await waitFor('i1 to hold all seven', owners, { accept: (rows) => spread(rows).get('i1') === 7 });
    const joined = performance.now();
    await start('i2');
    await start('i3');
    // ceil(7 / 3) = 3 at most, everything connected, each instance running what it holds.
    const balanced = await waitFor('the connections to spread over three instances', owners, {
      timeoutMs: 20_000,
      accept: (rows) => {
        const counts = spread(rows);
        const total = [...counts.values()].reduce((a, b) => a + b, 0);
        // Counts one apart: 3, 2, 2.
        return total === 7 && counts.size === 3 && Math.max(...counts.values()) - Math.min(...counts.values()) <= 1;
      },
    });
    console.info(
      `spread over three instances ${Math.round(performance.now() - joined)} ms after the others joined:`,
      Object.fromEntries(spread(balanced)),
    );
    for (const [name, run] of instances)
      expect(run.ingestor.supervisor.size).toBe(balanced.filter((r) => r.owner === name).length);

    // A stop releases after its last commit; the two others take its share at once, long before
    // a lease (6 s here) could have run out.
    const i1 = instances.get('i1')!;
    instances.delete('i1');
    const handedOver = balanced.filter((r) => r.owner === 'i1').map((r) => r.id);
    const stopped = performance.now();
    const stopping = i1.stop();
    const after = await waitFor(`i1's ${handedOver.length} connection(s) to run elsewhere`, owners, {
      accept: (rows) => rows.every((r) => r.owner !== null && r.owner !== 'i1' && r.status === 'connected'),
    });
    const takeover = performance.now() - stopped;
    await stopping;
    console.info(
      `i1 stopped: its ${handedOver.length} connection(s) connected elsewhere ${Math.round(takeover)} ms later`,
    );
    const counts = spread(after);
    expect([...counts.keys()].sort()).toEqual(['i2', 'i3']);
    expect([...counts.values()].every((n) => n <= 4)).toBe(true);
    expect(takeover).toBeLessThan(3_000);
  });

  it('a shared connection gets a member session per instance, and when it stops being shared the extra member unsubscribes', async () => {
    const db = await database();
    const mosquitto = await startMosquitto();
    cleanups.push(() => mosquitto.stop());
    const site = await newSite(db.sql);
    const [conn] = await db.sql<{ id: string; clientId: string }[]>`
      insert into mqtt_connection (site_id, host, port, is_active, share_group)
      values (${site.id}, '127.0.0.1', ${mosquitto.port}, true, 'bfg') returning id::text as id, client_id as "clientId"`;
    const id = conn!.id;
    for (const name of ['s1', 's2']) {
      const run = await startIngestor(db.url, { BFG_INSTANCE_ID: name, BFG_LEASE_TAKEOVER_S: '10' });
      cleanups.push(() => run.stop());
    }
    const sessions = () =>
      db.sql<{ slot: number; owner: string | null; status: string; filters: string[] }[]>`
        select 0 as slot, owner_instance as owner, status, session_filters as filters from mqtt_connection where id = ${id}
        union all
        select slot, owner_instance, status, session_filters from mqtt_connection_member where connection_id = ${id}
        order by 1`;
    const shared = [`$share/bfg/${site.slug}/#`];
    const both = await waitFor('a member session on each instance, both subscribed', sessions, {
      timeoutMs: 20_000,
      accept: (rows) =>
        rows.length === 2 &&
        new Set(rows.map((r) => r.owner)).size === 2 &&
        rows.every((r) => r.status === 'connected' && JSON.stringify(r.filters) === JSON.stringify(shared)),
    });
    expect(both.map((r) => r.slot)).toEqual([0, 1]);

    await db.sql`update mqtt_connection set share_group = null where id = ${id}`;
    const after = await waitFor('member 0 subscribed plainly, member 1 unsubscribed', sessions, {
      accept: (rows) =>
        JSON.stringify(rows.map((r) => r.filters)) === JSON.stringify([[`${site.slug}/#`], []]) &&
        rows.every((r) => r.status === 'connected'),
    });
    // Still held (it drains what its broker session kept), by the same instances.
    expect(after.map((r) => r.owner)).toEqual(both.map((r) => r.owner));
  });
});
