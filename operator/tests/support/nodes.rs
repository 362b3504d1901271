//! Plays the kubelet and the pod network for the link tests, with no
//! kubelet and no pod network on the machine: every broker pod the
//! StatefulSet controller creates runs as a real broker (in this process,
//! on loopback ports of its own) from the ConfigMap and Secrets the operator
//! wrote; the files of its Secret volumes are kept up to date as a kubelet
//! keeps them, and the pod is marked ready once its broker serves. The
//! operator under test finds the pods' addresses through [`Nodes`], its
//! `NodeAddresses`.
//!
//! A pod deleted through the API stops its broker (the StatefulSet then
//! makes a new one, which starts from the Secrets as they are then);
//! [`Nodes::hang`] stops a broker but leaves its pod ready, as a node that
//! stopped answering.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use strait_broker::config::Config;
use strait_broker::server::Server;
use strait_operator::crd::MqttCluster;
use strait_operator::links::NodeAddresses;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The loopback address and ports of one pod, kept across its restarts.
#[derive(Debug, Clone, Copy)]
struct Ports {
    ip: Ipv4Addr,
    mqtt: u16,
    admin: u16,
    link: u16,
    cluster: u16,
}

impl Ports {
    fn at(&self, port: u16) -> SocketAddr {
        SocketAddr::from((self.ip, port))
    }
}

/// How pods get addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Addressing {
    /// 127.0.0.1, each pod with ports of its own: for an operator in this
    /// process, which asks [`Nodes`] where a pod is.
    LoopbackPorts,
    /// A loopback address per pod (127.1.0.1, 127.1.0.2, ...) with the
    /// standard ports, as pod IPs: for an operator in a process of its own,
    /// which finds a pod's admin endpoint from its pod IP as in Kubernetes.
    PodIps,
}

#[derive(Debug)]
struct Shared {
    addressing: Addressing,
    /// By `namespace/pod`.
    ports: BTreeMap<String, Ports>,
    /// Pods whose broker should stop and stay stopped.
    hung: BTreeSet<String>,
}

/// The pods of some namespaces, run as brokers.
#[derive(Clone)]
pub struct Nodes {
    shared: Arc<Mutex<Shared>>,
    stop: watch::Sender<bool>,
    agent: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl std::fmt::Debug for Nodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Nodes")
    }
}

impl NodeAddresses for Nodes {
    fn admin(&self, pod: &Pod) -> Option<SocketAddr> {
        let key = format!("{}/{}", pod.namespace()?, pod.name_any());
        let ports = self.ports(&key);
        Some(ports.at(ports.admin))
    }

    fn link_endpoint(&self, cluster: &MqttCluster, pod: &str) -> String {
        let key = format!("{}/{pod}", cluster.namespace().unwrap_or_default());
        let ports = self.ports(&key);
        ports.at(ports.link).to_string()
    }
}

/// Four distinct free ports: all four are held open while they are chosen,
/// so the system cannot hand out one of them twice.
fn free_ports() -> [u16; 4] {
    let listeners: Vec<std::net::TcpListener> = (0..4)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free port"))
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().expect("an address").port())
}

impl Nodes {
    /// Starts running the broker pods of `namespaces`, on 127.0.0.1.
    pub fn start(client: &Client, namespaces: &[&str]) -> Nodes {
        Nodes::start_with(client, namespaces, Addressing::LoopbackPorts)
    }

    /// Starts running the broker pods of `namespaces`, each on a loopback
    /// address of its own with the standard ports, its pod IP.
    pub fn start_on_pod_ips(client: &Client, namespaces: &[&str]) -> Nodes {
        Nodes::start_with(client, namespaces, Addressing::PodIps)
    }

    fn start_with(client: &Client, namespaces: &[&str], addressing: Addressing) -> Nodes {
        let (stop, stopped) = watch::channel(false);
        let nodes = Nodes {
            shared: Arc::new(Mutex::new(Shared {
                addressing,
                ports: BTreeMap::new(),
                hung: BTreeSet::new(),
            })),
            stop,
            agent: Arc::default(),
        };
        let agent = tokio::spawn(agent(
            client.clone(),
            namespaces.iter().map(|s| (*s).to_owned()).collect(),
            nodes.clone(),
            stopped,
        ));
        *nodes.agent.lock().expect("agent") = Some(agent);
        nodes
    }

    fn ports(&self, key: &str) -> Ports {
        let mut shared = self.shared.lock().expect("ports");
        let next = shared.ports.len();
        let addressing = shared.addressing;
        *shared
            .ports
            .entry(key.to_owned())
            .or_insert_with(|| match addressing {
                Addressing::LoopbackPorts => {
                    let [mqtt, admin, link, cluster] = free_ports();
                    Ports {
                        ip: Ipv4Addr::LOCALHOST,
                        mqtt,
                        admin,
                        link,
                        cluster,
                    }
                }
                Addressing::PodIps => {
                    let n = u16::try_from(next + 1).expect("fewer than 65536 pods");
                    let [high, low] = n.to_be_bytes();
                    Ports {
                        ip: Ipv4Addr::new(127, 1, high, low),
                        mqtt: 1883,
                        admin: 8080,
                        link: 7883,
                        cluster: 7946,
                    }
                }
            })
    }

    /// Where MQTT clients reach the pod `pod` in `namespace`.
    pub fn mqtt(&self, namespace: &str, pod: &str) -> SocketAddr {
        let ports = self.ports(&format!("{namespace}/{pod}"));
        ports.at(ports.mqtt)
    }

    /// The pod's admin endpoint.
    pub fn admin_of(&self, namespace: &str, pod: &str) -> SocketAddr {
        let ports = self.ports(&format!("{namespace}/{pod}"));
        ports.at(ports.admin)
    }

    /// Where another cluster's link dials the pod.
    pub fn link(&self, namespace: &str, pod: &str) -> SocketAddr {
        let ports = self.ports(&format!("{namespace}/{pod}"));
        ports.at(ports.link)
    }

    /// Stops the pod's broker and keeps it stopped, its pod still ready: a
    /// node that no longer answers.
    pub fn hang(&self, namespace: &str, pod: &str) {
        self.shared
            .lock()
            .expect("hung")
            .hung
            .insert(format!("{namespace}/{pod}"));
    }

    /// Stops every broker.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let agent = self.agent.lock().expect("agent").take();
        if let Some(agent) = agent {
            let _ = agent.await;
        }
    }
}

/// A running broker and the pod it stands for.
struct Running {
    uid: String,
    server: Server,
    dir: PathBuf,
    cluster: String,
}

async fn agent(
    client: Client,
    namespaces: Vec<String>,
    nodes: Nodes,
    mut stopped: watch::Receiver<bool>,
) {
    let mut running: BTreeMap<String, Running> = BTreeMap::new();
    let dir = tempfile::Builder::new()
        .prefix("strait-nodes-")
        .tempdir()
        .expect("tempdir");
    loop {
        for namespace in &namespaces {
            tick(&client, namespace, &nodes, dir.path(), &mut running).await;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = stopped.changed() => break,
        }
    }
    for (_, pod) in running {
        pod.server.shutdown().await;
    }
}

async fn tick(
    client: &Client,
    namespace: &str,
    nodes: &Nodes,
    dir: &Path,
    running: &mut BTreeMap<String, Running>,
) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let Ok(list) = pods
        .list(&ListParams::default().labels("app.kubernetes.io/managed-by=strait-operator"))
        .await
    else {
        return;
    };
    // The operator's Secrets of the namespace, read once a tick for every pod.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let Ok(secrets) = secrets
        .list(&ListParams::default().labels("app.kubernetes.io/managed-by=strait-operator"))
        .await
    else {
        return;
    };
    let secrets: BTreeMap<String, Secret> = secrets
        .items
        .into_iter()
        .map(|s| (s.name_any(), s))
        .collect();
    let hung = nodes.shared.lock().expect("hung").hung.clone();
    let live: BTreeMap<String, &Pod> = list
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| (format!("{namespace}/{}", p.name_any()), p))
        .collect();
    let gone: Vec<String> = running
        .iter()
        .filter(|(key, _)| key.starts_with(&format!("{namespace}/")))
        .filter(|(key, r)| {
            hung.contains(*key)
                || live.get(*key).and_then(|p| p.uid()).as_deref() != Some(r.uid.as_str())
        })
        .map(|(key, _)| key.clone())
        .collect();
    for key in gone {
        if let Some(pod) = running.remove(&key) {
            pod.server.shutdown().await;
        }
    }
    for (key, pod) in live {
        if hung.contains(&key) {
            continue;
        }
        match running.get(&key) {
            Some(pod) => {
                sync_files(&secrets, &pod.cluster, &pod.dir);
            }
            None => {
                if let Some(started) = start(client, namespace, nodes, dir, pod, &secrets).await {
                    running.insert(key, started);
                }
            }
        }
    }
}

/// Starts the broker of `pod`, once its cluster's ConfigMap and Secrets are there.
async fn start(
    client: &Client,
    namespace: &str,
    nodes: &Nodes,
    dir: &Path,
    pod: &Pod,
    secrets: &BTreeMap<String, Secret>,
) -> Option<Running> {
    let cluster = pod.labels().get("app.kubernetes.io/instance")?.clone();
    let name = pod.name_any();
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let yaml = config_maps
        .get_opt(&format!("{cluster}-config"))
        .await
        .ok()??
        .data?
        .remove("strait.yaml")?;
    let replicas = Api::<StatefulSet>::namespaced(client.clone(), namespace)
        .get_opt(&cluster)
        .await
        .ok()??
        .spec?
        .replicas
        .unwrap_or(1);
    let pod_dir = dir.join(namespace).join(&name);
    let _ = std::fs::remove_dir_all(&pod_dir);
    std::fs::create_dir_all(pod_dir.join("data")).ok()?;
    if !sync_files(secrets, &cluster, &pod_dir) {
        return None;
    }
    let ports = nodes.ports(&format!("{namespace}/{name}"));
    let mut config: Config = serde_yaml::from_str(&yaml).expect("the operator's broker config");
    let credentials = pod_dir.join("credentials");
    let links = pod_dir.join("links");
    config.node.name = name.clone();
    config.node.name_from_env = None;
    config.listeners.retain(|l| l.name == "mqtt");
    for listener in &mut config.listeners {
        listener.bind = ports.at(ports.mqtt);
    }
    config.admin.bind = ports.at(ports.admin);
    config.admin.token_file = Some(credentials.join("admin-token"));
    config.auth.password_file = Some(credentials.join("passwd"));
    config.persistence.data_dir = Some(pod_dir.join("data"));
    config.cluster.bind = Some(ports.at(ports.cluster));
    config.cluster.secret_file = Some(credentials.join("cluster-secret"));
    config.cluster.dns = None;
    config.cluster.peers = (0..replicas)
        .map(|i| format!("{cluster}-{i}"))
        .filter(|peer| *peer != name)
        .map(|peer| {
            let ports = nodes.ports(&format!("{namespace}/{peer}"));
            ports.at(ports.cluster).to_string()
        })
        .collect();
    if let Some(listener) = &mut config.link_listener {
        listener.bind = ports.at(ports.link);
        listener.credentials_file = links.join("credentials");
    }
    config.links_file = Some(links.join("links.yaml"));
    let file = pod_dir.join("strait.yaml");
    std::fs::write(&file, serde_yaml::to_string(&config).ok()?).ok()?;
    let config = match Config::load(&file) {
        Ok(config) => config,
        Err(error) => panic!("{namespace}/{name}: the broker refuses its configuration: {error}"),
    };
    let server = match Server::start(config).await {
        Ok(server) => server,
        Err(error) => {
            eprintln!("{namespace}/{name}: the broker did not start: {error}");
            return None;
        }
    };
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let status = json!({"status": {
        "phase": "Running",
        "podIP": ports.ip.to_string(),
        "podIPs": [{"ip": ports.ip.to_string()}],
        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}],
    }});
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    if pods
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .is_err()
    {
        server.shutdown().await;
        return None;
    }
    Some(Running {
        uid: pod.uid()?,
        server,
        dir: pod_dir,
        cluster,
    })
}

/// Writes the cluster's credentials and links Secrets into the pod's
/// folders, as a kubelet updates Secret volumes (only what changed, each
/// file replaced at once). `false` while the credentials Secret is missing.
fn sync_files(secrets: &BTreeMap<String, Secret>, cluster: &str, pod_dir: &Path) -> bool {
    let Some(credentials) = secrets.get(&format!("{cluster}-credentials")) else {
        return false;
    };
    write_volume(&pod_dir.join("credentials"), credentials);
    // Optional, as the pod template mounts it.
    let links = secrets
        .get(&format!("{cluster}-links"))
        .cloned()
        .unwrap_or_default();
    write_volume(&pod_dir.join("links"), &links);
    true
}

fn write_volume(dir: &Path, secret: &Secret) {
    std::fs::create_dir_all(dir).expect("volume folder");
    let data = secret.data.clone().unwrap_or_default();
    for (key, value) in &data {
        let path = dir.join(key);
        if std::fs::read(&path).is_ok_and(|old| old == value.0) {
            continue;
        }
        let temporary = dir.join(format!(".{key}.new"));
        std::fs::write(&temporary, &value.0).expect("write a volume file");
        std::fs::rename(&temporary, &path).expect("replace a volume file");
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') && !data.contains_key(&name) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}
