//! The mesh's session races: one client id connecting to two nodes at once,
//! a node restarting with a session that moved while it was down, and the
//! cost of a CONNECT in a cluster (a question only to the node that holds
//! the session, none for a new client).

mod support;

use std::path::PathBuf;

use strait_broker::config::Config;
use strait_broker::protocol::{ConnectProperties, Packet, ProtocolVersion, QoS, ReasonCode};
use support::cluster::{eventually, TestCluster};
use support::{within, RawClient};

fn sessions(cluster: &TestCluster, node: usize) -> usize {
    cluster.node(node).broker().gauges().sessions
}

fn takeovers_asked(cluster: &TestCluster, node: usize) -> u64 {
    let mesh = cluster.node(node).broker().cluster().expect("clustered");
    mesh.metrics().takeovers_asked_total()
}

/// CONNECT as `client_id` (clean start, no session expiry) on a fresh
/// connection, without waiting for CONNACK.
async fn connect_raw(addr: std::net::SocketAddr, client_id: &str) -> RawClient {
    let mut client = RawClient::connect(addr, ProtocolVersion::V5).await;
    client
        .send(&support::connect_packet(
            ProtocolVersion::V5,
            client_id,
            true,
            ConnectProperties::default(),
        ))
        .await;
    client
}

/// Whether `client`'s connection ends with DISCONNECT 0x8E.
async fn told_taken_over(client: &mut RawClient) -> bool {
    let packets = client.recv_until_closed().await;
    packets
        .iter()
        .any(|p| matches!(p, Packet::Disconnect(d) if d.reason == ReasonCode::SessionTakenOver))
}

/// Whether `client`'s connection is still served: it answers a ping.
async fn still_served(client: &mut RawClient) -> bool {
    client.send(&Packet::PingReq).await;
    client.recv().await == Some(Packet::PingResp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_connecting_to_two_nodes_at_once_keeps_exactly_one_connection() {
    let cluster = TestCluster::start(2).await;
    for round in 0..20 {
        let id = format!("twin-{round}");
        let (mut on_0, mut on_1) = tokio::join!(
            connect_raw(cluster.mqtt(0), &id),
            connect_raw(cluster.mqtt(1), &id)
        );
        // Both are accepted (neither knew of the other, or one took the
        // session from the other)...
        for client in [&mut on_0, &mut on_1] {
            match client.recv().await {
                Some(Packet::ConnAck(ack)) => assert_eq!(ack.code, ReasonCode::Success),
                other => panic!("round {round}: expected CONNACK, got {other:?}"),
            }
        }
        // ...then their claims reach both nodes, which decide alike: one
        // keeps the session, the other gives it up.
        eventually("one node to hold the session", || {
            sessions(&cluster, 0) + sessions(&cluster, 1) == 1
        })
        .await;
        let (winner, loser) = if sessions(&cluster, 0) == 1 {
            (&mut on_0, &mut on_1)
        } else {
            (&mut on_1, &mut on_0)
        };
        assert!(
            told_taken_over(loser).await,
            "round {round}: the loser is told 0x8E"
        );
        assert!(
            still_served(winner).await,
            "round {round}: the winner stays"
        );
    }
    cluster.shutdown().await;
}

/// Each node of the restart test keeps its store in a directory named after
/// it and this test process (a configuration hook cannot capture a tempdir).
fn with_persistence(config: &mut Config) {
    let dir = std::env::temp_dir().join(format!(
        "strait-races-{}-{}",
        std::process::id(),
        config.node.name
    ));
    config.persistence.data_dir = Some(dir);
    config.persistence.flush_interval_ms = 20;
}

fn store_dir(node: &str) -> PathBuf {
    std::env::temp_dir().join(format!("strait-races-{}-{node}", std::process::id()))
}

#[tokio::test]
async fn a_node_restarting_with_a_session_that_moved_meanwhile_drops_its_stale_copy() {
    let mut cluster = TestCluster::start_with(2, with_persistence).await;
    let properties = || ConnectProperties {
        session_expiry_interval: Some(3600),
        ..Default::default()
    };
    let (mut client, _) = RawClient::open(
        cluster.mqtt(0),
        ProtocolVersion::V5,
        "mover",
        false,
        properties(),
    )
    .await;
    client.subscribe("old/topic", QoS::AtLeastOnce).await;
    drop(client);
    eventually("node-0 to keep the session offline", || {
        sessions(&cluster, 0) == 1
    })
    .await;
    // Past a flush interval, the session is on disk; then node-0 goes away.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    cluster.stop_node(0).await;

    // With node-0 down, the client comes back on node-1: a new session there.
    let (_moved, ack) = RawClient::open(
        cluster.mqtt(1),
        ProtocolVersion::V5,
        "mover",
        false,
        properties(),
    )
    .await;
    assert!(
        !ack.session_present,
        "node-0 was down; its copy was unreachable"
    );

    cluster.start_node(0).await;
    cluster.wait_meshed().await;
    eventually("node-0 to drop the stale copy it restored", || {
        sessions(&cluster, 0) == 0
    })
    .await;
    assert_eq!(sessions(&cluster, 1), 1, "the session that moved stays");
    let mesh = cluster.node(0).broker().cluster().expect("clustered");
    assert_eq!(mesh.metrics().sessions_superseded_total(), 1);
    cluster.shutdown().await;
    for node in ["node-0", "node-1"] {
        let _ = std::fs::remove_dir_all(store_dir(node));
    }
}

#[tokio::test]
async fn a_connect_asks_only_the_node_holding_the_session_and_none_for_a_new_client() {
    let cluster = TestCluster::start(3).await;
    let mut clients = Vec::new();
    for i in 0..12 {
        let node = i % 3;
        clients.push(
            RawClient::connected(cluster.mqtt(node), ProtocolVersion::V5, &format!("c{i}")).await,
        );
    }
    for node in 0..3 {
        assert_eq!(
            takeovers_asked(&cluster, node),
            0,
            "node-{node} asked nobody for new clients"
        );
    }
    // c0 lives on node-0; once every node knows it, moving it to node-2 asks
    // node-0 alone, once.
    eventually("every node to know where c0 is", || {
        (1..3).all(|node| {
            let mesh = cluster.node(node).broker().cluster().expect("clustered");
            mesh.directory_len() >= 12
        })
    })
    .await;
    let (_moved, ack) = RawClient::open(
        cluster.mqtt(2),
        ProtocolVersion::V5,
        "c0",
        true,
        ConnectProperties::default(),
    )
    .await;
    assert_eq!(ack.code, ReasonCode::Success);
    assert_eq!(takeovers_asked(&cluster, 2), 1);
    let old = &mut clients[0];
    let closing = within("the old connection's end", old.recv_until_closed()).await;
    assert!(
        closing.iter().any(
            |p| matches!(p, Packet::Disconnect(d) if d.reason == ReasonCode::SessionTakenOver)
        ),
        "{closing:?}"
    );
    cluster.shutdown().await;
}

fn passwd_path() -> PathBuf {
    std::env::temp_dir().join(format!("strait-races-{}-passwd", std::process::id()))
}

fn with_users(config: &mut Config) {
    config.auth.password_file = Some(passwd_path());
    config.auth.allow_anonymous = Some(false);
}

/// Logs in as `user` (password `<user>-pw`) with client id `client_id`.
async fn login(addr: std::net::SocketAddr, client_id: &str, user: &str) -> (RawClient, ReasonCode) {
    RawClient::login(addr, client_id, user, &format!("{user}-pw")).await
}

#[tokio::test]
async fn a_peer_keeps_a_session_that_another_identity_asks_for() {
    let lines: String = ["alice", "bob"]
        .iter()
        .map(|user| {
            let hash = strait_broker::auth::hash_password(&format!("{user}-pw")).expect("hash");
            format!("{user}:{hash}\n")
        })
        .collect();
    std::fs::write(passwd_path(), lines).expect("credentials file");
    let cluster = TestCluster::start_with(2, with_users).await;
    let (alice, code) = login(cluster.mqtt(0), "shared-id", "alice").await;
    assert_eq!(code, ReasonCode::Success);
    eventually("node-1 to know where shared-id is", || {
        let mesh = cluster.node(1).broker().cluster().expect("clustered");
        mesh.directory_len() == 1
    })
    .await;
    let (_bob, code) = login(cluster.mqtt(1), "shared-id", "bob").await;
    assert_eq!(
        code,
        ReasonCode::NotAuthorized,
        "bob may not take alice's session"
    );
    assert_eq!(sessions(&cluster, 0), 1, "node-0 kept it");
    let mut alice = alice;
    alice.send(&Packet::PingReq).await;
    assert_eq!(
        alice.recv().await,
        Some(Packet::PingResp),
        "alice stays connected"
    );
    // Alice herself may move it.
    let (_moved, code) = login(cluster.mqtt(1), "shared-id", "alice").await;
    assert_eq!(code, ReasonCode::Success);
    cluster.shutdown().await;
    let _ = std::fs::remove_file(passwd_path());
}
