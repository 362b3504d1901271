//! Configured limits: each is enforced with its reason code and shows in the metrics.

mod support;

use strait_broker::metrics::{DropReason, RefusalReason};
use strait_broker::protocol::{ConnectProperties, Packet, ProtocolVersion, QoS, ReasonCode};
use support::{start_broker, RawClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn connect(
    addr: std::net::SocketAddr,
    id: &str,
    properties: ConnectProperties,
) -> (RawClient, ReasonCode) {
    let (client, ack) = RawClient::open(addr, ProtocolVersion::V5, id, true, properties).await;
    (client, ack.code)
}

fn publish(topic: &str, qos: QoS, packet_id: Option<u16>, payload: Vec<u8>) -> Packet {
    Packet::Publish(support::publish(topic, qos, packet_id, payload))
}

#[tokio::test]
async fn connections_beyond_the_limit_get_quota_exceeded() {
    let server = start_broker(|c| c.limits.max_connections = 2).await;
    let addr = server.mqtt_addrs()[0];
    let (_a, code_a) = connect(addr, "a", Default::default()).await;
    let (_b, code_b) = connect(addr, "b", Default::default()).await;
    let (_c, code_c) = connect(addr, "c", Default::default()).await;
    assert_eq!((code_a, code_b), (ReasonCode::Success, ReasonCode::Success));
    assert_eq!(code_c, ReasonCode::QuotaExceeded);
    assert_eq!(
        server
            .broker()
            .metrics()
            .refusals_total(RefusalReason::TooManyConnections),
        1
    );
    server.shutdown().await;
}

#[tokio::test]
async fn messages_larger_than_the_client_accepts_are_skipped_and_counted() {
    let server = start_broker(|_| {}).await;
    let addr = server.mqtt_addrs()[0];
    let small = ConnectProperties {
        maximum_packet_size: Some(128),
        ..Default::default()
    };
    let (mut sub, _) = connect(addr, "small", small).await;
    sub.subscribe("big/#", QoS::AtLeastOnce).await;
    let (mut publisher, _) = connect(addr, "pub", Default::default()).await;
    publisher
        .send(&publish("big/1", QoS::AtLeastOnce, Some(1), vec![0; 1024]))
        .await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));
    publisher
        .send(&publish(
            "big/2",
            QoS::AtLeastOnce,
            Some(2),
            b"fits".to_vec(),
        ))
        .await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));
    match sub.recv().await {
        Some(Packet::Publish(p)) => assert_eq!(p.topic, "big/2", "the oversize one was skipped"),
        other => panic!("expected PUBLISH, got {other:?}"),
    }
    assert_eq!(
        server
            .broker()
            .metrics()
            .drops_total(DropReason::TooLargeForClient),
        1
    );
    server.shutdown().await;
}

#[tokio::test]
async fn topic_level_and_length_limits() {
    let server = start_broker(|c| {
        c.limits.max_topic_levels = 3;
        c.limits.max_topic_length = 32;
    })
    .await;
    let addr = server.mqtt_addrs()[0];
    let (mut sub, _) = connect(addr, "sub", Default::default()).await;
    let ack = sub.subscribe("a/b/c/d", QoS::AtMostOnce).await;
    assert_eq!(ack.reasons, vec![ReasonCode::TopicFilterInvalid]);
    let (mut publisher, _) = connect(addr, "pub", Default::default()).await;
    publisher
        .send(&publish("a/b/c/d", QoS::AtMostOnce, None, vec![]))
        .await;
    let closing = publisher.recv_until_closed().await;
    assert!(
        closing.iter().any(
            |p| matches!(p, Packet::Disconnect(d) if d.reason == ReasonCode::TopicNameInvalid)
        ),
        "{closing:?}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn metrics_endpoint_reports_traffic() {
    let server = start_broker(|_| {}).await;
    let addr = server.mqtt_addrs()[0];
    let (mut sub, _) = connect(addr, "sub", Default::default()).await;
    sub.subscribe("m", QoS::AtLeastOnce).await;
    let (mut publisher, _) = connect(addr, "pub", Default::default()).await;
    publisher
        .send(&publish("m", QoS::AtLeastOnce, Some(1), b"x".to_vec()))
        .await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));
    assert!(matches!(sub.recv().await, Some(Packet::Publish(_))));

    let mut http = tokio::net::TcpStream::connect(server.admin_addr())
        .await
        .expect("admin");
    http.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut body = String::new();
    http.read_to_string(&mut body).await.expect("read");
    for line in [
        "strait_connections 2",
        "strait_sessions 2",
        "strait_subscriptions 1",
        "strait_messages_received_total{qos=\"1\"} 1",
        "strait_messages_sent_total{qos=\"1\"} 1",
    ] {
        assert!(
            body.lines().any(|l| l == line),
            "missing {line:?} in\n{body}"
        );
    }
    server.shutdown().await;
}
