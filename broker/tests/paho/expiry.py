"""MQTT 5 message expiry: an expired retained or queued message is never
delivered; a live one carries its remaining lifetime."""

import time

from common import Client, PacketTypes, check, check_eq, main, props


def expiring(seconds):
    return props(PacketTypes.PUBLISH, MessageExpiryInterval=seconds)


def scenario(port, version, _extra):
    check_eq(version, 5, "message expiry needs MQTT 5")
    offline = Client(port, version, "sleeper", clean=True, session_expiry=300)
    offline.subscribe("news/#", qos=1)
    offline.disconnect()

    pub = Client(port, version, "exp-pub")
    pub.publish("retained/short", "stale", qos=1, retain=True, properties=expiring(1))
    pub.publish("retained/long", "fresh", qos=1, retain=True, properties=expiring(100))
    pub.publish("news/short", "stale", qos=1, properties=expiring(1))
    pub.publish("news/long", "fresh", qos=1, properties=expiring(100))
    # The expiry interval itself has to pass; nothing else waits on time.
    time.sleep(2.1)

    back = Client(port, version, "sleeper", clean=False, session_expiry=300)
    check_eq(back.session_present, True, "session present")
    msg = back.expect("news/long", b"fresh", what="the unexpired queued message first")
    remaining = msg.properties.MessageExpiryInterval
    check(95 <= remaining < 100, f"remaining expiry {remaining} must have been lowered")

    late = Client(port, version, "exp-late")
    late.subscribe("retained/#", qos=1)
    msg = late.expect("retained/long", b"fresh", what="the unexpired retained message")
    check(msg.properties.MessageExpiryInterval < 100, "retained expiry lowered")
    pub.publish("retained/marker", "end", qos=1)
    late.expect("retained/marker", b"end", what="the marker (retained/short has expired)")
    for client in (pub, back, late):
        client.disconnect()


main(scenario)
