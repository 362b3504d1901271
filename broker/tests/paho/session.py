"""Persistent session: QoS 1 messages published while the client is offline
are queued and delivered, in order, when it resumes."""

from common import Client, check_eq, main


def persistent(port, version):
    return Client(port, version, "resumer", clean=False, session_expiry=300)


def scenario(port, version, _extra):
    first = persistent(port, version)
    check_eq(first.session_present, False, "session present on the first connect")
    first.subscribe("queue/#", qos=1)
    first.disconnect()

    pub = Client(port, version, "queue-pub")
    for i in range(5):
        pub.publish(f"queue/{i}", f"q{i}", qos=1)
    pub.publish("queue/zero", "not queued", qos=0)
    pub.disconnect()

    back = persistent(port, version)
    check_eq(back.session_present, True, "session present on resume")
    for i in range(5):
        check_eq(back.expect(f"queue/{i}", f"q{i}".encode()).qos, 1, "queued QoS")
    # The subscription survived too: live messages still arrive.
    live = Client(port, version, "live-pub")
    live.publish("queue/live", "now", qos=1)
    back.expect("queue/live", b"now", what="a live message (QoS 0 must not have been queued)")
    back.disconnect()

    # A clean start throws the session away.
    clean = Client(port, version, "resumer", clean=True)
    check_eq(clean.session_present, False, "session present after a clean start")
    clean.disconnect()
    live.disconnect()


main(scenario)
