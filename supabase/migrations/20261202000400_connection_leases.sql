-- Several ingestor instances share the work (issue 14): connection leases in Postgres, fencing
-- tokens, a registry of live instances, and the member sessions of shared connections.
--
-- Lease. Each active connection is held by one instance at a time: mqtt_connection.owner_instance
-- and lease_expires_at (20261127000200) are written by the holder, which renews lease_expires_at =
-- now() + ttl every few seconds (BFG_LEASE_TAKEOVER_S: ttl = 0.6 of it, a renewal every 0.2). An
-- instance takes a connection whose owner is null (released) or whose lease has expired; every
-- time clock is the database's now(), so the instances' own clocks never matter.
--
-- Fencing. lease_epoch is incremented by every acquisition. The holder's session carries the epoch
-- it was granted; every write batch calls private.hold_leases(), which takes a shared advisory lock
-- per connection in the batch and then checks owner and epoch in a fresh snapshot; an
-- acquisition takes the same lock exclusively with pg_try_advisory_xact_lock and skips a connection
-- whose holder is writing. So a batch either commits before the takeover or sees the new epoch
-- and writes nothing of that connection (its messages are not acknowledged, and the broker gives
-- them to the new owner). A holder paused while in a write transaction cannot block a takeover:
-- hold_leases sets idle_in_transaction_session_timeout for the transaction (less than the ttl),
-- so Postgres ends that session and its locks before the lease can expire.
--
-- Shared connections. With share_group set, every instance subscribes with
-- `$share/<group>/<filter>`, each through a broker session of its own. Brokers queue a shared
-- subscription's messages for members that are away (Mosquitto does, round robin), so a member
-- session must never be left behind by a dead instance: member sessions are leased too. Slot 0 is
-- the connection row itself (its client_id and session_filters); slots 1, 2, … are rows of
-- mqtt_connection_member (client id `<client_id>-<slot>`), created when there are more live
-- instances than slots and taken over like connections when their holder dies.

alter table public.mqtt_connection
  add column lease_epoch bigint not null default 0;
comment on column public.mqtt_connection.lease_epoch is
  'Fencing token: incremented by every acquisition of the lease. Writes for the connection are accepted only from owner_instance with this epoch.';
comment on column public.mqtt_connection.owner_instance is
  'Observed by the ingestor: the instance (BFG_INSTANCE_ID) holding the connection''s lease, or null (released, or never held).';
comment on column public.mqtt_connection.lease_expires_at is
  'Until when owner_instance holds the lease (renewed every few seconds); past it, another instance may take the connection over.';

-- Live ingestor instances: each upserts its row with every lease renewal and deletes it when it
-- stops. How many are live decides each one's fair share of the connections.
create table public.ingestor_instance (
  id text primary key check (length(id) between 1 and 100),
  started_at timestamptz not null default now(),
  heartbeat_at timestamptz not null default now(),
  -- Counted as live until then (now() + ttl at each heartbeat).
  lease_expires_at timestamptz not null
);
comment on table public.ingestor_instance is
  'Ingestor instances that are running (or died less than a lease ago): written by each instance with every lease renewal, deleted when it stops.';

create table public.mqtt_connection_member (
  connection_id bigint not null references public.mqtt_connection (id) on delete cascade,
  -- 1, 2, …: slot 0 is the connection row itself.
  slot integer not null check (slot between 1 and 1000),
  owner_instance text,
  lease_expires_at timestamptz,
  lease_epoch bigint not null default 0,
  -- As mqtt_connection.session_filters, for this member's broker session.
  session_filters text[] not null default '{}',
  status text not null default 'disconnected'
    check (status in ('disconnected', 'connecting', 'connected', 'reconnecting', 'error', 'disabled')),
  status_detail text,
  status_changed_at timestamptz not null default now(),
  last_connected_at timestamptz,
  created_at timestamptz not null default now(),
  primary key (connection_id, slot)
);
comment on table public.mqtt_connection_member is
  'Member sessions 1, 2, … of a shared connection (share_group set; member 0 is the connection row): each is a broker session of its own (client id <client_id>-<slot>), leased by one ingestor instance like a connection. Observed state, written by the ingestor.';

create function private.stamp_member_status() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if new.status is distinct from old.status then
    new.status_changed_at := now();
  end if;
  return new;
end
$$;
create trigger mqtt_connection_member_status before update on public.mqtt_connection_member
  for each row execute function private.stamp_member_status();

-- The advisory lock key of a lease (connection, slot): 64 bits of a hash, so it cannot collide
-- with graphile-worker's or another application's small integer keys in practice; a collision
-- would only make one of the two wait, never let a write through.
create function private.lease_lock_key(p_connection_id bigint, p_slot integer) returns bigint
language sql immutable parallel safe
set search_path = ''
as $$
  select hashtextextended('bfg.lease:' || p_connection_id || ':' || p_slot, 0)
$$;

-- The fence of a write transaction: of the given leases (connection, slot, epoch), the ones
-- p_instance still holds (with that epoch). Locks first (shared, until the end of the transaction), then checks in
-- a new snapshot (a volatile function takes one per statement), so a takeover that committed
-- while this waited for its lock is seen. p_idle_timeout_ms bounds how long this transaction may
-- sit idle holding the locks (a paused or vanished ingestor).
create function private.hold_leases(
  p_instance text,
  p_connection_ids bigint[],
  p_slots integer[],
  p_epochs bigint[],
  p_idle_timeout_ms integer
) returns table (connection_id bigint, slot integer, epoch bigint)
language plpgsql volatile
set search_path = ''
as $$
begin
  perform set_config('idle_in_transaction_session_timeout', p_idle_timeout_ms::text, true);
  perform pg_advisory_xact_lock_shared(private.lease_lock_key(t.id, t.slot))
  from unnest(p_connection_ids, p_slots) as t (id, slot);
  return query
    select t.id, t.slot, t.epoch
    from unnest(p_connection_ids, p_slots, p_epochs) as t (id, slot, epoch)
    where (t.slot = 0 and exists (
             select 1 from public.mqtt_connection c
             where c.id = t.id and c.owner_instance = p_instance and c.lease_epoch = t.epoch))
       or (t.slot > 0 and exists (
             select 1 from public.mqtt_connection_member m
             where m.connection_id = t.id and m.slot = t.slot and m.owner_instance = p_instance
               and m.lease_epoch = t.epoch));
end
$$;
comment on function private.hold_leases(text, bigint[], integer[], bigint[], integer) is
  'Called first in each ingestor write transaction: locks the leases of the batch against takeover until commit and returns those the instance still holds (owner and epoch unchanged).';

revoke all on function private.lease_lock_key(bigint, integer) from public;
revoke all on function private.hold_leases(text, bigint[], integer[], bigint[], integer) from public;
revoke all on function private.stamp_member_status() from public;

-- Who may read: admins see the instances; members see the member sessions of their sites'
-- connections, as they see the connection itself. Only the ingestor (a role bypassing RLS)
-- writes either.
alter table public.ingestor_instance enable row level security;
alter table public.mqtt_connection_member enable row level security;
create policy "admins read ingestor instances" on public.ingestor_instance
  for select to authenticated using ((select private.is_admin()));
create policy "members read their connections' member sessions" on public.mqtt_connection_member
  for select to authenticated
  using (connection_id = any ((select private.readable_connection_ids())::bigint[]));
revoke all on public.ingestor_instance, public.mqtt_connection_member from anon, authenticated;
grant select on public.ingestor_instance, public.mqtt_connection_member to authenticated;
grant all on public.ingestor_instance, public.mqtt_connection_member to service_role;
