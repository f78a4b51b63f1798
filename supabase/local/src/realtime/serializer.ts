import { z } from 'zod';

/** A Phoenix channel message: the unit of the Supabase Realtime wire protocol. */
export interface PhoenixMessage {
  joinRef: string | null;
  ref: string | null;
  topic: string;
  event: string;
  payload: Record<string, unknown>;
}

export type Vsn = '1.0.0' | '2.0.0';

const ref = z.string().nullable();
const payload = z.record(z.string(), z.unknown());
/** vsn 2.0.0: `[join_ref, ref, topic, event, payload]` (supabase/realtime `V2Serializer.decode_text`). */
const v2Frame = z.tuple([ref, ref, z.string(), z.string(), payload]).rest(z.unknown());
/** vsn 1.0.0: `{topic, event, payload, ref, join_ref?}`. */
const v1Frame = z.object({
  topic: z.string(),
  event: z.string(),
  payload,
  ref: ref.optional(),
  join_ref: ref.optional(),
});

/** Picks the serializer a client asked for: `vsn` 2.x → arrays, 1.x or none → objects (Phoenix' default). */
export function parseVsn(value: string | null): Vsn | undefined {
  if (value === null || value.startsWith('1.')) return '1.0.0';
  if (value.startsWith('2.')) return '2.0.0';
  return undefined;
}

export function decode(vsn: Vsn, text: string): PhoenixMessage | undefined {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (vsn === '2.0.0') {
    const parsed = v2Frame.safeParse(json);
    if (!parsed.success) return undefined;
    const [joinRef, r, topic, event, body] = parsed.data;
    return { joinRef, ref: r, topic, event, payload: body };
  }
  const parsed = v1Frame.safeParse(json);
  if (!parsed.success) return undefined;
  return {
    joinRef: parsed.data.join_ref ?? null,
    ref: parsed.data.ref ?? null,
    topic: parsed.data.topic,
    event: parsed.data.event,
    payload: parsed.data.payload,
  };
}

/** vsn 1.0.0 servers send no join_ref (Phoenix' V1 serializer writes the v1 fields only). */
export function encode(vsn: Vsn, message: PhoenixMessage): string {
  if (vsn === '2.0.0')
    return JSON.stringify([message.joinRef, message.ref, message.topic, message.event, message.payload]);
  return JSON.stringify({ topic: message.topic, event: message.event, payload: message.payload, ref: message.ref });
}

/** Binary frame kinds of vsn 2.0.0 (realtime-js `Serializer.KINDS`). */
const USER_BROADCAST_PUSH = 3;
const JSON_ENCODING = 1;

/**
 * Decodes a vsn 2.0.0 binary frame. Only kind 3 exists client → server: a user broadcast push,
 * `[kind, joinRefLen, refLen, topicLen, eventLen, metadataLen, encoding]` then those UTF-8 fields,
 * then the payload (JSON when encoding is 1). Returns the equivalent text-protocol message.
 */
export function decodeBinary(frame: Buffer): PhoenixMessage | undefined {
  if (frame.length < 7 || frame[0] !== USER_BROADCAST_PUSH) return undefined;
  const lengths = [frame[1]!, frame[2]!, frame[3]!, frame[4]!, frame[5]!];
  const encoding = frame[6]!;
  let offset = 7;
  const fields = lengths.map((length) => {
    const text = frame.subarray(offset, offset + length).toString('utf8');
    offset += length;
    return text;
  });
  if (offset > frame.length || encoding !== JSON_ENCODING) return undefined;
  const [joinRef, ref, topic, event, metadata] = fields as [string, string, string, string, string];
  let userPayload: unknown;
  let extra: Record<string, unknown> = {};
  try {
    userPayload = JSON.parse(frame.subarray(offset).toString('utf8'));
    if (metadata) extra = JSON.parse(metadata) as Record<string, unknown>;
  } catch {
    return undefined;
  }
  return {
    joinRef: joinRef || null,
    ref: ref || null,
    topic,
    event: 'broadcast',
    payload: { ...extra, type: 'broadcast', event, payload: userPayload },
  };
}

/**
 * Encoded frames of shared payload objects, by payload, then by vsn and topic: when one change or
 * broadcast goes to hundreds of channels of one topic, it is serialized once per protocol version
 * instead of once per socket. Weakly held: entries go with their payload.
 */
const encodedFrames = new WeakMap<object, Map<string, string>>();

/** `encode` for a server push (no refs) whose payload object may be sent to many sockets. */
export function encodeShared(
  vsn: Vsn,
  joinRef: string | null,
  topic: string,
  event: string,
  payload: Record<string, unknown>,
): string {
  // join_ref is part of a v2 frame; pushes from the dispatcher carry none, so the cache key needs none.
  if (joinRef !== null) return encode(vsn, { joinRef, ref: null, topic, event, payload });
  let byKey = encodedFrames.get(payload);
  if (!byKey) encodedFrames.set(payload, (byKey = new Map<string, string>()));
  const key = `${vsn}\u0000${topic}\u0000${event}`;
  let text = byKey.get(key);
  if (text === undefined) byKey.set(key, (text = encode(vsn, { joinRef: null, ref: null, topic, event, payload })));
  return text;
}
