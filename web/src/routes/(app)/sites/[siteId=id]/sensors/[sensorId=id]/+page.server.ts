import { error } from '@sveltejs/kit';
import { z } from 'zod';
import { asUser } from '#lib/server/as-user.ts';
import { requireSession } from '#lib/server/guards.ts';
import { chartRangeSchema, chartRanges, loadReadings } from '#lib/server/queries/readings.ts';
import { sensorRow } from '#lib/rows.ts';
import type { PageServerLoad } from './$types';

const sensorWithContext = sensorRow.extend({
  site_name: z.string(),
  datalogger_ident: z.string(),
  gateway_ident: z.string(),
  interval_s: z.coerce.number().int().nullable(),
});

export const load = (async ({ locals, params, url, depends }) => {
  depends('app:readings');
  const session = requireSession(locals);
  const range = chartRangeSchema.catch('1h').parse(url.searchParams.get('range') ?? '1h');
  const to = new Date();
  const from = new Date(to.getTime() - chartRanges[range] * 1000);
  return asUser(session.claims, async (tx) => {
    const rows = await tx`
      select x.*, s.name as site_name, d.ident as datalogger_ident, g.ident as gateway_ident, d.interval_s
      from public.sensor x
      join public.datalogger d on d.id = x.datalogger_id
      join public.gateway g on g.id = d.gateway_id
      join public.site s on s.id = x.site_id
      where x.id = ${params.sensorId} and x.site_id = ${params.siteId}`;
    const sensor = z.array(sensorWithContext).parse(rows)[0];
    if (!sensor) error(404, 'No such sensor on this site, or you are not a member of the site.');
    const started = performance.now();
    const series = await loadReadings(tx, sensor.id, from, to);
    return {
      sensor,
      range,
      from: from.getTime(),
      to: to.getTime(),
      series,
      queryMs: Math.round(performance.now() - started),
    };
  });
}) satisfies PageServerLoad;
