//! MQTT 3.1.1 behaviour with a real client (rumqttc) against a broker on loopback.

mod support;

use std::time::Duration;

use support::start_broker;
use support::v4::{self, LastWill, Packet, QoS};

#[tokio::test]
async fn publish_reaches_subscriber_at_each_qos() {
    let server = start_broker(|_| {}).await;
    let addr = server.mqtt_addrs()[0];
    let mut sub = v4::connect(v4::options(addr, "sub")).await;
    let publisher = v4::connect(v4::options(addr, "pub")).await;
    sub.subscribe("sensors/+/temp", QoS::ExactlyOnce).await;

    for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        let payload = format!("reading {i}");
        publisher
            .client
            .publish(format!("sensors/{i}/temp"), qos, false, payload.clone())
            .await
            .expect("queue");
        let got = sub.publish_received().await;
        assert_eq!(got.topic, format!("sensors/{i}/temp"));
        assert_eq!(&got.payload[..], payload.as_bytes());
        assert_eq!(got.qos, qos, "delivered at min(published, subscribed) QoS");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn delivery_qos_is_the_lower_of_publish_and_subscription() {
    let server = start_broker(|_| {}).await;
    let addr = server.mqtt_addrs()[0];
    let mut sub = v4::connect(v4::options(addr, "sub")).await;
    let publisher = v4::connect(v4::options(addr, "pub")).await;
    sub.subscribe("a/#", QoS::AtLeastOnce).await;
    publisher
        .client
        .publish("a/b", QoS::ExactlyOnce, false, "x")
        .await
        .expect("queue");
    assert_eq!(sub.publish_received().await.qos, QoS::AtLeastOnce);
    server.shutdown().await;
}

#[tokio::test]
async fn retained_message_is_sent_to_new_subscribers_and_cleared_by_empty_payload() {
    let server = start_broker(|_| {}).await;
    let addr = server.mqtt_addrs()[0];
    let mut publisher = v4::connect(v4::options(addr, "pub")).await;
    publisher.publish_acked("state/door", true, b"open").await;

    let mut first = v4::connect(v4::options(addr, "first")).await;
    first.subscribe("state/#", QoS::AtLeastOnce).await;
    let got = first.publish_received().await;
    assert_eq!(&got.payload[..], b"open");
    assert!(got.retain, "retained on subscribe carries RETAIN");

    // Live delivery to an existing subscriber does not carry RETAIN in 3.1.1.
    publisher.publish_acked("state/door", true, b"closed").await;
    let live = first.publish_received().await;
    assert_eq!(&live.payload[..], b"closed");
    assert!(!live.retain);

    publisher.publish_acked("state/door", true, b"").await;
    let _cleared = first.publish_received().await;
    let mut second = v4::connect(v4::options(addr, "second")).await;
    second.subscribe("state/#", QoS::AtLeastOnce).await;
    second.subscribe("marker", QoS::AtLeastOnce).await;
    publisher.publish_acked("marker", false, b"m").await;
    let got = second.publish_received().await;
    assert_eq!(
        got.topic, "marker",
        "no retained message after it was cleared"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn will_is_published_when_a_client_vanishes_but_not_after_disconnect() {
    let server = start_broker(|_| {}).await;
    let addr = server.mqtt_addrs()[0];
    let mut watcher = v4::connect(v4::options(addr, "watcher")).await;
    watcher.subscribe("wills/#", QoS::AtLeastOnce).await;

    let mut polite = v4::options(addr, "polite");
    polite.set_last_will(LastWill::new(
        "wills/polite",
        "gone",
        QoS::AtLeastOnce,
        false,
    ));
    let polite = v4::connect(polite).await;
    polite.client.disconnect().await.expect("disconnect");

    // A raw TCP client with a will, dropped without DISCONNECT.
    let mut raw =
        support::RawClient::connect(addr, strait_broker::protocol::ProtocolVersion::V311).await;
    raw.send(&strait_broker::protocol::Packet::Connect(Box::new(
        strait_broker::protocol::Connect {
            protocol: strait_broker::protocol::ProtocolVersion::V311,
            clean_start: true,
            keep_alive: 30,
            client_id: "rude".into(),
            will: Some(strait_broker::protocol::LastWill {
                topic: "wills/rude".into(),
                payload: bytes::Bytes::from_static(b"vanished"),
                qos: strait_broker::protocol::QoS::AtLeastOnce,
                retain: false,
                properties: Default::default(),
            }),
            username: None,
            password: None,
            properties: Default::default(),
        },
    )))
    .await;
    assert!(matches!(
        raw.recv().await,
        Some(strait_broker::protocol::Packet::ConnAck(_))
    ));
    drop(raw);

    let got = watcher.publish_received().await;
    assert_eq!(
        got.topic, "wills/rude",
        "only the vanished client's will is published"
    );
    assert_eq!(&got.payload[..], b"vanished");
    server.shutdown().await;
}

#[tokio::test]
async fn persistent_session_keeps_subscriptions_and_queues_qos1_while_offline() {
    let server = start_broker(|_| {}).await;
    let addr = server.mqtt_addrs()[0];
    let mut options = v4::options(addr, "durable");
    options.set_clean_session(false);
    let mut durable = v4::connect(options.clone()).await;
    durable.subscribe("jobs/#", QoS::AtLeastOnce).await;
    durable.client.disconnect().await.expect("disconnect");
    drop(durable);

    let mut publisher = v4::connect(v4::options(addr, "pub")).await;
    publisher.publish_acked("jobs/1", false, b"one").await;
    publisher.publish_acked("jobs/2", false, b"two").await;
    publisher
        .client
        .publish("jobs/qos0", QoS::AtMostOnce, false, "lost")
        .await
        .expect("queue");
    publisher.publish_acked("jobs/3", false, b"three").await;

    let mut durable = v4::connect(options).await;
    for expected in ["one", "two", "three"] {
        let got = durable.publish_received().await;
        assert_eq!(
            &got.payload[..],
            expected.as_bytes(),
            "queued in order; QoS 0 not kept offline"
        );
    }
    server.shutdown().await;
}

#[tokio::test]
async fn clean_session_discards_the_previous_session() {
    let server = start_broker(|_| {}).await;
    let addr = server.mqtt_addrs()[0];
    let mut options = v4::options(addr, "c1");
    options.set_clean_session(false);
    let mut client = v4::connect(options.clone()).await;
    client.subscribe("t", QoS::AtLeastOnce).await;
    client.client.disconnect().await.expect("disconnect");
    drop(client);

    options.set_clean_session(true);
    let mut client = v4::connect(options).await;
    let mut publisher = v4::connect(v4::options(addr, "pub")).await;
    publisher
        .publish_acked("t", false, b"old subscription")
        .await;
    client.subscribe("marker", QoS::AtLeastOnce).await;
    publisher.publish_acked("marker", false, b"m").await;
    assert_eq!(client.publish_received().await.topic, "marker");
    server.shutdown().await;
}

#[tokio::test]
async fn wildcards_follow_the_spec_and_never_match_dollar_topics() {
    let server = start_broker(|c| c.sys.interval_secs = 1).await;
    let addr = server.mqtt_addrs()[0];
    let mut all = v4::connect(v4::options(addr, "all")).await;
    all.subscribe("#", QoS::AtMostOnce).await;
    let mut sys = v4::connect(v4::options(addr, "sys")).await;
    sys.subscribe("$SYS/broker/clients/connected", QoS::AtMostOnce)
        .await;
    let got = sys.publish_received().await;
    let connected: i64 = std::str::from_utf8(&got.payload)
        .expect("utf8")
        .parse()
        .expect("number");
    assert!(connected >= 1, "{connected}");

    let mut publisher = v4::connect(v4::options(addr, "pub")).await;
    publisher.publish_acked("sport", false, b"parent").await;
    let got = all.publish_received().await;
    assert_eq!(got.topic, "sport", "# matches everything but $-topics");
    server.shutdown().await;
}

#[tokio::test]
async fn shared_subscription_delivers_each_message_to_one_member() {
    let server = start_broker(|_| {}).await;
    let addr = server.mqtt_addrs()[0];
    let mut a = v4::connect(v4::options(addr, "worker-a")).await;
    let mut b = v4::connect(v4::options(addr, "worker-b")).await;
    a.subscribe("$share/workers/tasks/#", QoS::AtLeastOnce)
        .await;
    b.subscribe("$share/workers/tasks/#", QoS::AtLeastOnce)
        .await;
    let mut publisher = v4::connect(v4::options(addr, "pub")).await;
    for i in 0..10 {
        publisher
            .publish_acked(&format!("tasks/{i}"), false, b"job")
            .await;
    }
    let mut received = Vec::new();
    for _ in 0..5 {
        received.push(a.publish_received().await.topic);
        received.push(b.publish_received().await.topic);
    }
    received.sort();
    let mut expected: Vec<String> = (0..10).map(|i| format!("tasks/{i}")).collect();
    expected.sort();
    assert_eq!(received, expected, "every message once, split evenly");
    server.shutdown().await;
}

#[tokio::test]
async fn unsubscribe_stops_delivery() {
    let server = start_broker(|_| {}).await;
    let addr = server.mqtt_addrs()[0];
    let mut sub = v4::connect(v4::options(addr, "sub")).await;
    sub.subscribe("news", QoS::AtLeastOnce).await;
    sub.subscribe("marker", QoS::AtLeastOnce).await;
    sub.client.unsubscribe("news").await.expect("queue");
    sub.next("UNSUBACK", |p| {
        matches!(p, Packet::UnsubAck(_)).then_some(())
    })
    .await;
    let mut publisher = v4::connect(v4::options(addr, "pub")).await;
    publisher.publish_acked("news", false, b"n").await;
    publisher.publish_acked("marker", false, b"m").await;
    assert_eq!(sub.publish_received().await.topic, "marker");
    server.shutdown().await;
}

#[tokio::test]
async fn keepalive_timeout_closes_a_silent_client() {
    let server = start_broker(|_| {}).await;
    let addr = server.mqtt_addrs()[0];
    let mut raw =
        support::RawClient::connect(addr, strait_broker::protocol::ProtocolVersion::V311).await;
    raw.send(&strait_broker::protocol::Packet::Connect(Box::new(
        strait_broker::protocol::Connect {
            protocol: strait_broker::protocol::ProtocolVersion::V311,
            clean_start: true,
            keep_alive: 1,
            client_id: "silent".into(),
            will: None,
            username: None,
            password: None,
            properties: Default::default(),
        },
    )))
    .await;
    assert!(matches!(
        raw.recv().await,
        Some(strait_broker::protocol::Packet::ConnAck(_))
    ));
    let started = std::time::Instant::now();
    let rest = raw.recv_until_closed().await;
    assert!(rest.is_empty(), "3.1.1 gets no DISCONNECT: {rest:?}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1400),
        "closed after 1.5 x keepalive, not before: {waited:?}"
    );
    server.shutdown().await;
}
