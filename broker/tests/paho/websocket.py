"""MQTT over WebSocket (path /mqtt): a WebSocket client and a TCP client
exchange QoS 1 and QoS 2 messages both ways, and retained messages are shared.

Arguments: <tcp port> <311|5> <websocket port>."""

from common import Client, check_eq, main


def scenario(port, version, extra):
    check_eq(len(extra), 1, "the WebSocket port is the third argument")
    ws = Client(extra[0], version, "ws-client", transport="websockets")
    tcp = Client(port, version, "tcp-client")
    check_eq(ws.subscribe("to-ws/#", qos=2), [2], "SUBACK over WebSocket")
    tcp.subscribe("to-tcp/#", qos=1)

    tcp.publish("to-ws/a", "hello ws", qos=2)
    check_eq(ws.expect("to-ws/a", b"hello ws").qos, 2, "QoS over WebSocket")
    big = bytes(range(256)) * 400  # spans several WebSocket frames
    ws.publish("to-tcp/big", big, qos=1)
    tcp.expect("to-tcp/big", big)

    ws.publish("shared/state", "from ws", qos=1, retain=True)
    late = Client(port, version, "tcp-late")
    late.subscribe("shared/#", qos=1)
    check_eq(late.expect("shared/state", b"from ws").retain, True, "retained via WebSocket")
    for client in (ws, tcp, late):
        client.disconnect()


main(scenario)
