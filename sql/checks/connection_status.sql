-- One line per connection: desired vs observed state, and how fresh it is.
select s.slug as site,
       c.id,
       c.host || ':' || c.port as broker,
       c.is_active as should_connect,
       c.status,
       c.status_detail,
       now() - c.status_changed_at as in_status_for,
       now() - c.last_message_at as since_last_message,
       c.owner_instance
from public.mqtt_connection c
join public.site s on s.id = c.site_id
order by s.slug;
