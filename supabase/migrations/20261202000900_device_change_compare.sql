-- Ingest throughput (issue 15): the statement trigger that records device changes in the outbox
-- compared each updated row's shown columns as jsonb — to_jsonb of the whole row, jsonb_each,
-- jsonb_object_agg, twice per row (private.as_shown). An ingestor batch updates every sensor it
-- has a value for (400 rows for 100 dataloggers), and that comparison took 65 of the update's 77
-- ms, more than any other statement of the batch but the readings' insert.
--
-- Now the UPDATE branch compares the columns themselves: a statement built from
-- private.shown_columns(), still the one list of what a page shows (web/src/lib/rows.ts), run with
-- EXECUTE (transition tables are visible to it). `(n.a, n.b, …) is distinct from (o.a, o.b, …)`
-- is the same test as comparing the two jsonb objects, NULLs included. The INSERT and DELETE
-- branches are unchanged.

create or replace function private.record_device_changes() returns trigger
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
    execute format(
      $sql$
        insert into private.site_change_outbox (site_id, entity, entity_id)
        select n.site_id, %1$L, n.id
        from new_rows n join old_rows o on o.id = n.id
        where (%2$s) is distinct from (%3$s)
        union
        -- A device moved to another site leaves the old one (sent there as removed).
        select o.site_id, %1$L, o.id
        from new_rows n join old_rows o on o.id = n.id
        where o.site_id <> n.site_id
        on conflict (site_id, entity, entity_id) do update set pending_since = private.site_change_outbox.pending_since
      $sql$,
      tg_table_name,
      (select string_agg(format('n.%I', c), ', ') from unnest(private.shown_columns(tg_table_name)) c),
      (select string_agg(format('o.%I', c), ', ') from unnest(private.shown_columns(tg_table_name)) c));
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
