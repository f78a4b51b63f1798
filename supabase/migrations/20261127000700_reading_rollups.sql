-- Five-minute rollups of sensor readings, for charts over long ranges: a 30-day chart reads 8,640
-- rollup rows per sensor instead of 518,400 readings (at one reading every 5 s).
--
-- Kept up to date by a statement-level trigger on sensor_reading, so readings inserted by the
-- ingestor, by a backfill job or by hand in SQL are all counted. The trigger sees only the rows a
-- statement really inserted (a redelivered message's `on conflict do nothing` adds nothing), so a
-- reading is counted once. Readings are append-only; deleting them (a retention job) leaves their
-- rollups, which is what a long-range chart wants.

-- No foreign key, like sensor_reading itself: rows go when their sensor does (trigger below).
create table public.sensor_reading_rollup (
  sensor_id bigint not null,
  -- Start of the five-minute bucket (aligned to the Unix epoch).
  bucket timestamptz not null,
  -- Readings with a value in the bucket, and their sum, min and max.
  n integer not null check (n > 0),
  sum double precision not null,
  min double precision not null,
  max double precision not null,
  primary key (sensor_id, bucket)
);
comment on table public.sensor_reading_rollup is
  'Five-minute aggregates of sensor_reading (count, sum, min, max), maintained by a trigger; what long-range charts read.';

create function private.roll_up_sensor_readings() returns trigger
language plpgsql security definer
set search_path = ''
as $$
begin
  insert into public.sensor_reading_rollup as r (sensor_id, bucket, n, sum, min, max)
  select i.sensor_id, date_bin('5 minutes', i.ts, timestamptz 'epoch'), count(*), sum(i.value), min(i.value), max(i.value)
  from inserted_rows i
  where i.value is not null
  group by 1, 2
  -- Same order in every writer, so two concurrent statements never lock the same rows crosswise.
  order by 1, 2
  on conflict (sensor_id, bucket) do update
    set n = r.n + excluded.n, sum = r.sum + excluded.sum,
        min = least(r.min, excluded.min), max = greatest(r.max, excluded.max);
  return null;
end
$$;
revoke all on function private.roll_up_sensor_readings() from public;

create trigger sensor_reading_roll_up after insert on public.sensor_reading
  referencing new table as inserted_rows
  for each statement execute function private.roll_up_sensor_readings();

-- A deleted sensor takes its rollups along, as it takes its readings.
create or replace function private.delete_sensor_readings() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  delete from public.sensor_reading r using old_rows o where r.sensor_id = o.id;
  delete from public.sensor_reading_rollup r using old_rows o where r.sensor_id = o.id;
  return null;
end
$$;

-- Readings stored before this migration.
insert into public.sensor_reading_rollup (sensor_id, bucket, n, sum, min, max)
select sensor_id, date_bin('5 minutes', ts, timestamptz 'epoch'), count(*), sum(value), min(value), max(value)
from public.sensor_reading
where value is not null
group by 1, 2;

alter table public.sensor_reading_rollup enable row level security;
create policy "members read their sites' reading rollups" on public.sensor_reading_rollup
  for select to authenticated
  using (
    (select private.is_admin())
    or sensor_id in (select s.id from public.sensor s where s.site_id = any ((select private.member_site_ids())::bigint[]))
  );
revoke all on public.sensor_reading_rollup from anon, authenticated;
grant select on public.sensor_reading_rollup to authenticated;
grant all on public.sensor_reading_rollup to service_role;
