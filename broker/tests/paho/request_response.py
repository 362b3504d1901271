"""MQTT 5 request/response: response topic, correlation data, content type and
user properties reach the responder unchanged, and the reply finds its way back."""

from common import Client, PacketTypes, check_eq, main, props


def scenario(port, version, _extra):
    check_eq(version, 5, "request/response properties need MQTT 5")
    responder = Client(port, version, "responder")
    responder.subscribe("svc/echo", qos=1)
    requester = Client(port, version, "requester")
    requester.subscribe("reply/requester", qos=1)

    request = props(PacketTypes.PUBLISH, ResponseTopic="reply/requester",
                    CorrelationData=b"\x00req-17\xff", ContentType="text/plain",
                    PayloadFormatIndicator=1)
    request.UserProperty = [("trace", "a"), ("trace", "b"), ("tenant", "t1")]
    requester.publish("svc/echo", "ping", qos=1, properties=request)

    got = responder.expect("svc/echo", b"ping").properties
    check_eq(got.ResponseTopic, "reply/requester", "response topic")
    check_eq(got.CorrelationData, b"\x00req-17\xff", "correlation data")
    check_eq(got.ContentType, "text/plain", "content type")
    check_eq(got.PayloadFormatIndicator, 1, "payload format indicator")
    check_eq(got.UserProperty, [("trace", "a"), ("trace", "b"), ("tenant", "t1")],
             "user properties, in order, duplicates kept")

    reply = props(PacketTypes.PUBLISH, CorrelationData=got.CorrelationData)
    responder.publish(got.ResponseTopic, "pong", qos=1, properties=reply)
    back = requester.expect("reply/requester", b"pong").properties
    check_eq(back.CorrelationData, b"\x00req-17\xff", "correlation data of the reply")
    responder.disconnect()
    requester.disconnect()


main(scenario)
