-- sensor_latest gains the devices' presence (20261202000200_jobs.sql): the state the staleness
-- job writes and the dashboard shows, next to the *_state columns computed at query time (which
-- stay: they need no job and agree with presence once the job has run). Columns are only added.

create or replace view public.sensor_latest with (security_invoker = true) as
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
  st.name as site_name,
  -- Added (columns only ever go at the end): presence as the staleness job keeps it.
  s.presence as sensor_presence,
  d.presence as datalogger_presence,
  g.presence as gateway_presence
from public.sensor s
join public.datalogger d on d.id = s.datalogger_id
join public.gateway g on g.id = d.gateway_id
join public.site st on st.id = s.site_id;

comment on column public.sensor_latest.sensor_presence is
  'online | offline as the staleness job last set it (offline after 3 of the datalogger''s intervals without a value; online again with the next one) (stable).';
comment on column public.sensor_latest.datalogger_presence is
  'online | offline as the staleness job last set it (offline after 3 × interval_s without data; online again with the next message) (stable).';
comment on column public.sensor_latest.gateway_presence is
  'online | offline as the staleness job last set it (offline after 300 s without a message; online again with the next one); gateway_online is what the gateway itself said (stable).';

-- security_invoker: readers need the new base columns too.
grant select (presence) on public.sensor, public.datalogger, public.gateway to bfg_reader;
