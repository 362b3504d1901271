"""Retained messages: stored, delivered with the retain flag, replaced, cleared."""

from common import Client, check_eq, main


def scenario(port, version, _extra):
    pub = Client(port, version, "ret-pub")
    pub.publish("ret/a", "first", qos=1, retain=True)
    pub.publish("ret/a", "second", qos=1, retain=True)
    pub.publish("ret/b", "other", qos=1, retain=True)

    sub = Client(port, version, "ret-sub")
    sub.subscribe("ret/a", qos=1)
    msg = sub.expect("ret/a", b"second")
    check_eq(msg.retain, True, "retain flag of a stored message")
    # A live message on a subscribed topic is not flagged as retained.
    pub.publish("ret/a", "live", qos=1, retain=True)
    check_eq(sub.expect("ret/a", b"live").retain, False, "retain flag of a live message")

    pub.publish("ret/a", b"", qos=1, retain=True)
    check_eq(sub.expect("ret/a", b"").retain, False, "retain flag of the clearing message")
    late = Client(port, version, "ret-late")
    late.subscribe("ret/#", qos=1)
    check_eq(late.expect("ret/b", b"other").retain, True, "retain flag")
    pub.publish("ret/marker", "end", qos=1)
    late.expect("ret/marker", b"end", what="the marker (ret/a must be cleared)")
    for client in (pub, sub, late):
        client.disconnect()


main(scenario)
