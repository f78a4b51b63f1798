-- Audit trail (issue 13): every change to sites, memberships, connections (settings, desired
-- state, secrets), topic patterns and accounts, recorded by triggers in the database — so a change
-- made from Studio, psql or the Auth server is recorded exactly like one made in the dashboard.
--
-- Who: the request's JWT claims when there are any (sub, email, role: what PostgREST, Realtime and
-- the dashboard's as-user transactions set), and always the database user the session logged in
-- as (session_user: `postgres` for psql and Studio, `supabase_auth_admin` for Supabase Auth, the
-- dashboard's own login role). When: the transaction's time (now()), so the rows of one change
-- share it, and txid groups them. What: the table, the row's key, a label a person recognises
-- (slug, pattern, e-mail) and, per changed column, {"old": …, "new": …} (an insert has only
-- "new", a delete only "old").
--
-- Columns are audited by allowlist (private.audit_columns): a column added later is not recorded
-- until it is named there, so observed state the ingestor writes many times a minute (status,
-- last_message_at, leases, session_filters, updated_at) never floods the trail, and no new column
-- can leak a value by accident. tests/integration/audit.test.ts fails while a column of an
-- audited table is in neither list, so adding one forces the decision.
--
-- Secrets (mqtt_connection_secret's password and TLS material, auth.users.encrypted_password) are
-- recorded as what happened to them — {"secret": "set" | "changed" | "cleared"} — never as
-- values, digests or lengths.
--
-- Readable by admins only (RLS: private.is_admin(), the JWT's app_metadata.role) and the service
-- role; nobody may insert, change or delete rows through the API (the trigger functions are
-- SECURITY DEFINER and write as their owner). In supabase_realtime, for the live Audit page:
-- Realtime checks each row against the subscriber's RLS, and the write rate is that of admins.

create table public.audit_log (
  id bigint generated always as identity primary key,
  at timestamptz not null default now(),
  -- The transaction: the rows of one change (a site deleted with its connection and patterns).
  txid bigint not null default txid_current(),
  -- From the request's JWT, when the change came through the API (null from psql or Studio).
  actor_sub text,
  actor_email text,
  actor_role text,
  -- The database user the session logged in as.
  db_user text not null,
  -- Who, as the Audit page filters and shows it (lower case): the e-mail, else the JWT subject,
  -- else the database user.
  actor text generated always as (lower(coalesce(actor_email, actor_sub, db_user))) stored,
  table_name text not null
    constraint audit_log_table_check
    check (table_name in ('site', 'site_member', 'mqtt_connection', 'mqtt_connection_secret', 'mqtt_topic', 'auth.users')),
  op text not null constraint audit_log_op_check check (op in ('INSERT', 'UPDATE', 'DELETE')),
  -- The row's key: its id; `<site_id>/<user_id>` for a membership; the connection id for its secrets.
  row_id text not null,
  -- The site the row belongs to, when there is one (kept after the site is deleted: no foreign key).
  site_id bigint,
  -- What a person recognises the row by, as it was: slug, broker, pattern, e-mail.
  label text,
  changes jsonb not null check (jsonb_typeof(changes) = 'object')
);
comment on table public.audit_log is
  'Changes to sites, memberships, connections (secrets as set/changed/cleared, never values), topic patterns and accounts, written by triggers whoever makes them (dashboard, Studio, SQL, Supabase Auth). Admins only.';
comment on column public.audit_log.changes is
  'Per audited column {"old": …, "new": …} (insert: new only; delete: old only); secret columns {"secret": "set"|"changed"|"cleared"}.';
comment on column public.audit_log.db_user is 'session_user: the database user the change was made as (postgres, supabase_auth_admin, the dashboard''s login role, …).';

-- The Audit page's first screen and its filters, newest first, each a keyset over (at, id).
create index audit_log_at_idx on public.audit_log (at desc, id desc);
create index audit_log_table_idx on public.audit_log (table_name, at desc, id desc);
create index audit_log_actor_idx on public.audit_log (actor, at desc, id desc);
create index audit_log_site_idx on public.audit_log (site_id, at desc, id desc) where site_id is not null;
create index audit_log_row_idx on public.audit_log (table_name, row_id, at desc, id desc);

alter table public.audit_log enable row level security;
create policy "admins read the audit trail" on public.audit_log
  for select to authenticated using ((select private.is_admin()));
revoke all on public.audit_log from anon, authenticated, service_role;
grant select on public.audit_log to authenticated, service_role;

alter publication supabase_realtime add table public.audit_log;

-- ---------------------------------------------------------------------------------------------

-- The columns recorded per table: value_columns with their old and new values, secret_columns as what
-- happened to them. Everything else is left out (see the header).
create function private.audit_columns(p_table text, out value_columns text[], out secret_columns text[])
language sql immutable
set search_path = ''
as $$
  select
    case p_table
      when 'site' then array['slug', 'name', 'description', 'is_active']
      when 'site_member' then array['site_id', 'user_id']
      when 'mqtt_connection' then array['site_id', 'host', 'port', 'protocol', 'ws_path', 'protocol_version',
        'username', 'client_id', 'clean_start', 'session_expiry_s', 'keepalive_s', 'subscribe_filters',
        'reject_unauthorized', 'share_group', 'is_active']
      when 'mqtt_connection_secret' then array['connection_id']
      when 'mqtt_topic' then array['connection_id', 'pattern', 'parser', 'parser_config', 'qos', 'is_active',
        'priority', 'description']
      -- GoTrue's auth.users: who the account is, its role (app_metadata) and whether it may sign in.
      when 'auth.users' then array['email', 'phone', 'role', 'raw_app_meta_data', 'email_confirmed_at',
        'banned_until', 'deleted_at', 'is_anonymous']
      else array[]::text[]
    end,
    case p_table
      when 'mqtt_connection_secret' then array['password', 'client_cert', 'client_key', 'ca_cert']
      when 'auth.users' then array['encrypted_password']
      else array[]::text[]
    end
$$;
comment on function private.audit_columns(text) is
  'Which columns of an audited table the audit trail records with their values, and which as secrets (set/changed/cleared only).';

-- The changed columns between two row images (either may be null: insert, delete).
create function private.audit_changes(p_table text, p_old jsonb, p_new jsonb) returns jsonb
language plpgsql immutable
set search_path = ''
as $$
declare
  cols record;
  col text;
  result jsonb := '{}'::jsonb;
  old_value jsonb;
  new_value jsonb;
begin
  select * into cols from private.audit_columns(p_table);
  foreach col in array cols.value_columns loop
    old_value := p_old -> col;
    new_value := p_new -> col;
    if p_old is null then
      if new_value is not null and new_value <> 'null'::jsonb then
        result := result || jsonb_build_object(col, jsonb_build_object('new', new_value));
      end if;
    elsif p_new is null then
      if old_value is not null and old_value <> 'null'::jsonb then
        result := result || jsonb_build_object(col, jsonb_build_object('old', old_value));
      end if;
    elsif old_value is distinct from new_value then
      result := result || jsonb_build_object(col, jsonb_build_object('old', coalesce(old_value, 'null'::jsonb), 'new', coalesce(new_value, 'null'::jsonb)));
    end if;
  end loop;
  foreach col in array cols.secret_columns loop
    -- Only whether a value is there and whether it changed; the values themselves never leave here.
    old_value := p_old -> col;
    new_value := p_new -> col;
    if coalesce(old_value, 'null'::jsonb) = 'null'::jsonb and coalesce(new_value, 'null'::jsonb) <> 'null'::jsonb then
      result := result || jsonb_build_object(col, jsonb_build_object('secret', 'set'));
    elsif coalesce(old_value, 'null'::jsonb) <> 'null'::jsonb and coalesce(new_value, 'null'::jsonb) = 'null'::jsonb then
      result := result || jsonb_build_object(col, jsonb_build_object('secret', 'cleared'));
    elsif p_old is not null and p_new is not null and old_value is distinct from new_value then
      result := result || jsonb_build_object(col, jsonb_build_object('secret', 'changed'));
    end if;
  end loop;
  return result;
end
$$;

-- One row per audited row change. SECURITY DEFINER: the writers (authenticated admins, Supabase
-- Auth's own role) may not insert into audit_log themselves.
create function private.audit_row_change() returns trigger
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
    when 'mqtt_topic' then
      key := r ->> 'id';
      site := (select c.site_id from public.mqtt_connection c where c.id = (r ->> 'connection_id')::bigint);
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
revoke all on function private.audit_row_change(), private.audit_changes(text, jsonb, jsonb) from public;

create trigger site_audit after insert or update or delete on public.site
  for each row execute function private.audit_row_change();
create trigger site_member_audit after insert or update or delete on public.site_member
  for each row execute function private.audit_row_change();
create trigger mqtt_connection_audit after insert or update or delete on public.mqtt_connection
  for each row execute function private.audit_row_change();
create trigger mqtt_connection_secret_audit after insert or update or delete on public.mqtt_connection_secret
  for each row execute function private.audit_row_change();
create trigger mqtt_topic_audit after insert or update or delete on public.mqtt_topic
  for each row execute function private.audit_row_change();
-- Accounts: Supabase Auth (its admin API, sign-ups, the dashboard's Users page) and the local
-- stand-in write auth.users; Supabase allows triggers on it (its "user management" guide).
create trigger bfg_audit after insert or update or delete on auth.users
  for each row execute function private.audit_row_change();
