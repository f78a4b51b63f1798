-- Jobs (issue 12), run by graphile-worker inside the ingestor (BFG_WORKER) or as `npm run worker`:
--
--   backfill   replays archived messages when a topic pattern starts matching them;
--   retention  keeps sensor_reading partitions ahead, drops whole partitions past their retention,
--              prunes logs and the archive in batches;
--   staleness  marks devices offline when they stop reporting (the write path marks them online).
--
-- graphile-worker installs its own schema (graphile_worker) the first time a worker starts; these
-- migrations do not depend on it existing. Where they enqueue (the mqtt_topic trigger) they call
-- graphile_worker.add_job when it is there and otherwise leave the request in backfill_run, which a
-- worker enqueues when it starts (ingestor/src/jobs/worker.ts). So a pattern saved before any
-- worker ever ran is still replayed, and nothing here fails on a database without the worker.

-- ---------------------------------------------------------------------------------------------
-- Presence: whether a device reports within its expected interval. A column SQL and Studio users
-- can query; the staleness job sets 'offline', the ingestor's write path sets 'online' again.
-- (gateway.online stays what the gateway itself last said, its last will included.)

alter table public.gateway
  add column presence text not null default 'online' constraint gateway_presence_check check (presence in ('online', 'offline')),
  add column presence_changed_at timestamptz;
alter table public.datalogger
  add column presence text not null default 'online' constraint datalogger_presence_check check (presence in ('online', 'offline')),
  add column presence_changed_at timestamptz;
alter table public.sensor
  add column presence text not null default 'online' constraint sensor_presence_check check (presence in ('online', 'offline')),
  add column presence_changed_at timestamptz;

comment on column public.gateway.presence is
  'online | offline: offline when the gateway sent nothing for 300 s (the staleness job); online again with its next message.';
comment on column public.datalogger.presence is
  'online | offline: offline after 3 × interval_s (60 s when unknown) without data (the staleness job); online again with its next message.';
comment on column public.sensor.presence is
  'online | offline: offline after 3 × its datalogger''s interval_s without a value (the staleness job); online again with its next value.';

-- The job looks only at rows still online, oldest report first.
create index gateway_presence_online_idx on public.gateway (last_seen_at) where presence = 'online';
create index datalogger_presence_online_idx on public.datalogger (last_seen_at) where presence = 'online';
create index sensor_presence_online_idx on public.sensor (datalogger_id, last_value_at) where presence = 'online';

-- Presence is shown, so its changes go out in the per-site `changes` broadcast like the rest.
create or replace function private.shown_columns(p_entity text) returns text[]
language sql immutable
set search_path = ''
as $$
  select case p_entity
    when 'gateway' then array['id', 'site_id', 'ident', 'name', 'online', 'firmware', 'rssi_dbm', 'last_seen_at', 'presence']
    when 'datalogger' then array['id', 'site_id', 'gateway_id', 'ident', 'name', 'model', 'interval_s', 'last_seen_at', 'presence']
    when 'sensor' then array['id', 'site_id', 'datalogger_id', 'ident', 'name', 'kind', 'unit', 'last_value', 'last_value_at', 'last_quality', 'presence']
  end
$$;

-- Marks what stopped reporting offline; returns how many rows of each kind changed. The rule the
-- dashboard used to compute on its own (it now shows this column): gateways after p_gateway_after_s, dataloggers after p_missed_intervals × interval_s,
-- sensors after the same number of their datalogger's intervals (a sensor that never reported
-- counts from when it was first seen).
create function private.mark_stale_devices(
  p_gateway_after_s integer default 300,
  p_missed_intervals integer default 3,
  p_default_interval_s integer default 60
) returns table (gateways bigint, dataloggers bigint, sensors bigint)
language plpgsql
set search_path = ''
as $$
declare
  g bigint;
  d bigint;
  s bigint;
begin
  update public.gateway set presence = 'offline', presence_changed_at = now()
  where presence = 'online' and last_seen_at < now() - make_interval(secs => p_gateway_after_s);
  get diagnostics g = row_count;

  update public.datalogger set presence = 'offline', presence_changed_at = now()
  where presence = 'online'
    and last_seen_at < now() - make_interval(secs => p_missed_intervals * coalesce(interval_s, p_default_interval_s));
  get diagnostics d = row_count;

  update public.sensor s set presence = 'offline', presence_changed_at = now()
  from public.datalogger dl
  where s.presence = 'online' and dl.id = s.datalogger_id
    and coalesce(s.last_value_at, s.first_seen_at)
        < now() - make_interval(secs => p_missed_intervals * coalesce(dl.interval_s, p_default_interval_s));
  get diagnostics s = row_count;

  return query select g, d, s;
end
$$;
comment on function private.mark_stale_devices(integer, integer, integer) is
  'Sets presence = offline on devices that stopped reporting (the staleness job runs it; safe by hand).';

-- ---------------------------------------------------------------------------------------------
-- Backfill: when a pattern becomes active, is created active, or its pattern, parser or parser
-- options change, the archived messages of its connection that it now matches are replayed through
-- the live pipeline (ingestor/src/jobs/tasks/backfill.ts). One row per pattern: its last run.

create table public.backfill_run (
  topic_id bigint primary key references public.mqtt_topic (id) on delete cascade,
  connection_id bigint not null references public.mqtt_connection (id) on delete cascade,
  state text not null default 'queued' constraint backfill_run_state_check check (state in ('queued', 'running', 'done', 'failed')),
  -- Archived messages the pattern matched when the run started (the work to do).
  matched bigint not null default 0 check (matched >= 0),
  -- Of those: replayed through the parser (stored or failed), and of those the ones that failed.
  processed bigint not null default 0 check (processed >= 0),
  failed bigint not null default 0 check (failed >= 0),
  -- Readings the replay stored (ones already stored, e.g. by live ingest, are not stored twice).
  readings bigint not null default 0 check (readings >= 0),
  -- The archive id replayed up to: a run that was interrupted resumes after it.
  cursor_id bigint not null default 0,
  last_error text check (length(last_error) <= 4000),
  requested_at timestamptz not null default now(),
  started_at timestamptz,
  finished_at timestamptz,
  updated_at timestamptz not null default now()
);
comment on table public.backfill_run is
  'Replay of archived messages for a topic pattern (the last run per pattern): state, counts and the resume point. Written by the backfill job; shown live on the topics page.';
create index backfill_run_connection_idx on public.backfill_run (connection_id);

-- The replay reads one connection's archive in arrival order.
create index mqtt_message_archive_connection_id_idx on public.mqtt_message_archive (connection_id, id);

-- Asks for a replay of `p_topic_id`: resets its run to queued and enqueues the job in this
-- transaction when graphile-worker is installed. The job key coalesces repeated edits into one
-- pending job. No named queue: graphile-worker keeps a queue locked for hours after its worker dies,
-- and replays need no queue to stay correct (each batch locks its run row and the archive rows it
-- takes, see ingestor/src/sql/backfill.ts). Security definer: admins editing patterns
-- (authenticated) cannot call add_job.
-- An MQTT topic filter as a Postgres regular expression, so the archive can be searched in SQL.
-- It matches exactly what the ingestor's TopicMatcher (mqtt-pattern) matches — tests/integration/
-- jobs.test.ts compares the two on every filter × topic pair: `+` (or `+name`) is one non-empty
-- level; `#` (last) is the parent level and everything below; a named `#name` needs at least one
-- non-empty level; other characters are literal. As in MQTT, a filter not starting with `$` never
-- matches a topic that does (broker internals).
create function private.mqtt_filter_regex(p_filter text) returns text
language plpgsql immutable strict
set search_path = ''
as $$
declare
  segs text[] := string_to_array(p_filter, '/');
  out text := '';
  seg text;
begin
  for i in 1 .. coalesce(array_length(segs, 1), 0) loop
    seg := segs[i];
    if seg = '#' then
      out := out || case when i = 1 then '.*' else '(/.*)?' end;
      exit;
    end if;
    if i > 1 then
      out := out || '/';
    end if;
    if left(seg, 1) = '#' then
      out := out || '[^/]+(/.*)?';
      exit;
    end if;
    out := out || case
      when left(seg, 1) = '+' then '[^/]+'
      else regexp_replace(seg, '([.^$*+?(){}|\[\]\\])', '\\\1', 'g')
    end;
  end loop;
  return '^' || case when left(p_filter, 1) = '$' then '' else '(?!\$)' end || out || '$';
end
$$;

-- How many archived messages of a connection a pattern would match now: shown next to a new or
-- edited pattern before it is saved. Admins only (it reads the archive, which members cannot).
create function public.archived_message_count(p_connection_id bigint, p_pattern text) returns bigint
language plpgsql stable security definer
set search_path = ''
as $$
declare
  n bigint;
begin
  -- Admins through the API; the service role's key; SQL users with the table grant read it directly.
  if not (private.is_admin() or coalesce(auth.jwt() ->> 'role', '') = 'service_role') then
    raise exception 'only admins can search the archive' using errcode = '42501';
  end if;
  select count(*) into n from public.mqtt_message_archive
  where connection_id = p_connection_id and topic ~ private.mqtt_filter_regex(p_pattern);
  return n;
end
$$;
comment on function public.archived_message_count(bigint, text) is
  'Archived (not yet parsed) messages of a connection that a topic pattern would match and replay; admins only.';
revoke all on function public.archived_message_count(bigint, text) from public, anon;
grant execute on function public.archived_message_count(bigint, text) to authenticated, service_role;

create function private.request_backfill(p_topic_id bigint) returns void
language plpgsql security definer
set search_path = ''
as $$
declare
  conn bigint;
begin
  select connection_id into conn from public.mqtt_topic where id = p_topic_id;
  if conn is null then
    return;
  end if;
  insert into public.backfill_run as r (topic_id, connection_id)
  values (p_topic_id, conn)
  on conflict (topic_id) do update set
    connection_id = excluded.connection_id, state = 'queued', matched = 0, processed = 0, failed = 0,
    readings = 0, cursor_id = 0, last_error = null, requested_at = now(), started_at = null,
    finished_at = null, updated_at = now();
  if to_regprocedure('graphile_worker.add_job(text, json, text, timestamp with time zone, integer, text, integer, text[], text)') is not null then
    perform graphile_worker.add_job(
      'backfill',
      json_build_object('topicId', p_topic_id),
      job_key := 'bfg-backfill-' || p_topic_id,
      job_key_mode := 'replace',
      max_attempts := 10
    );
  end if;
end
$$;
revoke all on function private.request_backfill(bigint) from public;
grant execute on function private.request_backfill(bigint) to service_role;

create function private.mqtt_topic_request_backfill() returns trigger
language plpgsql security definer
set search_path = ''
as $$
begin
  if new.is_active and (
    tg_op = 'INSERT'
    or not old.is_active
    or new.pattern is distinct from old.pattern
    or new.parser is distinct from old.parser
    or new.parser_config is distinct from old.parser_config
    or new.connection_id is distinct from old.connection_id
  ) then
    perform private.request_backfill(new.id);
  end if;
  return null;
end
$$;

create trigger mqtt_topic_request_backfill
  after insert or update on public.mqtt_topic
  for each row execute function private.mqtt_topic_request_backfill();

alter table public.backfill_run enable row level security;
create policy "members read their connections' backfills" on public.backfill_run
  for select to authenticated
  using (connection_id = any ((select private.readable_connection_ids())::bigint[]));
revoke all on public.backfill_run from anon, authenticated;
grant select on public.backfill_run to authenticated;
grant all on public.backfill_run to service_role;

-- Progress is written once per replayed batch: few enough for postgres_changes.
alter publication supabase_realtime add table public.backfill_run;

-- ---------------------------------------------------------------------------------------------
-- Jobs as admins see them: graphile-worker's stable `jobs` view, narrowed to what an admin needs
-- (its tables are private to it). Runs as its owner and returns nothing to non-admins; returns
-- nothing before a worker has installed graphile_worker. Only pending and failing jobs exist
-- there: a job that succeeded is deleted.

create function public.worker_jobs()
returns table (
  id bigint, task_identifier text, queue_name text, run_at timestamptz, attempts smallint,
  max_attempts smallint, last_error text, key text, locked_at timestamptz, created_at timestamptz,
  updated_at timestamptz
)
language plpgsql stable security definer
set search_path = ''
as $$
begin
  if not (private.is_admin() or coalesce(auth.jwt() ->> 'role', '') = 'service_role')
     or to_regclass('graphile_worker.jobs') is null then
    return;
  end if;
  return query execute
    'select j.id, j.task_identifier, j.queue_name, j.run_at, j.attempts, j.max_attempts, j.last_error,
            j.key, j.locked_at, j.created_at, j.updated_at
     from graphile_worker.jobs j order by j.run_at limit 500';
end
$$;
comment on function public.worker_jobs() is
  'Pending and failing background jobs (graphile-worker), with attempts and last error; admins only (empty for others).';
revoke all on function public.worker_jobs() from public, anon;
grant execute on function public.worker_jobs() to authenticated, service_role;

-- ---------------------------------------------------------------------------------------------
-- Retention. Readings go by whole partitions (never row by row); the rollups are separate tables
-- and stay. Logs and the archive are pruned in batches, oldest first.

-- Drops the monthly partitions that end on or before `p_before` (detached first, so the parent is
-- locked only briefly); returns their names. The default partition is never dropped.
create function private.drop_sensor_reading_partitions(p_before timestamptz) returns setof text
language plpgsql
set search_path = ''
as $$
declare
  part record;
begin
  for part in
    select c.oid::regclass::text as name,
           (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \(''([^'']+)''\)'))[1]::timestamptz as upper_bound
    from pg_inherits i
    join pg_class c on c.oid = i.inhrelid
    where i.inhparent = 'public.sensor_reading'::regclass
      and pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT'
    order by 2
  loop
    exit when part.upper_bound > p_before;
    execute format('alter table public.sensor_reading detach partition %s', part.name);
    execute format('drop table %s', part.name);
    return next part.name;
  end loop;
end
$$;
comment on function private.drop_sensor_reading_partitions(timestamptz) is
  'Detaches and drops the sensor_reading partitions that end on or before p_before; rollups are kept.';

-- One batch of pruning of a log or the archive: deletes at most p_batch rows older than p_before
-- (and, for the archive, beyond p_max_rows per connection, oldest first). Returns the rows deleted;
-- the job calls it until it returns 0, so no statement holds locks for long.
create function private.prune_batch(p_table text, p_before timestamptz, p_batch integer, p_max_rows integer default null)
returns bigint
language plpgsql
set search_path = ''
as $$
declare
  deleted bigint := 0;
  more bigint;
  conn record;
begin
  if p_table = 'mqtt_connection_log' then
    delete from public.mqtt_connection_log where id in (
      select id from public.mqtt_connection_log where created_at < p_before order by created_at limit p_batch);
    get diagnostics deleted = row_count;
  elsif p_table = 'mqtt_parsing_log' then
    delete from public.mqtt_parsing_log where id in (
      select id from public.mqtt_parsing_log where last_seen_at < p_before order by last_seen_at limit p_batch);
    get diagnostics deleted = row_count;
  elsif p_table = 'mqtt_message_archive' then
    delete from public.mqtt_message_archive where id in (
      select id from public.mqtt_message_archive where received_at < p_before order by received_at limit p_batch);
    get diagnostics deleted = row_count;
    if p_max_rows is not null and deleted < p_batch then
      for conn in select c.id from public.mqtt_connection c loop
        delete from public.mqtt_message_archive where id in (
          select a.id from public.mqtt_message_archive a
          where a.connection_id = conn.id
            and a.id <= (select b.id from public.mqtt_message_archive b where b.connection_id = conn.id
                         order by b.id desc offset p_max_rows limit 1)
          order by a.id limit p_batch - deleted);
        get diagnostics more = row_count;
        deleted := deleted + more;
        exit when deleted >= p_batch;
      end loop;
    end if;
  else
    raise exception 'prune_batch: unknown table %', p_table using errcode = '22023';
  end if;
  return deleted;
end
$$;
comment on function private.prune_batch(text, timestamptz, integer, integer) is
  'Deletes one batch of mqtt_connection_log / mqtt_parsing_log / mqtt_message_archive rows past retention (the archive also past p_max_rows per connection).';

revoke all on function private.mark_stale_devices(integer, integer, integer), private.drop_sensor_reading_partitions(timestamptz),
  private.prune_batch(text, timestamptz, integer, integer) from public;
grant execute on function private.mark_stale_devices(integer, integer, integer), private.drop_sensor_reading_partitions(timestamptz),
  private.prune_batch(text, timestamptz, integer, integer) to service_role;
