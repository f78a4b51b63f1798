-- Realtime volume per site is bounded, whatever the ingest rate (issue 9).
--
-- Hosted Supabase meters Realtime messages per project per second (every message to every
-- subscriber counts) and closes channels past the quota. Until now a statement trigger sent
-- gateway_changed, datalogger_changed and sensor_changed on every ingestor batch (one site with 120
-- sensors: 79 messages/s per open dashboard at 100 MQTT messages/s, 616/s at 2,000), and every
-- discovered_topic / mqtt_parsing_log row written went out through postgres_changes.
--
-- Now a write only records WHAT changed; a flusher sends HOW IT IS NOW, at most a few times a
-- second per site:
--
--   1. Statement triggers on gateway, datalogger and sensor put the ids of the rows whose shown
--      columns changed (private.shown_columns: what the pages' row schemas in web/src/lib/rows.ts
--      read) into private.site_change_outbox; on discovered_topic and mqtt_parsing_log they put one
--      nudge per connection (entity 'topics' / 'parsing_log', entity_id = the connection). Each
--      also does pg_notify('site_changes:pending', ''): a nudge, the table is the truth. Whoever
--      writes (the ingestor, Studio, psql) triggers the same thing.
--   2. private.send_site_changes(min_interval_ms), run by the ingestor's SiteChangeBroadcaster on
--      each nudge, on its own timer and on a sweep, sends for every site with pending entries whose
--      clock (private.site_broadcast_clock) allows it ONE message with the current rows, stamps the
--      clock and says when the next pending site is due. A first change after a quiet period goes
--      out at once; changes within the interval wait for the next message, which carries their
--      latest state. So a site gets at most 1000 / min_interval_ms messages a second, however fast
--      its devices report (a site with more than 200 changed entries in one interval gets its
--      message split, see below).
--
-- The message: event `changes` on the private topic `site:<id>` (Realtime Authorization: the
-- site's members and admins; policy in 20261127000600_realtime.sql). Payload, validated with zod by
-- the web (web/src/lib/live/messages.ts); arrays may be empty, realtime.send adds "id":
--
--   {"gateways":    [row…],   "dataloggers": [row…],   "sensors": [row…],
--    "removed":     {"gateways": [id…], "dataloggers": [id…], "sensors": [id…]},
--    "topics":      [connection_id…],
--    "parsing_log": [connection_id…]}
--
-- Rows carry only the shown columns. A device that no longer exists in the site (deleted, or moved
-- to another site) is in "removed". "topics" / "parsing_log" name the connections whose discovered
-- topics / parsing log changed; those pages reload their view instead of following each row.
-- A message carries at most 200 rows and ids; more are split over several messages sent together
-- (Supabase's smallest broadcast payload limit is the Free plan's 256 KB; a sensor row is ~250
-- bytes, so 200 rows leave room for rows four times that size).
--
-- postgres_changes keeps only tables whose write rate does not follow the message rate: site,
-- mqtt_topic (admin edits), mqtt_connection (status transitions; last_message_at is written once
-- per BFG_STATUS_FLUSH_MS per connection, not per message: ingestor/src/status-reporter.ts) and
-- mqtt_connection_log (one row per transition). discovered_topic (a write per topic per
-- BFG_DISCOVERY_FLUSH_MS) and mqtt_parsing_log (a write per failing batch) leave the publication.

alter publication supabase_realtime drop table public.discovered_topic, public.mqtt_parsing_log;

drop trigger gateway_broadcast_insert on public.gateway;
drop trigger gateway_broadcast_update on public.gateway;
drop trigger gateway_broadcast_delete on public.gateway;
drop trigger datalogger_broadcast_insert on public.datalogger;
drop trigger datalogger_broadcast_update on public.datalogger;
drop trigger datalogger_broadcast_delete on public.datalogger;
drop trigger sensor_broadcast_insert on public.sensor;
drop trigger sensor_broadcast_update on public.sensor;
drop trigger sensor_broadcast_delete on public.sensor;
drop function private.broadcast_device_changes();

-- Unlogged: an entry matters only while Postgres is up. After a crash every Realtime client
-- rejoins and reloads its snapshot (Realtime replays nothing), so entries lost with the crash lose
-- nothing a page would show, and the ingestor's batches write no WAL for them.
-- No foreign key to site: deleting a site cascades to its devices, whose delete triggers record
-- entries for the site being deleted in the same statement (send_site_changes drops those).
create unlogged table private.site_change_outbox (
  site_id bigint not null,
  -- gateway, datalogger, sensor: entity_id is the device; topics, parsing_log: the connection.
  entity text not null check (entity in ('gateway', 'datalogger', 'sensor', 'topics', 'parsing_log')),
  entity_id bigint not null,
  -- The oldest unsent change of this entry (how far the broadcasts lag: now() - min(pending_since)).
  pending_since timestamptz not null default now(),
  primary key (site_id, entity, entity_id)
);
comment on table private.site_change_outbox is
  'What changed per site since its last `changes` broadcast (ids only; the message carries the rows as they are when it is sent). Filled by triggers, emptied by private.send_site_changes().';

create unlogged table private.site_broadcast_clock (
  site_id bigint primary key,
  last_sent_at timestamptz
);
comment on table private.site_broadcast_clock is
  'When each site''s last `changes` broadcast was sent; private.send_site_changes() sends again only after its interval.';

alter table private.site_change_outbox enable row level security;
alter table private.site_broadcast_clock enable row level security;
revoke all on private.site_change_outbox, private.site_broadcast_clock from public, anon, authenticated;
grant select on private.site_change_outbox, private.site_broadcast_clock to service_role;

-- The columns of each device table a page shows: the keys of gatewayRow, dataloggerRow and
-- sensorRow in web/src/lib/rows.ts (tests/integration/realtime-sql.test.ts checks they match).
-- A change to any other column (updated_at, first_seen_at, uptime_s, status_at, …) sends nothing.
create function private.shown_columns(p_entity text) returns text[]
language sql immutable
set search_path = ''
as $$
  select case p_entity
    when 'gateway' then array['id', 'site_id', 'ident', 'name', 'online', 'firmware', 'rssi_dbm', 'last_seen_at']
    when 'datalogger' then array['id', 'site_id', 'gateway_id', 'ident', 'name', 'model', 'interval_s', 'last_seen_at']
    when 'sensor' then array['id', 'site_id', 'datalogger_id', 'ident', 'name', 'kind', 'unit', 'last_value', 'last_value_at', 'last_quality']
  end
$$;

-- A device row (to_jsonb) narrowed to its shown columns.
create function private.as_shown(p_entity text, p_row jsonb) returns jsonb
language sql immutable
set search_path = ''
as $$
  select coalesce(jsonb_object_agg(e.key, e.value), '{}'::jsonb)
  from jsonb_each(p_row) as e
  where e.key = any (private.shown_columns(p_entity))
$$;

-- Statement trigger of gateway, datalogger and sensor (tg_table_name is the entity).
--
-- ON CONFLICT DO UPDATE, not DO NOTHING: the update is a no-op, but it row-locks the entry until
-- this transaction ends. send_site_changes takes entries with FOR UPDATE SKIP LOCKED, so it never
-- takes an entry whose change is not committed yet — with DO NOTHING it could take (and delete) an
-- entry this transaction merged into, read the device as it was before this transaction, and the
-- change would never be sent. SKIP LOCKED also means the flusher never waits for a writer, so the
-- two cannot deadlock; a writer waits at most for a flusher's short transaction.
-- Security definer: an admin (authenticated) deleting a site cascades here and must be able to
-- record it.
create function private.record_device_changes() returns trigger
language plpgsql security definer
set search_path = ''
as $$
declare
  recorded bigint;
begin
  if tg_op = 'INSERT' then
    insert into private.site_change_outbox (site_id, entity, entity_id)
    select n.site_id, tg_table_name, n.id from new_rows n
    on conflict (site_id, entity, entity_id) do update set pending_since = private.site_change_outbox.pending_since;
  elsif tg_op = 'UPDATE' then
    insert into private.site_change_outbox (site_id, entity, entity_id)
    select n.site_id, tg_table_name, n.id
    from new_rows n join old_rows o on o.id = n.id
    where private.as_shown(tg_table_name, to_jsonb(n)) is distinct from private.as_shown(tg_table_name, to_jsonb(o))
    union
    -- A device moved to another site leaves the old one (sent there as removed).
    select o.site_id, tg_table_name, o.id
    from new_rows n join old_rows o on o.id = n.id
    where o.site_id <> n.site_id
    on conflict (site_id, entity, entity_id) do update set pending_since = private.site_change_outbox.pending_since;
  else
    insert into private.site_change_outbox (site_id, entity, entity_id)
    select o.site_id, tg_table_name, o.id from old_rows o
    on conflict (site_id, entity, entity_id) do update set pending_since = private.site_change_outbox.pending_since;
  end if;
  get diagnostics recorded = row_count;
  if recorded > 0 then
    perform pg_notify('site_changes:pending', '');
  end if;
  return null;
end
$$;
revoke all on function private.record_device_changes() from public;

-- Statement trigger of discovered_topic and mqtt_parsing_log: one nudge per connection written to.
-- Rows of a connection being deleted find no connection here and record nothing (the pages learn
-- of the deletion from mqtt_connection's postgres_changes).
create function private.record_connection_nudges() returns trigger
language plpgsql security definer
set search_path = ''
as $$
declare
  nudge text := case tg_table_name when 'discovered_topic' then 'topics' else 'parsing_log' end;
  recorded bigint;
begin
  if tg_op = 'DELETE' then
    insert into private.site_change_outbox (site_id, entity, entity_id)
    select c.site_id, nudge, c.id from public.mqtt_connection c
    where c.id in (select o.connection_id from old_rows o)
    on conflict (site_id, entity, entity_id) do update set pending_since = private.site_change_outbox.pending_since;
  else
    insert into private.site_change_outbox (site_id, entity, entity_id)
    select c.site_id, nudge, c.id from public.mqtt_connection c
    where c.id in (select n.connection_id from new_rows n)
    on conflict (site_id, entity, entity_id) do update set pending_since = private.site_change_outbox.pending_since;
  end if;
  get diagnostics recorded = row_count;
  if recorded > 0 then
    perform pg_notify('site_changes:pending', '');
  end if;
  return null;
end
$$;
revoke all on function private.record_connection_nudges() from public;

-- Transition tables allow one event per trigger, hence three triggers per table.
create trigger gateway_record_insert after insert on public.gateway
  referencing new table as new_rows for each statement execute function private.record_device_changes();
create trigger gateway_record_update after update on public.gateway
  referencing old table as old_rows new table as new_rows for each statement execute function private.record_device_changes();
create trigger gateway_record_delete after delete on public.gateway
  referencing old table as old_rows for each statement execute function private.record_device_changes();

create trigger datalogger_record_insert after insert on public.datalogger
  referencing new table as new_rows for each statement execute function private.record_device_changes();
create trigger datalogger_record_update after update on public.datalogger
  referencing old table as old_rows new table as new_rows for each statement execute function private.record_device_changes();
create trigger datalogger_record_delete after delete on public.datalogger
  referencing old table as old_rows for each statement execute function private.record_device_changes();

create trigger sensor_record_insert after insert on public.sensor
  referencing new table as new_rows for each statement execute function private.record_device_changes();
create trigger sensor_record_update after update on public.sensor
  referencing old table as old_rows new table as new_rows for each statement execute function private.record_device_changes();
create trigger sensor_record_delete after delete on public.sensor
  referencing old table as old_rows for each statement execute function private.record_device_changes();

create trigger discovered_topic_record_insert after insert on public.discovered_topic
  referencing new table as new_rows for each statement execute function private.record_connection_nudges();
create trigger discovered_topic_record_update after update on public.discovered_topic
  referencing old table as old_rows new table as new_rows for each statement execute function private.record_connection_nudges();
create trigger discovered_topic_record_delete after delete on public.discovered_topic
  referencing old table as old_rows for each statement execute function private.record_connection_nudges();

create trigger mqtt_parsing_log_record_insert after insert on public.mqtt_parsing_log
  referencing new table as new_rows for each statement execute function private.record_connection_nudges();
create trigger mqtt_parsing_log_record_update after update on public.mqtt_parsing_log
  referencing old table as old_rows new table as new_rows for each statement execute function private.record_connection_nudges();
create trigger mqtt_parsing_log_record_delete after delete on public.mqtt_parsing_log
  referencing old table as old_rows for each statement execute function private.record_connection_nudges();

-- Sends the pending changes of every site whose clock allows it (never sent, or last sent at least
-- p_min_interval_ms ago): one `changes` message (more past 200 entries) with the rows as they are
-- now, then deletes those entries and stamps the clock. Returns the milliseconds until the next
-- site with pending entries is due (0: due now, but its entries or clock were busy — a writer's
-- open transaction, which nudges again when it commits, or another flusher), or null when nothing
-- is pending. The delay, not a timestamp, so the caller's clock does not matter.
--
-- Several flushers (ingestor instances) may run at once: each site's clock row is locked with
-- FOR UPDATE SKIP LOCKED, so one site is handled by one flusher at a time and nothing is sent twice.
create function private.send_site_changes(p_min_interval_ms integer) returns integer
language plpgsql security definer
set search_path = ''
as $$
declare
  min_interval interval := make_interval(secs => greatest(p_min_interval_ms, 0) / 1000.0);
  site bigint;
  last_sent timestamptz;
  locked boolean;
  gateways bigint[];
  dataloggers bigint[];
  sensors bigint[];
  topics bigint[];
  parsing_log bigint[];
  message jsonb;
  next_due_ms integer;
begin
  for site in
    select o.site_id
    from (select distinct x.site_id from private.site_change_outbox x) o
    left join private.site_broadcast_clock k on k.site_id = o.site_id
    where k.last_sent_at is null or k.last_sent_at <= clock_timestamp() - min_interval
    order by o.site_id
  loop
    insert into private.site_broadcast_clock (site_id) values (site) on conflict (site_id) do nothing;
    select true, k.last_sent_at into locked, last_sent
    from private.site_broadcast_clock k where k.site_id = site
    for update skip locked;
    -- Another flusher has this site, or has just sent for it.
    continue when locked is null or last_sent > clock_timestamp() - min_interval;

    -- Take the committed entries; entries of transactions still open stay for the next message.
    with taken as (
      delete from private.site_change_outbox o
      using (select x.entity, x.entity_id from private.site_change_outbox x where x.site_id = site for update skip locked) t
      where o.site_id = site and o.entity = t.entity and o.entity_id = t.entity_id
      returning o.entity, o.entity_id
    )
    select array_agg(entity_id) filter (where entity = 'gateway'),
           array_agg(entity_id) filter (where entity = 'datalogger'),
           array_agg(entity_id) filter (where entity = 'sensor'),
           array_agg(entity_id) filter (where entity = 'topics'),
           array_agg(entity_id) filter (where entity = 'parsing_log')
    into gateways, dataloggers, sensors, topics, parsing_log
    from taken;

    if not exists (select 1 from public.site s where s.id = site) then
      delete from private.site_broadcast_clock k where k.site_id = site;
      continue;
    end if;

    -- The rows are read by this later statement, so with a snapshot that includes every
    -- transaction whose entries were just taken (a statement's snapshot is taken when it starts).
    -- Parents before children, so a split message never brings a sensor before its datalogger.
    for message in
      with items as (
        select 1 as ord, 'gateways' as kind, g.id, private.as_shown('gateway', to_jsonb(g)) as item
        from public.gateway g where g.id = any (gateways) and g.site_id = site
        union all
        select 2, 'dataloggers', d.id, private.as_shown('datalogger', to_jsonb(d))
        from public.datalogger d where d.id = any (dataloggers) and d.site_id = site
        union all
        select 3, 'sensors', s.id, private.as_shown('sensor', to_jsonb(s))
        from public.sensor s where s.id = any (sensors) and s.site_id = site
        union all
        select 4, 'removed gateways', x.id, to_jsonb(x.id) from unnest(gateways) as x (id)
        where not exists (select 1 from public.gateway g where g.id = x.id and g.site_id = site)
        union all
        select 5, 'removed dataloggers', x.id, to_jsonb(x.id) from unnest(dataloggers) as x (id)
        where not exists (select 1 from public.datalogger d where d.id = x.id and d.site_id = site)
        union all
        select 6, 'removed sensors', x.id, to_jsonb(x.id) from unnest(sensors) as x (id)
        where not exists (select 1 from public.sensor s where s.id = x.id and s.site_id = site)
        union all
        select 7, 'topics', x.id, to_jsonb(x.id) from unnest(topics) as x (id)
        union all
        select 8, 'parsing_log', x.id, to_jsonb(x.id) from unnest(parsing_log) as x (id)
      ),
      chunked as (
        select i.ord, i.kind, i.id, i.item, (row_number() over (order by i.ord, i.id) - 1) / 200 as chunk from items i
      )
      select jsonb_build_object(
        'gateways', coalesce(jsonb_agg(c.item order by c.id) filter (where c.kind = 'gateways'), '[]'::jsonb),
        'dataloggers', coalesce(jsonb_agg(c.item order by c.id) filter (where c.kind = 'dataloggers'), '[]'::jsonb),
        'sensors', coalesce(jsonb_agg(c.item order by c.id) filter (where c.kind = 'sensors'), '[]'::jsonb),
        'removed', jsonb_build_object(
          'gateways', coalesce(jsonb_agg(c.item order by c.id) filter (where c.kind = 'removed gateways'), '[]'::jsonb),
          'dataloggers', coalesce(jsonb_agg(c.item order by c.id) filter (where c.kind = 'removed dataloggers'), '[]'::jsonb),
          'sensors', coalesce(jsonb_agg(c.item order by c.id) filter (where c.kind = 'removed sensors'), '[]'::jsonb)),
        'topics', coalesce(jsonb_agg(c.item order by c.id) filter (where c.kind = 'topics'), '[]'::jsonb),
        'parsing_log', coalesce(jsonb_agg(c.item order by c.id) filter (where c.kind = 'parsing_log'), '[]'::jsonb))
      from chunked c
      group by c.chunk
      order by c.chunk
    loop
      perform realtime.send(message, 'changes', 'site:' || site, true);
      -- Stamped per message sent, so the interval counts from the last one.
      update private.site_broadcast_clock k set last_sent_at = clock_timestamp() where k.site_id = site;
    end loop;
  end loop;

  select ceil(extract(epoch from min(greatest(coalesce(k.last_sent_at + min_interval, clock_timestamp()), clock_timestamp()) - clock_timestamp())) * 1000)::integer
  into next_due_ms
  from (select distinct x.site_id from private.site_change_outbox x) o
  left join private.site_broadcast_clock k on k.site_id = o.site_id;
  return next_due_ms;
end
$$;
comment on function private.send_site_changes(integer) is
  'Sends each due site''s pending changes as one `changes` broadcast on site:<id> (at most one per p_min_interval_ms per site); returns ms until the next pending site is due, or null.';
revoke all on function private.send_site_changes(integer) from public;
grant execute on function private.send_site_changes(integer) to service_role;

revoke all on function private.shown_columns(text), private.as_shown(text, jsonb) from public;
