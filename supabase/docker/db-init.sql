-- docker-compose.yml mounts this into supabase/postgres's init scripts: it runs once, when the
-- container initialises an empty data volume, as the superuser, with the container's environment.
-- It is a file (not inline in the compose file) because the image only runs init scripts it finds
-- on disk; Compose `configs` would do, but podman-compose does not support them.
--
-- The Supabase services log in as their own roles with POSTGRES_PASSWORD (the image gives a
-- password only to postgres and supabase_admin): PostgREST as authenticator, Auth as
-- supabase_auth_admin. Changing POSTGRES_PASSWORD later means changing these too (README,
-- Deployment).
\set pgpass `echo "$POSTGRES_PASSWORD"`

alter role authenticator with password :'pgpass';
alter role supabase_auth_admin with password :'pgpass';

-- Realtime keeps its tenants and their settings in _realtime (its DB_AFTER_CONNECT_QUERY sets the
-- search_path to it) and creates the schema's tables itself on its first start.
create schema if not exists _realtime;
alter schema _realtime owner to supabase_admin;
