import { leaseKey, type LeaseUnit } from './sql/leases.ts';

export interface LeasePlanInput {
  /** This instance (BFG_INSTANCE_ID). */
  me: string;
  /** Every lease of the active connections, as the database says now. */
  units: readonly LeaseUnit[];
  /** Instances whose heartbeat has not expired (this one is counted whether listed or not). */
  live: readonly string[];
  /** Keys (`leaseKey`) of the leases this instance holds, with the epoch it was granted. */
  held: ReadonlySet<string>;
  /**
   * Whether leases that expired under an owner may be taken (released ones always may). False for
   * a moment after this instance's own database outage: the others could not renew either, and get
   * one round to do so before their connections are taken from them.
   */
  takeExpired: boolean;
  /** Keys this instance handed over a moment ago: not taken back (someone with room takes them). */
  avoid?: ReadonlySet<string>;
}

export interface LeasePlan {
  /** Leases to try to take (the database decides: someone else may be quicker). */
  acquire: { connectionId: string; slot: number }[];
  /** Member sessions to add to a shared connection (more live instances than sessions). */
  create: { connectionId: string; slot: number }[];
  /** Leases to hand over (written, acknowledged, disconnected, then released): more than a fair share. */
  shed: string[];
}

/**
 * What one instance should take and give up, so that the work spreads over the live instances.
 * Every instance runs this on the same table, on every round (each lease renewal, and each
 * NOTIFY of a release or a new instance):
 *
 * - Unshared connections are one pool: with N of them and L live instances, the fair share is
 *   ceil(N / L). An instance below it takes free leases (released, never held, or expired) up to
 *   it — all it can in one round, so a dead instance's connections are taken within one round.
 *   One above it hands the excess over, but only when another live instance has room (is below
 *   the share), so nothing is given up for nobody; and one holding two or more than the instance
 *   with the fewest hands one over. What it hands over it does not take back for a while
 *   (`avoid`), so the one with room takes it.
 * - Each shared connection is a pool of its own: its member sessions (slot 0 = the connection
 *   row, then mqtt_connection_member), spread the same way. An instance without a member of it
 *   takes a free one, or adds one when there are fewer members than live instances; so every
 *   instance subscribes (the "two or more than the fewest" rule hands a second member to an
 *   instance with none), and a dead instance's member — whose broker session keeps receiving its
 *   share of the messages — is taken over by a live one.
 * - Members of a connection that is no longer shared keep being held (they unsubscribe and drain
 *   what their broker sessions still hold), spread the same way, but none is added.
 *
 * So after a few rounds every lease is held, and the counts of a pool differ by one at most
 * (tests/integration/leases.test.ts simulates random tables and orders of turns to show it).
 */
export function planLeases(input: LeasePlanInput): LeasePlan {
  const { me, held } = input;
  const avoid = input.avoid ?? new Set<string>();
  const live = new Set([...input.live, me]);
  const plan: LeasePlan = { acquire: [], create: [], shed: [] };

  const pools = new Map<string, { units: LeaseUnit[]; creatable: boolean }>();
  for (const unit of input.units) {
    const name = !unit.shared && unit.slot === 0 ? '' : unit.connectionId;
    let pool = pools.get(name);
    if (!pool) {
      pool = { units: [], creatable: name !== '' && unit.shared };
      pools.set(name, pool);
    }
    pool.units.push(unit);
  }

  for (const { units, creatable } of pools.values()) {
    const share = Math.ceil(units.length / live.size);
    const mine = units.filter((u) => held.has(leaseKey(u.connectionId, u.slot)));
    const counts = new Map<string, number>();
    for (const u of units) {
      if (u.claimable || u.owner === null || u.owner === me || !live.has(u.owner)) continue;
      counts.set(u.owner, (counts.get(u.owner) ?? 0) + 1);
    }
    const others = [...live].filter((i) => i !== me).map((i) => counts.get(i) ?? 0);
    const fewest = Math.min(...others);
    // While free leases remain, the others take those first. Otherwise: above the share while
    // another has room, down to the share; two or more above the instance with the fewest, one
    // (whoever has room takes it; this instance does not take it back soon).
    const anyFree = units.some((u) => u.claimable && !held.has(leaseKey(u.connectionId, u.slot)));
    let shed = 0;
    if (!anyFree && mine.length > share && others.some((n) => n < share)) shed = mine.length - share;
    else if (!anyFree && mine.length >= fewest + 2) shed = 1;
    if (shed > 0) {
      for (const u of mine.slice(mine.length - shed)) plan.shed.push(leaseKey(u.connectionId, u.slot));
      continue;
    }
    if (mine.length >= share) continue;
    const free = units.filter((u) => {
      const key = leaseKey(u.connectionId, u.slot);
      return u.claimable && !held.has(key) && !avoid.has(key) && (input.takeExpired || u.owner === null);
    });
    for (const u of free.slice(0, share - mine.length))
      plan.acquire.push({ connectionId: u.connectionId, slot: u.slot });
    if (creatable && mine.length === 0 && free.length === 0 && units.length < live.size) {
      const connectionId = units[0]!.connectionId;
      plan.create.push({ connectionId, slot: Math.max(...units.map((u) => u.slot)) + 1 });
    }
  }
  return plan;
}
