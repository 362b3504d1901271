//! Links between clusters of three nodes each: one node of each cluster holds
//! the link, the mesh carries interest and messages to it, a message crosses
//! once per cluster, and the link survives losing the node that holds it on
//! either side.

mod support;

use std::net::SocketAddr;

use strait_broker::config::LinkListenerConfig;
use strait_broker::link::LinkSecret;
use support::cluster::{eventually, TestCluster};
use support::linked::link;
use support::{free_port, v4, within};

const SECRET: &str = "west-to-east-link-secret-0123456789";

/// East (accepts, a link listener on every node) and west (dials every east
/// node's listener), three nodes each.
async fn two_clusters(dir: &tempfile::TempDir) -> (TestCluster, TestCluster) {
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let endpoints: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let credentials = dir.path().join("east-credentials");
    let hashed = LinkSecret::new(SECRET.as_bytes())
        .expect("long enough")
        .hash()
        .expect("hash");
    std::fs::write(&credentials, format!("west:{}\n", hashed.encode())).expect("write");
    let secret_file = dir.path().join("west.secret");
    std::fs::write(&secret_file, SECRET).expect("write");

    let east = TestCluster::start_named("east", 3, move |config| {
        let index: usize = config
            .node
            .name
            .trim_start_matches("node-")
            .parse()
            .expect("index");
        config.link_listener = Some(LinkListenerConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], ports[index])),
            credentials_file: credentials.clone(),
            tls: None,
        });
        config.links = vec![link("west")];
    })
    .await;
    let west = TestCluster::start_named("west", 3, move |config| {
        let mut east = link("east");
        east.endpoints = endpoints.clone();
        east.secret_file = Some(secret_file.clone());
        config.links = vec![east];
    })
    .await;
    (east, west)
}

/// The running nodes of `cluster` whose link to `remote` is connected.
fn holders(cluster: &TestCluster, remote: &str) -> Vec<usize> {
    (0..cluster.nodes.len())
        .filter(|&i| {
            cluster.nodes[i]
                .as_ref()
                .and_then(|n| n.broker().links().get(remote))
                .is_some_and(|l| l.is_connected())
        })
        .collect()
}

async fn wait_one_holder(cluster: &TestCluster, remote: &str) -> usize {
    eventually(
        &format!("one node of {} to hold the link", cluster.name),
        || holders(cluster, remote).len() == 1,
    )
    .await;
    holders(cluster, remote)[0]
}

/// Sums a counter over every running node's link to `remote`.
fn total(
    cluster: &TestCluster,
    remote: &str,
    counter: impl Fn(&strait_broker::link::LinkStatus) -> u64,
) -> u64 {
    cluster
        .nodes
        .iter()
        .flatten()
        .flat_map(|n| n.broker().links().status())
        .filter(|s| s.name == remote)
        .map(|s| counter(&s))
        .sum()
}

/// Publishes probes from `publisher` until `subscriber` receives one: the
/// link has (re)learned the subscriber's interest end to end.
async fn wait_flowing(publisher: &mut v4::Client, subscriber: &mut v4::Client) {
    within("messages to flow over the link", async {
        loop {
            publisher.publish_acked("t/probe", false, b"probe").await;
            let got = tokio::time::timeout(
                std::time::Duration::from_millis(300),
                subscriber.publish_received(),
            )
            .await;
            if got.is_ok() {
                return;
            }
        }
    })
    .await;
    // Drain late probes: the next message of substance is the marker's predecessor.
    publisher
        .publish_acked("t/drained", false, b"drained")
        .await;
    loop {
        if subscriber.publish_received().await.topic == "t/drained" {
            return;
        }
    }
}

/// Sends `count` numbered messages and checks they arrive once, in order.
async fn stream(
    publisher: &mut v4::Client,
    subscriber: &mut v4::Client,
    count: u32,
    clusters: [&TestCluster; 2],
) {
    for i in 0..count {
        publisher
            .publish_acked("t/seq", false, &i.to_be_bytes())
            .await;
    }
    for i in 0..count {
        let got = subscriber.publish_received().await;
        if (got.topic.as_str(), got.payload.as_ref()) != ("t/seq", &i.to_be_bytes()[..]) {
            for cluster in clusters {
                for (n, node) in cluster.nodes.iter().enumerate() {
                    if let Some(node) = node {
                        eprintln!(
                            "{} node-{n}: {:?}",
                            cluster.name,
                            node.broker().links().status()
                        );
                    }
                }
            }
            panic!("message {i}: got {} {:?}", got.topic, got.payload);
        }
    }
}

#[tokio::test]
async fn a_message_crosses_once_between_three_node_clusters_and_the_link_outlives_its_holders() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut east, mut west) = two_clusters(&dir).await;
    let east_holder = wait_one_holder(&east, "west").await;
    let west_holder = wait_one_holder(&west, "east").await;
    // The other nodes know who holds it.
    for i in (0..3).filter(|i| *i != east_holder) {
        let status = east.node(i).broker().links().status();
        assert_eq!(status[0].state, "elsewhere", "node-{i}");
        assert_eq!(
            status[0].holder.as_deref(),
            Some(format!("node-{east_holder}").as_str())
        );
    }

    // A subscriber on a west node that does not hold the link, a publisher on
    // an east node that does not either: the mesh carries both ends.
    let publisher_node = (0..3).find(|i| *i != east_holder).expect("a non-holder");
    let mut subscriber = v4::connect(v4::options(west.mqtt(2), "west-sub")).await;
    subscriber.subscribe("t/#", v4::QoS::AtLeastOnce).await;
    let mut publisher = v4::connect(v4::options(east.mqtt(publisher_node), "east-pub")).await;
    wait_flowing(&mut publisher, &mut subscriber).await;
    let forwarded_before = total(&east, "west", |s| s.forwarded_messages);
    let received_before = total(&west, "east", |s| s.received_messages);
    stream(&mut publisher, &mut subscriber, 50, [&east, &west]).await;
    assert_eq!(
        total(&east, "west", |s| s.forwarded_messages) - forwarded_before,
        50,
        "once per cluster"
    );
    assert_eq!(
        total(&west, "east", |s| s.received_messages) - received_before,
        50
    );

    // The east node holding the link stops: west redials another east node.
    east.crash_node(east_holder).await;
    let east_holder = wait_one_holder(&east, "west").await;
    let publisher_node = (0..3)
        .find(|i| *i != east_holder && east.nodes[*i].is_some())
        .expect("a live non-holder");
    let mut publisher = v4::connect(v4::options(east.mqtt(publisher_node), "east-pub-2")).await;
    wait_flowing(&mut publisher, &mut subscriber).await;
    stream(&mut publisher, &mut subscriber, 50, [&east, &west]).await;

    // The west node holding the link stops: the next west node dials.
    west.crash_node(west_holder).await;
    let new_west_holder = wait_one_holder(&west, "east").await;
    assert_ne!(new_west_holder, west_holder);
    wait_flowing(&mut publisher, &mut subscriber).await;
    stream(&mut publisher, &mut subscriber, 50, [&east, &west]).await;
    east.shutdown().await;
    west.shutdown().await;
}
