-- The partitions of sensor_reading with their bounds and approximate row counts; the default
-- partition should stay (nearly) empty when partitions are kept ahead.
select c.relname as partition,
       pg_get_expr(c.relpartbound, c.oid) as bounds,
       c.reltuples::bigint as approx_rows
from pg_inherits i
join pg_class c on c.oid = i.inhrelid
where i.inhparent = 'public.sensor_reading'::regclass
order by c.relname;
