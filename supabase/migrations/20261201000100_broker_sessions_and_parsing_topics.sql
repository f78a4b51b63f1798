-- Two things the ingestor must remember in the database (issue 9):
--
-- 1. What the broker keeps subscribed for each connection. With a persistent session
--    (clean_start = false) subscriptions outlive the client and the ingestor process: a broker
--    that says "session present" on CONNACK does not say which filters the session holds, and
--    MQTT has no way to ask. mqtt_connection.session_filters is the ingestor's record of them, so
--    that after a restart it can subscribe what subscribe_filters gained and unsubscribe what it
--    lost. It is written *before* a SUBSCRIBE goes out (a superset of what the broker may hold),
--    so a crash between SUBACK and the write cannot leave a subscription nobody knows to remove.
--
-- 2. Which topics each parsing-log row covers. Rows are aggregated by fingerprint, and for
--    topics a pattern matched the fingerprint names the pattern, not the topic: a thousand
--    gateways sending the same bad payload are one row. mqtt_parsing_log_topic lists the topics
--    behind a row with their own counts, at most a fixed number per row (the ingestor's limit,
--    20); messages on further topics are only counted on the row. A child table rather than an
--    array column: per-topic counts, and the row that Realtime sends on every change stays small.

alter table public.mqtt_connection
  add column session_filters text[] not null default '{}';
comment on column public.mqtt_connection.session_filters is
  'Observed by the ingestor: the filters the broker session may hold ($share/<group>/ prefix included). Emptied when the broker reports no session. Not a setting: change subscribe_filters.';

-- Until now the ingestor subscribed subscribe_filters whenever the broker had no session and
-- never changed them afterwards: for connections that ever connected, that is the best guess of
-- what their sessions hold. Filters that are still wanted get subscribed again anyway (MQTT 5:
-- without a replay of retained messages), so a wrong guess costs at most one needless UNSUBSCRIBE.
update public.mqtt_connection c
set session_filters = array(
  select case when c.share_group is null then f.filter else '$share/' || c.share_group || '/' || f.filter end
  from unnest(c.subscribe_filters) with ordinality as f (filter, n)
  order by f.n)
where c.last_connected_at is not null;

-- session_filters is deliberately absent from the column grants of 20261127000200 (insert and
-- update for authenticated list the settings only), and it is not in the NOTIFY trigger's column
-- list: the ingestor's own writes do not wake its control loop.

alter table public.mqtt_parsing_log
  -- Distinct topics listed in mqtt_parsing_log_topic for this row.
  add column topic_count integer not null default 0 check (topic_count >= 0),
  -- Messages of this row whose topic is not listed: the row already listed the maximum, or the
  -- message predates the topic list. count = sum(mqtt_parsing_log_topic.count) + untracked_count.
  add column untracked_count bigint not null default 0 check (untracked_count >= 0);

-- Existing rows: their messages' topics are unknown (only the last one is in `topic`).
update public.mqtt_parsing_log set untracked_count = count;

create table public.mqtt_parsing_log_topic (
  parsing_log_id bigint not null references public.mqtt_parsing_log (id) on delete cascade,
  -- The row's connection, copied so that the read policy needs no join (the same as the log's).
  connection_id bigint not null references public.mqtt_connection (id) on delete cascade,
  topic text not null check (length(topic) <= 1024),
  count bigint not null check (count > 0),
  first_seen_at timestamptz not null,
  last_seen_at timestamptz not null,
  primary key (parsing_log_id, topic)
);
comment on table public.mqtt_parsing_log_topic is
  'The topics behind an aggregated mqtt_parsing_log row, with counts; a bounded number per row (further topics only add to the row''s untracked_count). Written with the batch that logged them.';
create index mqtt_parsing_log_topic_connection_idx on public.mqtt_parsing_log_topic (connection_id);

alter table public.mqtt_parsing_log_topic enable row level security;
create policy "members read their connections' parsing log topics" on public.mqtt_parsing_log_topic
  for select to authenticated
  using (connection_id = any ((select private.readable_connection_ids())::bigint[]));

revoke all on public.mqtt_parsing_log_topic from anon, authenticated;
grant select on public.mqtt_parsing_log_topic to authenticated;
grant all on public.mqtt_parsing_log_topic to service_role;
