//! Malformed and hostile input: each ends only the offending connection, with
//! the right reason code, is counted, and never disturbs other clients.

mod support;

use bytes::Bytes;
use strait_broker::protocol::{
    Packet, ProtocolVersion, Publish, PublishProperties, QoS, ReasonCode,
};
use support::{connect_packet, start_broker, RawClient};

/// Sends `bytes` on a fresh v5 connection and returns the DISCONNECT reason, if any.
async fn v5_violation(addr: std::net::SocketAddr, bytes: &[u8]) -> Option<ReasonCode> {
    let mut client = RawClient::connected(addr, ProtocolVersion::V5, "offender").await;
    client.send_bytes(bytes).await;
    client
        .recv_until_closed()
        .await
        .into_iter()
        .find_map(|p| match p {
            Packet::Disconnect(d) => Some(d.reason),
            _ => None,
        })
}

#[tokio::test]
async fn each_violation_gets_its_reason_code_and_others_are_unaffected() {
    let server = start_broker(|c| c.limits.max_packet_size = 1024).await;
    let addr = server.mqtt_addrs()[0];
    let mut bystander = RawClient::connected(addr, ProtocolVersion::V5, "bystander").await;

    let cases: &[(&str, Vec<u8>, ReasonCode)] = &[
        // PUBLISH to a topic with a wildcard.
        (
            "wildcard topic",
            vec![0x30, 0x06, 0x00, 0x03, b'a', b'/', b'#', 0x00],
            ReasonCode::TopicNameInvalid,
        ),
        // Remaining length of five bytes.
        (
            "remaining length overflow",
            vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F],
            ReasonCode::MalformedPacket,
        ),
        // PUBREL with flags 0 instead of 0b0010.
        (
            "wrong fixed-header flags",
            vec![0x60, 0x02, 0x00, 0x01],
            ReasonCode::MalformedPacket,
        ),
        // A second CONNECT.
        (
            "second CONNECT",
            {
                let mut out = bytes::BytesMut::new();
                strait_broker::protocol::encode(
                    &connect_packet(ProtocolVersion::V5, "again", true, Default::default()),
                    ProtocolVersion::V5,
                    &mut out,
                )
                .expect("encode");
                out.to_vec()
            },
            ReasonCode::ProtocolError,
        ),
        // Larger than maxPacketSize (1024).
        (
            "oversize",
            {
                let mut v = vec![0x30, 0x80, 0x10];
                v.extend(std::iter::repeat_n(0, 2048));
                v
            },
            ReasonCode::PacketTooLarge,
        ),
        // Invalid UTF-8 in a topic.
        (
            "invalid utf-8",
            vec![0x30, 0x05, 0x00, 0x02, 0xC3, 0x28, 0x00],
            ReasonCode::MalformedPacket,
        ),
        // QoS 3.
        (
            "qos 3",
            vec![0x36, 0x06, 0x00, 0x01, b'a', 0x00, 0x01, 0x00],
            ReasonCode::MalformedPacket,
        ),
    ];
    for (name, bytes, expected) in cases {
        let got = v5_violation(addr, bytes).await;
        assert_eq!(got, Some(*expected), "{name}");
        assert!(
            server.broker().metrics().protocol_errors_total(*expected) > 0,
            "{name} is counted"
        );
    }

    // The bystander still works.
    bystander.send(&Packet::PingReq).await;
    assert_eq!(bystander.recv().await, Some(Packet::PingResp));
    server.shutdown().await;
}

#[tokio::test]
async fn packet_before_connect_closes_the_connection() {
    let server = start_broker(|_| {}).await;
    let mut client = RawClient::connect(server.mqtt_addrs()[0], ProtocolVersion::V311).await;
    client.send(&Packet::PingReq).await;
    assert!(client.recv_until_closed().await.is_empty());
    assert!(
        server
            .broker()
            .metrics()
            .protocol_errors_total(ReasonCode::ProtocolError)
            > 0
    );
    server.shutdown().await;
}

#[tokio::test]
async fn unsupported_protocol_level_gets_connack_0x01() {
    let server = start_broker(|_| {}).await;
    let mut client = RawClient::connect(server.mqtt_addrs()[0], ProtocolVersion::V311).await;
    // CONNECT for MQTT 3.1 ("MQIsdp", level 3).
    let mut packet = vec![0x10, 0x12, 0x00, 0x06];
    packet.extend_from_slice(b"MQIsdp");
    packet.extend_from_slice(&[0x03, 0x02, 0x00, 0x3C, 0x00, 0x04]);
    packet.extend_from_slice(b"old1");
    client.send_bytes(&packet).await;
    let mut raw = [0u8; 4];
    use tokio::io::AsyncReadExt;
    support::within("CONNACK", client.stream.read_exact(&mut raw))
        .await
        .expect("read");
    assert_eq!(
        raw,
        [0x20, 0x02, 0x00, 0x01],
        "3.1.1 CONNACK, return code 1"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn v311_violation_closes_without_disconnect() {
    let server = start_broker(|_| {}).await;
    let mut client =
        RawClient::connected(server.mqtt_addrs()[0], ProtocolVersion::V311, "old").await;
    client
        .send_bytes(&[0x30, 0x06, 0x00, 0x03, b'a', b'/', b'+', 0x00])
        .await;
    assert!(
        client.recv_until_closed().await.is_empty(),
        "3.1.1 has no server DISCONNECT"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn topic_alias_resolves_and_unknown_alias_is_a_protocol_error() {
    let server = start_broker(|c| c.limits.topic_alias_maximum = 4).await;
    let addr = server.mqtt_addrs()[0];
    let mut sub = RawClient::connected(addr, ProtocolVersion::V5, "sub").await;
    sub.send(&Packet::Subscribe(strait_broker::protocol::Subscribe {
        packet_id: 1,
        filters: vec![strait_broker::protocol::SubscribeFilter {
            filter: "long/topic/name".into(),
            options: Default::default(),
        }],
        properties: Default::default(),
    }))
    .await;
    assert!(matches!(sub.recv().await, Some(Packet::SubAck(_))));

    let mut publisher = RawClient::connected(addr, ProtocolVersion::V5, "pub").await;
    let publish = |topic: &str, alias: u16, payload: &'static [u8]| {
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: topic.into(),
            packet_id: None,
            payload: Bytes::from_static(payload),
            properties: PublishProperties {
                topic_alias: Some(alias),
                ..Default::default()
            },
        })
    };
    publisher
        .send(&publish("long/topic/name", 1, b"first"))
        .await;
    publisher.send(&publish("", 1, b"by alias")).await;
    for expected in [&b"first"[..], b"by alias"] {
        match sub.recv().await {
            Some(Packet::Publish(p)) => {
                assert_eq!(p.topic, "long/topic/name");
                assert_eq!(&p.payload[..], expected);
            }
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
    publisher.send(&publish("", 2, b"unknown alias")).await;
    let closing = publisher.recv_until_closed().await;
    assert!(
        closing
            .iter()
            .any(|p| matches!(p, Packet::Disconnect(d) if d.reason == ReasonCode::ProtocolError)),
        "{closing:?}"
    );
    let mut late = RawClient::connected(addr, ProtocolVersion::V5, "late").await;
    late.send(&publish("x", 5, b"alias above maximum")).await;
    let closing = late.recv_until_closed().await;
    assert!(
        closing.iter().any(
            |p| matches!(p, Packet::Disconnect(d) if d.reason == ReasonCode::TopicAliasInvalid)
        ),
        "{closing:?}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn receive_maximum_limits_unacknowledged_deliveries() {
    let server = start_broker(|_| {}).await;
    let addr = server.mqtt_addrs()[0];
    let mut sub = RawClient::connect(addr, ProtocolVersion::V5).await;
    let mut packet = connect_packet(ProtocolVersion::V5, "slow", true, Default::default());
    if let Packet::Connect(c) = &mut packet {
        c.properties.receive_maximum = Some(2);
    }
    sub.send(&packet).await;
    assert!(matches!(sub.recv().await, Some(Packet::ConnAck(_))));
    sub.send(&Packet::Subscribe(strait_broker::protocol::Subscribe {
        packet_id: 1,
        filters: vec![strait_broker::protocol::SubscribeFilter {
            filter: "q".into(),
            options: strait_broker::protocol::SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                ..Default::default()
            },
        }],
        properties: Default::default(),
    }))
    .await;
    assert!(matches!(sub.recv().await, Some(Packet::SubAck(_))));

    let mut publisher = RawClient::connected(addr, ProtocolVersion::V5, "pub").await;
    for i in 1..=3u16 {
        publisher
            .send(&Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic: "q".into(),
                packet_id: Some(i),
                payload: Bytes::from(vec![i as u8]),
                properties: Default::default(),
            }))
            .await;
        assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));
    }
    let mut ids = Vec::new();
    for _ in 0..2 {
        match sub.recv().await {
            Some(Packet::Publish(p)) => ids.push(p.packet_id.expect("qos1 id")),
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
    // The third is held until an acknowledgement opens the window; a ping
    // round trip shows nothing else was sent meanwhile.
    sub.send(&Packet::PingReq).await;
    assert_eq!(sub.recv().await, Some(Packet::PingResp));
    sub.send(&Packet::PubAck(strait_broker::protocol::PubAck::success(
        ids[0],
    )))
    .await;
    match sub.recv().await {
        Some(Packet::Publish(p)) => assert_eq!(&p.payload[..], &[3]),
        other => panic!("expected the third PUBLISH, got {other:?}"),
    }
    server.shutdown().await;
}
