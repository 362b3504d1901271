"""QoS 2 round trip: three messages arrive once each, in order, at QoS 2."""

from common import Client, check_eq, main


def scenario(port, version, _extra):
    sub = Client(port, version, "qos2-sub")
    check_eq(sub.subscribe("exact/#", qos=2), [2], "SUBACK")
    pub = Client(port, version, "qos2-pub")
    for i in range(3):
        check_eq(pub.publish("exact/t", f"m{i}", qos=2), 0, "PUBCOMP reason")
    for i in range(3):
        msg = sub.expect("exact/t", f"m{i}".encode())
        check_eq(msg.qos, 2, "delivered QoS")
        check_eq(msg.dup, False, "DUP flag on first delivery")
    # A QoS 2 publish to a QoS 1 subscription is downgraded.
    check_eq(sub.subscribe("down/t", qos=1), [1], "SUBACK")
    pub.publish("down/t", "down", qos=2)
    check_eq(sub.expect("down/t", b"down").qos, 1, "QoS through a QoS 1 subscription")
    check_eq(sub.messages.empty(), True, "no duplicate deliveries")
    pub.disconnect()
    sub.disconnect()


main(scenario)
