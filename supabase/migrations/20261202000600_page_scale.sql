-- Pages that stay fast at scale (issue 13): 100,000 discovered topics, 10,000 rows of each log, a
-- site of 1,000 sensors. Every list page reads one keyset page (an index range after the last row
-- of the previous page, never an offset) and counts at most a capped number of index entries;
-- these are the indexes that keeps each filter an index range. `npm run bench:pages` fills those
-- volumes and prints each page's server time.

-- Topics of every connection, newest first (the Topics page without a connection filter): the
-- page's sort order, so a page is the first rows of an index scan instead of a sort of all rows.
create index discovered_topic_seen_idx on public.discovered_topic (last_seen_at desc, connection_id desc, topic desc);

-- "Not processable" (the topics no pattern takes, where an admin looks for what to add): an
-- index of its own, since they are usually few among many.
create index discovered_topic_unprocessable_idx on public.discovered_topic (connection_id, last_seen_at desc)
  where not is_processable;

-- "Topic contains …" is a substring search (ILIKE '%…%'): trigrams (pg_trgm) make it an index
-- lookup. Supabase keeps extensions in the `extensions` schema; plain Postgres gets one too, so
-- the extension's functions stay out of the API's `public`. Where pg_trgm is installed already
-- (any schema) it is used as it is.
create schema if not exists extensions;
do $$
declare
  ext_schema text;
begin
  if not exists (select 1 from pg_extension where extname = 'pg_trgm') then
    create extension pg_trgm with schema extensions;
  end if;
  select n.nspname into ext_schema
  from pg_extension e join pg_namespace n on n.oid = e.extnamespace
  where e.extname = 'pg_trgm';
  execute format('create index discovered_topic_topic_trgm_idx on public.discovered_topic using gin (topic %I.gin_trgm_ops)',
                 ext_schema);
end
$$;

-- Under RLS the planner may not use that index for a user's ILIKE: the operator is not leakproof,
-- so it is evaluated only after the policy's check, row by row. This function searches as its
-- owner — through the index when the text is selective, by a scan stopping at p_limit when it is
-- not — and returns only rows of the connections the policy lets the caller read
-- (private.readable_connection_ids(), the very function of discovered_topic's policy): a page of
-- matches, newest first, after the keyset cursor (p_after_*), at most p_limit. The dashboard
-- counts with it (capped) and, when the matches are few, reads its page from it
-- (web/src/lib/server/queries/topics.ts). EXECUTE plans the query with the call's values.
create function private.discovered_topic_search(
  p_like text,
  p_connection_id bigint,
  p_processable boolean,
  p_after_seen_at timestamptz,
  p_after_connection_id bigint,
  p_after_topic text,
  p_limit integer
) returns setof public.discovered_topic
language plpgsql stable security definer
set search_path = ''
rows 200
as $$
begin
  return query execute
    'select t.* from public.discovered_topic t
     where t.connection_id = any ($1) and t.topic ilike $2
       and ($3::bigint is null or t.connection_id = $3) and ($4::boolean is null or t.is_processable = $4)
       and ($5::timestamptz is null or (t.last_seen_at, t.connection_id, t.topic) < ($5, $6, $7))
     order by t.last_seen_at desc, t.connection_id desc, t.topic desc
     limit $8'
    using private.readable_connection_ids(), p_like, p_connection_id, p_processable,
          p_after_seen_at, p_after_connection_id, p_after_topic, p_limit;
end
$$;
comment on function private.discovered_topic_search(text, bigint, boolean, timestamptz, bigint, text, integer) is
  'Discovered topics matching an ILIKE pattern that the caller may read, newest first after a keyset cursor, at most p_limit; through the trigram index.';
revoke all on function private.discovered_topic_search(text, bigint, boolean, timestamptz, bigint, text, integer) from public;
grant execute on function private.discovered_topic_search(text, bigint, boolean, timestamptz, bigint, text, integer)
  to authenticated, service_role;

-- archived_message_count (20261202000200_jobs.sql) with the filter's regular expression computed
-- once per call instead of once per archived row (inside PL/pgSQL the query runs with a generic
-- plan, where the immutable mqtt_filter_regex(p_pattern) is not folded). Same checks, same answer.
create or replace function public.archived_message_count(p_connection_id bigint, p_pattern text) returns bigint
language plpgsql stable security definer
set search_path = ''
as $$
declare
  n bigint;
  re text;
begin
  -- Admins through the API; the service role's key; SQL users with the table grant read it directly.
  if not (private.is_admin() or coalesce(auth.jwt() ->> 'role', '') = 'service_role') then
    raise exception 'only admins can search the archive' using errcode = '42501';
  end if;
  re := private.mqtt_filter_regex(p_pattern);
  select count(*) into n from public.mqtt_message_archive
  where connection_id = p_connection_id and topic ~ re;
  return n;
end
$$;
