import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';

export interface OutgoingMessage {
  topic: string;
  payload: string | Buffer;
  qos?: 0 | 1;
  retain?: boolean;
}

/**
 * Connects an MQTT client and resolves once the broker accepted it (CONNACK). The first 'error'
 * (refused CONNACK, TLS failure, …) rejects with that error — its `code` carries the CONNACK
 * return/reason code — and ends the client, so a failed attempt does not keep reconnecting in
 * the background of the test run.
 */
export function connectClient(url: string, opts: IClientOptions = {}): Promise<MqttClient> {
  return new Promise((resolve, reject) => {
    // Tests want to see a failure, not wait for a retry: no reconnects until connected, unless
    // the caller asks for them (a reconnect test sets reconnectPeriod itself).
    const client = mqtt.connect(url, { connectTimeout: 5_000, ...opts });
    const onConnect = () => {
      client.off('error', onError);
      // Once connected, errors (ECONNREFUSED while the broker restarts, …) are what mqtt.js
      // reconnects from; without a listener EventEmitter would throw them instead. Tests that
      // care about them add their own listener.
      client.on('error', () => undefined);
      resolve(client);
    };
    const onError = (err: Error) => {
      client.off('connect', onConnect);
      // force: no DISCONNECT handshake on a connection that may not even be established.
      client.end(true, () => reject(err));
    };
    client.once('connect', onConnect);
    client.once('error', onError);
  });
}

/** Publishes the messages in order, each awaited (QoS 1 waits for the broker's PUBACK). */
export async function publishMany(client: MqttClient, messages: readonly OutgoingMessage[]): Promise<void> {
  for (const { topic, payload, qos = 0, retain = false } of messages) {
    await client.publishAsync(topic, payload, { qos, retain });
  }
}
