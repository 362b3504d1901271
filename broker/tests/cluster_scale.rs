//! The mesh at scale and through membership changes: many routes, nodes
//! added and removed through discovery, a node restarted under its old name,
//! and an independent client implementation (mosquitto) across nodes.

mod support;

use std::time::Instant;

use strait_broker::cluster::ClusterMetrics;
use strait_broker::protocol as p;
use support::cluster::{eventually, TestCluster};
use support::mosquitto::{args, publish, Cli};
use support::{v4, RawClient};

/// Distinct filters one client subscribes in the large-route test.
const FILTERS: usize = 10_000;
/// Filters per SUBSCRIBE / UNSUBSCRIBE packet.
const PER_PACKET: usize = 100;

fn mesh(cluster: &TestCluster, index: usize) -> &ClusterMetrics {
    cluster
        .node(index)
        .broker()
        .cluster()
        .expect("clustered")
        .metrics()
}

/// Node `index`'s incarnation as its peers show it.
fn incarnation_of(cluster: &TestCluster, index: usize) -> String {
    cluster
        .node(index)
        .broker()
        .cluster()
        .expect("clustered")
        .status()
        .incarnation
}

/// The incarnation node `at` knows for its peer `node-{of}`.
fn incarnation_seen(cluster: &TestCluster, at: usize, of: usize) -> Option<String> {
    let name = format!("node-{of}");
    cluster
        .peers_of(at)
        .into_iter()
        .find(|p| p.name == name)
        .and_then(|p| p.incarnation)
}

fn filter(i: usize) -> String {
    format!("scale/{i}/+")
}

/// Sends one packet per batch of filters, then reads the broker's answer
/// to each, checking every filter was accepted.
async fn subscribe_all(client: &mut RawClient) {
    let batches: Vec<Vec<usize>> = (0..FILTERS)
        .collect::<Vec<_>>()
        .chunks(PER_PACKET)
        .map(<[usize]>::to_vec)
        .collect();
    for (n, batch) in batches.iter().enumerate() {
        let filters = batch
            .iter()
            .map(|&i| p::SubscribeFilter {
                filter: filter(i),
                options: p::SubscriptionOptions::default(),
            })
            .collect();
        client
            .send(&p::Packet::Subscribe(p::Subscribe {
                packet_id: n as u16 + 1,
                filters,
                properties: Default::default(),
            }))
            .await;
    }
    for _ in &batches {
        match client.recv().await {
            Some(p::Packet::SubAck(ack)) => {
                assert_eq!(ack.reasons.len(), PER_PACKET);
                assert!(
                    ack.reasons
                        .iter()
                        .all(|r| *r == p::ReasonCode::GRANTED_QOS0),
                    "every filter granted at QoS 0: {:?}",
                    ack.reasons
                );
            }
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }
}

async fn unsubscribe_all(client: &mut RawClient) {
    let batches = FILTERS / PER_PACKET;
    for n in 0..batches {
        let filters = (n * PER_PACKET..(n + 1) * PER_PACKET).map(filter).collect();
        client
            .send(&p::Packet::Unsubscribe(p::Unsubscribe {
                packet_id: n as u16 + 1,
                filters,
                user_properties: Vec::new(),
            }))
            .await;
    }
    for _ in 0..batches {
        assert!(
            matches!(client.recv().await, Some(p::Packet::UnsubAck(_))),
            "expected UNSUBACK"
        );
    }
}

#[tokio::test]
async fn ten_thousand_subscriptions_replicate_and_are_removed() {
    let cluster = TestCluster::start(3).await;
    let mut client = RawClient::connected(cluster.mqtt(0), p::ProtocolVersion::V311, "many").await;

    let started = Instant::now();
    subscribe_all(&mut client).await;
    let subscribed = started.elapsed();
    cluster.wait_routes(1, 0, FILTERS).await;
    cluster.wait_routes(2, 0, FILTERS).await;
    let replicated = started.elapsed();
    eprintln!(
        "{FILTERS} filters in {} SUBSCRIBEs: acknowledged after {subscribed:?}, \
         replicated to both peers after {replicated:?}",
        FILTERS / PER_PACKET
    );
    assert_eq!(
        cluster
            .node(0)
            .broker()
            .cluster()
            .expect("clustered")
            .local_route_count(),
        FILTERS
    );

    let mut publisher = v4::connect(v4::options(cluster.mqtt(2), "one-of-many")).await;
    publisher
        .publish_acked("scale/4242/x", false, b"found")
        .await;
    match client.recv().await {
        Some(p::Packet::Publish(publish)) => {
            assert_eq!(publish.topic, "scale/4242/x");
            assert_eq!(&publish.payload[..], b"found");
        }
        other => panic!("expected the forwarded PUBLISH, got {other:?}"),
    }
    assert_eq!(
        mesh(&cluster, 2).forwarded_total(),
        1,
        "one copy, for node 0 only"
    );

    let started = Instant::now();
    unsubscribe_all(&mut client).await;
    cluster.wait_routes(1, 0, 0).await;
    cluster.wait_routes(2, 0, 0).await;
    eprintln!(
        "{FILTERS} filters removed from both peers after {:?}",
        started.elapsed()
    );
    // With no route left, a publish to a former filter stays on node 2.
    publisher
        .publish_acked("scale/4242/x", false, b"nobody")
        .await;
    assert_eq!(mesh(&cluster, 2).forwarded_total(), 1);

    // The same routes again, this time ended by the clean session's end.
    subscribe_all(&mut client).await;
    cluster.wait_routes(1, 0, FILTERS).await;
    cluster.wait_routes(2, 0, FILTERS).await;
    let started = Instant::now();
    drop(client);
    cluster.wait_routes(1, 0, 0).await;
    cluster.wait_routes(2, 0, 0).await;
    eprintln!(
        "{FILTERS} filters of a closed clean session removed from both peers after {:?}",
        started.elapsed()
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn scaling_from_three_to_five_and_back_is_followed_without_restarts() {
    let mut cluster = TestCluster::start(3).await;
    let before: Vec<String> = (0..3).map(|i| incarnation_of(&cluster, i)).collect();
    cluster.add_node().await;
    cluster.add_node().await;
    cluster.wait_meshed().await;
    for i in 0..5 {
        assert_eq!(cluster.peers_of(i).len(), 4, "node-{i} sees every other");
    }

    let mut far = v4::connect(v4::options(cluster.mqtt(4), "far")).await;
    far.subscribe("grow/#", v4::QoS::AtLeastOnce).await;
    cluster.wait_routes(0, 4, 1).await;
    let mut publisher = v4::connect(v4::options(cluster.mqtt(0), "near")).await;
    publisher.publish_acked("grow/1", false, b"to node 4").await;
    assert_eq!(&far.publish_received().await.payload[..], b"to node 4");
    drop(far);

    cluster.stop_node(4).await;
    cluster.stop_node(3).await;
    // The sweep forgets peers unreachable both ways for the peer timeout.
    eventually("the survivors to forget nodes 3 and 4", || {
        (0..3).all(|i| cluster.peers_of(i).len() == 2)
    })
    .await;
    cluster.wait_meshed().await;
    for i in 0..3 {
        let names: Vec<String> = cluster.peers_of(i).into_iter().map(|p| p.name).collect();
        assert!(
            names
                .iter()
                .all(|n| ["node-0", "node-1", "node-2"].contains(&n.as_str())),
            "node-{i} still knows {names:?}"
        );
        assert_eq!(
            mesh(&cluster, i).peers_declared_dead_total(),
            2,
            "node-{i} declared exactly the two removed nodes dead"
        );
    }
    let after: Vec<String> = (0..3).map(|i| incarnation_of(&cluster, i)).collect();
    assert_eq!(before, after, "no survivor restarted");

    let mut sub = v4::connect(v4::options(cluster.mqtt(1), "survivor")).await;
    sub.subscribe("shrink/#", v4::QoS::AtLeastOnce).await;
    cluster.wait_routes(2, 1, 1).await;
    let mut publisher = v4::connect(v4::options(cluster.mqtt(2), "after")).await;
    publisher.publish_acked("shrink/1", false, b"still").await;
    assert_eq!(&sub.publish_received().await.payload[..], b"still");
    cluster.shutdown().await;
}

#[tokio::test]
async fn mosquitto_clients_cross_nodes_at_every_qos() {
    let cluster = TestCluster::start(3).await;
    for (version, topic) in [("mqttv311", "mq/v311"), ("mqttv5", "mq/v5")] {
        let mut sub = Cli::sub(
            cluster.mqtt(0),
            "%t|%p|%q",
            &args(&["-V", version, "-t", topic, "-q", "2", "-i", "mq-sub"]),
        );
        assert_eq!(sub.subscribed().await, [2]);
        cluster.wait_routes(2, 0, 1).await;
        cluster.wait_routes(1, 0, 1).await;
        for qos in ["0", "1", "2"] {
            let payload = format!("{version}-qos{qos}");
            publish(
                cluster.mqtt(2),
                &args(&["-V", version, "-t", topic, "-q", qos, "-m", &payload]),
                None,
            )
            .await;
            assert_eq!(sub.message().await, format!("{topic}|{payload}|{qos}"));
        }
        sub.kill().await;
        // The subscriber's session ends with its connection: its route goes.
        cluster.wait_routes(2, 0, 0).await;
    }
    assert_eq!(mesh(&cluster, 2).forwarded_total(), 6);
    assert_eq!(mesh(&cluster, 0).received_total(), 6);
    assert_eq!(mesh(&cluster, 1).received_total(), 0);
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_restarted_node_rejoins_with_a_new_incarnation_and_a_resync() {
    // A peer timeout longer than the restart: the old routes must go because
    // the incarnation changed, not because the peer was declared dead.
    let mut cluster = TestCluster::start_with(3, |config| {
        config.cluster.peer_timeout_ms = 5000;
    })
    .await;
    // A persistent session: its route outlives the client, so only the
    // restart (a new incarnation) can take it away from the peers.
    let mut options = v4::options(cluster.mqtt(1), "old-timer");
    options.set_clean_session(false);
    let mut old = v4::connect(options).await;
    old.subscribe("old/#", v4::QoS::AtLeastOnce).await;
    drop(old);
    cluster.wait_routes(0, 1, 1).await;
    cluster.wait_routes(2, 1, 1).await;
    let old_incarnation = incarnation_of(&cluster, 1);
    assert_eq!(
        incarnation_seen(&cluster, 0, 1).as_deref(),
        Some(old_incarnation.as_str())
    );
    let resyncs: Vec<u64> = [0, 2]
        .iter()
        .map(|&i| mesh(&cluster, i).resyncs_total())
        .collect();

    cluster.stop_node(1).await;
    cluster.start_node(1).await;
    cluster.wait_meshed().await;
    let new_incarnation = incarnation_of(&cluster, 1);
    assert_ne!(new_incarnation, old_incarnation, "drawn again at start");
    for at in [0, 2] {
        eventually(
            &format!("node-{at} to see node-1's new incarnation"),
            || incarnation_seen(&cluster, at, 1).as_deref() == Some(new_incarnation.as_str()),
        )
        .await;
        cluster.wait_routes(at, 1, 0).await;
    }
    for (&i, before) in [0, 2].iter().zip(&resyncs) {
        assert!(
            mesh(&cluster, i).resyncs_total() > *before,
            "node-{i} resynced its routes to the new node-1"
        );
        assert_eq!(mesh(&cluster, i).peers_declared_dead_total(), 0);
    }

    // The new node's subscriptions replicate, and only they.
    let mut fresh = v4::connect(v4::options(cluster.mqtt(1), "fresh")).await;
    fresh.subscribe("new/#", v4::QoS::AtLeastOnce).await;
    cluster.wait_routes(0, 1, 1).await;
    cluster.wait_routes(2, 1, 1).await;
    let mut publisher = v4::connect(v4::options(cluster.mqtt(0), "pub-0")).await;
    let forwarded = mesh(&cluster, 0).forwarded_total();
    publisher.publish_acked("old/x", false, b"stale").await;
    assert_eq!(
        mesh(&cluster, 0).forwarded_total(),
        forwarded,
        "no route of the old incarnation is left"
    );
    publisher.publish_acked("new/x", false, b"to 1").await;
    assert_eq!(&fresh.publish_received().await.payload[..], b"to 1");

    // And the other way: from the new node to a subscriber on node 0.
    let mut back = v4::connect(v4::options(cluster.mqtt(0), "back")).await;
    back.subscribe("back/#", v4::QoS::AtLeastOnce).await;
    cluster.wait_routes(1, 0, 1).await;
    let mut from_new = v4::connect(v4::options(cluster.mqtt(1), "pub-1")).await;
    from_new.publish_acked("back/x", false, b"from 1").await;
    assert_eq!(&back.publish_received().await.payload[..], b"from 1");
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_node_gone_while_still_discovered_is_declared_dead_and_its_messages_counted_lost() {
    // A peer timeout that leaves the test time to publish between the
    // connection's loss and the peer's death.
    let mut cluster = TestCluster::start_with(3, |config| {
        config.cluster.peer_timeout_ms = 3000;
    })
    .await;
    let mut options = v4::options(cluster.mqtt(1), "stays");
    options.set_clean_session(false);
    let mut stays = v4::connect(options).await;
    stays.subscribe("gone/#", v4::QoS::AtLeastOnce).await;
    drop(stays);
    cluster.wait_routes(0, 1, 1).await;

    cluster.crash_node(1).await;
    eventually("node-0 to lose its connection to node-1", || {
        cluster
            .peers_of(0)
            .iter()
            .any(|p| p.name == "node-1" && p.state == "unreachable")
    })
    .await;
    // Queued for node-1, which will never acknowledge it.
    let mut publisher = v4::connect(v4::options(cluster.mqtt(0), "too-late")).await;
    publisher.publish_acked("gone/x", false, b"lost").await;
    assert_eq!(mesh(&cluster, 0).forwarded_total(), 1);

    for at in [0, 2] {
        eventually(&format!("node-{at} to declare node-1 dead"), || {
            cluster.peers_of(at).iter().all(|p| p.name != "node-1")
        })
        .await;
        assert_eq!(mesh(&cluster, at).peers_declared_dead_total(), 1);
    }
    assert_eq!(
        mesh(&cluster, 0).lost_total(),
        1,
        "the message in flight is counted lost, not dropped silently"
    );
    cluster.wait_meshed().await;
    cluster.shutdown().await;
}
