//! MQTT 5 behaviour with a real client (rumqttc v5) against a broker on loopback.

mod support;

use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::{PubAckReason, RetainForwardRule, SubscribeReasonCode};
use support::start_broker;
use support::v5::{
    self, ConnectProperties, Filter, LastWill, LastWillProperties, Packet, PublishProperties, QoS,
    SubscribeProperties,
};

fn with_session_expiry(options: &mut v5::MqttOptions, secs: u32) {
    let mut props = ConnectProperties::new();
    props.session_expiry_interval = Some(secs);
    options.set_connect_properties(props);
}

#[tokio::test]
async fn connack_announces_limits_and_features() {
    let server = start_broker(|c| {
        c.limits.max_inflight = 20;
        c.limits.max_packet_size = 4096;
        c.limits.topic_alias_maximum = 7;
    })
    .await;
    let client = v5::connect(v5::options(server.mqtt_addrs()[0], "c")).await;
    let props = client
        .connack
        .properties
        .clone()
        .expect("v5 CONNACK has properties");
    assert_eq!(props.receive_max, Some(20));
    assert_eq!(props.max_packet_size, Some(4096));
    assert_eq!(props.topic_alias_max, Some(7));
    assert_eq!(props.shared_subscription_available, Some(1));
    assert_eq!(props.subscription_identifiers_available, Some(1));
    server.shutdown().await;
}

#[tokio::test]
async fn properties_pass_through_unchanged_for_request_response() {
    let server = start_broker(|_| {}).await;
    let addr = server.mqtt_addrs()[0];
    let mut responder = v5::connect(v5::options(addr, "responder")).await;
    responder.subscribe("rpc/request", QoS::AtLeastOnce).await;
    let mut requester = v5::connect(v5::options(addr, "requester")).await;
    requester
        .subscribe("rpc/reply/requester", QoS::AtLeastOnce)
        .await;

    let props = PublishProperties {
        response_topic: Some("rpc/reply/requester".into()),
        correlation_data: Some(Bytes::from_static(b"req-42")),
        content_type: Some("application/json".into()),
        payload_format_indicator: Some(1),
        user_properties: vec![
            ("trace".into(), "abc".into()),
            ("trace".into(), "def".into()),
        ],
        ..Default::default()
    };
    requester
        .client
        .publish_with_properties("rpc/request", QoS::AtLeastOnce, false, "{\"op\":1}", props)
        .await
        .expect("queue");
    let request = responder.publish_received().await;
    let got = request.properties.expect("properties");
    assert_eq!(got.response_topic.as_deref(), Some("rpc/reply/requester"));
    assert_eq!(got.correlation_data.as_deref(), Some(&b"req-42"[..]));
    assert_eq!(got.content_type.as_deref(), Some("application/json"));
    assert_eq!(got.payload_format_indicator, Some(1));
    assert_eq!(
        got.user_properties,
        vec![
            ("trace".to_string(), "abc".to_string()),
            ("trace".to_string(), "def".to_string())
        ],
        "user properties keep order and duplicates"
    );

    let reply = PublishProperties {
        correlation_data: got.correlation_data.clone(),
        ..Default::default()
    };
    responder
        .client
        .publish_with_properties(
            got.response_topic.expect("topic"),
            QoS::AtLeastOnce,
            false,
            "ok",
            reply,
        )
        .await
        .expect("queue");
    let response = requester.publish_received().await;
    assert_eq!(
        response
            .properties
            .and_then(|p| p.correlation_data)
            .as_deref(),
        Some(&b"req-42"[..])
    );
    server.shutdown().await;
}

#[tokio::test]
async fn subscription_identifiers_come_back_with_each_matching_subscription() {
    let server = start_broker(|_| {}).await;
    let addr = server.mqtt_addrs()[0];
    let mut sub = v5::connect(v5::options(addr, "sub")).await;
    for (filter, id) in [("home/+/temp", 7), ("home/#", 9)] {
        let props = SubscribeProperties {
            id: Some(id),
            user_properties: vec![],
        };
        sub.client
            .subscribe_with_properties(filter, QoS::AtLeastOnce, props)
            .await
            .expect("queue");
        sub.next("SUBACK", |p| matches!(p, Packet::SubAck(_)).then_some(()))
            .await;
    }
    let mut publisher = v5::connect(v5::options(addr, "pub")).await;
    publisher
        .publish_acked("home/kitchen/temp", false, b"21")
        .await;
    let got = sub.publish_received().await;
    let mut ids = got.properties.expect("properties").subscription_identifiers;
    ids.sort();
    assert_eq!(ids, vec![7, 9], "one copy carrying both identifiers");
    server.shutdown().await;
}

#[tokio::test]
async fn no_local_suppresses_own_messages() {
    let server = start_broker(|_| {}).await;
    let addr = server.mqtt_addrs()[0];
    let mut chat = v5::connect(v5::options(addr, "chat")).await;
    let mut filter = Filter::new("room/1", QoS::AtLeastOnce);
    filter.nolocal = true;
    chat.client
        .subscribe_many([filter, Filter::new("marker", QoS::AtLeastOnce)])
        .await
        .expect("queue");
    chat.next("SUBACK", |p| matches!(p, Packet::SubAck(_)).then_some(()))
        .await;

    let reason = chat.publish_acked("room/1", false, b"mine").await;
    assert_eq!(
        reason,
        PubAckReason::NoMatchingSubscribers,
        "own no-local subscription does not count"
    );
    let mut other = v5::connect(v5::options(addr, "other")).await;
    other.publish_acked("room/1", false, b"theirs").await;
    let got = chat.publish_received().await;
    assert_eq!(&got.payload[..], b"theirs");
    server.shutdown().await;
}

#[tokio::test]
async fn retain_as_published_and_retain_handling() {
    let server = start_broker(|_| {}).await;
    let addr = server.mqtt_addrs()[0];
    let mut publisher = v5::connect(v5::options(addr, "pub")).await;
    publisher.publish_acked("cfg/a", true, b"v1").await;

    let mut sub = v5::connect(v5::options(addr, "sub")).await;
    let mut keep = Filter::new("cfg/#", QoS::AtLeastOnce);
    keep.preserve_retain = true;
    keep.retain_forward_rule = RetainForwardRule::Never;
    sub.client
        .subscribe_many([keep, Filter::new("marker", QoS::AtLeastOnce)])
        .await
        .expect("queue");
    let codes = sub
        .next("SUBACK", |p| match p {
            Packet::SubAck(ack) => Some(ack.return_codes),
            _ => None,
        })
        .await;
    assert_eq!(
        codes,
        vec![
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
            SubscribeReasonCode::Success(QoS::AtLeastOnce)
        ]
    );
    publisher.publish_acked("cfg/a", true, b"v2").await;
    let live = sub.publish_received().await;
    assert_eq!(
        &live.payload[..],
        b"v2",
        "retain handling 2 sent no stored message first"
    );
    assert!(
        live.retain,
        "retain-as-published keeps RETAIN on live delivery"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn message_expiry_drops_stale_queued_messages_and_counts_down() {
    let server = start_broker(|_| {}).await;
    let addr = server.mqtt_addrs()[0];
    let mut options = v5::options(addr, "slow");
    options.set_clean_start(false);
    with_session_expiry(&mut options, 60);
    let mut slow = v5::connect(options.clone()).await;
    slow.subscribe("feed", QoS::AtLeastOnce).await;
    slow.client.disconnect().await.expect("disconnect");
    drop(slow);

    let mut publisher = v5::connect(v5::options(addr, "pub")).await;
    let short = PublishProperties {
        message_expiry_interval: Some(1),
        ..Default::default()
    };
    let long = PublishProperties {
        message_expiry_interval: Some(100),
        ..Default::default()
    };
    publisher
        .client
        .publish_with_properties("feed", QoS::AtLeastOnce, false, "short", short)
        .await
        .expect("queue");
    publisher
        .client
        .publish_with_properties("feed", QoS::AtLeastOnce, false, "long", long)
        .await
        .expect("queue");
    for _ in 0..2 {
        publisher
            .next("PUBACK", |p| matches!(p, Packet::PubAck(_)).then_some(()))
            .await;
    }
    // Expiry is about wall-clock time passing, so the test lets it pass.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let mut slow = v5::connect(options).await;
    assert!(slow.connack.session_present);
    let got = slow.publish_received().await;
    assert_eq!(
        &got.payload[..],
        b"long",
        "the expired message is not delivered"
    );
    let left = got
        .properties
        .and_then(|p| p.message_expiry_interval)
        .expect("expiry forwarded");
    assert!(
        (97..100).contains(&left),
        "remaining lifetime is forwarded: {left}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn second_connection_with_the_same_id_takes_the_session_over() {
    use strait_broker::protocol as p;
    let server = start_broker(|_| {}).await;
    let addr = server.mqtt_addrs()[0];
    // The first connection is a raw client, so the test sees exactly what the
    // broker sends it before closing (rumqttc reports only the closed socket).
    let properties = p::ConnectProperties {
        session_expiry_interval: Some(60),
        ..Default::default()
    };
    let (mut first, _) =
        support::RawClient::open(addr, p::ProtocolVersion::V5, "dup", false, properties).await;
    first.subscribe("x", p::QoS::AtLeastOnce).await;

    let mut options = v5::options(addr, "dup");
    options.set_clean_start(false);
    with_session_expiry(&mut options, 60);
    let mut second = v5::connect(options).await;
    assert!(
        second.connack.session_present,
        "the session moved to the new connection"
    );
    let closing = first.recv_until_closed().await;
    assert_eq!(
        closing,
        vec![p::Packet::Disconnect(p::Disconnect::with_reason(
            p::ReasonCode::SessionTakenOver
        ))]
    );
    let mut publisher = v5::connect(v5::options(addr, "pub")).await;
    publisher.publish_acked("x", false, b"to the new one").await;
    assert_eq!(
        &second.publish_received().await.payload[..],
        b"to the new one"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn session_expires_after_its_interval() {
    let server = start_broker(|_| {}).await;
    let addr = server.mqtt_addrs()[0];
    let mut options = v5::options(addr, "brief");
    options.set_clean_start(false);
    with_session_expiry(&mut options, 1);
    let mut brief = v5::connect(options.clone()).await;
    brief.subscribe("t", QoS::AtLeastOnce).await;
    brief.client.disconnect().await.expect("disconnect");
    drop(brief);
    let reconnected = v5::connect(options.clone()).await;
    assert!(
        reconnected.connack.session_present,
        "resumed within the interval"
    );
    reconnected.client.disconnect().await.expect("disconnect");
    drop(reconnected);
    // Session expiry is about time passing, so the test lets it pass.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let late = v5::connect(options).await;
    assert!(!late.connack.session_present, "expired after 1 s");
    server.shutdown().await;
}

#[tokio::test]
async fn will_delay_holds_the_will_and_a_quick_return_cancels_it() {
    let server = start_broker(|_| {}).await;
    let addr = server.mqtt_addrs()[0];
    let mut watcher = v5::connect(v5::options(addr, "watcher")).await;
    watcher.subscribe("status/#", QoS::AtLeastOnce).await;

    let will_for = |topic: &str, delay: u32| {
        let props = LastWillProperties {
            delay_interval: Some(delay),
            payload_format_indicator: None,
            message_expiry_interval: None,
            content_type: None,
            response_topic: None,
            correlation_data: None,
            user_properties: vec![],
        };
        LastWill::new(topic, "offline", QoS::AtLeastOnce, false, Some(props))
    };
    let vanish = |id: &str, topic: &str, delay: u32| {
        let mut options = v5::options(addr, id);
        options.set_clean_start(false);
        with_session_expiry(&mut options, 60);
        options.set_last_will(will_for(topic, delay));
        options
    };

    // "returner" vanishes and comes back within its 5 s will delay: no will.
    let returner = vanish("returner", "status/returner", 5);
    let conn = v5::connect(returner.clone()).await;
    server_side_drop(&server, "returner", conn).await;
    let _back = v5::connect(returner).await;

    // "leaver" vanishes for good with a 1 s delay: its will arrives after the delay.
    let started = std::time::Instant::now();
    let leaver = v5::connect(vanish("leaver", "status/leaver", 1)).await;
    server_side_drop(&server, "leaver", leaver).await;
    let got = watcher.publish_received().await;
    assert_eq!(
        got.topic,
        Bytes::from_static(b"status/leaver"),
        "the returner's will was cancelled"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    server.shutdown().await;
}

/// Drops a client's connection without DISCONNECT and waits until the broker saw it go.
async fn server_side_drop(server: &strait_broker::server::Server, _id: &str, client: v5::Client) {
    let before = server.broker().metrics().connections_current();
    drop(client);
    support::within("the broker to notice the drop", async {
        while server.broker().metrics().connections_current() >= before {
            tokio::time::sleep(Duration::from_millis(5)).await; // polling a counter
        }
    })
    .await;
}
