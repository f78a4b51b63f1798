-- The audit trail (20261202000500_audit_trail.sql) keeps the site of a connection's secrets and
-- patterns when they go with their connection: a site or connection deleted with everything below
-- it removes the connection before its secrets and patterns, so looking the connection up finds
-- nothing; its own audit row, written earlier in the same transaction, still says which site (and
-- which broker) it was. Only the trigger function changes; the rows it writes are the same
-- otherwise.

-- The audit row of a connection deleted earlier in this transaction: its site and label.
create function private.audited_connection(p_connection_id bigint)
returns table (site_id bigint, label text)
language sql stable
set search_path = ''
as $$
  select a.site_id, a.label from public.audit_log a
  where a.txid = txid_current() and a.table_name = 'mqtt_connection' and a.row_id = p_connection_id::text
  order by a.id desc
  limit 1
$$;
revoke all on function private.audited_connection(bigint) from public;

-- One row per audited row change. SECURITY DEFINER: the writers (authenticated admins, Supabase
-- Auth's own role) may not insert into audit_log themselves.
create or replace function private.audit_row_change() returns trigger
language plpgsql security definer
set search_path = ''
as $$
declare
  tbl text := case when tg_table_schema = 'auth' then 'auth.' || tg_table_name else tg_table_name end;
  old_row jsonb := case when tg_op in ('UPDATE', 'DELETE') then to_jsonb(old) end;
  new_row jsonb := case when tg_op in ('INSERT', 'UPDATE') then to_jsonb(new) end;
  r jsonb := coalesce(new_row, old_row);
  diff jsonb;
  claims jsonb;
  key text;
  site bigint;
  what text;
begin
  diff := private.audit_changes(tbl, old_row, new_row);
  -- An update of columns the trail does not record (the ingestor's status writes) leaves no row.
  if tg_op = 'UPDATE' and diff = '{}'::jsonb then
    return null;
  end if;
  begin
    claims := nullif(current_setting('request.jwt.claims', true), '')::jsonb;
  exception when others then
    claims := null;
  end;
  case tbl
    when 'site' then
      key := r ->> 'id';
      site := (r ->> 'id')::bigint;
      what := r ->> 'slug';
    when 'site_member' then
      key := (r ->> 'site_id') || '/' || (r ->> 'user_id');
      site := (r ->> 'site_id')::bigint;
      what := concat_ws(' in ',
        (select u.email from auth.users u where u.id = (r ->> 'user_id')::uuid),
        (select s.slug from public.site s where s.id = site));
    when 'mqtt_connection' then
      key := r ->> 'id';
      site := (r ->> 'site_id')::bigint;
      what := concat_ws(' ',
        (select s.slug from public.site s where s.id = site),
        (r ->> 'protocol') || '://' || (r ->> 'host') || ':' || (r ->> 'port'));
    when 'mqtt_connection_secret' then
      key := r ->> 'connection_id';
      select c.site_id, s.slug into site, what
      from public.mqtt_connection c left join public.site s on s.id = c.site_id
      where c.id = (r ->> 'connection_id')::bigint;
      if site is null then
        select a.site_id, a.label into site, what from private.audited_connection((r ->> 'connection_id')::bigint) a;
      end if;
    when 'mqtt_topic' then
      key := r ->> 'id';
      site := coalesce(
        (select c.site_id from public.mqtt_connection c where c.id = (r ->> 'connection_id')::bigint),
        (select a.site_id from private.audited_connection((r ->> 'connection_id')::bigint) a));
      what := (r ->> 'pattern') || ' → ' || (r ->> 'parser');
    else
      key := r ->> 'id';
      what := r ->> 'email';
  end case;
  insert into public.audit_log (actor_sub, actor_email, actor_role, db_user, table_name, op, row_id, site_id, label, changes)
  values (
    claims ->> 'sub',
    lower(claims ->> 'email'),
    coalesce(claims ->> 'role', nullif(current_setting('role', true), 'none')),
    session_user,
    tbl, tg_op, key, site, what, diff);
  return null;
end
$$;
