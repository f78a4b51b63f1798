-- Bootstrap 00: the API roles Supabase ships (plain Postgres only; idempotent).
--
-- anon          the role PostgREST/Realtime use for requests without a user session
-- authenticated the role for signed-in users; RLS policies decide what they see
-- service_role  the backend role (the ingestor); bypasses RLS like Supabase's
--
-- Privileges mirror Supabase's defaults: every table created in `public` is granted to all three
-- roles, so row level security (not missing grants) is what keeps data private, exactly as on
-- Supabase. Migrations therefore enable RLS on every table and revoke what a role must never have.

do $$
begin
  if not exists (select 1 from pg_roles where rolname = 'anon') then
    create role anon nologin noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'authenticated') then
    create role authenticated nologin noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'service_role') then
    create role service_role nologin noinherit bypassrls;
  end if;
end
$$;

-- The role that runs this file (the local superuser) can switch to the API roles, as
-- Supabase's `authenticator` and `postgres` can.
grant anon, authenticated, service_role to current_user;

grant usage on schema public to anon, authenticated, service_role;

alter default privileges in schema public grant all on tables to anon, authenticated, service_role;
alter default privileges in schema public grant all on sequences to anon, authenticated, service_role;
alter default privileges in schema public grant all on functions to anon, authenticated, service_role;
