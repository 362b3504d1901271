//! The details users trip on, each checked on the wire with a raw client:
//! violations that must close the connection, QoS 2 retransmissions, the
//! client's maximum packet size on CONNACK, unsupported protocol levels, ACL
//! deny rules, and a username sent where no credentials file exists.

mod support;

use bytes::{Bytes, BytesMut};
use strait_broker::config::{AclRule, Permission};
use strait_broker::metrics::DropReason;
use strait_broker::protocol::{
    encode, ConnectProperties, Packet, ProtocolVersion, PubAck, Publish, QoS, ReasonCode,
    Unsubscribe,
};
use support::{connect_packet, start_broker, subscribe_packet, within, RawClient};
use tokio::io::AsyncReadExt;

fn publish(topic: &str, qos: QoS, packet_id: Option<u16>) -> Publish {
    support::publish(topic, qos, packet_id, &b"x"[..])
}

/// What the broker sent before closing: `Some(reason)` of its DISCONNECT, or
/// `None` when it closed without one (as 3.1.1 must).
async fn closed_with(client: &mut RawClient) -> Option<ReasonCode> {
    let packets = client.recv_until_closed().await;
    packets.into_iter().find_map(|p| match p {
        Packet::Disconnect(d) => Some(d.reason),
        _ => None,
    })
}

/// A subscriber on `t` at `qos`, and one message published to it by another
/// client; returns the subscriber and the delivery's packet id.
async fn one_delivery(addr: std::net::SocketAddr, qos: QoS) -> (RawClient, u16) {
    let mut sub = RawClient::connected(addr, ProtocolVersion::V5, "sub").await;
    sub.subscribe("t", qos).await;
    let mut publisher = RawClient::connected(addr, ProtocolVersion::V5, "pub").await;
    publisher
        .send(&Packet::Publish(publish("t", qos, Some(1))))
        .await;
    match sub.recv().await {
        Some(Packet::Publish(p)) => {
            let id = p.packet_id.expect("QoS 1/2 has an id");
            (sub, id)
        }
        other => panic!("expected PUBLISH, got {other:?}"),
    }
}

#[tokio::test]
async fn an_empty_topic_filter_closes_the_connection_in_both_versions() {
    let server = start_broker(|_| {}).await;
    let addr = server.mqtt_addrs()[0];
    // Bytes, since the codec refuses to encode an empty filter either.
    let subscribe_v311 = [0x82, 0x05, 0x00, 0x01, 0x00, 0x00, 0x00];
    let mut old = RawClient::connected(addr, ProtocolVersion::V311, "old").await;
    old.send_bytes(&subscribe_v311).await;
    assert_eq!(closed_with(&mut old).await, None);

    let subscribe_v5 = [0x82, 0x06, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00];
    let mut new = RawClient::connected(addr, ProtocolVersion::V5, "new").await;
    new.send_bytes(&subscribe_v5).await;
    assert_eq!(
        closed_with(&mut new).await,
        Some(ReasonCode::MalformedPacket)
    );

    let unsubscribe_v5 = [0xA2, 0x05, 0x00, 0x01, 0x00, 0x00, 0x00];
    let mut again = RawClient::connected(addr, ProtocolVersion::V5, "again").await;
    again.send_bytes(&unsubscribe_v5).await;
    assert_eq!(
        closed_with(&mut again).await,
        Some(ReasonCode::MalformedPacket)
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_shared_filter_without_a_filter_closes_v311_and_gets_0x8f_in_v5() {
    let server = start_broker(|_| {}).await;
    let addr = server.mqtt_addrs()[0];
    let mut old = RawClient::connected(addr, ProtocolVersion::V311, "old").await;
    old.send(&subscribe_packet(7, "$share/group/", QoS::AtMostOnce))
        .await;
    assert_eq!(closed_with(&mut old).await, None, "3.1.1 closes");

    let mut new = RawClient::connected(addr, ProtocolVersion::V5, "new").await;
    let ack = new.subscribe("$share/group/", QoS::AtMostOnce).await;
    assert_eq!(ack.reasons, [ReasonCode::TopicFilterInvalid]);
    new.send(&Packet::Unsubscribe(Unsubscribe {
        packet_id: 2,
        filters: vec!["a/#/b".into()],
        user_properties: Vec::new(),
    }))
    .await;
    match new.recv().await {
        Some(Packet::UnsubAck(ack)) => assert_eq!(ack.reasons, [ReasonCode::TopicFilterInvalid]),
        other => panic!("expected UNSUBACK, got {other:?}"),
    }
    // The v5 connection stays up.
    new.send(&Packet::PingReq).await;
    assert_eq!(new.recv().await, Some(Packet::PingResp));
    server.shutdown().await;
}

#[tokio::test]
async fn an_acknowledgement_of_the_wrong_qos_flow_closes_the_connection() {
    let server = start_broker(|_| {}).await;
    let addr = server.mqtt_addrs()[0];
    // PUBREC answering a QoS 1 delivery.
    let (mut sub, id) = one_delivery(addr, QoS::AtLeastOnce).await;
    sub.send(&Packet::PubRec(PubAck::success(id))).await;
    assert_eq!(closed_with(&mut sub).await, Some(ReasonCode::ProtocolError));
    // PUBACK answering a QoS 2 delivery.
    let (mut sub, id) = one_delivery(addr, QoS::ExactlyOnce).await;
    sub.send(&Packet::PubAck(PubAck::success(id))).await;
    assert_eq!(closed_with(&mut sub).await, Some(ReasonCode::ProtocolError));
    server.shutdown().await;
}

#[tokio::test]
async fn a_retransmitted_pubrec_gets_pubrel_success_again() {
    let server = start_broker(|_| {}).await;
    let (mut sub, id) = one_delivery(server.mqtt_addrs()[0], QoS::ExactlyOnce).await;
    for _ in 0..2 {
        sub.send(&Packet::PubRec(PubAck::success(id))).await;
        match sub.recv().await {
            Some(Packet::PubRel(rel)) => {
                assert_eq!((rel.packet_id, rel.reason), (id, ReasonCode::Success))
            }
            other => panic!("expected PUBREL, got {other:?}"),
        }
    }
    sub.send(&Packet::PubComp(PubAck::success(id))).await;
    sub.send(&Packet::PingReq).await;
    assert_eq!(sub.recv().await, Some(Packet::PingResp));
    server.shutdown().await;
}

#[tokio::test]
async fn a_client_publish_with_a_subscription_identifier_closes_the_connection() {
    let server = start_broker(|_| {}).await;
    let mut client = RawClient::connected(server.mqtt_addrs()[0], ProtocolVersion::V5, "c").await;
    let mut packet = publish("t", QoS::AtMostOnce, None);
    packet.properties.subscription_identifiers = vec![5];
    client.send(&Packet::Publish(packet)).await;
    assert_eq!(
        closed_with(&mut client).await,
        Some(ReasonCode::ProtocolError)
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_property_repeated_where_forbidden_closes_the_connection() {
    let server = start_broker(|_| {}).await;
    let mut client = RawClient::connected(server.mqtt_addrs()[0], ProtocolVersion::V5, "c").await;
    // PUBLISH "t", QoS 0, Payload Format Indicator twice.
    client
        .send_bytes(&[
            0x30, 0x09, 0x00, 0x01, b't', 0x04, 0x01, 0x00, 0x01, 0x00, b'x',
        ])
        .await;
    assert_eq!(
        closed_with(&mut client).await,
        Some(ReasonCode::ProtocolError)
    );
    server.shutdown().await;
}

#[tokio::test]
async fn connack_leaves_out_what_it_can_to_fit_the_clients_maximum_packet_size() {
    let server = start_broker(|_| {}).await;
    let addr = server.mqtt_addrs()[0];
    let mut sizes = Vec::new();
    for max in [u32::MAX, 20] {
        let properties = ConnectProperties {
            maximum_packet_size: Some(max),
            ..Default::default()
        };
        let (_client, ack) =
            RawClient::open(addr, ProtocolVersion::V5, "small", true, properties).await;
        assert_eq!(ack.code, ReasonCode::Success);
        let mut wire = BytesMut::new();
        encode(
            &Packet::ConnAck(ack.clone()),
            ProtocolVersion::V5,
            &mut wire,
        )
        .expect("encode");
        assert!(
            ack.properties.receive_maximum.is_some(),
            "required ones stay"
        );
        sizes.push((wire.len(), ack.properties.shared_subscription_available));
    }
    assert!(sizes[0].0 > 20, "the full CONNACK is larger: {sizes:?}");
    assert!(sizes[1].0 <= 20, "trimmed to fit: {sizes:?}");
    assert_eq!(
        sizes[1].1, None,
        "a flag that only repeats its default went"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_protocol_level_newer_than_5_gets_a_v5_connack_0x84_then_close() {
    let server = start_broker(|_| {}).await;
    let mut client = RawClient::connect(server.mqtt_addrs()[0], ProtocolVersion::V5).await;
    // CONNECT "MQTT" level 6, clean start, keepalive 60, client id "n".
    client
        .send_bytes(&[
            0x10, 0x0E, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x06, 0x02, 0x00, 0x3C, 0x00, 0x00,
            0x01, b'n',
        ])
        .await;
    let mut raw = Vec::new();
    within(
        "the CONNACK and the close",
        client.stream.read_to_end(&mut raw),
    )
    .await
    .expect("read");
    assert_eq!(
        raw,
        [0x20, 0x03, 0x00, 0x84, 0x00],
        "a 5.0 CONNACK: flags, 0x84, no properties"
    );
    server.shutdown().await;
}

fn deny_rule(user: &str, topics: &[&str]) -> AclRule {
    let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
    AclRule {
        user: user.into(),
        permission: Permission::Deny,
        publish: topics.clone(),
        subscribe: topics,
    }
}

fn allow_all() -> AclRule {
    AclRule {
        user: "*".into(),
        permission: Permission::Allow,
        publish: vec!["#".into()],
        subscribe: vec!["#".into()],
    }
}

#[tokio::test]
async fn deny_rules_refuse_subscriptions_and_publishes_and_filter_wildcard_deliveries() {
    let server = start_broker(|c| {
        c.auth.acl = vec![
            deny_rule("*", &["test/nosubscribe", "secret/#"]),
            allow_all(),
        ];
    })
    .await;
    let addr = server.mqtt_addrs()[0];
    let mut old = RawClient::connected(addr, ProtocolVersion::V311, "old").await;
    let ack = old.subscribe("test/nosubscribe", QoS::AtLeastOnce).await;
    assert_eq!(ack.reasons, [ReasonCode::UnspecifiedError], "SUBACK 0x80");
    let mut new = RawClient::connected(addr, ProtocolVersion::V5, "new").await;
    let ack = new.subscribe("test/nosubscribe", QoS::AtLeastOnce).await;
    assert_eq!(ack.reasons, [ReasonCode::NotAuthorized], "SUBACK 0x87");

    // A wildcard subscription is granted, but denied topics never reach it.
    let mut watcher = RawClient::connected(addr, ProtocolVersion::V5, "watcher").await;
    let ack = watcher.subscribe("#", QoS::AtLeastOnce).await;
    assert_eq!(ack.reasons, [ReasonCode::GrantedQoS1]);

    let mut publisher = RawClient::connected(addr, ProtocolVersion::V5, "pub").await;
    publisher
        .send(&Packet::Publish(publish(
            "secret/plans",
            QoS::AtLeastOnce,
            Some(1),
        )))
        .await;
    match publisher.recv().await {
        Some(Packet::PubAck(ack)) => assert_eq!(ack.reason, ReasonCode::NotAuthorized),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    // 3.1.1 publishers are acknowledged and the message silently dropped.
    old.send(&Packet::Publish(publish(
        "test/nosubscribe",
        QoS::AtLeastOnce,
        Some(2),
    )))
    .await;
    assert!(matches!(old.recv().await, Some(Packet::PubAck(_))));
    // A message that is allowed arrives, and nothing denied came before it.
    publisher
        .send(&Packet::Publish(publish(
            "public/news",
            QoS::AtLeastOnce,
            Some(3),
        )))
        .await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));
    match watcher.recv().await {
        Some(Packet::Publish(p)) => assert_eq!(p.topic, "public/news"),
        other => panic!("expected PUBLISH, got {other:?}"),
    }
    let metrics = server.broker().metrics();
    assert_eq!(metrics.drops_total(DropReason::NotAuthorized), 2);
    server.shutdown().await;
}

#[tokio::test]
async fn a_retained_message_on_a_denied_topic_is_filtered_too() {
    let server = start_broker(|c| {
        c.auth.acl = vec![
            AclRule {
                user: "*".into(),
                permission: Permission::Deny,
                publish: Vec::new(),
                subscribe: vec!["secret/#".into()],
            },
            allow_all(),
        ];
    })
    .await;
    let addr = server.mqtt_addrs()[0];
    let mut publisher = RawClient::connected(addr, ProtocolVersion::V5, "pub").await;
    for (id, topic) in [(1, "secret/a"), (2, "open/a")] {
        let mut retained = publish(topic, QoS::AtLeastOnce, Some(id));
        retained.retain = true;
        publisher.send(&Packet::Publish(retained)).await;
        assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));
    }
    let mut watcher = RawClient::connected(addr, ProtocolVersion::V5, "watcher").await;
    watcher.subscribe("#", QoS::AtMostOnce).await;
    match watcher.recv().await {
        Some(Packet::Publish(p)) => assert_eq!(p.topic, "open/a"),
        other => panic!("expected the open retained message, got {other:?}"),
    }
    watcher.send(&Packet::PingReq).await;
    assert_eq!(
        watcher.recv().await,
        Some(Packet::PingResp),
        "nothing else came"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_username_without_a_credentials_file_connects_as_anonymous() {
    let server = start_broker(|c| {
        // A rule for a named user must not apply to someone merely claiming it.
        c.auth.acl = vec![AclRule {
            user: "admin".into(),
            permission: Permission::Allow,
            publish: vec!["#".into()],
            subscribe: vec!["#".into()],
        }];
    })
    .await;
    let addr = server.mqtt_addrs()[0];
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        let mut client = RawClient::connect(addr, version).await;
        let mut connect = connect_packet(version, "claims-admin", true, Default::default());
        if let Packet::Connect(c) = &mut connect {
            c.username = Some("admin".into());
            c.password = Some(Bytes::from_static(b"whatever"));
        }
        client.send(&connect).await;
        match client.recv().await {
            Some(Packet::ConnAck(ack)) => assert_eq!(ack.code, ReasonCode::Success),
            other => panic!("expected CONNACK, got {other:?}"),
        }
        let ack = client.subscribe("#", QoS::AtMostOnce).await;
        assert!(
            ack.reasons[0].is_error(),
            "{version:?}: let in as anonymous, not as admin"
        );
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_client_still_sending_when_closed_reads_why() {
    let server = start_broker(|c| c.limits.max_inflight = 4).await;
    let mut client =
        RawClient::connected(server.mqtt_addrs()[0], ProtocolVersion::V5, "eager").await;
    // More unreleased QoS 2 publishes than the receive maximum: the broker
    // closes the connection.
    for id in 1..=6u16 {
        client
            .send(&Packet::Publish(publish("t", QoS::ExactlyOnce, Some(id))))
            .await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    // The client, unaware yet, goes on answering, as a client working
    // through the PUBRECs before the DISCONNECT does. A broker whose socket
    // is gone answers with a reset, and the next write fails (EPIPE) before
    // the client ever reads why it was closed.
    use tokio::io::AsyncWriteExt;
    let mut late = BytesMut::new();
    encode(
        &Packet::PubRel(PubAck::success(1)),
        ProtocolVersion::V5,
        &mut late,
    )
    .expect("encode");
    for _ in 0..2 {
        client
            .stream
            .write_all(&late)
            .await
            .expect("the broker still reads (and discards) for a moment");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        closed_with(&mut client).await,
        Some(ReasonCode::ReceiveMaximumExceeded),
        "the DISCONNECT survives the close"
    );
    server.shutdown().await;
}
