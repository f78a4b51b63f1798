-- Demo data for a fresh local database (and `supabase db reset`): one site whose connection points
-- at the embedded demo broker that `npm start` runs, and patterns for the three built-in parsers.
-- Idempotent, so it is safe to run twice.

insert into public.site (slug, name, description)
values ('demo', 'Demo site', 'Simulated gateways publishing to the embedded demo broker.')
on conflict (slug) do nothing;

-- MQTT 3.1.1 (protocol_version 4): the embedded demo broker (aedes) does not speak MQTT 5.
insert into public.mqtt_connection (site_id, host, port, protocol, protocol_version, is_active)
select s.id, '127.0.0.1', 1883, 'mqtt', 4, true
from public.site s
where s.slug = 'demo'
on conflict (site_id) do nothing;

-- `+site` is checked against the connection's site slug by the ingestor; the other named
-- wildcards become the device identifiers.
insert into public.mqtt_topic (connection_id, pattern, parser, qos, description)
select c.id, p.pattern, p.parser, 1, p.description
from public.mqtt_connection c
join public.site s on s.id = c.site_id and s.slug = 'demo'
cross join (values
  ('+site/gateway/+gateway/status', 'bfg.gateway-status.v1', 'Gateway status and last will'),
  ('+site/gateway/+gateway/datalogger/+datalogger/info', 'bfg.datalogger-info.v1', 'Datalogger description and sensor catalogue (retained)'),
  ('+site/gateway/+gateway/datalogger/+datalogger/data', 'bfg.datalogger-data.v1', 'Datalogger readings')
) as p (pattern, parser, description)
on conflict (connection_id, pattern, parser) do nothing;
