// MQTT over WebSocket with mqtt.js (npm `mqtt`, v5): a WebSocket client and a
// TCP client exchange messages both ways through the broker.
//
// Usage: node websocket.js <tcp port> <websocket port> <4|5>
// Exits non-zero with a message on stderr on any mismatch; prints "ok" on success.

"use strict";

const assert = require("node:assert/strict");
const mqtt = require("mqtt");

const WAIT_MS = 10000;

function nextMessage(client, what) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), WAIT_MS);
    client.once("message", (topic, payload, packet) => {
      clearTimeout(timer);
      resolve({ topic, payload: payload.toString(), packet });
    });
  });
}

async function scenario(tcpPort, wsPort, protocolVersion) {
  const options = { protocolVersion, reconnectPeriod: 0, connectTimeout: WAIT_MS };
  const ws = await mqtt.connectAsync(`ws://127.0.0.1:${wsPort}/mqtt`, { ...options, clientId: "mqttjs-ws" });
  const tcp = await mqtt.connectAsync(`mqtt://127.0.0.1:${tcpPort}`, { ...options, clientId: "mqttjs-tcp" });
  try {
    const granted = await ws.subscribeAsync("to-ws/#", { qos: 2 });
    assert.deepEqual(granted.map((g) => g.qos), [2], "SUBACK over WebSocket");
    await tcp.subscribeAsync("to-tcp/#", { qos: 1 });

    const toWs = nextMessage(ws, "the message over WebSocket");
    await tcp.publishAsync("to-ws/a", "hello ws", { qos: 2 });
    const got = await toWs;
    assert.deepEqual([got.topic, got.payload, got.packet.qos], ["to-ws/a", "hello ws", 2]);

    const toTcp = nextMessage(tcp, "the message from WebSocket");
    const publishOptions = { qos: 1 };
    if (protocolVersion === 5) {
      publishOptions.properties = { userProperties: { origin: "browser" }, contentType: "text/plain" };
    }
    await ws.publishAsync("to-tcp/b", "hello tcp", publishOptions);
    const back = await toTcp;
    assert.deepEqual([back.topic, back.payload, back.packet.qos], ["to-tcp/b", "hello tcp", 1]);
    if (protocolVersion === 5) {
      assert.deepEqual({ ...back.packet.properties.userProperties }, { origin: "browser" }, "user properties");
      assert.equal(back.packet.properties.contentType, "text/plain", "content type");
    }
  } finally {
    await Promise.all([ws.endAsync(), tcp.endAsync()]);
  }
}

const [tcpPort, wsPort, version] = process.argv.slice(2).map(Number);
if (!tcpPort || !wsPort || ![4, 5].includes(version)) {
  console.error("usage: node websocket.js <tcp port> <websocket port> <4|5>");
  process.exit(2);
}
scenario(tcpPort, wsPort, version).then(
  () => console.log("ok"),
  (err) => {
    console.error(`websocket.js (MQTT protocol ${version}): ${err.message}`);
    process.exit(1);
  },
);
