//! Two brokers (or clusters) joined across a relay, for the cross-link runs:
//! publishers on side `a`, subscribers on side `b`, every message crossing
//! the relay, which counts the bytes and can add a round trip.
//!
//! Strait: cluster `a` accepts a link on a link listener, cluster `b` dials
//! it (through the relay) with a credential; both export and import `#`.
//! Mosquitto: broker `b` runs mosquitto's own bridge to broker `a`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use strait_broker::config::{Config as StraitConfig, LinkConfig, LinkListenerConfig};
use strait_broker::link::LinkSecret;
use tempfile::TempDir;
use tokio::time::Instant;

use crate::admin;
use crate::broker::{free_addr, strait_config, BrokerError, BrokerProcess};
use crate::relay::Relay;
use crate::run::Endpoints;

/// How long a link may take to come up once every node accepts MQTT.
const LINK_TIMEOUT: Duration = Duration::from_secs(20);

/// The link's secret (both sides run on this machine, for this run only).
const SECRET: &str = "strait-bench-link-secret-0123456789abcdef";

/// Why a linked pair could not be started.
#[derive(Debug, thiserror::Error)]
pub enum LinkedError {
    #[error("cannot prepare the run directory, a port or the relay: {0}")]
    Setup(#[from] std::io::Error),
    #[error("cannot render a configuration: {0}")]
    Render(#[from] serde_yaml::Error),
    #[error("cannot hash the link secret: {0}")]
    Credential(#[from] strait_broker::link::CredentialError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("the link did not come up within {LINK_TIMEOUT:?}; last answer: {0}")]
    NotLinked(String),
}

/// Two linked sides and the relay between them.
#[derive(Debug)]
pub struct LinkedPair {
    /// Side `a`'s nodes, then side `b`'s.
    nodes: Vec<BrokerProcess>,
    per_side: usize,
    relay: Relay,
    _dir: TempDir,
}

impl LinkedPair {
    /// Two Strait clusters of `per_side` nodes each, linked through a relay
    /// that delays each direction by `one_way`.
    pub async fn strait(
        binary: &Path,
        per_side: usize,
        one_way: Duration,
    ) -> Result<LinkedPair, LinkedError> {
        let dir = tempfile::Builder::new()
            .prefix("strait-bench-link-")
            .tempdir()?;
        let cluster_secret = dir.path().join("cluster-secret");
        std::fs::write(&cluster_secret, "strait-bench-cluster-secret-0123456789")?;
        let link_secret = dir.path().join("link-secret");
        std::fs::write(&link_secret, SECRET)?;
        let credentials = dir.path().join("link-credentials");
        let hashed = LinkSecret::new(SECRET.as_bytes())
            .expect("the bench secret is long enough")
            .hash()?;
        std::fs::write(&credentials, format!("b:{}\n", hashed.encode()))?;

        let a_listeners: Vec<SocketAddr> = (0..per_side)
            .map(|_| free_addr())
            .collect::<Result<_, _>>()?;
        let relay = Relay::start(a_listeners[0], one_way).await?;
        let mut nodes = Vec::with_capacity(2 * per_side);
        for side in ["a", "b"] {
            let mesh: Vec<SocketAddr> = (0..per_side)
                .map(|_| free_addr())
                .collect::<Result<_, _>>()?;
            for i in 0..per_side {
                let mut config: StraitConfig = serde_yaml::from_str(&strait_config()?)?;
                config.node.cluster = side.to_owned();
                config.node.name = format!("{side}{i}");
                if per_side > 1 {
                    config.cluster.bind = Some(mesh[i]);
                    config.cluster.secret_file = Some(cluster_secret.clone());
                    config.cluster.peers = mesh.iter().map(ToString::to_string).collect();
                }
                let mut link: LinkConfig = serde_yaml::from_str(if side == "a" {
                    "{name: b}"
                } else {
                    "{name: a}"
                })?;
                link.export = vec!["#".into()];
                link.import = vec!["#".into()];
                if side == "a" {
                    config.link_listener = Some(LinkListenerConfig {
                        bind: a_listeners[i],
                        credentials_file: credentials.clone(),
                        tls: None,
                    });
                } else {
                    link.endpoints = vec![relay.addr().to_string()];
                    link.secret_file = Some(link_secret.clone());
                }
                config.links = vec![link];
                nodes.push(
                    BrokerProcess::start_strait(binary, &serde_yaml::to_string(&config)?).await?,
                );
            }
        }
        let pair = LinkedPair {
            nodes,
            per_side,
            relay,
            _dir: dir,
        };
        pair.wait_strait_linked().await?;
        Ok(pair)
    }

    /// Two mosquitto brokers, `b` bridged to `a` through a relay that delays
    /// each direction by `one_way`.
    pub async fn mosquitto(binary: &Path, one_way: Duration) -> Result<LinkedPair, LinkedError> {
        let dir = tempfile::Builder::new()
            .prefix("mosquitto-bench-bridge-")
            .tempdir()?;
        let a = BrokerProcess::start_mosquitto(binary, crate::broker::QUEUED_PER_CLIENT).await?;
        let relay = Relay::start(a.addr(), one_way).await?;
        let b = BrokerProcess::start_mosquitto_bridged(binary, relay.addr()).await?;
        // The bridge connects on its own schedule: the runs' route probes
        // wait for it to carry messages.
        Ok(LinkedPair {
            nodes: vec![a, b],
            per_side: 1,
            relay,
            _dir: dir,
        })
    }

    /// Publishers on the last node of side `a`, subscribers on the last of
    /// side `b` (on two-node clusters, neither holds the link, so messages
    /// also cross each cluster's mesh).
    pub fn endpoints(&self) -> Endpoints {
        Endpoints {
            publishers: self.nodes[self.per_side - 1].addr(),
            subscribers: self.nodes[2 * self.per_side - 1].addr(),
        }
    }

    pub fn nodes_mut(&mut self) -> &mut [BrokerProcess] {
        &mut self.nodes
    }

    /// Bytes that crossed the relay so far, both directions.
    pub fn link_bytes(&self) -> u64 {
        self.relay.bytes()
    }

    /// Kills every process.
    pub async fn stop(self) {
        for node in self.nodes {
            node.stop().await;
        }
    }

    /// Polls each side's admin API until one of its nodes reports the link connected.
    async fn wait_strait_linked(&self) -> Result<(), LinkedError> {
        let deadline = Instant::now() + LINK_TIMEOUT;
        for side in self.nodes.chunks(self.per_side) {
            let mut last = String::new();
            loop {
                let mut up = false;
                for node in side {
                    let Some(addr) = node.admin_addr() else {
                        continue;
                    };
                    match admin::get(addr, "/api/v1/links").await {
                        Ok(response) if response.status == 200 => {
                            up |= response.body.contains("\"state\":\"connected\"");
                            last = response.body;
                        }
                        Ok(response) => last = format!("HTTP {}", response.status),
                        Err(e) => last = e.to_string(),
                    }
                }
                if up {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(LinkedError::NotLinked(last));
                }
                // No change notification to wait on: poll.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }
}
