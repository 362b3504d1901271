//! The mesh under faults: links cut and healed by a TCP proxy between nodes.
//! (A node process killed mid-stream is in `cluster_process.rs`.)

mod support;

use std::sync::Arc;

use strait_broker::cluster::{ClusterMetrics, Discover};
use strait_broker::server::Server;
use support::cluster::{eventually, node_config, secret_dir, TestDiscovery};
use support::proxy::FaultProxy;
use support::v4;

/// Nodes whose every peer connection runs through its own proxy (one per
/// ordered pair of nodes), so a test can cut one direction between two nodes.
struct ProxiedCluster {
    nodes: Vec<Server>,
    /// `proxies[i][j]`: node i's connection to node j (`None` on the diagonal).
    proxies: Vec<Vec<Option<FaultProxy>>>,
    _secret: tempfile::TempDir,
}

impl ProxiedCluster {
    async fn start(size: usize) -> ProxiedCluster {
        let secret = secret_dir("a-test-cluster-secret-of-enough-bytes");
        let mut nodes = Vec::new();
        let mut discoveries = Vec::new();
        for index in 0..size {
            let discovery = Arc::new(TestDiscovery::default());
            let discover: Arc<dyn Discover> = discovery.clone();
            let config = node_config("test", &format!("node-{index}"), &secret);
            let server = Server::start_with_discovery(config, Some(discover))
                .await
                .expect("node starts");
            nodes.push(server);
            discoveries.push(discovery);
        }
        let mut proxies = Vec::new();
        for (i, discovery) in discoveries.iter().enumerate() {
            let mut row = Vec::new();
            for (j, target) in nodes.iter().enumerate() {
                if i == j {
                    row.push(None);
                    continue;
                }
                let proxy = FaultProxy::start(target.cluster_addr().expect("clustered")).await;
                discovery.add(proxy.addr());
                row.push(Some(proxy));
            }
            proxies.push(row);
        }
        let cluster = ProxiedCluster {
            nodes,
            proxies,
            _secret: secret,
        };
        cluster.wait_connected_all().await;
        cluster
    }

    fn mesh(&self, i: usize) -> &ClusterMetrics {
        self.nodes[i]
            .broker()
            .cluster()
            .expect("clustered")
            .metrics()
    }

    fn peer_state(&self, at: usize, of: usize) -> Option<(String, usize)> {
        let name = format!("node-{of}");
        let status = self.nodes[at]
            .broker()
            .cluster()
            .expect("clustered")
            .status();
        status
            .peers
            .into_iter()
            .find(|p| p.name == name)
            .map(|p| (p.state.to_owned(), p.routes))
    }

    fn proxy(&self, from: usize, to: usize) -> &FaultProxy {
        self.proxies[from][to]
            .as_ref()
            .expect("a proxy between two nodes")
    }

    async fn wait_connected_all(&self) {
        let size = self.nodes.len();
        eventually("every node to reach every other", || {
            (0..size).all(|i| {
                (0..size).filter(|&j| j != i).all(|j| {
                    self.peer_state(i, j)
                        .is_some_and(|(state, _)| state == "connected")
                })
            })
        })
        .await;
    }

    async fn wait_routes(&self, at: usize, of: usize, routes: usize) {
        eventually(
            &format!("node-{at} to hold {routes} routes of node-{of}"),
            || self.peer_state(at, of).is_some_and(|(_, r)| r == routes),
        )
        .await;
    }

    async fn shutdown(self) {
        for node in self.nodes {
            node.shutdown().await;
        }
    }
}

#[tokio::test]
async fn a_one_way_cut_queues_messages_and_the_heal_resumes_without_loss_or_resync() {
    let cluster = ProxiedCluster::start(3).await;
    let mut subscriber = v4::connect(v4::options(cluster.nodes[1].mqtt_addrs()[0], "s")).await;
    subscriber.subscribe("c/#", v4::QoS::AtLeastOnce).await;
    cluster.wait_routes(0, 1, 1).await;
    let resyncs = cluster.mesh(0).resyncs_total();

    // Node 0 can no longer reach node 1; node 1 still reaches node 0.
    cluster.proxy(0, 1).cut().await;
    eventually("node 0 to notice the cut", || {
        cluster
            .peer_state(0, 1)
            .is_some_and(|(state, _)| state != "connected")
    })
    .await;
    let mut publisher = v4::connect(v4::options(cluster.nodes[0].mqtt_addrs()[0], "p")).await;
    for i in 0..100u32 {
        publisher
            .publish_acked("c/n", false, &i.to_be_bytes())
            .await;
    }
    assert_eq!(
        cluster.peer_state(0, 1).map(|(_, routes)| routes),
        Some(1),
        "a one-way cut is no death: node 0 keeps node 1's routes"
    );
    cluster.proxy(0, 1).heal();
    for i in 0..100u32 {
        let got = subscriber.publish_received().await;
        assert_eq!(&got.payload[..], &i.to_be_bytes(), "all of them, in order");
    }
    assert_eq!(
        cluster.mesh(0).resyncs_total(),
        resyncs,
        "the stream resumed"
    );
    assert_eq!(cluster.mesh(0).lost_total(), 0);
    assert_eq!(cluster.mesh(1).peers_declared_dead_total(), 0);
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_partition_longer_than_the_peer_timeout_declares_death_and_heals() {
    let cluster = ProxiedCluster::start(3).await;
    let mut subscriber = v4::connect(v4::options(cluster.nodes[1].mqtt_addrs()[0], "s")).await;
    subscriber.subscribe("p/#", v4::QoS::AtLeastOnce).await;
    cluster.wait_routes(0, 1, 1).await;
    let resyncs = cluster.mesh(0).resyncs_total();

    cluster.proxy(0, 1).cut().await;
    cluster.proxy(1, 0).cut().await;
    eventually("node 0 and node 1 to declare each other dead", || {
        cluster.peer_state(0, 1).is_none() && cluster.peer_state(1, 0).is_none()
    })
    .await;
    assert_eq!(cluster.mesh(0).peers_declared_dead_total(), 1);
    assert_eq!(cluster.mesh(1).peers_declared_dead_total(), 1);
    // Node 2 is on both sides and never lost anyone.
    assert_eq!(cluster.mesh(2).peers_declared_dead_total(), 0);
    let mut publisher = v4::connect(v4::options(cluster.nodes[0].mqtt_addrs()[0], "p")).await;
    publisher.publish_acked("p/lost", false, b"during").await;

    cluster.proxy(0, 1).heal();
    cluster.proxy(1, 0).heal();
    cluster.wait_connected_all().await;
    cluster.wait_routes(0, 1, 1).await;
    assert!(
        cluster.mesh(0).resyncs_total() > resyncs,
        "a full resync after death"
    );
    publisher.publish_acked("p/after", false, b"after").await;
    let got = subscriber.publish_received().await;
    assert_eq!(
        &got.payload[..],
        b"after",
        "nothing was routed to a dead node"
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_topic_cleared_during_a_partition_stays_cleared_after_the_heal() {
    let cluster = ProxiedCluster::start(2).await;
    let addr = |i: usize| cluster.nodes[i].mqtt_addrs()[0];
    let mut setter = v4::connect(v4::options(addr(0), "setter")).await;
    setter.publish_acked("config/mode", true, b"v1").await;
    // Both nodes hold it: a subscriber on node 1 receives it as retained.
    let mut probe = v4::connect(v4::options(addr(1), "probe")).await;
    probe.subscribe("config/#", v4::QoS::AtLeastOnce).await;
    assert_eq!(&probe.publish_received().await.payload[..], b"v1");
    drop(probe);

    // A partition long enough for both to declare the other dead, so the
    // heal is a first contact with a full retained sync.
    cluster.proxy(0, 1).cut().await;
    cluster.proxy(1, 0).cut().await;
    eventually("node 0 and node 1 to declare each other dead", || {
        cluster.peer_state(0, 1).is_none() && cluster.peer_state(1, 0).is_none()
    })
    .await;
    let mut clearer = v4::connect(v4::options(addr(1), "clearer")).await;
    clearer.publish_acked("config/mode", true, b"").await;
    cluster.proxy(0, 1).heal();
    cluster.proxy(1, 0).heal();
    cluster.wait_connected_all().await;

    // A retained marker from each side travels behind that side's sync on
    // the same ordered stream: once both markers are everywhere, both syncs
    // were applied. Neither brings the cleared message back: the clear is newer.
    setter.publish_acked("config/marker-0", true, b"m").await;
    clearer.publish_acked("config/marker-1", true, b"m").await;
    for node in [0, 1] {
        eventually(&format!("node {node} to hold both markers"), || {
            cluster.nodes[node].broker().gauges().retained >= 2
        })
        .await;
        let mut late = v4::connect(v4::options(addr(node), &format!("late-{node}"))).await;
        late.subscribe("config/#", v4::QoS::AtLeastOnce).await;
        let mut topics = vec![
            late.publish_received().await.topic,
            late.publish_received().await.topic,
        ];
        topics.sort();
        assert_eq!(
            topics,
            ["config/marker-0", "config/marker-1"],
            "node {node}"
        );
        assert_eq!(
            cluster.nodes[node].broker().gauges().retained,
            2,
            "node {node}: config/mode stays cleared"
        );
    }
    cluster.shutdown().await;
}
