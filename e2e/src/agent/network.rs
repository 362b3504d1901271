//! The pod network of one node: a bridge on the host with the node's
//! gateway address, and for each pod a network namespace of its own joined to
//! the bridge by a veth pair, so a pod binds `0.0.0.0` and owns its ports as
//! in a cluster. Each Kubernetes namespace gets a /24 of its own, so that a
//! partition between two namespaces is a pair of routes.
//!
//! Nothing is routed off the machine: a pod knows the pod subnet and the
//! service range (through the gateway, where the service proxy listens) and
//! has no default route, and the host does not forward. Another node's
//! service range can be routed too ([`Network::route_to`]), as two regions'
//! networks are peered: its cluster IPs are addresses of this host as well.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Mutex;

use anyhow::Context;
use tokio::process::Command;

/// A pod's place on the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNet {
    /// The network namespace, as `ip netns` names it.
    pub netns: String,
    /// The pod's IP address.
    pub ip: Ipv4Addr,
    /// The Kubernetes namespace, whose /24 the address is in.
    namespace: String,
}

#[derive(Debug, Default)]
struct Allocations {
    /// The third octet of each Kubernetes namespace's /24.
    subnets: BTreeMap<String, u8>,
    /// Addresses in use.
    used: BTreeSet<Ipv4Addr>,
    /// Live pods.
    pods: Vec<PodNet>,
    /// Pairs of namespaces that cannot reach each other.
    cut: BTreeSet<(String, String)>,
    /// Other nodes' service ranges the pods have routes to.
    peer_ranges: BTreeSet<String>,
}

/// The bridge and the pods' namespaces of one node.
#[derive(Debug)]
pub struct Network {
    prefix: String,
    bridge: String,
    /// First two octets of the pod range: `a.b.0.0/16`.
    range: [u8; 2],
    service_cidr: String,
    state: Mutex<Allocations>,
}

/// Runs `ip` with `args`, failing with its error output.
pub(super) async fn ip(args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .await
        .context("run `ip` (iproute2)")?;
    anyhow::ensure!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

impl Network {
    /// Makes node `index`'s bridge `strait<index>` with the gateway
    /// `10.<100+index>.0.1/16`, after removing what a previous run of the same
    /// node left behind.
    pub async fn create(index: u8, service_cidr: &str) -> anyhow::Result<Network> {
        anyhow::ensure!(index < 50, "node index {index} is out of range (0..50)");
        let network = Network {
            prefix: format!("strait{index}-"),
            bridge: format!("strait{index}"),
            range: [10, 100 + index],
            service_cidr: service_cidr.to_owned(),
            state: Mutex::default(),
        };
        network.remove_leftovers().await;
        let gateway = format!("{}/16", network.gateway());
        // A bridge takes the lowest address of its ports unless given one:
        // each new pod could change it, and every pod's cached address of
        // the gateway would go stale until its neighbour entry expired (a
        // pod cut off from the API server and its probes for up to a
        // minute). A fixed, locally administered one never changes.
        let mac = format!("02:00:0a:{:02x}:00:01", network.range[1]);
        ip(&[
            "link",
            "add",
            &network.bridge,
            "address",
            &mac,
            "type",
            "bridge",
        ])
        .await?;
        ip(&["addr", "add", &gateway, "dev", &network.bridge]).await?;
        ip(&["link", "set", &network.bridge, "up"]).await?;
        Ok(network)
    }

    /// The host's address on the pod network, where the DNS server and the
    /// service proxy listen.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.range[0], self.range[1], 0, 1)
    }

    async fn remove_leftovers(&self) {
        if let Ok(output) = Command::new("ip").args(["netns", "list"]).output().await {
            for line in String::from_utf8_lossy(&output.stdout).lines() {
                let name = line.split_whitespace().next().unwrap_or_default();
                if name.starts_with(&self.prefix) {
                    let _ = ip(&["netns", "del", name]).await;
                }
            }
        }
        let _ = ip(&["link", "del", &self.bridge]).await;
    }

    fn allocate(&self, namespace: &str) -> anyhow::Result<Ipv4Addr> {
        let mut state = self.state.lock().expect("network state");
        let next_subnet = u8::try_from(state.subnets.len() + 1)
            .ok()
            .filter(|n| *n < 255)
            .context("more than 254 namespaces on one node")?;
        let subnet = *state
            .subnets
            .entry(namespace.to_owned())
            .or_insert(next_subnet);
        let ip = (2..=254)
            .map(|host| Ipv4Addr::new(self.range[0], self.range[1], subnet, host))
            .find(|ip| !state.used.contains(ip))
            .with_context(|| format!("namespace {namespace} has 253 pods on this node"))?;
        state.used.insert(ip);
        Ok(ip)
    }

    fn subnet_of(&self, namespace: &str) -> Option<String> {
        let state = self.state.lock().expect("network state");
        let subnet = *state.subnets.get(namespace)?;
        Some(format!("{}.{}.{subnet}.0/24", self.range[0], self.range[1]))
    }

    /// Gives the pod `uid` of `namespace` a network namespace and an address.
    pub async fn attach(&self, uid: &str, namespace: &str) -> anyhow::Result<PodNet> {
        let ip_addr = self.allocate(namespace)?;
        let short: String = uid.chars().filter(|c| *c != '-').take(8).collect();
        let netns = format!("{}{short}", self.prefix);
        let host_end = format!("sv{}{}", self.range[1] - 100, &short[..6.min(short.len())]);
        let pod = PodNet {
            netns: netns.clone(),
            ip: ip_addr,
            namespace: namespace.to_owned(),
        };
        let result = async {
            let address = format!("{ip_addr}/16");
            let gateway = self.gateway().to_string();
            ip(&["netns", "add", &netns]).await?;
            ip(&[
                "link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", &netns,
            ])
            .await?;
            ip(&["link", "set", &host_end, "master", &self.bridge, "up"]).await?;
            ip(&["-n", &netns, "addr", "add", &address, "dev", "eth0"]).await?;
            ip(&["-n", &netns, "link", "set", "eth0", "up"]).await?;
            ip(&["-n", &netns, "link", "set", "lo", "up"]).await?;
            ip(&[
                "-n",
                &netns,
                "route",
                "add",
                &self.service_cidr,
                "via",
                &gateway,
            ])
            .await?;
            anyhow::Ok(())
        }
        .await;
        if let Err(error) = result {
            self.detach(&pod).await;
            return Err(error);
        }
        let (cuts, peer_ranges): (Vec<String>, Vec<String>) = {
            let mut state = self.state.lock().expect("network state");
            state.pods.push(pod.clone());
            let cuts = state
                .cut
                .iter()
                .filter(|(a, _)| a == namespace)
                .map(|(_, b)| b.clone())
                .collect();
            (cuts, state.peer_ranges.iter().cloned().collect())
        };
        for range in peer_ranges {
            self.route_pod_to(&netns, &range).await?;
        }
        for other in cuts {
            if let Some(subnet) = self.subnet_of(&other) {
                ip(&["-n", &netns, "route", "add", "blackhole", &subnet]).await?;
            }
        }
        Ok(pod)
    }

    /// Removes the pod's network namespace (its veth pair goes with it) and
    /// frees its address.
    pub async fn detach(&self, pod: &PodNet) {
        if let Err(error) = ip(&["netns", "del", &pod.netns]).await {
            tracing::debug!(netns = %pod.netns, %error, "removing a pod's network namespace");
        }
        let mut state = self.state.lock().expect("network state");
        state.used.remove(&pod.ip);
        state.pods.retain(|p| p != pod);
    }

    /// Makes a Service's cluster IP an address of the host, for the proxy to
    /// listen on.
    pub async fn add_service_ip(&self, cluster_ip: Ipv4Addr) -> anyhow::Result<()> {
        ip(&[
            "addr",
            "replace",
            &format!("{cluster_ip}/32"),
            "dev",
            &self.bridge,
        ])
        .await
    }

    /// Removes a Service's cluster IP from the host.
    pub async fn remove_service_ip(&self, cluster_ip: Ipv4Addr) {
        let _ = ip(&[
            "addr",
            "del",
            &format!("{cluster_ip}/32"),
            "dev",
            &self.bridge,
        ])
        .await;
    }

    /// Routes `range` (another node's service range) from every pod, now
    /// and for pods to come.
    pub async fn route_to(&self, range: &str) -> anyhow::Result<()> {
        let pods = {
            let mut state = self.state.lock().expect("network state");
            if !state.peer_ranges.insert(range.to_owned()) {
                return Ok(());
            }
            state.pods.clone()
        };
        for pod in pods {
            self.route_pod_to(&pod.netns, range).await?;
        }
        Ok(())
    }

    async fn route_pod_to(&self, netns: &str, range: &str) -> anyhow::Result<()> {
        let gateway = self.gateway().to_string();
        ip(&["-n", netns, "route", "replace", range, "via", &gateway]).await
    }

    /// Cuts (or heals) the network between the pods of two namespaces, both
    /// ways: established connections stall as on a real partition, and pods
    /// created meanwhile are cut too.
    pub async fn partition(&self, a: &str, b: &str, cut: bool) -> anyhow::Result<()> {
        let pods = {
            let mut state = self.state.lock().expect("network state");
            for pair in [(a.to_owned(), b.to_owned()), (b.to_owned(), a.to_owned())] {
                if cut {
                    state.cut.insert(pair);
                } else {
                    state.cut.remove(&pair);
                }
            }
            state.pods.clone()
        };
        let verb = if cut { "add" } else { "del" };
        for pod in pods {
            let other = if pod.namespace == a {
                b
            } else if pod.namespace == b {
                a
            } else {
                continue;
            };
            if let Some(subnet) = self.subnet_of(other) {
                ip(&["-n", &pod.netns, "route", verb, "blackhole", &subnet]).await?;
            }
        }
        Ok(())
    }

    /// Whether traffic from `from` to `to` is cut.
    pub fn is_cut(&self, from: &str, to: &str) -> bool {
        let state = self.state.lock().expect("network state");
        state.cut.contains(&(from.to_owned(), to.to_owned()))
    }

    /// The Kubernetes namespace of the pod with address `ip`.
    pub fn namespace_of(&self, ip: Ipv4Addr) -> Option<String> {
        let state = self.state.lock().expect("network state");
        state
            .pods
            .iter()
            .find(|p| p.ip == ip)
            .map(|p| p.namespace.clone())
    }

    /// Removes every pod namespace and the bridge.
    pub async fn destroy(&self) {
        let pods = std::mem::take(&mut self.state.lock().expect("network state").pods);
        for pod in pods {
            let _ = ip(&["netns", "del", &pod.netns]).await;
        }
        let _ = ip(&["link", "del", &self.bridge]).await;
    }
}
