-- Bootstrap 02: the `realtime` schema objects the app uses, with Supabase's signatures (plain
-- Postgres only; idempotent). Supabase Realtime creates these itself in each project; the local
-- realtime server (supabase/local) reads the same table and publications.

create schema if not exists realtime;
grant usage on schema realtime to anon, authenticated, service_role;

-- "Broadcast from Database" messages. Supabase partitions this table by day and drops old
-- partitions; locally a default partition takes every row and the local realtime server prunes it.
create table if not exists realtime.messages (
  topic text not null,
  extension text not null,
  payload jsonb,
  event text,
  private boolean default false,
  updated_at timestamp without time zone not null default now(),
  inserted_at timestamp without time zone not null default now(),
  id uuid not null default gen_random_uuid(),
  primary key (id, inserted_at)
) partition by range (inserted_at);

create table if not exists realtime.messages_default partition of realtime.messages default;

alter table realtime.messages enable row level security;
-- Realtime Authorization evaluates the policies on this table as the connecting user's role.
grant select, insert, update on realtime.messages to anon, authenticated;
grant all on realtime.messages to service_role;

-- The topic of the channel being authorized; Realtime sets `realtime.topic` before it checks policies.
create or replace function realtime.topic() returns text
language sql stable
as $$
  select nullif(current_setting('realtime.topic', true), '')::text;
$$;

-- Sends a Broadcast message to `topic`. Like Supabase's, it never fails the caller's transaction:
-- an error becomes a WARNING. A payload without an `id` gets the message's id.
create or replace function realtime.send(payload jsonb, event text, topic text, private boolean default true)
returns void
language plpgsql
as $$
declare
  generated_id uuid;
  final_payload jsonb;
begin
  begin
    generated_id := gen_random_uuid();
    if payload ? 'id' then
      final_payload := payload;
    else
      final_payload := jsonb_set(payload, '{id}', to_jsonb(generated_id));
    end if;

    execute format('set local realtime.topic to %L', topic);

    insert into realtime.messages (id, payload, event, topic, private, extension)
    values (generated_id, final_payload, event, topic, private, 'broadcast');
  exception
    when others then
      raise warning 'ErrorSendingBroadcastMessage: %', sqlerrm;
  end;
end;
$$;

-- Row-trigger helper: broadcasts a row change ({old_record, record, operation, table, schema}).
create or replace function realtime.broadcast_changes(
  topic_name text,
  event_name text,
  operation text,
  table_name text,
  table_schema text,
  new record,
  old record,
  level text default 'ROW'
)
returns void
language plpgsql
as $$
declare
  row_data jsonb := '{}'::jsonb;
begin
  if level = 'STATEMENT' then
    raise exception 'function can only be triggered for each row, not for each statement';
  end if;
  if operation = 'INSERT' or operation = 'UPDATE' or operation = 'DELETE' then
    row_data := jsonb_build_object(
      'old_record', old, 'record', new, 'operation', operation, 'table', table_name, 'schema', table_schema
    );
    perform realtime.send(row_data, event_name, topic_name);
  else
    raise exception 'Unexpected operation type: %', operation;
  end if;
exception
  when others then
    raise exception 'Failed to process the row: %', sqlerrm;
end;
$$;

grant execute on function realtime.topic() to anon, authenticated, service_role;
grant execute on function realtime.send(jsonb, text, text, boolean) to service_role;
grant execute on function realtime.broadcast_changes(text, text, text, text, text, record, record, text) to service_role;

do $$
begin
  -- postgres_changes: migrations add the tables the dashboard follows.
  if not exists (select 1 from pg_publication where pubname = 'supabase_realtime') then
    create publication supabase_realtime;
  end if;
  -- Broadcast from Database: Realtime streams inserts into realtime.messages over pgoutput.
  if not exists (select 1 from pg_publication where pubname = 'supabase_realtime_messages_publication') then
    create publication supabase_realtime_messages_publication
      for table realtime.messages
      with (publish = 'insert', publish_via_partition_root = true);
  end if;
end
$$;
