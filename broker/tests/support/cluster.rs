//! Clusters of in-process broker nodes on loopback, meshed through a test
//! discovery source that plays the part of a headless Service's DNS records.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strait_broker::cluster::{Discover, NodeStatus};
use strait_broker::config::Config;
use strait_broker::server::Server;

use super::within;

/// The addresses a DNS name would resolve to; tests add and remove nodes.
#[derive(Debug, Default)]
pub struct TestDiscovery {
    addresses: Mutex<Vec<SocketAddr>>,
}

impl TestDiscovery {
    pub fn add(&self, address: SocketAddr) {
        self.addresses.lock().expect("lock").push(address);
    }

    pub fn remove(&self, address: SocketAddr) {
        self.addresses
            .lock()
            .expect("lock")
            .retain(|a| *a != address);
    }
}

impl Discover for TestDiscovery {
    fn resolve(&self) -> Pin<Box<dyn Future<Output = Vec<SocketAddr>> + Send + '_>> {
        let found = self.addresses.lock().expect("lock").clone();
        Box::pin(async move { found })
    }
}

/// The secret every [`TestCluster`] shares (tests check it never shows in logs).
pub const TEST_SECRET: &str = "a-test-cluster-secret-of-enough-bytes";

/// Writes a cluster secret file and returns its folder (kept alive by the caller).
pub fn secret_dir(secret: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("secret"), secret).expect("write secret");
    dir
}

/// The configuration of node `name` of cluster `cluster`: free loopback
/// ports, fast heartbeats so failures show within a test's patience.
pub fn node_config(cluster: &str, name: &str, secret_dir: &tempfile::TempDir) -> Config {
    let mut config = Config::default();
    config.node.cluster = cluster.into();
    config.node.name = name.into();
    config.listeners[0].bind = "127.0.0.1:0".parse().expect("addr");
    config.admin.bind = "127.0.0.1:0".parse().expect("addr");
    config.sys.interval_secs = 0;
    config.cluster.bind = Some("127.0.0.1:0".parse().expect("addr"));
    config.cluster.secret_file = Some(secret_dir.path().join("secret"));
    config.cluster.discovery_interval_ms = 50;
    config.cluster.heartbeat_interval_ms = 100;
    config.cluster.peer_timeout_ms = 1000;
    config.cluster.max_backoff_ms = 200;
    config
}

/// Nodes `node-0`, `node-1`, ... of one cluster.
pub struct TestCluster {
    pub name: String,
    pub nodes: Vec<Option<Server>>,
    pub discovery: Arc<TestDiscovery>,
    secret: tempfile::TempDir,
    /// Applied to every node's configuration after [`node_config`].
    adjust: Box<dyn Fn(&mut Config) + Send + Sync>,
}

impl TestCluster {
    /// Starts `size` nodes and waits until every one is connected to every other.
    pub async fn start(size: usize) -> TestCluster {
        TestCluster::start_with(size, |_| {}).await
    }

    /// [`TestCluster::start`], with `adjust` changing each node's configuration.
    pub async fn start_with(
        size: usize,
        adjust: impl Fn(&mut Config) + Send + Sync + 'static,
    ) -> TestCluster {
        TestCluster::start_named("test", size, adjust).await
    }

    /// [`TestCluster::start_with`] for a cluster called `name`.
    pub async fn start_named(
        name: &str,
        size: usize,
        adjust: impl Fn(&mut Config) + Send + Sync + 'static,
    ) -> TestCluster {
        let mut cluster = TestCluster {
            name: name.to_owned(),
            nodes: Vec::new(),
            discovery: Arc::new(TestDiscovery::default()),
            secret: secret_dir(TEST_SECRET),
            adjust: Box::new(adjust),
        };
        for _ in 0..size {
            cluster.add_node().await;
        }
        cluster.wait_meshed().await;
        cluster
    }

    /// Starts one more node (not waiting for the mesh); returns its index.
    pub async fn add_node(&mut self) -> usize {
        let index = self.nodes.len();
        self.nodes.push(None);
        self.start_node(index).await;
        index
    }

    /// Starts node `index` (stopped, or a slot just added) under its usual
    /// name, as a restarted pod would be: same name, new address and
    /// incarnation. Does not wait for the mesh.
    pub async fn start_node(&mut self, index: usize) {
        assert!(self.nodes[index].is_none(), "node-{index} is running");
        let config = self.config_for(&format!("node-{index}"));
        self.nodes[index] = Some(self.start_joined(config).await);
    }

    /// The configuration of a node of this cluster called `name`.
    pub fn config_for(&self, name: &str) -> Config {
        let mut config = node_config(&self.name, name, &self.secret);
        (self.adjust)(&mut config);
        config
    }

    /// Starts a node from `config` that finds its peers through this
    /// cluster's discovery and is listed there, without making it one of
    /// [`TestCluster::nodes`] (tests use it for intruders).
    pub async fn start_joined(&self, config: Config) -> Server {
        let discover: Arc<dyn Discover> = self.discovery.clone();
        let server = Server::start_with_discovery(config, Some(discover))
            .await
            .expect("node starts");
        self.discovery
            .add(server.cluster_addr().expect("cluster address"));
        server
    }

    pub fn node(&self, index: usize) -> &Server {
        self.nodes[index].as_ref().expect("node is running")
    }

    /// The client address of node `index`.
    pub fn mqtt(&self, index: usize) -> SocketAddr {
        self.node(index).mqtt_addrs()[0]
    }

    /// Shuts node `index` down cleanly and takes it out of discovery.
    pub async fn stop_node(&mut self, index: usize) {
        let server = self.nodes[index].take().expect("node is running");
        self.discovery
            .remove(server.cluster_addr().expect("cluster address"));
        server.shutdown().await;
    }

    /// Stops node `index` but leaves its address in discovery, as a pod
    /// whose DNS record outlives it: peers learn of its end only from the mesh.
    pub async fn crash_node(&mut self, index: usize) {
        let server = self.nodes[index].take().expect("node is running");
        server.shutdown().await;
    }

    /// What node `index` knows of its peers.
    pub fn peers_of(&self, index: usize) -> Vec<NodeStatus> {
        let cluster = self.node(index).broker().cluster().expect("clustered");
        cluster.status().peers
    }

    fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].is_some())
            .collect()
    }

    /// Waits until every running node is connected both ways to every other
    /// running node, and lists no other peer.
    pub async fn wait_meshed(&self) {
        let running = self.running();
        eventually("the mesh to form", || {
            running.iter().all(|&i| {
                let peers = self.peers_of(i);
                peers.len() == running.len() - 1 && peers.iter().all(|p| p.state == "connected")
            })
        })
        .await;
    }

    /// Waits until node `at` has `routes` routes from node `from`.
    pub async fn wait_routes(&self, at: usize, from: usize, routes: usize) {
        let name = format!("node-{from}");
        eventually(
            &format!("node-{at} to hold {routes} routes of {name}"),
            || {
                self.peers_of(at)
                    .iter()
                    .any(|p| p.name == name && p.routes == routes)
            },
        )
        .await;
    }

    pub async fn shutdown(mut self) {
        for index in self.running() {
            self.stop_node(index).await;
        }
    }
}

/// Checks `condition` until it holds, failing the test after the usual wait.
/// For state that only the broker can see change (the mesh, its routes),
/// where there is no event to await.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    within(what, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}
