import type { TransactionSql } from 'postgres';
import { z } from 'zod';
import type { ConnectionSettings } from '../../connection-form.ts';
import { sql } from '../db.ts';
import type { TestSecrets } from '../broker-test.ts';

const id = z.coerce.number().int();
const count = z.coerce.number().int();

export const siteOption = z.object({ id, slug: z.string(), name: z.string() });
export type SiteOption = z.infer<typeof siteOption>;

/** Sites that have no connection yet (a site has at most one), for the New connection form. */
export async function listSitesWithoutConnection(tx: TransactionSql): Promise<SiteOption[]> {
  const rows = await tx`
    select s.id, s.slug, s.name from public.site s
    where not exists (select 1 from public.mqtt_connection c where c.site_id = s.id)
    order by s.name, s.id`;
  return z.array(siteOption).parse(rows);
}

export async function getSiteOption(tx: TransactionSql, siteId: number): Promise<SiteOption | undefined> {
  const rows = await tx`select id, slug, name from public.site where id = ${siteId}`;
  return z.array(siteOption).parse(rows)[0];
}

/** A new connection of a site, stopped (is_active false) until someone starts it. */
export async function createConnection(tx: TransactionSql, siteId: number, s: ConnectionSettings): Promise<number> {
  const [row] = await tx`
    insert into public.mqtt_connection (site_id, host, port, protocol, ws_path, protocol_version, username, client_id,
      clean_start, session_expiry_s, keepalive_s, subscribe_filters, reject_unauthorized, share_group, is_active)
    values (${siteId}, ${s.host}, ${s.port}, ${s.protocol}, ${s.ws_path}, ${s.protocol_version}, ${s.username},
      ${s.client_id}, ${s.clean_start}, ${s.session_expiry_s}, ${s.keepalive_s}, ${s.subscribe_filters}::text[],
      ${s.reject_unauthorized}, ${s.share_group}, false)
    returning id`;
  return id.parse(row!['id']);
}

const COUNT_CAP = 100_000;

export const connectionImpact = z.object({ patterns: count, topics: count, archived: count, log: count });
export type ConnectionImpact = z.infer<typeof connectionImpact> & { cap: number };

/** What deleting a connection takes with it (each count stops at COUNT_CAP). */
export async function connectionDeletionImpact(tx: TransactionSql, connectionId: number): Promise<ConnectionImpact> {
  const [row] = await tx`
    select
      (select count(*) from public.mqtt_topic where connection_id = ${connectionId}) as patterns,
      (select count(*) from (select 1 from public.discovered_topic where connection_id = ${connectionId} limit ${COUNT_CAP + 1}) x) as topics,
      (select count(*) from (select 1 from public.mqtt_message_archive where connection_id = ${connectionId} limit ${COUNT_CAP + 1}) x) as archived,
      (select count(*) from (select 1 from public.mqtt_connection_log where connection_id = ${connectionId} limit ${COUNT_CAP + 1}) x) +
      (select count(*) from (select 1 from public.mqtt_parsing_log where connection_id = ${connectionId} limit ${COUNT_CAP + 1}) x) as log`;
  return { ...connectionImpact.parse(row), cap: COUNT_CAP };
}

/**
 * Deletes a connection; its secrets, patterns, discovered topics, logs and archived messages go
 * with it (cascades). The site, its devices and readings stay. false: no such connection.
 */
export async function deleteConnection(tx: TransactionSql, connectionId: number): Promise<boolean> {
  const rows = await tx`delete from public.mqtt_connection where id = ${connectionId} returning id`;
  return rows.length === 1;
}

/**
 * The stored secrets of a connection, for Test connection when the form leaves a secret empty
 * ("keep what is stored"). The one read of mqtt_connection_secret in the dashboard, and the one
 * query not run as the signed-in user: no API role may read secrets (the table is write-only for
 * them), so it runs as the dashboard's own database role, which owns the table as the ingestor's
 * does. Callers must have checked, as the user, that they are an admin who sees the connection;
 * the values stay in this process (the test's MQTT CONNECT) and never reach a page or a log.
 */
export async function storedSecretsForTest(connectionId: number): Promise<TestSecrets> {
  const [row] = await sql()<TestSecrets[]>`
    select password, client_cert, client_key, ca_cert from public.mqtt_connection_secret where connection_id = ${connectionId}`;
  return row ?? { password: null, client_cert: null, client_key: null, ca_cert: null };
}
