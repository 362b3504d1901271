//! Where the peers are: a static list, DNS (a headless Service), or a source
//! a test provides; re-resolved periodically, with one dialer per address.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Debug;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::dialer::dial_loop;
use super::host::Host;
use super::stream::PeerTls;
use super::MeshHost;
use crate::config::ClusterConfig;

/// A source of peer addresses, asked again every interval.
pub trait Discover: Debug + Send + Sync + 'static {
    /// The peer addresses now (this node's own may be among them).
    fn resolve(&self) -> Pin<Box<dyn Future<Output = Vec<SocketAddr>> + Send + '_>>;
}

/// The sources named in the configuration: static `host:port` entries and an
/// optional DNS name, each resolved through the system resolver.
#[derive(Debug, Clone)]
pub struct Discovery {
    names: Vec<String>,
}

impl Discovery {
    pub fn from_config(config: &ClusterConfig) -> Discovery {
        let mut names = config.peers.clone();
        if let Some(dns) = &config.dns {
            names.push(format!("{}:{}", dns.name, dns.port));
        }
        Discovery { names }
    }
}

impl Discover for Discovery {
    fn resolve(&self) -> Pin<Box<dyn Future<Output = Vec<SocketAddr>> + Send + '_>> {
        Box::pin(async move {
            let mut found = Vec::new();
            for name in &self.names {
                match tokio::net::lookup_host(name.as_str()).await {
                    Ok(addresses) => found.extend(addresses),
                    // Pods that are not scheduled yet have no record: normal while scaling.
                    Err(err) => tracing::debug!(%name, error = %err, "peer name did not resolve"),
                }
            }
            found
        })
    }
}

/// How often discovery runs.
pub(super) fn interval(config: &ClusterConfig) -> Duration {
    Duration::from_millis(config.discovery_interval_ms)
}

/// Keeps exactly one dialer per discovered address until shutdown: new
/// addresses get one, vanished ones (a pod scaled away) lose theirs.
pub(super) async fn membership_loop<H: Host>(
    host: MeshHost<H>,
    discover: Arc<dyn Discover>,
    every: Duration,
    tls: Option<Arc<PeerTls>>,
) {
    let mut shutdown = host.shutdown_signal();
    let mut dialers: HashMap<SocketAddr, JoinHandle<()>> = HashMap::new();
    loop {
        let found: BTreeSet<SocketAddr> = discover.resolve().await.into_iter().collect();
        dialers.retain(|address, dialer| {
            let keep = found.contains(address);
            if !keep {
                tracing::info!(%address, "peer address no longer discovered; stopped dialling it");
                dialer.abort();
            }
            keep
        });
        for address in found {
            dialers
                .entry(address)
                .or_insert_with(|| tokio::spawn(dial_loop(host.clone(), address, tls.clone())));
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.recv() => break,
        }
    }
    for dialer in dialers.into_values() {
        dialer.abort();
    }
}
