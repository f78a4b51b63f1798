-- Ingest latency (issue 15): private.send_site_changes, the per-site flusher of the coalesced
-- `changes` broadcast, built each row of its message with private.as_shown(to_jsonb(row)) — a SQL
-- function that is not inlined (jsonb_each + jsonb_object_agg), ~80 µs a row: 12 of the 15 ms a
-- flush of one 120-sensor site took, and up to 120 ms on a busy machine. Writers wait for it: the
-- outbox entries it takes (FOR UPDATE SKIP LOCKED, deleted) are the ones an ingestor batch's
-- trigger upserts again, so every write transaction that touched those devices waited for the
-- flush to commit, and publish → commit latency had a tail of the flush's length.
--
-- Now the rows are built with jsonb_build_object over the shown columns themselves, in a query
-- made from private.shown_columns() (still the one list; web/src/lib/rows.ts) and run with
-- EXECUTE. jsonb_build_object converts each value as to_jsonb does, so messages are unchanged.
-- The rest of the function is as in 20261201000200_coalesced_site_changes.sql.

-- `jsonb_build_object('id', <alias>.id, 'site_id', <alias>.site_id, …)` for an entity's shown columns.
create function private.shown_object(p_entity text, p_alias text) returns text
language sql stable
set search_path = ''
as $$
  select format('jsonb_build_object(%s)', string_agg(format('%L, %I.%I', c, p_alias, c), ', ' order by o))
  from unnest(private.shown_columns(p_entity)) with ordinality as u (c, o)
$$;
revoke all on function private.shown_object(text, text) from public;

create or replace function private.send_site_changes(p_min_interval_ms integer) returns integer
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
  -- The shown columns of each entity as `jsonb_build_object('id', g.id, …)`: see the header.
  shown_gateway text := private.shown_object('gateway', 'g');
  shown_datalogger text := private.shown_object('datalogger', 'd');
  shown_sensor text := private.shown_object('sensor', 's');
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
    for message in execute format(
      $sql$
      with items as (
        select 1 as ord, 'gateways' as kind, g.id, %1$s as item
        from public.gateway g where g.id = any ($1) and g.site_id = $6
        union all
        select 2, 'dataloggers', d.id, %2$s
        from public.datalogger d where d.id = any ($2) and d.site_id = $6
        union all
        select 3, 'sensors', s.id, %3$s
        from public.sensor s where s.id = any ($3) and s.site_id = $6
        union all
        select 4, 'removed gateways', x.id, to_jsonb(x.id) from unnest($1) as x (id)
        where not exists (select 1 from public.gateway g where g.id = x.id and g.site_id = $6)
        union all
        select 5, 'removed dataloggers', x.id, to_jsonb(x.id) from unnest($2) as x (id)
        where not exists (select 1 from public.datalogger d where d.id = x.id and d.site_id = $6)
        union all
        select 6, 'removed sensors', x.id, to_jsonb(x.id) from unnest($3) as x (id)
        where not exists (select 1 from public.sensor s where s.id = x.id and s.site_id = $6)
        union all
        select 7, 'topics', x.id, to_jsonb(x.id) from unnest($4) as x (id)
        union all
        select 8, 'parsing_log', x.id, to_jsonb(x.id) from unnest($5) as x (id)
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
      $sql$, shown_gateway, shown_datalogger, shown_sensor)
      using gateways, dataloggers, sensors, topics, parsing_log, site
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
revoke all on function private.send_site_changes(integer) from public;
grant execute on function private.send_site_changes(integer) to service_role;
