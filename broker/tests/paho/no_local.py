"""MQTT 5 no-local: a subscriber with the no-local option never receives its
own publications, but does receive everyone else's."""

from common import Client, check_eq, main


def scenario(port, version, _extra):
    check_eq(version, 5, "no-local needs MQTT 5")
    chatty = Client(port, version, "chatty")
    check_eq(chatty.subscribe("room/#", qos=1, noLocal=True), [1], "SUBACK")
    other = Client(port, version, "other")
    other.subscribe("room/#", qos=1)

    chatty.publish("room/1", "from chatty", qos=1)
    other.publish("room/1", "from other", qos=1)
    chatty.expect("room/1", b"from other", what="the other client's message only")
    other.expect("room/1", b"from chatty")
    other.expect("room/1", b"from other", what="its own message (no-local not set)")
    chatty.disconnect()
    other.disconnect()


main(scenario)
