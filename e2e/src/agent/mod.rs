//! A node agent that plays the kubelet, the pod network, kube-proxy and the
//! cluster DNS on this machine, so that what the operator renders runs as
//! it would in a cluster: every Pod bound to its Node runs as a real process
//! (see [`pod`]) in a network namespace of its own (see [`network`]), finds
//! Services by name (see [`dns`]) and reaches them at their cluster IPs
//! (see [`proxy`]); a LoadBalancer Service gets its cluster IP as its
//! address (see [`load_balancer`]).
//!
//! It needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN in the host's namespaces:
//! a bridge, veth pairs, mounts), `ip` (iproute2), util-linux and dnsmasq.

pub mod dns;
pub mod launch;
pub mod load_balancer;
pub mod network;
pub mod pod;
pub mod probe;
pub mod proxy;
pub mod volumes;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, Node, PersistentVolume, PersistentVolumeClaim, Pod, Secret, Service,
};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use network::Network;
use volumes::Sources;

/// How to run a node.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Which node of this machine (0, 1, ...): picks the bridge, the pod
    /// range `10.<100+index>.0.0/16` and the Node's name.
    pub index: u8,
    /// The service range of the API server (cluster IPs are routed to it).
    pub service_cidr: String,
    /// Where the API server listens (for the `kubernetes` Service).
    pub api_server: std::net::SocketAddr,
    /// Where pods' folders, claims' data and the DNS files go.
    pub state_dir: PathBuf,
    /// The binary each image repository stands for
    /// (`ghcr.io/strait/broker` → `target/release/strait-broker`).
    pub images: BTreeMap<String, PathBuf>,
}

/// What the pods of the node share.
pub(crate) struct Shared {
    client: Client,
    node: String,
    network: Arc<Network>,
    state_dir: PathBuf,
    images: BTreeMap<String, PathBuf>,
    sources: Sources,
    services: Store<Service>,
    /// Ticks at every change of a Secret or ConfigMap.
    sources_changed: watch::Receiver<u64>,
    /// The process of each running container, by `namespace/pod`.
    pids: Mutex<BTreeMap<String, u32>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// A running node.
#[derive(Debug)]
pub struct Agent {
    shared: Arc<Shared>,
    proxy: Arc<tokio::sync::Mutex<proxy::Proxy>>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    pods: JoinHandle<()>,
}

/// Keeps a store of every `K`, ticking `changed` at every event.
fn reflect<K>(api: Api<K>, changed: watch::Sender<u64>) -> (Store<K>, JoinHandle<()>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let task = tokio::spawn(async move {
        let mut events = std::pin::pin!(reflector::reflector(
            writer,
            watcher(api, watcher::Config::default())
        )
        .default_backoff());
        while let Some(event) = events.next().await {
            match event {
                Ok(_) => changed.send_modify(|n| *n += 1),
                Err(error) => tracing::debug!(%error, "watch"),
            }
        }
    });
    (reader, task)
}

/// Root, or at least the network and mount capabilities, is needed.
pub fn check_privileges() -> anyhow::Result<()> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    const CAP_NET_ADMIN: u64 = 1 << 12;
    const CAP_SYS_ADMIN: u64 = 1 << 21;
    anyhow::ensure!(
        effective & (CAP_NET_ADMIN | CAP_SYS_ADMIN) == CAP_NET_ADMIN | CAP_SYS_ADMIN,
        "the node agent needs root (CAP_NET_ADMIN for the pods' network namespaces, veth pairs \
         and bridge; CAP_SYS_ADMIN for their mounts): run it as root"
    );
    for tool in ["ip", "dnsmasq", "unshare", "chroot", "mount"] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
            .unwrap_or(false);
        anyhow::ensure!(
            found,
            "`{tool}` is not installed (apt-get install iproute2 dnsmasq-base util-linux coreutils)"
        );
    }
    Ok(())
}

impl Agent {
    /// Registers the Node and starts running its pods.
    pub async fn start(client: Client, config: AgentConfig) -> anyhow::Result<Agent> {
        check_privileges()?;
        let node = format!("strait-node-{}", config.index);
        let network = Arc::new(Network::create(config.index, &config.service_cidr).await?);
        std::fs::create_dir_all(&config.state_dir)?;
        let mut tasks = Vec::new();

        let (sources_tx, sources_changed) = watch::channel(0);
        let (secrets, t) = reflect(Api::<Secret>::all(client.clone()), sources_tx.clone());
        tasks.push(t);
        let (config_maps, t) = reflect(Api::<ConfigMap>::all(client.clone()), sources_tx);
        tasks.push(t);
        let (net_tx, mut net_changed) = watch::channel(0);
        let (services, t) = reflect(Api::<Service>::all(client.clone()), net_tx.clone());
        tasks.push(t);
        let (endpoints, t) = reflect(Api::<Endpoints>::all(client.clone()), net_tx);
        tasks.push(t);
        let listed = async {
            secrets.wait_until_ready().await?;
            config_maps.wait_until_ready().await?;
            services.wait_until_ready().await?;
            endpoints.wait_until_ready().await
        };
        tokio::time::timeout(Duration::from_secs(60), listed)
            .await
            .context("listing Secrets, ConfigMaps, Services and Endpoints")??;

        register_node(&client, &node, &network).await?;
        let (stop, stopped) = watch::channel(false);
        tasks.push(tokio::spawn(heartbeat(
            client.clone(),
            node.clone(),
            network.gateway(),
            stopped.clone(),
        )));

        let mut dns = dns::Dns::start(network.gateway(), &config.state_dir.join("dns")).await?;
        let proxy = Arc::new(tokio::sync::Mutex::new(proxy::Proxy::new(
            network.clone(),
            endpoints.clone(),
            config.api_server,
        )));
        {
            let (client, services, endpoints, proxy, mut stopped) = (
                client.clone(),
                services.clone(),
                endpoints.clone(),
                proxy.clone(),
                stopped.clone(),
            );
            tasks.push(tokio::spawn(async move {
                loop {
                    dns.update(&services, &endpoints).await;
                    proxy.lock().await.update(&services).await;
                    load_balancer::announce(&client, &services).await;
                    tokio::select! {
                        changed = net_changed.changed() => if changed.is_err() { break },
                        _ = stopped.changed() => break,
                    }
                }
                dns.stop().await;
            }));
        }
        tasks.push(tokio::spawn(provision_claims(
            client.clone(),
            config.state_dir.join("claims"),
            stopped.clone(),
        )));

        let shared = Arc::new(Shared {
            client,
            node,
            network,
            state_dir: config.state_dir,
            images: config.images,
            sources: Sources {
                secrets,
                config_maps,
            },
            services,
            sources_changed,
            pids: Mutex::default(),
        });
        let pods = tokio::spawn(run_pods(shared.clone(), stopped));
        Ok(Agent {
            shared,
            proxy,
            stop,
            tasks,
            pods,
        })
    }

    /// Kills the container of `namespace/pod` with SIGKILL, as a crash or
    /// the OOM killer would; kubelet-like, the agent then restarts it.
    pub async fn kill(&self, namespace: &str, pod: &str) -> anyhow::Result<()> {
        let pid = self
            .shared
            .pids
            .lock()
            .expect("pids")
            .get(&format!("{namespace}/{pod}"))
            .copied()
            .with_context(|| format!("no running container in {namespace}/{pod}"))?;
        launch::signal(pid, "KILL").await;
        Ok(())
    }

    /// Gives this node's pods a route to another node's service range, as
    /// between two regions whose networks are peered: their links reach the
    /// other region's link Services.
    pub async fn route_to(&self, service_range: &str) -> anyhow::Result<()> {
        self.shared.network.route_to(service_range).await
    }

    /// Cuts (`cut`) or heals the network between the pods of two namespaces.
    pub async fn partition(&self, a: &str, b: &str, cut: bool) -> anyhow::Result<()> {
        self.shared.network.partition(a, b, cut).await?;
        self.proxy.lock().await.partitions_changed();
        Ok(())
    }

    /// Stops every pod (SIGKILL: the control plane may be gone already) and
    /// removes the node's network.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.pods.await;
        self.proxy.lock().await.stop();
        for task in self.tasks {
            task.abort();
        }
        self.shared.network.destroy().await;
    }
}

async fn register_node(client: &Client, node: &str, network: &Network) -> anyhow::Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    let object = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node,
            "labels": {
                "kubernetes.io/hostname": node,
                "kubernetes.io/os": "linux",
                "topology.kubernetes.io/zone": "local",
            },
        },
    });
    api.patch(
        node,
        &PatchParams::apply("strait-node-agent").force(),
        &Patch::Apply(&object),
    )
    .await
    .context("register the Node")?;
    write_node_status(&api, node, network.gateway()).await
}

async fn write_node_status(
    api: &Api<Node>,
    node: &str,
    address: std::net::Ipv4Addr,
) -> anyhow::Result<()> {
    let now = pod::now();
    let capacity = json!({"cpu": "2", "memory": "24Gi", "pods": "110"});
    let status = json!({"status": {
        "capacity": capacity,
        "allocatable": capacity,
        "addresses": [{"type": "InternalIP", "address": address.to_string()}, {"type": "Hostname", "address": node}],
        "conditions": [{
            "type": "Ready", "status": "True", "reason": "KubeletReady",
            "message": "strait node agent is posting ready status",
            "lastHeartbeatTime": now, "lastTransitionTime": now,
        }],
        "nodeInfo": {
            "architecture": "amd64", "operatingSystem": "linux", "osImage": "strait node agent",
            "kernelVersion": "", "containerRuntimeVersion": "strait://processes", "kubeletVersion": "v1.20.2",
            "kubeProxyVersion": "v1.20.2", "machineID": "", "systemUUID": "", "bootID": "",
        },
    }});
    api.patch_status(node, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .context("write the Node's status")?;
    Ok(())
}

/// Posts the Node's status every 10 s, as a kubelet does, so the node
/// lifecycle controller never marks it NotReady and evicts its pods.
async fn heartbeat(
    client: Client,
    node: String,
    address: std::net::Ipv4Addr,
    mut stopped: watch::Receiver<bool>,
) {
    let api: Api<Node> = Api::all(client);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
            _ = stopped.changed() => return,
        }
        if let Err(error) = write_node_status(&api, &node, address).await {
            tracing::warn!(%error, "node heartbeat");
        }
    }
}

/// Binds every claim that waits for a volume to a folder on this machine,
/// as a local-path provisioner does: a PersistentVolume per claim, which
/// the control plane's volume binder then binds.
async fn provision_claims(client: Client, dir: PathBuf, mut stopped: watch::Receiver<bool>) {
    let claims: Api<PersistentVolumeClaim> = Api::all(client.clone());
    let volumes: Api<PersistentVolume> = Api::all(client);
    let mut events = std::pin::pin!(watcher(claims, watcher::Config::default())
        .default_backoff()
        .applied_objects());
    loop {
        let claim = tokio::select! {
            next = events.next() => match next {
                Some(Ok(claim)) => claim,
                Some(Err(_)) => continue,
                None => return,
            },
            _ = stopped.changed() => return,
        };
        let pending = claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending");
        if !pending
            || claim
                .spec
                .as_ref()
                .and_then(|s| s.volume_name.as_ref())
                .is_some()
        {
            continue;
        }
        let ns = claim.namespace().unwrap_or_default();
        let name = format!("pv-{ns}-{}", claim.name_any());
        let spec = claim.spec.clone().unwrap_or_default();
        let size = spec
            .resources
            .and_then(|r| r.requests)
            .and_then(|r| r.get("storage").cloned())
            .map(|q| q.0)
            .unwrap_or_else(|| "1Gi".to_owned());
        let path = volumes::claim_folder(&dir, &ns, &claim.name_any());
        let volume = json!({
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "strait-node-agent"}},
            "spec": {
                "capacity": {"storage": size},
                "accessModes": spec.access_modes.unwrap_or_else(|| vec!["ReadWriteOnce".into()]),
                "persistentVolumeReclaimPolicy": "Delete",
                "storageClassName": spec.storage_class_name.unwrap_or_default(),
                "hostPath": {"path": path.to_string_lossy(), "type": "DirectoryOrCreate"},
                "claimRef": {"namespace": ns, "name": claim.name_any(), "uid": claim.uid()},
            },
        });
        match serde_json::from_value::<PersistentVolume>(volume) {
            Ok(volume) => {
                if let Err(error) = volumes.create(&PostParams::default(), &volume).await {
                    tracing::debug!(%error, claim = %claim.name_any(), "provisioning a volume");
                }
            }
            Err(error) => tracing::warn!(%error, "a PersistentVolume"),
        }
    }
}

/// Binds unscheduled pods to this node and runs those bound to it, one
/// task per pod.
async fn run_pods(shared: Arc<Shared>, mut stopped: watch::Receiver<bool>) {
    let api: Api<Pod> = Api::all(shared.client.clone());
    let mut events = std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff());
    let mut running: BTreeMap<String, (watch::Sender<Option<Pod>>, JoinHandle<()>)> =
        BTreeMap::new();
    let mut seen_in_list: BTreeSet<String> = BTreeSet::new();
    loop {
        let event = tokio::select! {
            next = events.next() => match next {
                Some(Ok(event)) => event,
                Some(Err(error)) => { tracing::debug!(%error, "pod watch"); continue }
                None => break,
            },
            _ = stopped.changed() => break,
        };
        running.retain(|_, (_, task)| !task.is_finished());
        match event {
            watcher::Event::Init => seen_in_list.clear(),
            watcher::Event::InitApply(pod) | watcher::Event::Apply(pod) => {
                if let Some(uid) = pod.uid() {
                    seen_in_list.insert(uid);
                }
                apply(&shared, &mut running, pod).await;
            }
            watcher::Event::InitDone => {
                // Pods that went while the watch was down.
                for (uid, (updates, _)) in &running {
                    if !seen_in_list.contains(uid) {
                        let _ = updates.send(None);
                    }
                }
            }
            watcher::Event::Delete(pod) => {
                if let Some((updates, _)) = pod.uid().and_then(|uid| running.get(&uid)) {
                    let _ = updates.send(None);
                }
            }
        }
    }
    // Stopping: every container is killed at once.
    for (updates, task) in running.into_values() {
        let _ = updates.send(None);
        let _ = task.await;
    }
}

async fn apply(
    shared: &Arc<Shared>,
    running: &mut BTreeMap<String, (watch::Sender<Option<Pod>>, JoinHandle<()>)>,
    pod: Pod,
) {
    let Some(uid) = pod.uid() else { return };
    let spec = pod.spec.clone().unwrap_or_default();
    match spec.node_name.as_deref() {
        None | Some("") => {
            if pod.metadata.deletion_timestamp.is_none() {
                bind(shared, &pod).await;
            }
        }
        Some(node) if node == shared.node => {
            if let Some((updates, _)) = running.get(&uid) {
                let _ = updates.send(Some(pod));
            } else if pod.metadata.deletion_timestamp.is_none() {
                let (updates, receiver) = watch::channel(Some(pod.clone()));
                let task = tokio::spawn(pod::run(shared.clone(), pod, receiver));
                running.insert(uid, (updates, task));
            } else {
                // Deleted before it ran (or by an earlier agent): let it go.
                pod::remove(&shared.client, &pod).await;
            }
        }
        Some(_) => {}
    }
}

/// Binds `pod` to this node, as the scheduler would with one node.
async fn bind(shared: &Shared, pod: &Pod) {
    let ns = pod.namespace().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(shared.client.clone(), &ns);
    let binding = json!({
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": pod.name_any(), "namespace": ns},
        "target": {"apiVersion": "v1", "kind": "Node", "name": shared.node},
    });
    if let Err(error) = api
        .create_subresource::<_, serde_json::Value>(
            "binding",
            &pod.name_any(),
            &PostParams::default(),
            &binding,
        )
        .await
    {
        tracing::debug!(%error, pod = %pod.name_any(), "binding a pod");
    }
}
