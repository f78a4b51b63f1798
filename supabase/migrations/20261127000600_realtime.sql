-- What the dashboard follows live.
--
-- Low-rate admin tables go through postgres_changes (publication supabase_realtime; Realtime
-- checks each row against the subscriber's RLS). High-rate device state goes through Broadcast
-- from Database on a private topic per site, `site:<id>`: statement-level triggers send one message
-- per site per statement, so the ingestor's batched writes bound the realtime volume whatever the
-- message rate. sensor_reading is in no publication.

alter publication supabase_realtime add table
  public.site,
  public.mqtt_connection,
  public.mqtt_topic,
  public.discovered_topic,
  public.mqtt_connection_log,
  public.mqtt_parsing_log;

-- Broadcasts the rows a statement inserted or changed on gateway, datalogger or sensor, grouped by
-- site: event `<table>_changed`, payload {table, op, rows: [...]}. For updates only rows that
-- actually differ are sent.
create function private.broadcast_device_changes() returns trigger
language plpgsql security definer
set search_path = ''
as $$
begin
  if tg_op = 'INSERT' then
    perform realtime.send(
      jsonb_build_object('table', tg_table_name, 'op', tg_op, 'rows', jsonb_agg(to_jsonb(n))),
      tg_table_name || '_changed', 'site:' || n.site_id, true)
    from new_rows n
    group by n.site_id;
  elsif tg_op = 'UPDATE' then
    perform realtime.send(
      jsonb_build_object('table', tg_table_name, 'op', tg_op, 'rows', jsonb_agg(to_jsonb(n))),
      tg_table_name || '_changed', 'site:' || n.site_id, true)
    from new_rows n
    join old_rows o on o.id = n.id
    where to_jsonb(n) - 'updated_at' is distinct from to_jsonb(o) - 'updated_at'
    group by n.site_id;
  else
    perform realtime.send(
      jsonb_build_object('table', tg_table_name, 'op', tg_op, 'rows', jsonb_agg(jsonb_build_object('id', o.id))),
      tg_table_name || '_changed', 'site:' || o.site_id, true)
    from old_rows o
    group by o.site_id;
  end if;
  return null;
end
$$;
revoke all on function private.broadcast_device_changes() from public;

-- Transition tables allow one event per trigger, hence three triggers per table.
create trigger gateway_broadcast_insert after insert on public.gateway
  referencing new table as new_rows for each statement execute function private.broadcast_device_changes();
create trigger gateway_broadcast_update after update on public.gateway
  referencing old table as old_rows new table as new_rows for each statement execute function private.broadcast_device_changes();
create trigger gateway_broadcast_delete after delete on public.gateway
  referencing old table as old_rows for each statement execute function private.broadcast_device_changes();

create trigger datalogger_broadcast_insert after insert on public.datalogger
  referencing new table as new_rows for each statement execute function private.broadcast_device_changes();
create trigger datalogger_broadcast_update after update on public.datalogger
  referencing old table as old_rows new table as new_rows for each statement execute function private.broadcast_device_changes();
create trigger datalogger_broadcast_delete after delete on public.datalogger
  referencing old table as old_rows for each statement execute function private.broadcast_device_changes();

create trigger sensor_broadcast_insert after insert on public.sensor
  referencing new table as new_rows for each statement execute function private.broadcast_device_changes();
create trigger sensor_broadcast_update after update on public.sensor
  referencing old table as old_rows new table as new_rows for each statement execute function private.broadcast_device_changes();
create trigger sensor_broadcast_delete after delete on public.sensor
  referencing old table as old_rows for each statement execute function private.broadcast_device_changes();

-- The site id of a `site:<id>` topic, or null.
create function private.site_id_of_topic(p_topic text) returns bigint
language sql immutable
set search_path = ''
as $$
  select (substring(p_topic from '^site:([0-9]{1,18})$'))::bigint
$$;
grant execute on function private.site_id_of_topic(text) to authenticated, service_role;

-- Realtime Authorization: who may join the private `site:<id>` channels and receive their
-- broadcasts. Realtime evaluates this as the joining user's role, with their JWT claims and
-- realtime.topic() set to the channel's topic. Nobody but the database sends on these topics.
create policy "site members receive their site's broadcasts" on realtime.messages
  for select to authenticated
  using (
    realtime.messages.extension = 'broadcast'
    and (
      ((select private.is_admin()) and (select private.site_id_of_topic(realtime.topic())) is not null)
      or (select private.site_id_of_topic(realtime.topic())) = any ((select private.member_site_ids())::bigint[])
    )
  );
