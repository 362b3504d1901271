"""Shared helpers for the paho-mqtt interoperability scripts.

Each script is run by broker/tests/interop_paho.rs as
``python <script> <port> <311|5> [extra ports...]`` against a broker on
127.0.0.1 and exits non-zero, with a message on stderr, on any mismatch.

``Client`` wraps a paho client whose network loop runs in a thread: every call
waits for the broker's answer (CONNACK, SUBACK, the publish acknowledgement)
with a timeout, so the scripts read as straight-line sequences and never
sleep to synchronise.
"""

import queue
import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

WAIT = 10.0
"""Seconds any single wait may take before the script fails."""


class Mismatch(Exception):
    """The broker did something other than what the script expected."""


def fail(message):
    raise Mismatch(message)


def check(condition, message):
    if not condition:
        fail(message)


def check_eq(actual, expected, what):
    if actual != expected:
        fail(f"{what}: expected {expected!r}, got {actual!r}")


def parse_args():
    """(port, version, extra ports) from the command line."""
    if len(sys.argv) < 3 or sys.argv[2] not in ("311", "5"):
        sys.exit(f"usage: {sys.argv[0]} <port> <311|5> [extra ports...]")
    return int(sys.argv[1]), int(sys.argv[2]), [int(p) for p in sys.argv[3:]]


def main(scenario):
    """Runs ``scenario(port, version, extra)``; exit status 1 on any failure."""
    port, version, extra = parse_args()
    try:
        scenario(port, version, extra)
    except Mismatch as err:
        print(f"{sys.argv[0]} (MQTT {version}): {err}", file=sys.stderr)
        sys.exit(1)
    print("ok")


def props(packet_type, **values):
    """MQTT 5 properties of ``packet_type`` (a PacketTypes member) from keyword arguments."""
    properties = Properties(packet_type)
    for name, value in values.items():
        setattr(properties, name, value)
    return properties


class Client:
    """A connected paho client; received messages are queued for ``expect``."""

    def __init__(self, port, version, client_id="", transport="tcp", clean=True,
                 session_expiry=None, will=None, connect_props=None):
        self.version = version
        protocol = mqtt.MQTTv5 if version == 5 else mqtt.MQTTv311
        self.paho = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=clean if version == 311 else None,
            protocol=protocol,
            transport=transport,
            reconnect_on_failure=False,
        )
        if transport == "websockets":
            self.paho.ws_set_options(path="/mqtt")
        if will is not None:
            self.paho.will_set(**will)
        self.messages = queue.Queue()
        self._lock = threading.Condition()
        self._events = []
        self.paho.on_connect = lambda c, u, flags, rc, p: self._event("connack", (flags, rc, p))
        self.paho.on_subscribe = lambda c, u, mid, rcs, p: self._event("suback", (mid, rcs))
        self.paho.on_publish = lambda c, u, mid, rc, p: self._event("ack", (mid, rc))
        self.paho.on_disconnect = lambda c, u, flags, rc, p: self._event("disconnect", rc)
        self.paho.on_message = lambda c, u, msg: self.messages.put(msg)

        properties = None
        if version == 5:
            properties = connect_props or props(PacketTypes.CONNECT)
            if session_expiry is not None:
                properties.SessionExpiryInterval = session_expiry
        kwargs = {"properties": properties}
        if version == 5:
            kwargs["clean_start"] = clean
        self.paho.connect("127.0.0.1", port, keepalive=30, **kwargs)
        self.paho.loop_start()
        flags, rc, p = self._wait("CONNACK", lambda kind, _: kind == "connack")
        self.connack_code = rc.value
        self.session_present = flags.session_present
        self.connack_props = p

    def _event(self, kind, data):
        with self._lock:
            self._events.append((kind, data))
            self._lock.notify_all()

    def _wait(self, what, pick):
        """Removes and returns the data of the first event ``pick`` accepts."""
        deadline = time.monotonic() + WAIT
        with self._lock:
            while True:
                for i, (kind, data) in enumerate(self._events):
                    if pick(kind, data):
                        del self._events[i]
                        return data
                left = deadline - time.monotonic()
                if left <= 0:
                    fail(f"timed out waiting for {what}")
                self._lock.wait(left)

    def subscribe(self, topic, qos=0, properties=None, **options):
        """Subscribes and returns the SUBACK reason code values."""
        if self.version == 5:
            rc, mid = self.paho.subscribe(topic, options=SubscribeOptions(qos=qos, **options),
                                          properties=properties)
        else:
            rc, mid = self.paho.subscribe(topic, qos)
        check_eq(rc, mqtt.MQTT_ERR_SUCCESS, f"queueing SUBSCRIBE {topic}")
        _, codes = self._wait(f"SUBACK for {topic}", lambda k, d: k == "suback" and d[0] == mid)
        return [code.value for code in codes]

    def publish(self, topic, payload, qos=0, retain=False, properties=None):
        """Publishes and, for QoS 1 and 2, waits for the broker's acknowledgement
        (PUBACK / PUBCOMP); returns its reason code value (0 for QoS 0)."""
        info = self.paho.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        check_eq(info.rc, mqtt.MQTT_ERR_SUCCESS, f"queueing PUBLISH {topic}")
        _, rc = self._wait(f"acknowledgement of {topic}", lambda k, d: k == "ack" and d[0] == info.mid)
        return rc.value

    def expect(self, topic=None, payload=None, what=None):
        """The next message; fails if it has another topic or payload."""
        try:
            msg = self.messages.get(timeout=WAIT)
        except queue.Empty:
            fail(f"timed out waiting for {what or (topic, payload)}")
        if topic is not None:
            check_eq(msg.topic, topic, "topic")
        if payload is not None:
            check_eq(msg.payload, payload, f"payload on {msg.topic}")
        return msg

    def disconnect(self):
        """Disconnects cleanly (the will is discarded) and waits for the close."""
        self.paho.disconnect()
        self._wait("disconnect", lambda kind, _: kind == "disconnect")
        self.paho.loop_stop()

