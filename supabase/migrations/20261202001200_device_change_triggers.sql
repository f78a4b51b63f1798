-- Ingest latency (issue 15): the UPDATE branch of private.record_device_changes built its
-- comparison from private.shown_columns() on every statement and ran it with EXECUTE, so each
-- device statement of every ingestor batch parsed and planned that query again: ~1 ms a
-- statement on the 2-core benchmark machine (a 5-row gateway upsert took 2.8 ms with it, 1.5 ms
-- with the same comparison written out, 1.6 ms with no trigger at all), three statements a batch.
-- At 2,000 messages/s that is a batch every ~30 ms, each ~17 ms of Postgres time.
--
-- Now each device table's change triggers run a function of its own, private.record_<table>_changes(),
-- generated here with the table's name and its comparison written out from private.shown_columns()
-- — still the one list of what a page shows (web/src/lib/rows.ts) — and otherwise what
-- private.record_device_changes did, which it replaces. plpgsql plans its static statements once
-- per session. A migration that changes private.shown_columns() must call
-- private.create_device_change_triggers() again for each table; tests/integration/realtime-sql.test.ts
-- checks that a change of each shown column alone is recorded.
--
-- Security definer, as before: an admin (authenticated) deleting a site cascades here and must be
-- able to record it.

create function private.create_device_change_triggers(p_table text) returns void
language plpgsql
set search_path = ''
as $$
declare
  columns text[] := private.shown_columns(p_table);
begin
  if p_table not in ('gateway', 'datalogger', 'sensor') or columns is null then
    raise exception 'not a device table: %', p_table;
  end if;
  execute format(
    $fn$
    create or replace function private.record_%1$s_changes() returns trigger
    language plpgsql security definer
    set search_path = ''
    as $body$
    declare
      recorded bigint;
    begin
      -- Upserts lock the entry while this transaction is open, so a flush leaves it for the next message.
      if tg_op = 'INSERT' then
        insert into private.site_change_outbox (site_id, entity, entity_id)
        select n.site_id, %2$L, n.id from new_rows n
        on conflict (site_id, entity, entity_id) do update set pending_since = private.site_change_outbox.pending_since;
      elsif tg_op = 'UPDATE' then
        insert into private.site_change_outbox (site_id, entity, entity_id)
        select n.site_id, %2$L, n.id
        from new_rows n join old_rows o on o.id = n.id
        where (%3$s) is distinct from (%4$s)
        union
        -- A device moved to another site leaves the old one (sent there as removed).
        select o.site_id, %2$L, o.id
        from new_rows n join old_rows o on o.id = n.id
        where o.site_id <> n.site_id
        on conflict (site_id, entity, entity_id) do update set pending_since = private.site_change_outbox.pending_since;
      else
        insert into private.site_change_outbox (site_id, entity, entity_id)
        select o.site_id, %2$L, o.id from old_rows o
        on conflict (site_id, entity, entity_id) do update set pending_since = private.site_change_outbox.pending_since;
      end if;
      get diagnostics recorded = row_count;
      if recorded > 0 then
        perform pg_notify('site_changes:pending', '');
      end if;
      return null;
    end
    $body$
    $fn$,
    p_table,
    p_table,
    (select string_agg(format('n.%I', c), ', ' order by o) from unnest(columns) with ordinality as u (c, o)),
    (select string_agg(format('o.%I', c), ', ' order by o) from unnest(columns) with ordinality as u (c, o)));
  execute format('revoke all on function private.record_%s_changes() from public', p_table);
  execute format(
    $ddl$
    drop trigger if exists %1$s_record_insert on public.%1$I;
    drop trigger if exists %1$s_record_update on public.%1$I;
    drop trigger if exists %1$s_record_delete on public.%1$I;
    create trigger %1$s_record_insert after insert on public.%1$I
      referencing new table as new_rows for each statement execute function private.record_%1$s_changes();
    create trigger %1$s_record_update after update on public.%1$I
      referencing old table as old_rows new table as new_rows for each statement execute function private.record_%1$s_changes();
    create trigger %1$s_record_delete after delete on public.%1$I
      referencing old table as old_rows for each statement execute function private.record_%1$s_changes();
    $ddl$,
    p_table);
end
$$;
revoke all on function private.create_device_change_triggers(text) from public;

select private.create_device_change_triggers(t) from unnest(array['gateway', 'datalogger', 'sensor']) as t;
drop function private.record_device_changes();
