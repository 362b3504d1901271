"""MQTT 5 topic aliases: the broker resolves an alias the publisher set up,
accepts a remapping, and disconnects with 0x94 for an alias above its maximum."""

from common import Client, PacketTypes, check_eq, main, props


def alias(n):
    return props(PacketTypes.PUBLISH, TopicAlias=n)


def scenario(port, version, _extra):
    check_eq(version, 5, "topic aliases need MQTT 5")
    sub = Client(port, version, "alias-sub")
    sub.subscribe("alias/#", qos=1)
    pub = Client(port, version, "alias-pub")
    maximum = pub.connack_props.TopicAliasMaximum
    check_eq(maximum >= 2, True, f"broker's topic alias maximum {maximum}")

    pub.publish("alias/sensors/kitchen/temperature", "21", qos=1, properties=alias(1))
    pub.publish("", "22", qos=1, properties=alias(1))
    pub.publish("alias/sensors/hall/temperature", "18", qos=1, properties=alias(2))
    pub.publish("alias/sensors/attic/temperature", "30", qos=1, properties=alias(1))
    pub.publish("", "31", qos=1, properties=alias(1))
    pub.publish("", "19", qos=1, properties=alias(2))
    for topic, payload in [("kitchen", b"21"), ("kitchen", b"22"), ("hall", b"18"),
                           ("attic", b"30"), ("attic", b"31"), ("hall", b"19")]:
        sub.expect(f"alias/sensors/{topic}/temperature", payload)

    pub.paho.publish("alias/x", "bad", qos=1, properties=alias(maximum + 1))
    code = pub._wait("DISCONNECT for an out-of-range alias", lambda kind, _: kind == "disconnect")
    check_eq(code.value, 0x94, "DISCONNECT reason for an alias above the maximum")
    pub.paho.loop_stop()
    sub.disconnect()


main(scenario)
