import type { TransactionSql } from 'postgres';
import { z } from 'zod';
import { connectionRow, type ConnectionRow } from '../../rows.ts';
import type { ConnectionSettings, ConnectionSecrets } from '../../connection-form.ts';

export const connectionWithSite = connectionRow.extend({ site_name: z.string(), site_slug: z.string() });
export type ConnectionWithSite = z.infer<typeof connectionWithSite>;

/** Every connection the user may see (RLS), or the one with `id`. */
export async function listConnections(tx: TransactionSql, id: number | null = null): Promise<ConnectionWithSite[]> {
  const rows = await tx`
    select c.*, s.name as site_name, s.slug as site_slug
    from public.mqtt_connection c join public.site s on s.id = c.site_id
    where ${id}::bigint is null or c.id = ${id}
    order by s.name, c.id`;
  return z.array(connectionWithSite).parse(rows);
}

export async function getConnection(tx: TransactionSql, id: number): Promise<ConnectionWithSite | undefined> {
  return (await listConnections(tx, id))[0];
}

/** Start or stop: only the desired state changes; the ingestor reacts to the NOTIFY this sends. */
export async function setConnectionActive(
  tx: TransactionSql,
  id: number,
  active: boolean,
): Promise<ConnectionRow | undefined> {
  const rows = await tx`update public.mqtt_connection set is_active = ${active} where id = ${id} returning *`;
  return z.array(connectionRow).parse(rows)[0];
}

export async function updateConnectionSettings(
  tx: TransactionSql,
  id: number,
  s: ConnectionSettings,
): Promise<boolean> {
  const rows = await tx`
    update public.mqtt_connection set
      host = ${s.host}, port = ${s.port}, protocol = ${s.protocol}, ws_path = ${s.ws_path},
      protocol_version = ${s.protocol_version}, username = ${s.username}, client_id = ${s.client_id},
      clean_start = ${s.clean_start}, session_expiry_s = ${s.session_expiry_s}, keepalive_s = ${s.keepalive_s},
      subscribe_filters = ${s.subscribe_filters}::text[], reject_unauthorized = ${s.reject_unauthorized},
      share_group = ${s.share_group}
    where id = ${id}
    returning id`;
  return rows.length === 1;
}

export interface SecretPresence {
  has_password: boolean;
  has_client_cert: boolean;
  has_client_key: boolean;
  has_ca_cert: boolean;
}

const noSecrets: SecretPresence = {
  has_password: false,
  has_client_cert: false,
  has_client_key: false,
  has_ca_cert: false,
};

/** Which secrets are set — never their values, which no API role can read. */
export async function getSecretPresence(tx: TransactionSql, id: number): Promise<SecretPresence> {
  const [row]: [SecretPresence?] = await tx`select * from public.mqtt_connection_secret_presence(${id})`;
  return row ?? noSecrets;
}

/** Write-only: null keeps a stored value, '' clears it (set_mqtt_connection_secret's contract). */
export async function setSecrets(tx: TransactionSql, id: number, secrets: ConnectionSecrets): Promise<void> {
  await tx`select public.set_mqtt_connection_secret(${id}, ${secrets.password}, ${secrets.client_cert}, ${secrets.client_key}, ${secrets.ca_cert})`;
}
