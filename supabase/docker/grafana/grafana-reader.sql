-- Run by compose's grafana-reader (psql -v pw=<GRAFANA_DB_PASSWORD>): the login role Grafana
-- queries with. A member of bfg_reader (SELECT on the SQL integrations' views only, under RLS),
-- bound to every active site. Idempotent: run again after adding sites or changing the password.
select format('create role bfg_grafana login password %L in role bfg_reader', :'pw')
where not exists (select from pg_roles where rolname = 'bfg_grafana') \gexec
select format('alter role bfg_grafana with login password %L', :'pw') \gexec
select public.bind_sql_reader('bfg_grafana', array(select slug from public.site where is_active order by slug));
