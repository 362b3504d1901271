//! A node process killed with SIGKILL mid-stream. Its own test binary: the
//! node processes bind ports picked just before they start, and other tests
//! of the same binary binding ports meanwhile could take one of them.

mod support;

use std::net::SocketAddr;
use std::process::Child;
use std::time::Duration;

use support::cluster::secret_dir;
use support::v4;

/// One node as a process, configured through a file with static peers.
struct NodeProcess {
    child: Child,
    mqtt: SocketAddr,
    admin: SocketAddr,
}

impl NodeProcess {
    fn spawn(dir: &std::path::Path, name: &str, ports: &NodePorts, peers: &[u16]) -> NodeProcess {
        let peers: Vec<String> = peers.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
        let config = format!(
            "node: {{cluster: proc, name: {name}}}\n\
             listeners: [{{bind: '127.0.0.1:{mqtt}'}}]\n\
             admin: {{bind: '127.0.0.1:{admin}'}}\n\
             sys: {{intervalSecs: 0}}\n\
             cluster:\n  bind: '127.0.0.1:{cluster}'\n  secretFile: {secret}\n  peers: [{peers}]\n  \
             heartbeatIntervalMs: 100\n  peerTimeoutMs: 1000\n  maxBackoffMs: 200\n  discoveryIntervalMs: 200\n",
            mqtt = ports.mqtt,
            admin = ports.admin,
            cluster = ports.cluster,
            secret = dir.join("secret").display(),
            peers = peers.join(", "),
        );
        let path = dir.join(format!("{name}.yaml"));
        std::fs::write(&path, config).expect("write config");
        let child = support::spawn_broker_process(&path);
        NodeProcess {
            child,
            mqtt: SocketAddr::from(([127, 0, 0, 1], ports.mqtt)),
            admin: SocketAddr::from(([127, 0, 0, 1], ports.admin)),
        }
    }

    /// A `strait_cluster_*` metric, or `None` while the node is not up.
    async fn metric(&self, name: &str) -> Option<u64> {
        support::fetch_metrics(self.admin)
            .await?
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    async fn wait_metric(&self, name: &str, value: u64) {
        support::within(&format!("{name} to reach {value}"), async {
            while self.metric(name).await != Some(value) {
                tokio::time::sleep(Duration::from_millis(20)).await; // polling another process
            }
        })
        .await;
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct NodePorts {
    mqtt: u16,
    admin: u16,
    cluster: u16,
}

#[tokio::test]
async fn a_killed_node_is_declared_dead_and_the_survivors_stream_on() {
    let dir = secret_dir("process-cluster-secret-0123456789");
    let ports: Vec<NodePorts> = (0..3)
        .map(|_| NodePorts {
            mqtt: support::free_port(),
            admin: support::free_port(),
            cluster: support::free_port(),
        })
        .collect();
    let all: Vec<u16> = ports.iter().map(|p| p.cluster).collect();
    let spawn = |i: usize| NodeProcess::spawn(dir.path(), &format!("n{i}"), &ports[i], &all);
    let mut nodes: Vec<NodeProcess> = (0..3).map(spawn).collect();
    for node in &nodes {
        node.wait_metric("strait_cluster_peer_connections", 2).await;
    }

    let mut subscriber = v4::connect(v4::options(nodes[2].mqtt, "tail")).await;
    subscriber.subscribe("s/#", v4::QoS::AtLeastOnce).await;
    let mut doomed = v4::connect(v4::options(nodes[1].mqtt, "doomed-sub")).await;
    doomed.subscribe("s/#", v4::QoS::AtLeastOnce).await;
    nodes[0]
        .wait_metric("strait_cluster_remote_routes", 2)
        .await;
    let mut publisher = v4::connect(v4::options(nodes[0].mqtt, "head")).await;

    for i in 0..200u32 {
        if i == 100 {
            nodes[1].child.kill().expect("SIGKILL node 1");
            nodes[1].child.wait().expect("reap node 1");
        }
        publisher
            .publish_acked("s/n", false, &i.to_be_bytes())
            .await;
    }
    for i in 0..200u32 {
        let got = subscriber.publish_received().await;
        assert_eq!(
            &got.payload[..],
            &i.to_be_bytes(),
            "the survivors' stream is whole"
        );
    }
    drop(doomed);
    nodes[0]
        .wait_metric("strait_cluster_peers_declared_dead_total", 1)
        .await;
    nodes[2]
        .wait_metric("strait_cluster_peers_declared_dead_total", 1)
        .await;
    nodes[0]
        .wait_metric("strait_cluster_peer_connections", 1)
        .await;
    nodes[0]
        .wait_metric("strait_cluster_remote_routes", 1)
        .await;
    let lost = nodes[0]
        .metric("strait_cluster_forward_lost_total")
        .await
        .expect("metric");
    assert!(
        lost >= 100,
        "what was queued for the dead node is counted lost, not dropped silently: {lost}"
    );

    // It comes back (a new incarnation) and rejoins.
    nodes[1] = spawn(1);
    for node in &nodes {
        node.wait_metric("strait_cluster_peer_connections", 2).await;
    }
    let mut back = v4::connect(v4::options(nodes[1].mqtt, "back")).await;
    back.subscribe("s/#", v4::QoS::AtLeastOnce).await;
    nodes[0]
        .wait_metric("strait_cluster_remote_routes", 2)
        .await;
    publisher.publish_acked("s/again", false, b"again").await;
    assert_eq!(&back.publish_received().await.payload[..], b"again");
    assert_eq!(&subscriber.publish_received().await.payload[..], b"again");
}
