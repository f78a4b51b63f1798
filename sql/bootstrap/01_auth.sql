-- Bootstrap 01: the parts of Supabase Auth's `auth` schema the app uses (plain Postgres only;
-- idempotent). Column names follow GoTrue's `auth.users`, so the same migrations and queries work
-- against Supabase; locally the web app keeps its accounts here.

create schema if not exists auth;
grant usage on schema auth to anon, authenticated, service_role;

create table if not exists auth.users (
  id uuid primary key default gen_random_uuid(),
  email text unique,
  encrypted_password text,
  raw_app_meta_data jsonb not null default '{}'::jsonb,
  raw_user_meta_data jsonb not null default '{}'::jsonb,
  last_sign_in_at timestamptz,
  banned_until timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
comment on table auth.users is 'Local stand-in for Supabase Auth users (GoTrue column names). Not readable by API roles.';
revoke all on auth.users from anon, authenticated;
grant all on auth.users to service_role;

-- The request's JWT claims, as PostgREST and Realtime set them: `request.jwt.claims` holds the
-- whole claim set as JSON (older PostgREST versions set `request.jwt.claim.<name>` one by one).
create or replace function auth.jwt() returns jsonb
language sql stable
as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim', true), ''),
    nullif(current_setting('request.jwt.claims', true), '')
  )::jsonb
$$;

create or replace function auth.uid() returns uuid
language sql stable
as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim.sub', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
  )::uuid
$$;

create or replace function auth.role() returns text
language sql stable
as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim.role', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
  )::text
$$;

create or replace function auth.email() returns text
language sql stable
as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim.email', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'email')
  )::text
$$;

grant execute on function auth.jwt(), auth.uid(), auth.role(), auth.email() to anon, authenticated, service_role;

-- The columns of GoTrue's auth.users that the local Auth API (supabase/local/src/auth) reads and
-- writes besides the ones above; added one by one so that databases bootstrapped before exist
-- keep their rows.
alter table auth.users add column if not exists aud varchar(255) not null default 'authenticated';
alter table auth.users add column if not exists role varchar(255) not null default 'authenticated';
alter table auth.users add column if not exists email_confirmed_at timestamptz;
alter table auth.users add column if not exists is_anonymous boolean not null default false;

-- Sessions and refresh tokens, shaped like GoTrue's (legacy refresh-token algorithm): one session
-- per sign-in, a chain of refresh tokens per session (`parent` = the token it was swapped for).
-- Unlike GoTrue, `token` and `parent` hold SHA-256 hashes (hex) of the tokens, never the tokens,
-- so reading this table does not let anyone refresh a session.
create table if not exists auth.sessions (
  id uuid primary key,
  user_id uuid not null references auth.users (id) on delete cascade,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  factor_id uuid,
  aal text not null default 'aal1',
  not_after timestamptz,
  refreshed_at timestamp,
  user_agent text,
  ip inet,
  tag text
);
create index if not exists sessions_user_id_idx on auth.sessions (user_id);
comment on table auth.sessions is 'Local stand-in for Supabase Auth sessions (GoTrue column names). Not readable by API roles.';

create table if not exists auth.refresh_tokens (
  instance_id uuid,
  id bigserial primary key,
  token varchar(255) not null unique,
  user_id varchar(255) not null,
  revoked boolean not null default false,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  parent varchar(255),
  session_id uuid references auth.sessions (id) on delete cascade
);
create index if not exists refresh_tokens_parent_idx on auth.refresh_tokens (parent);
create index if not exists refresh_tokens_session_id_revoked_idx on auth.refresh_tokens (session_id, revoked);
comment on table auth.refresh_tokens is 'Local stand-in for Supabase Auth refresh tokens; token and parent are SHA-256 hashes. Not readable by API roles.';

revoke all on auth.sessions, auth.refresh_tokens from anon, authenticated;
revoke all on sequence auth.refresh_tokens_id_seq from anon, authenticated;
grant all on auth.sessions, auth.refresh_tokens to service_role;
