"""MQTT 5 subscription identifiers: each delivery names the subscriptions it
matched."""

from common import Client, PacketTypes, check_eq, main, props


def with_id(n):
    return props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=n)


def ids(msg):
    return sorted(getattr(msg.properties, "SubscriptionIdentifier", []))


def scenario(port, version, _extra):
    check_eq(version, 5, "subscription identifiers need MQTT 5")
    sub = Client(port, version, "ids-sub")
    check_eq(getattr(sub.connack_props, "SubscriptionIdentifierAvailable", 1), 1, "available (CONNACK)")
    sub.subscribe("sid/a/#", qos=1, properties=with_id(5))
    sub.subscribe("sid/+/x", qos=1, properties=with_id(268435455))
    sub.subscribe("sid/plain/#", qos=1)
    pub = Client(port, version, "ids-pub")

    pub.publish("sid/a/y", "one", qos=1)
    check_eq(ids(sub.expect("sid/a/y", b"one")), [5], "identifiers")
    pub.publish("sid/b/x", "two", qos=1)
    check_eq(ids(sub.expect("sid/b/x", b"two")), [268435455], "identifiers (largest value)")
    pub.publish("sid/plain/z", "three", qos=1)
    check_eq(ids(sub.expect("sid/plain/z", b"three")), [], "identifiers of a subscription without one")

    # Overlapping subscriptions: one copy with both identifiers, or one copy per subscription.
    pub.publish("sid/a/x", "both", qos=1)
    pub.publish("sid/plain/end", "marker", qos=1)
    seen = []
    while True:
        msg = sub.expect(what="copies of sid/a/x, then the marker")
        if msg.topic == "sid/plain/end":
            break
        check_eq((msg.topic, msg.payload), ("sid/a/x", b"both"), "overlapping delivery")
        seen.extend(ids(msg))
    check_eq(sorted(seen), [5, 268435455], "identifiers over all copies")
    pub.disconnect()
    sub.disconnect()


main(scenario)
