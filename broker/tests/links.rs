//! Links between clusters, end to end on loopback: real brokers, real MQTT
//! clients, the link protocol over TCP. Each link is dialled by one side only,
//! and both directions flow over it.

mod support;

use std::time::Duration;

use bytes::Bytes;
use support::linked::{edge, next_number, Linked};
use support::{v4, v5};

/// A QoS 1 message published in `from` and the marker that follows it: when
/// the marker arrives, anything routed before it has arrived too (one
/// publisher's messages keep their order across the link).
async fn publish_then_marker(
    publisher: &mut v4::Client,
    topic: &str,
    payload: &[u8],
    marker_topic: &str,
) {
    publisher.publish_acked(topic, false, payload).await;
    publisher
        .publish_acked(marker_topic, false, b"marker")
        .await;
}

/// Every message `client` receives up to and including the marker.
async fn until_marker(client: &mut v4::Client) -> Vec<(String, Bytes)> {
    let mut seen = Vec::new();
    loop {
        let publish = client.publish_received().await;
        let topic = publish.topic.clone();
        let done = publish.payload.as_ref() == b"marker";
        seen.push((topic, publish.payload));
        if done {
            return seen;
        }
    }
}

#[tokio::test]
async fn nothing_crosses_until_someone_subscribes_then_it_crosses_once_with_its_properties() {
    // The edge dials the cloud; the cloud lists no endpoints for it.
    let net = Linked::configure(&[edge("edge", "cloud")], |_, _| {})
        .start()
        .await;
    let mut cloud_publisher = v5::connect(v5::options(net.mqtt("cloud"), "cloud-pub")).await;
    for i in 0..20 {
        cloud_publisher
            .publish_acked("fleet/7/gps", false, format!("unwanted {i}").as_bytes())
            .await;
    }
    assert_eq!(net.status("cloud", "edge").forwarded_messages, 0);
    assert_eq!(net.status("cloud", "edge").forwarded_bytes, 0);
    assert_eq!(net.status("edge", "cloud").received_messages, 0);

    let mut subscriber = v5::connect(v5::options(net.mqtt("edge"), "edge-sub")).await;
    subscriber
        .subscribe("fleet/+/gps", v5::QoS::ExactlyOnce)
        .await;
    net.wait_routes("cloud", "edge", 1).await;

    let properties = v5::PublishProperties {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(600),
        content_type: Some("application/json".into()),
        response_topic: Some("replies/7".into()),
        correlation_data: Some(Bytes::from_static(b"req-42")),
        user_properties: vec![
            ("trace".into(), "abc".into()),
            ("trace".into(), "def".into()),
        ],
        ..Default::default()
    };
    cloud_publisher
        .client
        .publish_with_properties(
            "fleet/7/gps",
            v5::QoS::ExactlyOnce,
            false,
            "{\"lat\":52.1}",
            properties,
        )
        .await
        .expect("publish");
    let got = subscriber.publish_received().await;
    assert_eq!(got.topic.as_ref(), b"fleet/7/gps");
    assert_eq!(got.payload.as_ref(), b"{\"lat\":52.1}");
    assert_eq!(got.qos, v5::QoS::ExactlyOnce);
    let props = got.properties.expect("properties crossed");
    assert_eq!(props.payload_format_indicator, Some(1));
    assert_eq!(props.content_type.as_deref(), Some("application/json"));
    assert_eq!(props.response_topic.as_deref(), Some("replies/7"));
    assert_eq!(props.correlation_data.as_deref(), Some(&b"req-42"[..]));
    assert_eq!(
        props.user_properties,
        vec![
            ("trace".into(), "abc".into()),
            ("trace".into(), "def".into())
        ]
    );
    let expiry = props.message_expiry_interval.expect("remaining expiry");
    assert!((595..=600).contains(&expiry), "{expiry}");
    assert_eq!(net.status("cloud", "edge").forwarded_messages, 1, "once");

    // The other direction flows over the connection the edge dialled.
    let mut cloud_subscriber = v4::connect(v4::options(net.mqtt("cloud"), "cloud-sub")).await;
    cloud_subscriber
        .subscribe("alerts/#", v4::QoS::AtLeastOnce)
        .await;
    net.wait_routes("edge", "cloud", 1).await;
    let mut edge_publisher = v4::connect(v4::options(net.mqtt("edge"), "edge-pub")).await;
    edge_publisher
        .publish_acked("alerts/7", false, b"overheat")
        .await;
    let alert = cloud_subscriber.publish_received().await;
    assert_eq!(
        (alert.topic.as_str(), alert.payload.as_ref()),
        ("alerts/7", &b"overheat"[..])
    );
    net.shutdown().await;
}

#[tokio::test]
async fn both_ways_for_everything_never_loops() {
    let net = Linked::configure(&[edge("west", "east")], |_, _| {})
        .start()
        .await;
    let mut east_sub = v4::connect(v4::options(net.mqtt("east"), "east-sub")).await;
    let mut west_sub = v4::connect(v4::options(net.mqtt("west"), "west-sub")).await;
    east_sub.subscribe("#", v4::QoS::AtLeastOnce).await;
    west_sub.subscribe("#", v4::QoS::AtLeastOnce).await;
    net.wait_routes("east", "west", 1).await;
    net.wait_routes("west", "east", 1).await;

    let mut publisher = v4::connect(v4::options(net.mqtt("east"), "east-pub")).await;
    publish_then_marker(&mut publisher, "t/1", b"one", "t/end").await;
    let expected = vec![
        ("t/1".to_owned(), Bytes::from_static(b"one")),
        ("t/end".to_owned(), Bytes::from_static(b"marker")),
    ];
    assert_eq!(until_marker(&mut east_sub).await, expected);
    assert_eq!(until_marker(&mut west_sub).await, expected);
    // A second round: had the first message bounced back, it would come before this.
    publish_then_marker(&mut publisher, "t/2", b"two", "t/end").await;
    assert_eq!(until_marker(&mut east_sub).await[0].0, "t/2");
    assert_eq!(until_marker(&mut west_sub).await[0].0, "t/2");
    assert_eq!(net.status("east", "west").forwarded_messages, 4);
    assert_eq!(
        net.status("west", "east").forwarded_messages,
        0,
        "nothing went back"
    );
    assert_eq!(net.status("west", "east").received_messages, 4);
    net.shutdown().await;
}

#[tokio::test]
async fn export_and_import_filters_decide_what_crosses() {
    // East exports only fleet/#; west imports only fleet/# and alerts/#.
    let net = Linked::configure(&[edge("west", "east")], |cluster, link| {
        if cluster == "east" {
            link.export = vec!["fleet/#".into(), "t/end".into()];
        } else {
            link.import = vec!["fleet/#".into(), "alerts/#".into(), "t/end".into()];
        }
    })
    .start()
    .await;
    let mut west_sub = v4::connect(v4::options(net.mqtt("west"), "west-sub")).await;
    west_sub.subscribe("#", v4::QoS::AtLeastOnce).await;
    // `#` ∩ west's imports: three advertisements.
    net.wait_routes("east", "west", 3).await;
    let mut publisher = v4::connect(v4::options(net.mqtt("east"), "east-pub")).await;
    publisher
        .publish_acked("alerts/1", false, b"not exported")
        .await;
    publisher
        .publish_acked("private/1", false, b"neither")
        .await;
    publish_then_marker(&mut publisher, "fleet/1", b"crosses", "t/end").await;
    let seen = until_marker(&mut west_sub).await;
    let topics: Vec<&str> = seen.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(topics, vec!["fleet/1", "t/end"]);
    assert_eq!(net.status("east", "west").forwarded_messages, 2);
    net.shutdown().await;
}

#[tokio::test]
async fn messages_keep_their_order_and_qos_and_retained_messages_cross_and_clear() {
    let net = Linked::configure(&[edge("west", "east")], |_, _| {})
        .start()
        .await;
    let mut publisher = v4::connect(v4::options(net.mqtt("east"), "east-pub")).await;
    publisher.publish_acked("config/site-1", true, b"v1").await;

    // A subscriber arriving in west later still gets what east retains.
    let mut west_sub = v4::connect(v4::options(net.mqtt("west"), "west-sub")).await;
    west_sub.subscribe("config/#", v4::QoS::AtLeastOnce).await;
    let retained = west_sub.publish_received().await;
    assert_eq!(
        (
            retained.topic.as_str(),
            retained.payload.as_ref(),
            retained.retain
        ),
        ("config/site-1", &b"v1"[..], true)
    );

    west_sub.subscribe("seq/#", v4::QoS::ExactlyOnce).await;
    net.wait_routes("east", "west", 2).await;
    for i in 0..200u32 {
        let qos = [
            v4::QoS::AtMostOnce,
            v4::QoS::AtLeastOnce,
            v4::QoS::ExactlyOnce,
        ][(i % 3) as usize];
        publisher
            .client
            .publish("seq/1", qos, false, i.to_be_bytes().to_vec())
            .await
            .expect("publish");
    }
    for i in 0..200u32 {
        let got = west_sub.publish_received().await;
        assert_eq!(got.payload.as_ref(), i.to_be_bytes(), "in order");
        let expected = [
            v4::QoS::AtMostOnce,
            v4::QoS::AtLeastOnce,
            v4::QoS::ExactlyOnce,
        ][(i % 3) as usize];
        assert_eq!(got.qos, expected, "message {i}");
    }

    // Clearing in east clears in west: a new subscriber there gets nothing retained.
    publisher.publish_acked("config/site-1", true, b"").await;
    publisher
        .publish_acked("config/marker", false, b"marker")
        .await;
    let cleared = west_sub.publish_received().await;
    assert_eq!(
        (cleared.topic.as_str(), cleared.payload.len()),
        ("config/site-1", 0)
    );
    assert_eq!(west_sub.publish_received().await.topic, "config/marker");
    let mut late = v4::connect(v4::options(net.mqtt("west"), "west-late")).await;
    late.subscribe("config/#", v4::QoS::AtLeastOnce).await;
    publisher
        .publish_acked("config/marker", false, b"marker")
        .await;
    let first = late.publish_received().await;
    assert_eq!(first.topic, "config/marker", "nothing retained came first");
    net.shutdown().await;
}

#[tokio::test]
async fn shared_subscriptions_count_as_interest_and_one_member_gets_each_message() {
    let net = Linked::configure(&[edge("west", "east")], |_, _| {})
        .start()
        .await;
    let mut a = v4::connect(v4::options(net.mqtt("west"), "member-a")).await;
    let mut b = v4::connect(v4::options(net.mqtt("west"), "member-b")).await;
    a.subscribe("$share/workers/jobs/#", v4::QoS::AtLeastOnce)
        .await;
    b.subscribe("$share/workers/jobs/#", v4::QoS::AtLeastOnce)
        .await;
    net.wait_routes("east", "west", 1).await;
    let mut publisher = v4::connect(v4::options(net.mqtt("east"), "east-pub")).await;
    for i in 0..10u8 {
        publisher.publish_acked("jobs/x", false, &[i]).await;
    }
    let mut got = Vec::new();
    while got.len() < 10 {
        tokio::select! {
            p = a.publish_received() => got.push(p.payload[0]),
            p = b.publish_received() => got.push(p.payload[0]),
        }
    }
    got.sort_unstable();
    assert_eq!(got, (0..10).collect::<Vec<u8>>(), "each once");
    assert_eq!(
        net.status("east", "west").forwarded_messages,
        10,
        "one copy per cluster"
    );
    net.shutdown().await;
}

#[tokio::test]
async fn a_chain_carries_messages_across_two_links() {
    // a — b — c: a's messages reach c through b.
    let net = Linked::configure(&[edge("a", "b"), edge("c", "b")], |_, _| {})
        .start()
        .await;
    let mut c_sub = v4::connect(v4::options(net.mqtt("c"), "c-sub")).await;
    c_sub.subscribe("telemetry/#", v4::QoS::AtLeastOnce).await;
    net.wait_routes("a", "b", 1).await;
    let mut publisher = v4::connect(v4::options(net.mqtt("a"), "a-pub")).await;
    publish_then_marker(&mut publisher, "telemetry/1", b"far", "telemetry/end").await;
    let seen = until_marker(&mut c_sub).await;
    assert_eq!(
        seen[0],
        ("telemetry/1".to_owned(), Bytes::from_static(b"far"))
    );
    assert_eq!(seen.len(), 2);
    // b relayed without a subscriber of its own: it received and passed on.
    assert_eq!(net.status("b", "a").received_messages, 2);
    assert_eq!(net.status("b", "c").forwarded_messages, 2);
    net.shutdown().await;
}

#[tokio::test]
async fn a_triangle_and_a_ring_deliver_exactly_once_per_interested_cluster() {
    for edges in [
        vec![edge("a", "b"), edge("b", "c"), edge("c", "a")],
        vec![
            edge("a", "b"),
            edge("b", "c"),
            edge("c", "d"),
            edge("d", "a"),
        ],
    ] {
        let net = Linked::configure(&edges, |_, _| {}).start().await;
        let names: Vec<String> = net.configs.keys().cloned().collect();
        let mut subs = Vec::new();
        for name in &names {
            let mut sub = v4::connect(v4::options(net.mqtt(name), &format!("{name}-sub"))).await;
            sub.subscribe("#", v4::QoS::AtLeastOnce).await;
            subs.push(sub);
        }
        // Every cluster knows every other cluster's interest (directly or relayed).
        for name in &names {
            let links = net.server(name).broker().links().clone();
            let others = names.len() - 1;
            support::cluster::eventually(
                &format!("{name} to learn every cluster's interest"),
                || {
                    let mut origins = std::collections::BTreeSet::new();
                    for status in links.status() {
                        if status.routes_received > 0 {
                            origins.insert(status.name);
                        }
                    }
                    origins.len() == links.status().len()
                        && links
                            .status()
                            .iter()
                            .map(|s| s.routes_received)
                            .sum::<usize>()
                            >= others
                },
            )
            .await;
        }
        let mut publisher = v4::connect(v4::options(net.mqtt("a"), "a-pub")).await;
        publish_then_marker(&mut publisher, "x/1", b"once", "x/end").await;
        publish_then_marker(&mut publisher, "x/2", b"again", "x/end").await;
        for (name, sub) in names.iter().zip(subs.iter_mut()) {
            let first = until_marker(sub).await;
            let second = until_marker(sub).await;
            assert_eq!(
                first.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(),
                vec!["x/1", "x/end"],
                "{name} in {} clusters",
                names.len()
            );
            assert_eq!(
                second.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(),
                vec!["x/2", "x/end"],
                "{name}: no duplicate of x/1 came late"
            );
        }
        net.shutdown().await;
    }
}

#[tokio::test]
async fn links_are_added_changed_and_removed_at_runtime_keeping_what_stays() {
    let net = Linked::configure(&[edge("west", "east")], |_, _| {})
        .start()
        .await;
    let mut west_sub = net.subscriber("west", "#", "east").await;
    let west_links = net.server("west").broker().links().clone();
    let before = west_links.get("east").expect("link").incarnation;

    // Narrow what west imports: the link stays up, its stream is the same,
    // and east learns the narrower interest.
    let mut narrowed = net.configs["west"].links.clone();
    narrowed[0].import = vec!["fleet/#".into(), "end".into()];
    west_links.replace(&narrowed, None);
    assert_eq!(
        west_links.get("east").expect("link").incarnation,
        before,
        "kept, not recreated"
    );
    net.wait_routes("east", "west", 2).await;
    let mut publisher = v4::connect(v4::options(net.mqtt("east"), "east-pub")).await;
    publisher
        .publish_acked("other/1", false, b"no longer wanted")
        .await;
    publish_then_marker(&mut publisher, "fleet/1", b"wanted", "end").await;
    let topics: Vec<String> = until_marker(&mut west_sub)
        .await
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    assert_eq!(topics, vec!["fleet/1", "end"]);

    // Removed: the link goes, and nothing more crosses.
    west_links.replace(&[], None);
    assert!(west_links.get("east").is_none());
    let east_links = net.server("east").broker().links().clone();
    support::cluster::eventually("east to see the link down", || {
        !east_links
            .get("west")
            .expect("east keeps its side")
            .is_connected()
    })
    .await;
    net.shutdown().await;
}

/// A 60 s partition under a QoS 2 stream (to a QoS 1 and a QoS 2
/// subscriber): nothing lost, nothing duplicated, order kept. The proxy closes the live connection and refuses new ones
/// until healed, as a network partition that resets connections would.
#[tokio::test]
async fn a_sixty_second_cut_loses_and_duplicates_nothing() {
    let cut_for = std::env::var("STRAIT_LINK_CUT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let mut configured = Linked::configure(&[edge("west", "east")], |_, _| {});
    let proxy = configured.through_proxy("west", "east").await;
    let net = configured.start().await;
    let mut west_sub = v4::connect(v4::options(net.mqtt("west"), "west-sub")).await;
    west_sub.subscribe("stream/#", v4::QoS::AtLeastOnce).await;
    // A QoS 2 subscriber too: exactly once means no duplicate after the reconnect.
    let mut exactly_once = v4::connect(v4::options(net.mqtt("west"), "west-qos2")).await;
    exactly_once
        .subscribe("stream/#", v4::QoS::ExactlyOnce)
        .await;
    net.wait_routes("east", "west", 1).await;

    let total = 3000u32;
    let publisher_addr = net.mqtt("east");
    let publisher = tokio::spawn(async move {
        let mut publisher = v4::connect(v4::options(publisher_addr, "east-pub")).await;
        for i in 0..total {
            publisher
                .client
                .publish(
                    "stream/1",
                    v4::QoS::ExactlyOnce,
                    false,
                    i.to_be_bytes().to_vec(),
                )
                .await
                .expect("publish");
            publisher
                .next("PUBCOMP", |p| {
                    matches!(p, v4::Packet::PubComp(_)).then_some(())
                })
                .await;
            if i % 100 == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        publisher
    });
    let mut received = Vec::new();
    // Let part of the stream through, then cut.
    while received.len() < 500 {
        received.push(next_number(&mut west_sub).await);
    }
    net.cut(&proxy, "east", "west").await;
    let queued_before = net.status("east", "west").queued_messages;
    tokio::time::sleep(Duration::from_secs(cut_for)).await;
    let queued_during = net.status("east", "west").queued_messages;
    assert!(
        queued_during > queued_before,
        "messages queued during the cut ({queued_before} -> {queued_during})"
    );
    proxy.heal();
    let _publisher = support::within("the publisher to finish", publisher)
        .await
        .expect("publisher");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while received.len() < total as usize {
        let publish = tokio::time::timeout_at(deadline, west_sub.publish_received())
            .await
            .expect("the rest of the stream");
        received.push(u32::from_be_bytes(
            publish.payload[..4].try_into().expect("4 bytes"),
        ));
    }
    assert_eq!(
        received,
        (0..total).collect::<Vec<_>>(),
        "everything, once, in order"
    );
    let mut at_qos2 = Vec::new();
    while at_qos2.len() < total as usize {
        let publish = tokio::time::timeout_at(deadline, exactly_once.publish_received())
            .await
            .expect("the QoS 2 subscriber's stream");
        assert_eq!(publish.qos, v4::QoS::ExactlyOnce);
        at_qos2.push(u32::from_be_bytes(
            publish.payload[..4].try_into().expect("4 bytes"),
        ));
    }
    assert_eq!(
        at_qos2,
        (0..total).collect::<Vec<_>>(),
        "exactly once, in order"
    );
    let status = net.status("east", "west");
    assert!(
        status.dropped.values().all(|n| *n == 0),
        "{:?}",
        status.dropped
    );
    net.shutdown().await;
}

#[tokio::test]
async fn the_admin_api_shows_links_and_metrics_have_a_link_label() {
    let net = Linked::configure(&[edge("west", "east")], |_, _| {})
        .start()
        .await;
    let admin = net.server("east").admin_addr();
    let body = support::http_get(admin, "/api/v1/links").await;
    let shown: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        shown["revision"],
        serde_json::Value::Null,
        "nothing was put"
    );
    let links = &shown["links"];
    assert_eq!(links[0]["name"], "west");
    assert_eq!(links[0]["state"], "connected");
    assert_eq!(links[0]["dialer"], "west");
    assert!(links[0]["connectedSince"].as_u64().is_some());
    let metrics = support::http_get(admin, "/metrics").await;
    assert!(
        metrics.contains("strait_link_up{link=\"west\"} 1"),
        "{metrics}"
    );
    assert!(metrics
        .contains("strait_link_messages_dropped_total{link=\"west\",reason=\"queue_full\"} 0"));
    net.shutdown().await;
}

/// With persistence, what a link holds survives a restart of its broker:
/// messages queued while the link was down are delivered once it is back,
/// and the remote's interest is remembered, so messages published after the
/// restart (the link still down) queue too.
#[tokio::test]
async fn a_restart_with_persistence_keeps_the_queue_and_the_interest() {
    let data = tempfile::tempdir().expect("tempdir");
    let mut configured = Linked::configure(&[edge("west", "east")], |_, _| {});
    let proxy = configured.through_proxy("west", "east").await;
    let east_config = configured.configs.get_mut("east").expect("east");
    east_config.persistence.data_dir = Some(data.path().to_owned());
    east_config.listeners[0].bind =
        std::net::SocketAddr::from(([127, 0, 0, 1], support::free_port()));
    let east_config = east_config.clone();
    let mut net = configured.start().await;
    let mut west_sub = net.subscriber("west", "orders/#", "east").await;

    net.cut(&proxy, "east", "west").await;
    let publisher = net.publish_numbers("east", "orders/1", 0..100).await;
    drop(publisher);
    net.servers.remove("east").expect("east").shutdown().await;
    let east = strait_broker::server::Server::start(east_config)
        .await
        .expect("east restarts");
    let restored = east.broker().links().status();
    assert_eq!(restored[0].queued_messages, 100, "the queue came back");
    assert_eq!(restored[0].routes_received, 1, "the interest came back");
    // Still cut: new messages queue behind the restored ones.
    let mut publisher = v4::connect(v4::options(east.mqtt_addrs()[0], "east-pub")).await;
    for i in 100..150u32 {
        publisher
            .publish_acked("orders/1", false, &i.to_be_bytes())
            .await;
    }
    proxy.heal();
    for i in 0..150u32 {
        let got = west_sub.publish_received().await;
        assert_eq!(
            got.payload.as_ref(),
            i.to_be_bytes(),
            "in order, nothing lost"
        );
    }
    net.servers.insert("east".into(), east);
    net.shutdown().await;
}

/// `PUT /api/v1/links` replaces the link set at runtime, with the admin
/// token; a set that names this cluster itself is refused with the reason,
/// and nothing changes.
#[tokio::test]
async fn the_admin_api_replaces_links_with_the_token_and_refuses_bad_sets() {
    let mut configured = Linked::configure(&[edge("west", "east")], |_, _| {});
    let token_file = configured.dir.path().join("admin-token");
    std::fs::write(&token_file, "admin-token-for-tests\n").expect("write token");
    let west_links = configured.configs["west"].links.clone();
    configured
        .configs
        .get_mut("west")
        .expect("west")
        .links
        .clear();
    configured
        .configs
        .get_mut("west")
        .expect("west")
        .admin
        .token_file = Some(token_file);
    let net = configured.launch().await;
    let admin = net.server("west").admin_addr();
    let body = serde_json::json!({"revision": "r1", "links": west_links}).to_string();

    let (status, _) = support::http_send(admin, "PUT", "/api/v1/links", None, &body).await;
    assert_eq!(status, 401, "no token, no change");
    assert!(net.server("west").broker().links().is_empty());

    let mut own = west_links.clone();
    own[0].name = "west".into();
    let own = serde_json::to_string(&own).expect("json");
    let (status, reason) = support::http_send(
        admin,
        "PUT",
        "/api/v1/links",
        Some("admin-token-for-tests"),
        &own,
    )
    .await;
    assert_eq!(status, 400);
    assert!(reason.contains("this cluster's own name"), "{reason}");
    let (status, reason) = support::http_send(
        admin,
        "PUT",
        "/api/v1/links",
        Some("admin-token-for-tests"),
        "{\"not\": \"a list\"}",
    )
    .await;
    assert_eq!(status, 400, "{reason}");
    assert!(reason.contains("unknown field `not`"), "{reason}");

    let (status, shown) = support::http_send(
        admin,
        "PUT",
        "/api/v1/links",
        Some("admin-token-for-tests"),
        &body,
    )
    .await;
    assert_eq!(status, 200, "{shown}");
    let shown: serde_json::Value = serde_json::from_str(&shown).expect("json");
    assert_eq!(shown["revision"], "r1", "{shown}");
    assert_eq!(shown["links"][0]["name"], "east");
    net.wait_connected().await;
    let mut west_sub = net.subscriber("west", "t/#", "east").await;
    let mut publisher = v4::connect(v4::options(net.mqtt("east"), "east-pub")).await;
    publisher
        .publish_acked("t/1", false, b"added at runtime")
        .await;
    assert_eq!(
        west_sub.publish_received().await.payload.as_ref(),
        b"added at runtime"
    );
    net.shutdown().await;
}

/// With `interestRetentionSecs`, the remote's interest is forgotten once the
/// link has been down that long: messages stop queueing for it.
#[tokio::test]
async fn interest_is_forgotten_after_the_configured_retention() {
    let mut configured = Linked::configure(&[edge("west", "east")], |cluster, link| {
        if cluster == "east" {
            link.interest_retention_secs = Some(1);
        }
    });
    let proxy = configured.through_proxy("west", "east").await;
    let net = configured.start().await;
    // Kept alive: its interest is what east remembers.
    let _west_sub = net.subscriber("west", "t/#", "east").await;
    net.cut(&proxy, "east", "west").await;
    let mut publisher = v4::connect(v4::options(net.mqtt("east"), "east-pub")).await;
    publisher
        .publish_acked("t/1", false, b"queued while remembered")
        .await;
    assert_eq!(net.status("east", "west").queued_messages, 1);
    net.wait_routes("east", "west", 0).await;
    publisher
        .publish_acked("t/2", false, b"nobody is known to want it")
        .await;
    assert_eq!(
        net.status("east", "west").queued_messages,
        1,
        "not queued any more"
    );
    net.shutdown().await;
}

/// Links reconfigured while a QoS 1 stream crosses: the link stays up on
/// the same connection (a changed bound, a widened export), and the stream
/// loses and duplicates nothing.
#[tokio::test]
async fn a_link_reconfigured_under_load_keeps_its_connection_and_loses_nothing() {
    let net = Linked::configure(&[edge("west", "east")], |cluster, link| {
        if cluster == "east" {
            link.export = vec!["fleet/#".into()];
        }
    })
    .start()
    .await;
    let mut west_sub = net.subscriber("west", "fleet/#", "east").await;
    let connects = net.status("west", "east").connects;

    let total = 2000u32;
    let publisher_addr = net.mqtt("east");
    let publishing = tokio::spawn(async move {
        let mut publisher = v4::connect(v4::options(publisher_addr, "east-pub")).await;
        for i in 0..total {
            publisher
                .publish_acked("fleet/1", false, &i.to_be_bytes())
                .await;
        }
    });
    let mut received = Vec::new();
    while received.len() < 500 {
        received.push(next_number(&mut west_sub).await);
    }
    let west_links = net.server("west").broker().links().clone();
    let mut west_config = net.configs["west"].links.clone();
    west_config[0].queue.max_messages = 50_000;
    west_links.replace(&west_config, None);
    let east_links = net.server("east").broker().links().clone();
    let mut east_config = net.configs["east"].links.clone();
    east_config[0].export = vec!["fleet/#".into(), "alerts/#".into()];
    east_links.replace(&east_config, None);
    while received.len() < total as usize {
        received.push(next_number(&mut west_sub).await);
    }
    within_publisher(publishing).await;
    assert_eq!(
        received,
        (0..total).collect::<Vec<_>>(),
        "everything, once, in order"
    );
    assert_eq!(
        net.status("west", "east").connects,
        connects,
        "the same connection"
    );
    assert_eq!(net.status("west", "east").revision, 2);
    net.shutdown().await;
}

async fn within_publisher(task: tokio::task::JoinHandle<()>) {
    support::within("the publisher to finish", task)
        .await
        .expect("publisher");
}

/// A full link queue drops by its policy and counts it; so does a message
/// that waited longer than the queue's TTL. What was kept arrives in order.
#[tokio::test]
async fn a_full_queue_and_an_expired_ttl_drop_by_policy_and_are_counted() {
    for (when_full, kept) in [("dropNew", 0..10u32), ("dropOldest", 10..20u32)] {
        let mut configured = Linked::configure(&[edge("west", "east")], |cluster, link| {
            if cluster == "east" {
                link.queue.max_messages = 10;
                link.queue.when_full = serde_yaml::from_str(when_full).expect("policy");
            }
        });
        let proxy = configured.through_proxy("west", "east").await;
        let net = configured.start().await;
        let mut west_sub = net.subscriber("west", "t/#", "east").await;
        net.cut(&proxy, "east", "west").await;
        net.publish_numbers("east", "t/1", 0..20).await;
        let status = net.status("east", "west");
        assert_eq!(
            (status.queued_messages, status.dropped.get("queue_full")),
            (10, Some(&10)),
            "{when_full}"
        );
        assert_eq!(
            status.dropped_bytes.get("queue_full"),
            Some(&40),
            "10 payloads of 4 bytes"
        );
        proxy.heal();
        for i in kept {
            assert_eq!(next_number(&mut west_sub).await, i, "{when_full}");
        }
        net.shutdown().await;
    }

    let mut configured = Linked::configure(&[edge("west", "east")], |cluster, link| {
        if cluster == "east" {
            link.queue.message_ttl_secs = Some(1);
        }
    });
    let proxy = configured.through_proxy("west", "east").await;
    let net = configured.start().await;
    let mut west_sub = net.subscriber("west", "t/#", "east").await;
    net.cut(&proxy, "east", "west").await;
    let mut publisher = v4::connect(v4::options(net.mqtt("east"), "east-pub")).await;
    publisher
        .publish_acked("t/1", false, b"too old by then")
        .await;
    // The TTL is the thing under test: time has to pass.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    publisher.publish_acked("t/1", false, b"fresh").await;
    proxy.heal();
    assert_eq!(west_sub.publish_received().await.payload.as_ref(), b"fresh");
    assert_eq!(net.status("east", "west").dropped.get("expired"), Some(&1));
    net.shutdown().await;
}

/// A retained message cleared in east while west had no interest in it: the
/// copy west kept is cleared when west's interest returns (east sends its
/// recent clearings with the retained messages a new interest asks for).
#[tokio::test]
async fn a_clearing_made_while_nobody_listened_reaches_the_other_cluster_with_new_interest() {
    let net = Linked::configure(&[edge("west", "east")], |_, _| {})
        .start()
        .await;
    let mut publisher = v4::connect(v4::options(net.mqtt("east"), "east-pub")).await;
    publisher.publish_acked("config/a", true, b"v1").await;
    let mut first = v4::connect(v4::options(net.mqtt("west"), "west-first")).await;
    first.subscribe("config/#", v4::QoS::AtLeastOnce).await;
    assert_eq!(first.publish_received().await.payload.as_ref(), b"v1");
    drop(first);
    net.wait_routes("east", "west", 0).await;
    publisher.publish_acked("config/a", true, b"").await;

    // Interest returns: the clearing crosses ahead of the marker.
    let mut second = v4::connect(v4::options(net.mqtt("west"), "west-second")).await;
    second.subscribe("config/#", v4::QoS::AtLeastOnce).await;
    net.wait_routes("east", "west", 1).await;
    publisher
        .publish_acked("config/marker", false, b"marker")
        .await;
    while second.publish_received().await.topic != "config/marker" {}
    let mut third = v4::connect(v4::options(net.mqtt("west"), "west-third")).await;
    third.subscribe("config/#", v4::QoS::AtLeastOnce).await;
    publisher
        .publish_acked("config/marker", false, b"marker")
        .await;
    assert_eq!(
        third.publish_received().await.topic,
        "config/marker",
        "nothing retained is left in west"
    );
    net.shutdown().await;
}

/// A retained message two clusters away reaches a new subscriber as a
/// retained message (the replay keeps its kind on every hop).
#[tokio::test]
async fn a_retained_message_two_clusters_away_arrives_as_retained() {
    let net = Linked::configure(&[edge("a", "b"), edge("c", "b")], |_, _| {})
        .start()
        .await;
    let mut publisher = v4::connect(v4::options(net.mqtt("a"), "a-pub")).await;
    publisher.publish_acked("config/site", true, b"v1").await;
    let mut subscriber = v4::connect(v4::options(net.mqtt("c"), "c-sub")).await;
    subscriber.subscribe("config/#", v4::QoS::AtLeastOnce).await;
    let got = subscriber.publish_received().await;
    assert_eq!(
        (got.topic.as_str(), got.payload.as_ref(), got.retain),
        ("config/site", &b"v1"[..], true)
    );
    net.shutdown().await;
}
