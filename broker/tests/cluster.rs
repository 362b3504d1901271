//! A cluster of broker nodes acts as one broker: three in-process nodes on
//! loopback, meshed through a test discovery source, driven by real clients.

mod support;

use std::collections::BTreeMap;

use bytes::Bytes;
use strait_broker::protocol as p;
use support::cluster::{eventually, TestCluster};
use support::v5::{self, ConnectProperties, LastWill, PublishProperties, QoS};
use support::{v4, within};

fn with_session_expiry(options: &mut v5::MqttOptions, secs: u32) {
    let mut props = ConnectProperties::new();
    props.session_expiry_interval = Some(secs);
    options.set_connect_properties(props);
}

#[tokio::test]
async fn a_message_crosses_nodes_at_every_qos_with_its_properties() {
    let cluster = TestCluster::start(3).await;
    let mut subscriber = v5::connect(v5::options(cluster.mqtt(0), "sub")).await;
    subscriber.subscribe("t/#", QoS::ExactlyOnce).await;
    cluster.wait_routes(2, 0, 1).await;
    let publisher = v5::connect(v5::options(cluster.mqtt(2), "pub")).await;
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        let props = PublishProperties {
            content_type: Some("text/plain".into()),
            correlation_data: Some(Bytes::from_static(b"c-1")),
            user_properties: vec![("k".into(), format!("{qos:?}"))],
            message_expiry_interval: Some(100),
            ..Default::default()
        };
        publisher
            .client
            .publish_with_properties("t/x", qos, false, format!("{qos:?}"), props)
            .await
            .expect("queue");
        let got = subscriber.publish_received().await;
        assert_eq!(got.qos, qos);
        assert_eq!(got.payload, format!("{qos:?}").as_bytes());
        let props = got.properties.expect("properties");
        assert_eq!(props.content_type.as_deref(), Some("text/plain"));
        assert_eq!(props.correlation_data.as_deref(), Some(&b"c-1"[..]));
        assert_eq!(
            props.user_properties,
            vec![("k".into(), format!("{qos:?}"))]
        );
        let left = props.message_expiry_interval.expect("expiry forwarded");
        assert!((98..=100).contains(&left), "remaining lifetime: {left}");
    }
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_publish_reaches_each_interested_node_once_and_keeps_publisher_order() {
    let cluster = TestCluster::start(3).await;
    // Two sessions on node 1 with overlapping filters: one route per filter,
    // one forwarded copy for the node.
    let mut a = v4::connect(v4::options(cluster.mqtt(1), "a")).await;
    a.subscribe("o/#", v4::QoS::AtLeastOnce).await;
    a.subscribe("o/+", v4::QoS::AtLeastOnce).await;
    let mut b = v4::connect(v4::options(cluster.mqtt(1), "b")).await;
    b.subscribe("o/+", v4::QoS::AtLeastOnce).await;
    cluster.wait_routes(0, 1, 2).await;
    cluster.wait_routes(2, 1, 2).await;

    let mut publisher = v4::connect(v4::options(cluster.mqtt(0), "p")).await;
    for i in 0..50u32 {
        publisher
            .client
            .publish("o/n", v4::QoS::AtLeastOnce, false, i.to_be_bytes().to_vec())
            .await
            .expect("queue");
    }
    for client in [&mut a, &mut b] {
        for i in 0..50u32 {
            let got = client.publish_received().await;
            assert_eq!(
                &got.payload[..],
                &i.to_be_bytes(),
                "in publisher order, once"
            );
        }
    }
    let mesh = |i: usize| {
        cluster
            .node(i)
            .broker()
            .cluster()
            .expect("clustered")
            .metrics()
    };
    assert_eq!(
        mesh(0).forwarded_total(),
        50,
        "one copy per message for node 1"
    );
    assert_eq!(mesh(1).received_total(), 50);
    assert_eq!(mesh(2).received_total(), 0, "node 2 has no interest");
    publisher.publish_acked("o/end", false, b"end").await;
    for client in [&mut a, &mut b] {
        assert_eq!(
            &client.publish_received().await.payload[..],
            b"end",
            "no duplicate before it"
        );
    }
    cluster.shutdown().await;
}

#[tokio::test]
async fn retained_messages_and_wills_reach_every_node() {
    let cluster = TestCluster::start(3).await;
    let mut publisher = v4::connect(v4::options(cluster.mqtt(0), "retainer")).await;
    publisher.publish_acked("config/a", true, b"one").await;
    // No node but 0 has subscribers: the retained copy goes everywhere anyway.
    for node in [1, 2] {
        eventually("the retained message to replicate", || {
            cluster.node(node).broker().gauges().retained == 1
        })
        .await;
        let mut late = v4::connect(v4::options(cluster.mqtt(node), &format!("late-{node}"))).await;
        late.subscribe("config/#", v4::QoS::AtLeastOnce).await;
        let got = late.publish_received().await;
        assert!(got.retain);
        assert_eq!(&got.payload[..], b"one");
    }

    let mut watcher = v5::connect(v5::options(cluster.mqtt(2), "watcher")).await;
    watcher.subscribe("status/#", QoS::AtLeastOnce).await;
    cluster.wait_routes(1, 2, 1).await;
    let mut options = v5::options(cluster.mqtt(1), "mortal");
    options.set_last_will(LastWill::new(
        "status/mortal",
        "gone",
        QoS::AtLeastOnce,
        false,
        None,
    ));
    let mortal = v5::connect(options).await;
    drop(mortal); // vanishes without DISCONNECT
    let will = watcher.publish_received().await;
    assert_eq!(will.topic, "status/mortal");
    assert_eq!(&will.payload[..], b"gone");
    cluster.shutdown().await;
}

#[tokio::test]
async fn connecting_to_another_node_takes_the_session_over_with_its_queue() {
    let cluster = TestCluster::start(3).await;
    // The first connection is a raw client, so the test sees the exact
    // DISCONNECT the broker sends it.
    let properties = p::ConnectProperties {
        session_expiry_interval: Some(300),
        receive_maximum: Some(1),
        ..Default::default()
    };
    let (mut first, _) = support::RawClient::open(
        cluster.mqtt(0),
        p::ProtocolVersion::V5,
        "roamer",
        false,
        properties,
    )
    .await;
    first.subscribe("jobs/#", p::QoS::AtLeastOnce).await;
    cluster.wait_routes(2, 0, 1).await;

    // Three messages while the client reads none: one is in flight (receive
    // maximum 1), two wait in the session's queue.
    let mut publisher = v4::connect(v4::options(cluster.mqtt(2), "boss")).await;
    for job in ["j1", "j2", "j3"] {
        publisher
            .publish_acked("jobs/x", false, job.as_bytes())
            .await;
    }
    eventually("node 0 to hold the three jobs", || {
        cluster.node(0).broker().metrics().messages_out_total() >= 1
    })
    .await;

    let mut options = v5::options(cluster.mqtt(1), "roamer");
    options.set_clean_start(false);
    with_session_expiry(&mut options, 300);
    let mut second = v5::connect(options).await;
    assert!(
        second.connack.session_present,
        "the session moved from node 0"
    );
    let closing = first.recv_until_closed().await;
    assert!(
        closing.contains(&p::Packet::Disconnect(p::Disconnect::with_reason(
            p::ReasonCode::SessionTakenOver
        ))),
        "the old connection is told 0x8E: {closing:?}"
    );
    let mut jobs = Vec::new();
    for _ in 0..3 {
        jobs.push(second.publish_received().await.payload);
    }
    assert_eq!(
        jobs,
        vec!["j1", "j2", "j3"],
        "queued and in-flight messages moved along"
    );

    // Its subscription moved too: routes now point at node 1.
    cluster.wait_routes(2, 1, 1).await;
    cluster.wait_routes(2, 0, 0).await;
    publisher.publish_acked("jobs/y", false, b"j4").await;
    assert_eq!(&second.publish_received().await.payload[..], b"j4");
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_shared_group_delivers_each_message_to_one_member_cluster_wide() {
    let cluster = TestCluster::start(3).await;
    let mut members = Vec::new();
    for node in [0, 1] {
        let mut member = v4::connect(v4::options(cluster.mqtt(node), &format!("w{node}"))).await;
        member
            .subscribe("$share/workers/tasks/+", v4::QoS::AtLeastOnce)
            .await;
        member.subscribe("done", v4::QoS::AtLeastOnce).await;
        members.push(member);
    }
    cluster.wait_routes(2, 0, 2).await;
    cluster.wait_routes(2, 1, 2).await;
    let mut publisher = v4::connect(v4::options(cluster.mqtt(2), "producer")).await;
    for i in 0..40u32 {
        publisher
            .publish_acked("tasks/t", false, &i.to_be_bytes())
            .await;
    }
    // Each node's stream keeps the publisher's order, so once a member has
    // "done", everything the group sent it has arrived.
    publisher.publish_acked("done", false, b"done").await;
    let mut seen: BTreeMap<u32, usize> = BTreeMap::new();
    let mut per_member = Vec::new();
    for member in &mut members {
        let mut count = 0;
        loop {
            let publish = member.publish_received().await;
            if publish.topic == "done" {
                break;
            }
            let n = u32::from_be_bytes(publish.payload[..4].try_into().expect("4 bytes"));
            *seen.entry(n).or_default() += 1;
            count += 1;
        }
        per_member.push(count);
    }
    assert_eq!(seen.len(), 40, "every message delivered");
    assert!(
        seen.values().all(|&n| n == 1),
        "each exactly once: {seen:?}"
    );
    assert!(
        per_member.iter().all(|&n| n > 0),
        "both members served: {per_member:?}"
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn the_admin_api_lists_peers_with_state_routes_and_lag() {
    let cluster = TestCluster::start(3).await;
    let mut subscriber = v4::connect(v4::options(cluster.mqtt(1), "s")).await;
    subscriber.subscribe("a/#", v4::QoS::AtMostOnce).await;
    cluster.wait_routes(0, 1, 1).await;
    let admin = cluster.node(0).admin_addr();
    let body = within("the admin API", support::http_get(admin, "/api/v1/cluster")).await;
    let status: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(status["node"], "node-0");
    assert_eq!(status["cluster"], "test");
    assert_eq!(status["ordinal"], 0);
    let peers = status["peers"].as_array().expect("peers");
    assert_eq!(peers.len(), 2);
    assert_eq!(peers[0]["name"], "node-1");
    assert_eq!(peers[0]["state"], "connected");
    assert_eq!(peers[0]["routes"], 1);
    assert!(peers[0]["lag"].is_u64());
    let metrics = within("metrics", support::http_get(admin, "/metrics")).await;
    assert!(
        metrics.contains("strait_cluster_peer_connections 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("strait_cluster_remote_routes 1"),
        "{metrics}"
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_message_forwarded_for_subscribers_that_left_is_counted_not_lost_silently() {
    use strait_broker::cluster::wire::{Forward, WireMessage};
    use strait_broker::cluster::Host;
    use strait_broker::metrics::DropReason;
    let cluster = TestCluster::start(2).await;
    let broker = cluster.node(1).broker();
    // What node 0 sends when it still believes node 1 has subscribers.
    broker.deliver_forwarded(Forward {
        message: WireMessage {
            topic: "gone/x".into(),
            payload: Bytes::from_static(b"late"),
            qos: 1,
            ..WireMessage::default()
        },
        plain: true,
        groups: vec!["$share/g/gone/#".into()],
        retained: None,
        lane: 0,
    });
    assert_eq!(
        broker.metrics().drops_total(DropReason::NoLongerSubscribed),
        1
    );
    cluster.shutdown().await;
}
