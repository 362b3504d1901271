//! A two-node Strait cluster on loopback, for the cross-node runs: publishers
//! connect to node `a`, subscribers to node `b`, so every message crosses the
//! mesh once.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;
use tokio::time::Instant;

use crate::admin::{self, CLUSTER_PATH};
use crate::broker::{free_addr, strait_node_config, BrokerError, BrokerProcess};
use crate::run::Endpoints;

/// The nodes' names: publishers connect to the first, subscribers to the second.
pub const NODE_NAMES: [&str; 2] = ["a", "b"];

/// How long the nodes may take to connect to each other once both accept MQTT.
const MESH_TIMEOUT: Duration = Duration::from_secs(15);

/// Pause between two readings of a node's cluster state while it meshes.
const MESH_POLL: Duration = Duration::from_millis(50);

/// Random bytes in the cluster secret.
const SECRET_BYTES: usize = 32;

/// Why the cluster could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot prepare the cluster directory or secret: {0}")]
    Setup(#[from] std::io::Error),
    #[error("cannot render a node configuration: {0}")]
    Render(#[from] serde_yaml::Error),
    #[error("node {node}: {source}")]
    Node {
        node: &'static str,
        source: BrokerError,
    },
    #[error(
        "node {node} reported no connected peer at {CLUSTER_PATH} within {MESH_TIMEOUT:?} \
         (is the cluster mesh built into this strait?); last answer: {last}"
    )]
    NotMeshed { node: &'static str, last: String },
}

/// Two strait processes meshed with each other; killed when stopped or dropped.
#[derive(Debug)]
pub struct StraitCluster {
    /// In [`NODE_NAMES`] order.
    nodes: Vec<BrokerProcess>,
    /// Holds the secret file for as long as the nodes may redial.
    _dir: TempDir,
}

impl StraitCluster {
    /// Starts both nodes, each dialling the other, and waits until each
    /// reports its peer connected on its admin API.
    pub async fn start(
        binary: &Path,
        delivery_lanes: usize,
    ) -> Result<StraitCluster, ClusterError> {
        let dir = tempfile::Builder::new()
            .prefix("strait-bench-cluster-")
            .tempdir()?;
        let secret = write_secret(dir.path())?;
        let binds = [free_addr()?, free_addr()?];
        let mut nodes = Vec::with_capacity(NODE_NAMES.len());
        for (i, node) in NODE_NAMES.into_iter().enumerate() {
            let peers: Vec<SocketAddr> = binds
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .map(|(_, addr)| *addr)
                .collect();
            let config = strait_node_config(node, binds[i], &secret, &peers, delivery_lanes)?;
            let process = BrokerProcess::start_strait(binary, &config)
                .await
                .map_err(|source| ClusterError::Node { node, source })?;
            nodes.push(process);
        }
        for (node, process) in NODE_NAMES.into_iter().zip(&nodes) {
            wait_meshed(node, process, NODE_NAMES.len() - 1).await?;
        }
        Ok(StraitCluster { nodes, _dir: dir })
    }

    /// Publishers on node `a`, subscribers on node `b`.
    pub fn endpoints(&self) -> Endpoints {
        Endpoints {
            publishers: self.nodes[0].addr(),
            subscribers: self.nodes[1].addr(),
        }
    }

    /// Both processes, to check or settle each after a run.
    /// Every node's MQTT address.
    pub fn addrs(&self) -> Vec<std::net::SocketAddr> {
        self.nodes.iter().map(BrokerProcess::addr).collect()
    }

    pub fn nodes_mut(&mut self) -> &mut [BrokerProcess] {
        &mut self.nodes
    }

    /// Kills both nodes and reaps them.
    pub async fn stop(self) {
        for node in self.nodes {
            node.stop().await;
        }
    }
}

/// Writes a fresh random secret, readable only by this user, and returns its path.
fn write_secret(dir: &Path) -> std::io::Result<PathBuf> {
    let mut bytes = [0u8; SECRET_BYTES];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let path = dir.join("cluster-secret");
    std::fs::File::options()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(&path)?
        .write_all(hex.as_bytes())?;
    Ok(path)
}

/// Polls the node's cluster state until it lists `peers` connected peers.
async fn wait_meshed(
    node: &'static str,
    process: &BrokerProcess,
    peers: usize,
) -> Result<(), ClusterError> {
    let deadline = Instant::now() + MESH_TIMEOUT;
    let Some(addr) = process.admin_addr() else {
        return Err(ClusterError::NotMeshed {
            node,
            last: "the node has no admin endpoint".to_owned(),
        });
    };
    loop {
        let last = match admin::get(addr, CLUSTER_PATH).await {
            Ok(response) if response.status == 200 => {
                match admin::connected_peers(&response.body) {
                    Ok(connected) if connected >= peers => return Ok(()),
                    Ok(connected) => format!("{connected} of {peers} peers connected"),
                    Err(e) => format!("unreadable JSON ({e})"),
                }
            }
            Ok(response) => format!("HTTP {}", response.status),
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(ClusterError::NotMeshed { node, last });
        }
        // The admin API has no change notification to wait on: poll.
        tokio::time::sleep(MESH_POLL).await;
    }
}
