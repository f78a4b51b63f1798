-- SQL integrations (issue 11): a stable set of views for tools that query Postgres directly
-- (Grafana, BI tools, scripts), and a read-only group role whose members see them under row level
-- security like a member of the sites they are bound to.
--
-- The views are the contract: public.reading_named, public.sensor_latest, public.connection_health.
-- Their columns are only ever added, never renamed or removed (a later migration may add columns
-- at the end). They are security_invoker views, so the RLS of the tables below them applies to
-- whoever queries: an `authenticated` user through PostgREST sees their sites, an admin every
-- site, `anon` nothing, and a reader the sites it is bound to.
--
-- Readers. `bfg_reader` is a NOLOGIN group role. Operators create login roles in it and bind them
-- to sites:
--
--   create role grafana login password '…' in role bfg_reader;
--   select public.bind_sql_reader('grafana', array['site-a', 'site-b']);
--
-- A reader's sites come from public.sql_reader_site, keyed by the role the query runs as, and
-- never from JWT claims: any session may `set request.jwt.claims` to anything, so the policies for
-- readers (below, `to bfg_reader`) do not read them. The policies for `authenticated` are
-- unchanged and do not apply to readers (a reader is no member of `authenticated`), so a reader
-- that forges an admin JWT still sees only its own sites. Like a member, a reader sees only sites
-- that are active.
--
-- Privileges. With security_invoker the querying role needs SELECT on the tables under a view,
-- so bfg_reader gets SELECT on exactly the columns the views read, nothing else: no other column
-- (no broker host, user name or setting), no secret table, no write, no function but its two
-- policy helpers. A reader may query those columns of the base tables directly; the same
-- policies restrict the rows.

-- ---------------------------------------------------------------------------------------------
-- The group role (cluster-wide: it may exist already from another database of the cluster)
-- ---------------------------------------------------------------------------------------------

do $$
declare
  existing record;
begin
  select r.rolcanlogin, r.rolsuper, r.rolbypassrls, r.rolcreaterole, r.rolcreatedb, r.rolreplication
  into existing
  from pg_catalog.pg_roles r
  where r.rolname = 'bfg_reader';
  if not found then
    create role bfg_reader nologin;
    comment on role bfg_reader is
      'BFG SQL integrations: read-only group role. Members see public.reading_named, public.sensor_latest and public.connection_health for the sites public.bind_sql_reader() bound them to.';
  elsif existing.rolcanlogin or existing.rolsuper or existing.rolbypassrls or existing.rolcreaterole
        or existing.rolcreatedb or existing.rolreplication then
    raise exception 'role bfg_reader exists with LOGIN, SUPERUSER, BYPASSRLS, CREATEROLE, CREATEDB or REPLICATION; it must be a plain NOLOGIN group role'
      using errcode = '42501';
  end if;
  -- A reader that had the privileges of an API role would be subject to that role's policies,
  -- which trust JWT claims a reader can set itself.
  if exists (select 1 from pg_catalog.pg_roles a
             where a.rolname in ('anon', 'authenticated', 'service_role')
               and pg_catalog.pg_has_role('bfg_reader', a.oid, 'USAGE')) then
    raise exception 'role bfg_reader has the privileges of anon, authenticated or service_role; revoke them'
      using errcode = '42501';
  end if;
end
$$;

-- ---------------------------------------------------------------------------------------------
-- Which sites each reader role sees
-- ---------------------------------------------------------------------------------------------

create table public.sql_reader_site (
  -- A login (or group) role that is a member of bfg_reader; bfg_reader itself is never bound.
  role_name name not null constraint sql_reader_site_not_the_group check (role_name <> 'bfg_reader'),
  site_id bigint not null references public.site (id) on delete cascade,
  created_at timestamptz not null default now(),
  primary key (role_name, site_id)
);
comment on table public.sql_reader_site is
  'Sites each SQL reader role (a member of bfg_reader) sees. Set with public.bind_sql_reader(role, site_slugs); managed by admins and the service role only; not readable by readers.';
create index sql_reader_site_site_id_idx on public.sql_reader_site (site_id);

alter table public.sql_reader_site enable row level security;
create policy "admins read reader bindings" on public.sql_reader_site
  for select to authenticated using ((select private.is_admin()));
create policy "admins manage reader bindings" on public.sql_reader_site
  for all to authenticated
  using ((select private.is_admin())) with check ((select private.is_admin()));

revoke all on public.sql_reader_site from public, anon, authenticated;
grant select, insert, update, delete on public.sql_reader_site to authenticated;
grant all on public.sql_reader_site to service_role;

-- The active sites bound to the role the query runs as. That role is the one `set role` chose, or
-- the login role when none was set: inside this SECURITY DEFINER function current_user is the
-- owner, while `role` and session_user are what the session really is — `set role` checks
-- membership, and only a superuser may change the session user. JWT settings play no part.
-- SECURITY DEFINER (sql_reader_site is not readable by readers) and wrapped in a scalar subquery
-- by the policies, like private.member_site_ids().
create function private.sql_reader_site_ids() returns bigint[]
language sql stable security definer
set search_path = ''
as $$
  select coalesce(array_agg(b.site_id), '{}')
  from public.sql_reader_site b
  join public.site s on s.id = b.site_id
  where b.role_name = coalesce(nullif(pg_catalog.current_setting('role'), 'none'), session_user)::name
    and s.is_active
$$;
comment on function private.sql_reader_site_ids() is
  'Active sites bound (public.sql_reader_site) to the role the query runs as; what the bfg_reader policies allow.';

create function private.sql_reader_connection_ids() returns bigint[]
language sql stable security definer
set search_path = ''
as $$
  select coalesce(array_agg(c.id), '{}')
  from public.mqtt_connection c
  where c.site_id = any (private.sql_reader_site_ids())
$$;
comment on function private.sql_reader_connection_ids() is
  'Connections of the sites private.sql_reader_site_ids() allows.';

revoke all on function private.sql_reader_site_ids(), private.sql_reader_connection_ids() from public;
grant execute on function private.sql_reader_site_ids(), private.sql_reader_connection_ids() to bfg_reader, service_role;

-- Binds a reader role to exactly these sites (replacing its earlier bindings; an empty array
-- unbinds it) and returns the slugs it is bound to. SECURITY INVOKER: the caller's own rights on
-- sql_reader_site decide (admins through RLS, the service role and database owners directly).
create function public.bind_sql_reader(p_role name, p_site_slugs text[])
returns setof text
language plpgsql
set search_path = ''
as $$
declare
  unknown text[];
begin
  if p_role = 'bfg_reader' then
    raise exception 'bind a member of bfg_reader, not the group itself' using errcode = '22023';
  end if;
  if not exists (select 1 from pg_catalog.pg_roles r where r.rolname = p_role) then
    raise exception 'role % does not exist; create it first: create role % login password ''…'' in role bfg_reader',
      pg_catalog.quote_ident(p_role), pg_catalog.quote_ident(p_role) using errcode = '42704';
  end if;
  if not pg_catalog.pg_has_role(p_role, 'bfg_reader', 'USAGE') then
    raise exception 'role % is not a member of bfg_reader: grant bfg_reader to %',
      pg_catalog.quote_ident(p_role), pg_catalog.quote_ident(p_role) using errcode = '22023';
  end if;
  select array_agg(x.slug order by x.slug) into unknown
  from unnest(coalesce(p_site_slugs, '{}')) as x (slug)
  where not exists (select 1 from public.site s where s.slug = x.slug);
  if unknown is not null then
    raise exception 'no such site: %', array_to_string(unknown, ', ') using errcode = '22023';
  end if;
  delete from public.sql_reader_site b
  where b.role_name = p_role
    and b.site_id not in (select s.id from public.site s where s.slug = any (coalesce(p_site_slugs, '{}')));
  insert into public.sql_reader_site (role_name, site_id)
  select p_role, s.id from public.site s where s.slug = any (coalesce(p_site_slugs, '{}'))
  on conflict do nothing;
  return query
    select s.slug from public.sql_reader_site b join public.site s on s.id = b.site_id
    where b.role_name = p_role order by s.slug;
end
$$;
comment on function public.bind_sql_reader(name, text[]) is
  'Binds a member of bfg_reader to exactly these site slugs (an empty array unbinds it); returns the slugs now bound. For operators (database owner, service role) and admins.';
revoke all on function public.bind_sql_reader(name, text[]) from public, anon;
grant execute on function public.bind_sql_reader(name, text[]) to authenticated, service_role;

-- ---------------------------------------------------------------------------------------------
-- What readers see: the same rows a member of their sites sees
-- ---------------------------------------------------------------------------------------------

create policy "readers read their bound sites" on public.site
  for select to bfg_reader
  using (id = any ((select private.sql_reader_site_ids())::bigint[]));
create policy "readers read their bound sites' gateways" on public.gateway
  for select to bfg_reader
  using (site_id = any ((select private.sql_reader_site_ids())::bigint[]));
create policy "readers read their bound sites' dataloggers" on public.datalogger
  for select to bfg_reader
  using (site_id = any ((select private.sql_reader_site_ids())::bigint[]));
create policy "readers read their bound sites' sensors" on public.sensor
  for select to bfg_reader
  using (site_id = any ((select private.sql_reader_site_ids())::bigint[]));
create policy "readers read their bound sites' readings" on public.sensor_reading
  for select to bfg_reader
  using (sensor_id in (select s.id from public.sensor s where s.site_id = any ((select private.sql_reader_site_ids())::bigint[])));
create policy "readers read their bound sites' connection" on public.mqtt_connection
  for select to bfg_reader
  using (site_id = any ((select private.sql_reader_site_ids())::bigint[]));
create policy "readers read their bound connections' log" on public.mqtt_connection_log
  for select to bfg_reader
  using (connection_id = any ((select private.sql_reader_connection_ids())::bigint[]));
create policy "readers read their bound connections' parsing log" on public.mqtt_parsing_log
  for select to bfg_reader
  using (connection_id = any ((select private.sql_reader_connection_ids())::bigint[]));

-- ---------------------------------------------------------------------------------------------
-- The views
-- ---------------------------------------------------------------------------------------------

-- Every reading with the names of its sensor, datalogger, gateway and site. Filter on sensor_id
-- (or site_slug, sensor_path, …) and a ts range: the primary key (sensor_id, ts) of each monthly
-- partition serves it, and partitions outside the range are skipped.
create view public.reading_named with (security_invoker = true) as
select
  r.ts,
  r.value,
  r.quality,
  s.id as sensor_id,
  s.ident as sensor_ident,
  s.name as sensor_name,
  s.kind as sensor_kind,
  s.unit as sensor_unit,
  g.ident || '/' || d.ident || '/' || s.ident as sensor_path,
  d.id as datalogger_id,
  d.ident as datalogger_ident,
  d.name as datalogger_name,
  d.serial as datalogger_serial,
  d.model as datalogger_model,
  g.id as gateway_id,
  g.ident as gateway_ident,
  g.name as gateway_name,
  st.id as site_id,
  st.slug as site_slug,
  st.name as site_name
from public.sensor_reading r
join public.sensor s on s.id = r.sensor_id
join public.datalogger d on d.id = s.datalogger_id
join public.gateway g on g.id = d.gateway_id
join public.site st on st.id = s.site_id;

comment on view public.reading_named is
  'SQL integrations (stable: columns are only added, never renamed or removed). Every sensor reading with the names of its sensor, datalogger, gateway and site. security_invoker: RLS of the base tables applies to whoever queries. Filter on sensor_id or names and a ts range.';
comment on column public.reading_named.ts is 'Time of the reading (stable).';
comment on column public.reading_named.value is 'Reading value; null is a sensor fault reported by the datalogger (stable).';
comment on column public.reading_named.quality is 'good, suspect, bad, or null when the datalogger sent none (stable).';
comment on column public.reading_named.sensor_id is 'sensor.id (stable).';
comment on column public.reading_named.sensor_ident is 'The sensor key in the datalogger''s messages, unique per datalogger (stable).';
comment on column public.reading_named.sensor_name is 'Display name of the sensor, or null (stable).';
comment on column public.reading_named.sensor_kind is 'What the sensor measures (e.g. temperature), or null until its datalogger names it (stable).';
comment on column public.reading_named.sensor_unit is 'Unit of the values (e.g. °C), or null until its datalogger names it (stable).';
comment on column public.reading_named.sensor_path is '<gateway_ident>/<datalogger_ident>/<sensor_ident>: unique within a site, a ready series label (stable).';
comment on column public.reading_named.datalogger_id is 'datalogger.id (stable).';
comment on column public.reading_named.datalogger_ident is 'The {datalogger} topic segment, unique per gateway (stable).';
comment on column public.reading_named.datalogger_name is 'Display name of the datalogger, or null (stable).';
comment on column public.reading_named.datalogger_serial is 'Serial number from the datalogger''s info message, or null (stable).';
comment on column public.reading_named.datalogger_model is 'Model from the datalogger''s info message, or null (stable).';
comment on column public.reading_named.gateway_id is 'gateway.id (stable).';
comment on column public.reading_named.gateway_ident is 'The {gateway} topic segment, unique per site (stable).';
comment on column public.reading_named.gateway_name is 'Display name of the gateway, or null (stable).';
comment on column public.reading_named.site_id is 'site.id (stable).';
comment on column public.reading_named.site_slug is 'The site''s slug, the {site} topic segment (stable).';
comment on column public.reading_named.site_name is 'Display name of the site (stable).';

-- One row per sensor with its latest value, read from sensor.last_value (kept by the ingestor on
-- every flush), never from sensor_reading. The states are computed at query time from the times
-- in the row: a sensor or datalogger is stale after 3 of its datalogger's intervals (60 s when it
-- announced none) without data; a gateway is offline when its last status said so, else stale
-- after 300 s without a message.
create view public.sensor_latest with (security_invoker = true) as
select
  s.id as sensor_id,
  s.ident as sensor_ident,
  s.name as sensor_name,
  s.kind as sensor_kind,
  s.unit as sensor_unit,
  g.ident || '/' || d.ident || '/' || s.ident as sensor_path,
  s.last_value,
  s.last_value_at,
  s.last_quality,
  case when s.last_value_at >= now() - make_interval(secs => 3 * coalesce(d.interval_s, 60))
       then 'online' else 'stale' end as sensor_state,
  3 * coalesce(d.interval_s, 60) as stale_after_s,
  d.id as datalogger_id,
  d.ident as datalogger_ident,
  d.name as datalogger_name,
  d.serial as datalogger_serial,
  d.model as datalogger_model,
  d.interval_s as datalogger_interval_s,
  d.last_seen_at as datalogger_last_seen_at,
  case when d.last_seen_at >= now() - make_interval(secs => 3 * coalesce(d.interval_s, 60))
       then 'online' else 'stale' end as datalogger_state,
  g.id as gateway_id,
  g.ident as gateway_ident,
  g.name as gateway_name,
  g.online as gateway_online,
  g.last_seen_at as gateway_last_seen_at,
  case when g.online is false then 'offline'
       when g.last_seen_at >= now() - interval '300 seconds' then 'online'
       else 'stale' end as gateway_state,
  st.id as site_id,
  st.slug as site_slug,
  st.name as site_name
from public.sensor s
join public.datalogger d on d.id = s.datalogger_id
join public.gateway g on g.id = d.gateway_id
join public.site st on st.id = s.site_id;

comment on view public.sensor_latest is
  'SQL integrations (stable: columns are only added, never renamed or removed). One row per sensor: its latest value and time (from sensor.last_value, not from the readings), online/stale states computed at query time from the times in the row, and the names of its datalogger, gateway and site. security_invoker: RLS of the base tables applies to whoever queries.';
comment on column public.sensor_latest.sensor_id is 'sensor.id (stable).';
comment on column public.sensor_latest.sensor_ident is 'The sensor key in the datalogger''s messages, unique per datalogger (stable).';
comment on column public.sensor_latest.sensor_name is 'Display name of the sensor, or null (stable).';
comment on column public.sensor_latest.sensor_kind is 'What the sensor measures (e.g. temperature), or null until its datalogger names it (stable).';
comment on column public.sensor_latest.sensor_unit is 'Unit of the values (e.g. °C), or null until its datalogger names it (stable).';
comment on column public.sensor_latest.sensor_path is '<gateway_ident>/<datalogger_ident>/<sensor_ident>: unique within a site, a ready series label (stable).';
comment on column public.sensor_latest.last_value is 'Latest value (null: none yet, or a sensor fault) (stable).';
comment on column public.sensor_latest.last_value_at is 'Time of the latest value, or null when the sensor never reported one (stable).';
comment on column public.sensor_latest.last_quality is 'Quality of the latest value: good, suspect, bad or null (stable).';
comment on column public.sensor_latest.sensor_state is 'online, or stale when last_value_at is null or older than stale_after_s (stable).';
comment on column public.sensor_latest.stale_after_s is 'Seconds without data after which the sensor and its datalogger count as stale: 3 × datalogger_interval_s (60 s when null) (stable).';
comment on column public.sensor_latest.datalogger_id is 'datalogger.id (stable).';
comment on column public.sensor_latest.datalogger_ident is 'The {datalogger} topic segment, unique per gateway (stable).';
comment on column public.sensor_latest.datalogger_name is 'Display name of the datalogger, or null (stable).';
comment on column public.sensor_latest.datalogger_serial is 'Serial number from the datalogger''s info message, or null (stable).';
comment on column public.sensor_latest.datalogger_model is 'Model from the datalogger''s info message, or null (stable).';
comment on column public.sensor_latest.datalogger_interval_s is 'Reporting interval the datalogger announced, in seconds, or null (stable).';
comment on column public.sensor_latest.datalogger_last_seen_at is 'Last message from the datalogger (stable).';
comment on column public.sensor_latest.datalogger_state is 'online, or stale when datalogger_last_seen_at is older than stale_after_s (stable).';
comment on column public.sensor_latest.gateway_id is 'gateway.id (stable).';
comment on column public.sensor_latest.gateway_ident is 'The {gateway} topic segment, unique per site (stable).';
comment on column public.sensor_latest.gateway_name is 'Display name of the gateway, or null (stable).';
comment on column public.sensor_latest.gateway_online is 'What the gateway''s last status message (or its last will) said, or null before any (stable).';
comment on column public.sensor_latest.gateway_last_seen_at is 'Last message from the gateway (stable).';
comment on column public.sensor_latest.gateway_state is 'offline when gateway_online is false, else stale when gateway_last_seen_at is older than 300 s, else online (stable).';
comment on column public.sensor_latest.site_id is 'site.id (stable).';
comment on column public.sensor_latest.site_slug is 'The site''s slug, the {site} topic segment (stable).';
comment on column public.sensor_latest.site_name is 'Display name of the site (stable).';

-- One row per connection: desired and observed state, ownership, and what its logs counted in the
-- last hour (index range scans of (connection_id, created_at desc) and (connection_id,
-- last_seen_at desc)).
create view public.connection_health with (security_invoker = true) as
select
  c.id as connection_id,
  st.id as site_id,
  st.slug as site_slug,
  st.name as site_name,
  c.is_active,
  c.status,
  c.status_detail,
  c.status_changed_at,
  c.last_connected_at,
  c.last_message_at,
  c.owner_instance,
  c.lease_expires_at,
  case when c.is_active then c.status = 'connected' else c.status in ('disconnected', 'disabled') end
    as is_in_desired_state,
  coalesce(l.errors, 0) as errors_last_hour,
  coalesce(l.warnings, 0) as warnings_last_hour,
  coalesce(l.disconnects, 0) as disconnects_last_hour,
  coalesce(l.events, 0) as events_last_hour,
  coalesce(p.parsing_errors, 0) as parsing_errors_last_hour
from public.mqtt_connection c
join public.site st on st.id = c.site_id
left join lateral (
  select count(*) filter (where x.level = 'error') as errors,
         count(*) filter (where x.level = 'warn') as warnings,
         count(*) filter (where x.event = 'disconnect') as disconnects,
         count(*) as events
  from public.mqtt_connection_log x
  where x.connection_id = c.id and x.created_at > now() - interval '1 hour'
) l on true
left join lateral (
  select count(*) as parsing_errors
  from public.mqtt_parsing_log y
  where y.connection_id = c.id and y.last_seen_at > now() - interval '1 hour'
) p on true;

comment on view public.connection_health is
  'SQL integrations (stable: columns are only added, never renamed or removed). One row per MQTT connection: desired (is_active) and observed state, ingestor ownership, and counts from its connection and parsing logs over the last hour. security_invoker: RLS of the base tables applies to whoever queries.';
comment on column public.connection_health.connection_id is 'mqtt_connection.id (stable).';
comment on column public.connection_health.site_id is 'site.id of the connection''s site (stable).';
comment on column public.connection_health.site_slug is 'The site''s slug (stable).';
comment on column public.connection_health.site_name is 'Display name of the site (stable).';
comment on column public.connection_health.is_active is 'Desired state: should the ingestor be connected (stable).';
comment on column public.connection_health.status is 'Observed by the ingestor: disconnected, connecting, connected, reconnecting, error or disabled (stable).';
comment on column public.connection_health.status_detail is 'The ingestor''s words on the status (e.g. the last error), or null (stable).';
comment on column public.connection_health.status_changed_at is 'When status last changed (stable).';
comment on column public.connection_health.last_connected_at is 'When the ingestor last connected, or null (stable).';
comment on column public.connection_health.last_message_at is 'When the last message arrived, written every BFG_STATUS_FLUSH_MS, or null (stable).';
comment on column public.connection_health.owner_instance is 'The ingestor instance holding the connection, or null (stable).';
comment on column public.connection_health.lease_expires_at is 'Until when owner_instance holds it; a past time means the owner is gone (stable).';
comment on column public.connection_health.is_in_desired_state is 'True when an active connection is connected, or an inactive one is disconnected or disabled; no grace period (stable).';
comment on column public.connection_health.errors_last_hour is 'mqtt_connection_log rows of level error in the last hour (stable).';
comment on column public.connection_health.warnings_last_hour is 'mqtt_connection_log rows of level warn in the last hour (stable).';
comment on column public.connection_health.disconnects_last_hour is 'Connections lost (mqtt_connection_log event disconnect) in the last hour (stable).';
comment on column public.connection_health.events_last_hour is 'All mqtt_connection_log rows in the last hour (stable).';
comment on column public.connection_health.parsing_errors_last_hour is 'Distinct parsing errors (mqtt_parsing_log rows) seen in the last hour; each row aggregates identical errors (stable).';

-- Supabase's default privileges grant every new relation in public to anon and authenticated:
-- anon gets nothing here, authenticated only SELECT (RLS of the base tables decides the rows).
revoke all on public.reading_named, public.sensor_latest, public.connection_health from public, anon, authenticated;
grant select on public.reading_named, public.sensor_latest, public.connection_health to authenticated, service_role, bfg_reader;

-- What security_invoker requires of the reader: SELECT on the columns the views read, no more.
grant usage on schema public to bfg_reader;
grant select (id, slug, name) on public.site to bfg_reader;
grant select (id, ident, name, online, last_seen_at) on public.gateway to bfg_reader;
grant select (id, gateway_id, ident, name, serial, model, interval_s, last_seen_at) on public.datalogger to bfg_reader;
grant select (id, site_id, datalogger_id, ident, name, kind, unit, last_value, last_value_at, last_quality)
  on public.sensor to bfg_reader;
grant select (sensor_id, ts, value, quality) on public.sensor_reading to bfg_reader;
grant select (id, site_id, is_active, status, status_detail, status_changed_at, last_connected_at, last_message_at,
              owner_instance, lease_expires_at)
  on public.mqtt_connection to bfg_reader;
grant select (connection_id, created_at, level, event) on public.mqtt_connection_log to bfg_reader;
grant select (connection_id, last_seen_at) on public.mqtt_parsing_log to bfg_reader;
