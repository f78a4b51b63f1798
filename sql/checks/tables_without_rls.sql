-- Tables and partitions in the public schema without row level security. Must return no rows:
-- with Supabase's default grants, such a table is readable by anon.
select c.relname as table_name
from pg_class c
join pg_namespace n on n.oid = c.relnamespace
where n.nspname = 'public'
  and c.relkind in ('r', 'p')
  and not c.relrowsecurity
order by 1;
