import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import type { RealtimeChannel } from '@supabase/supabase-js';
import { WebSocket as WsClient } from 'ws';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { follow, startRealtimeFixture, type RealtimeFixture } from '../support/realtime.ts';
import { waitFor } from '../support/wait-for.ts';
import { Inbox } from '../support/wait.ts';

/**
 * Bounded resources: a client that stops reading is cut off instead of growing the server's
 * memory, while the others get everything; oversized and too frequent client messages are refused
 * as Realtime refuses them. (The bounded dispatch queue is proven in realtime-changes.test.ts.)
 */

const limits = { maxBufferedBytes: 1024 * 1024, maxPayloadBytes: 10_000, maxEventsPerSecond: 20 };
let rt: RealtimeFixture;
beforeAll(async () => {
  rt = await startRealtimeFixture({ limits });
});
afterEach(() => rt.reset());
afterAll(() => rt?.close());

async function listen(channel: RealtimeChannel) {
  const inbox = new Inbox<Record<string, unknown>>();
  channel.on('broadcast', { event: '*' }, (m: Record<string, unknown>) => inbox.push(m));
  const followed = follow(channel);
  expect(await followed.statuses.next('SUBSCRIBED')).toBe('SUBSCRIBED');
  return { inbox, followed };
}

describe('bounded resources', () => {
  it('closes a socket that stopped reading, and the others still get every message', async () => {
    const topic = `stall-${randomUUID()}`;
    const url = `${rt.server.url.replace('http', 'ws')}/realtime/v1/websocket?apikey=${rt.anonKey}&vsn=2.0.0`;
    const join = JSON.stringify(['1', '1', `realtime:${topic}`, 'phx_join', { config: { private: false } }]);
    // The stalled client: joins, then stops reading its socket.
    const stalled = new WsClient(url);
    await new Promise<void>((resolve, reject) => {
      stalled.once('open', () => resolve());
      stalled.once('error', reject);
    });
    const joined = new Promise<void>((resolve) => stalled.once('message', () => resolve()));
    stalled.send(join);
    await joined;
    (stalled as unknown as { _socket: { pause(): void } })._socket.pause();
    // A healthy client in a process of its own (as a browser is), counting what it receives.
    const healthy = spawn(
      process.execPath,
      [
        '-e',
        `
      const ws = new (require('ws'))(${JSON.stringify(url)});
      let n = 0;
      ws.on('open', () => ws.send(${JSON.stringify(join)}));
      ws.on('message', (d) => {
        const text = d.toString();
        if (text.includes('"phx_reply"')) console.log('joined');
        else if (text.includes('"broadcast"')) console.log('got ' + ++n);
      });`,
      ],
      { cwd: import.meta.dirname, stdio: ['ignore', 'pipe', 'inherit'] },
    );
    const lines: string[] = [];
    healthy.stdout.on('data', (chunk: Buffer) => lines.push(...chunk.toString().trim().split('\n')));
    try {
      await waitFor('the healthy client to join', () => lines.includes('joined'));
      // 30 rounds of 15 × 50 KB from the database to both (22 MB: far more than the kernel's
      // buffers and the 1 MB the stalled socket may hold unsent), each round once the healthy
      // client has the last: a client that reads as fast as it is sent to never comes near the bound.
      const rounds = 30;
      const perRound = 15;
      for (let round = 0; round < rounds; round++) {
        await rt.db
          .sql`select realtime.send(jsonb_build_object('n', i, 'blob', repeat('x', 50000)), 'blob', ${topic}, false)
                        from generate_series(${round * perRound + 1}::int, ${(round + 1) * perRound}::int) i`;
        const expected = (round + 1) * perRound;
        await waitFor(`${expected} messages at the healthy client`, () => lines.at(-1), {
          accept: (l) => l === `got ${expected}`,
        });
      }
      await waitFor('the server to cut off the stalled socket', () =>
        rt.logs.some((l) => /closing a socket with \d+ bytes unsent/.test(l)),
      );
      expect(rt.logs.filter((l) => /closing a socket/.test(l))).toHaveLength(1);
    } finally {
      healthy.kill();
      stalled.terminate();
    }
  }, 60_000);

  it('refuses an oversized broadcast (payload_size_exceeded with ack) and delivers the next', async () => {
    const topic = `big-${randomUUID()}`;
    const { inbox } = await listen((await rt.client()).channel(topic));
    const sender = (await rt.client()).channel(topic, { config: { broadcast: { ack: true } } });
    await listen(sender);
    expect(
      await sender.send({ type: 'broadcast', event: 'big', payload: { blob: 'x'.repeat(limits.maxPayloadBytes) } }),
    ).toBe('error');
    expect(await sender.send({ type: 'broadcast', event: 'small', payload: { n: 1 } })).toBe('ok');
    expect(await inbox.next('the small message')).toMatchObject({ event: 'small' });
  });

  it('shuts the channels of a socket sending too many messages per second down, as Realtime', async () => {
    const topic = `chatty-${randomUUID()}`;
    const { followed } = await listen((await rt.client()).channel(topic));
    const raw = new WsClient(
      `${rt.server.url.replace('http', 'ws')}/realtime/v1/websocket?apikey=${rt.anonKey}&vsn=2.0.0`,
    );
    const frames: unknown[][] = [];
    raw.on('message', (data: Buffer) => frames.push(JSON.parse(data.toString()) as unknown[]));
    await new Promise<void>((resolve) => raw.once('open', () => resolve()));
    raw.send(JSON.stringify(['1', '1', `realtime:${topic}`, 'phx_join', { config: {} }]));
    await waitFor('the join reply', () => frames.some((f) => f[3] === 'phx_reply'));
    // Twice the limit and one: however the burst falls across a second boundary, one second is over it.
    for (let i = 0; i <= 2 * limits.maxEventsPerSecond; i++) {
      raw.send(
        JSON.stringify([
          '1',
          null,
          `realtime:${topic}`,
          'broadcast',
          { type: 'broadcast', event: 'spam', payload: { i } },
        ]),
      );
    }
    const shutdown = await waitFor('the shutdown message', () => frames.find((f) => f[3] === 'system'));
    if (!shutdown) throw new Error('unreachable: waitFor returned no frame');
    expect(shutdown[4]).toEqual({
      extension: 'system',
      status: 'error',
      message: 'Too many messages per second',
      channel: topic,
    });
    await waitFor('phx_close', () => frames.some((f) => f[3] === 'phx_close'));
    // The listener on another socket keeps its channel.
    expect(await followed.statuses.next('no status change', 200).catch(() => 'none')).toBe('none');
    raw.close();
  });
});
