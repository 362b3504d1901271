//! The Services' stable addresses, as kube-proxy's userspace mode gave them:
//! each cluster IP is an address of the node's bridge, and for each of the
//! Service's TCP ports a listener there forwards every connection to one
//! ready endpoint, chosen at random. Pods reach cluster IPs through the
//! gateway; on the node itself they are local addresses.
//!
//! A partition between two namespaces (see [`super::network`]) holds here
//! too: a connection from a pod of one to an endpoint in the other is
//! refused, and those open when the cut comes are closed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Endpoints, Service};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::ResourceExt;
use rand::seq::SliceRandom;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::network::Network;

/// One Service port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Port {
    namespace: String,
    service: String,
    /// The Service port's name (endpoints name their ports the same).
    name: Option<String>,
    cluster_ip: Ipv4Addr,
    port: u16,
}

/// The listeners of every Service port.
#[derive(Debug)]
pub struct Proxy {
    network: Arc<Network>,
    /// Where the API server listens: the target of `default/kubernetes`,
    /// whose endpoint the API server advertises on an address it does not
    /// listen on here (it listens on loopback only).
    api_server: SocketAddr,
    endpoints: Store<Endpoints>,
    /// Bumped at every partition change, so open connections look again.
    cuts: watch::Sender<u64>,
    listeners: BTreeMap<Port, JoinHandle<()>>,
}

impl Proxy {
    /// A proxy with no listeners yet.
    pub fn new(
        network: Arc<Network>,
        endpoints: Store<Endpoints>,
        api_server: SocketAddr,
    ) -> Proxy {
        Proxy {
            network,
            api_server,
            endpoints,
            cuts: watch::channel(0).0,
            listeners: BTreeMap::new(),
        }
    }

    /// Tells open connections that the partitions changed.
    pub fn partitions_changed(&self) {
        self.cuts.send_modify(|n| *n += 1);
    }

    /// Listens on every port of every Service with a cluster IP, and stops
    /// listening for those that are gone.
    pub async fn update(&mut self, services: &Store<Service>) {
        let mut wanted = BTreeSet::new();
        for service in services.state() {
            let spec = service.spec.clone().unwrap_or_default();
            let Some(ip) = spec.cluster_ip.as_deref().and_then(|ip| ip.parse().ok()) else {
                continue;
            };
            for port in spec.ports.iter().flatten() {
                if port.protocol.as_deref().unwrap_or("TCP") != "TCP" {
                    continue;
                }
                let Ok(number) = u16::try_from(port.port) else {
                    continue;
                };
                wanted.insert(Port {
                    namespace: service.namespace().unwrap_or_default(),
                    service: service.name_any(),
                    name: port.name.clone(),
                    cluster_ip: ip,
                    port: number,
                });
            }
        }
        let gone: Vec<Port> = self
            .listeners
            .keys()
            .filter(|p| !wanted.contains(*p))
            .cloned()
            .collect();
        for port in gone {
            if let Some(task) = self.listeners.remove(&port) {
                task.abort();
            }
            if !self
                .listeners
                .keys()
                .any(|p| p.cluster_ip == port.cluster_ip)
            {
                self.network.remove_service_ip(port.cluster_ip).await;
            }
        }
        for port in wanted {
            if self.listeners.contains_key(&port) {
                continue;
            }
            if let Err(error) = self.network.add_service_ip(port.cluster_ip).await {
                tracing::warn!(%error, ip = %port.cluster_ip, "adding a cluster IP");
                continue;
            }
            let address = SocketAddr::from((port.cluster_ip, port.port));
            let listener = match TcpListener::bind(address).await {
                Ok(l) => l,
                Err(error) => {
                    tracing::warn!(%error, %address, "listening for a Service");
                    continue;
                }
            };
            let fixed = (port.namespace == "default" && port.service == "kubernetes")
                .then_some(self.api_server);
            let task = tokio::spawn(serve(
                listener,
                port.clone(),
                fixed,
                self.endpoints.clone(),
                self.network.clone(),
                self.cuts.subscribe(),
            ));
            self.listeners.insert(port, task);
        }
    }

    /// Stops every listener.
    pub fn stop(&mut self) {
        for (_, task) in std::mem::take(&mut self.listeners) {
            task.abort();
        }
    }
}

/// The ready endpoints of a Service port.
fn targets(endpoints: &Store<Endpoints>, port: &Port) -> Vec<SocketAddr> {
    let Some(eps) = endpoints.get(&ObjectRef::new(&port.service).within(&port.namespace)) else {
        return Vec::new();
    };
    let mut targets = Vec::new();
    for subset in eps.subsets.iter().flatten() {
        let Some(target) = subset
            .ports
            .iter()
            .flatten()
            .find(|p| p.name == port.name)
            .and_then(|p| u16::try_from(p.port).ok())
        else {
            continue;
        };
        for address in subset.addresses.iter().flatten() {
            if let Ok(ip) = address.ip.parse::<std::net::IpAddr>() {
                targets.push(SocketAddr::new(ip, target));
            }
        }
    }
    targets
}

async fn serve(
    listener: TcpListener,
    port: Port,
    fixed: Option<SocketAddr>,
    endpoints: Store<Endpoints>,
    network: Arc<Network>,
    cuts: watch::Receiver<u64>,
) {
    loop {
        let Ok((client, from)) = listener.accept().await else {
            continue;
        };
        let from_ns = match from.ip() {
            std::net::IpAddr::V4(ip) => network.namespace_of(ip),
            std::net::IpAddr::V6(_) => None,
        };
        let cut = |ns: &Option<String>| {
            ns.as_deref()
                .is_some_and(|from| network.is_cut(from, &port.namespace))
        };
        if cut(&from_ns) {
            continue; // dropped: the route is cut
        }
        let choices = match fixed {
            Some(target) => vec![target],
            None => targets(&endpoints, &port),
        };
        let Some(target) = choices.choose(&mut rand::thread_rng()).copied() else {
            continue; // no ready endpoint: refused, as kube-proxy rejects
        };
        let network = network.clone();
        let mut cuts = cuts.clone();
        let to_ns = port.namespace.clone();
        tokio::spawn(async move {
            let Ok(mut upstream) = TcpStream::connect(target).await else {
                return;
            };
            let mut client = client;
            let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
            tokio::pin!(copy);
            loop {
                tokio::select! {
                    _ = &mut copy => return,
                    changed = cuts.changed() => {
                        if changed.is_err() { return; }
                        if from_ns.as_deref().is_some_and(|f| network.is_cut(f, &to_ns)) {
                            return;
                        }
                    }
                }
            }
        });
    }
}
