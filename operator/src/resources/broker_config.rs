//! Renders the broker's configuration from the spec, with the broker's own
//! configuration types, so what the operator writes is what the broker parses.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use strait_broker::config::{
    AdminConfig, AuthConfig, ClusterConfig, Config, DnsDiscovery, Limits, LinkListenerConfig,
    ListenerConfig, ListenerProtocol, NodeConfig, PersistenceConfig, QueueFullPolicy, TlsConfig,
};

use super::credentials::CLUSTER_SECRET;
use super::links::{LINK_CREDENTIALS_KEY, LINK_SET_KEY};
use super::{names, ADMIN_PORT, CLUSTER_PORT};
use crate::crd::{MqttClusterSpec, QueueFullPolicySpec, TlsSpec};

/// How often each node resolves the headless Service again, so that the mesh
/// follows scaling within this time.
const PEER_DISCOVERY_INTERVAL_MS: u64 = 5000;

/// Where the pod template mounts what the configuration refers to.
#[derive(Debug, Clone, Copy)]
pub struct ConfigPaths;

impl ConfigPaths {
    /// Folder of the ConfigMap volume.
    pub const CONFIG_DIR: &'static str = "/etc/strait/config";
    /// Folder of the credentials Secret volume.
    pub const CREDENTIALS_DIR: &'static str = "/etc/strait/credentials";
    /// Folder of the links Secret volume: the link set, the credentials of
    /// the clusters that dial this one, and the secrets this one dials with.
    pub const LINKS_DIR: &'static str = "/etc/strait/links";
    /// Parent folder of one folder per TLS Secret, named after the Secret.
    pub const TLS_DIR: &'static str = "/etc/strait/tls";
    /// The broker's data folder (a PVC, or an emptyDir without persistence).
    pub const DATA_DIR: &'static str = "/var/lib/strait";
    /// Environment variable holding the pod's name, the node's name.
    pub const POD_NAME_ENV: &'static str = "POD_NAME";

    /// The folder a TLS Secret is mounted at.
    pub fn tls_dir(secret: &str) -> PathBuf {
        PathBuf::from(Self::TLS_DIR).join(secret)
    }
}

/// The broker configuration every node of the cluster `cluster_name` (in
/// `namespace`) runs. The nodes find each other through the headless
/// Service, which lists every pod, ready or not.
pub fn broker_config(cluster_name: &str, namespace: &str, spec: &MqttClusterSpec) -> Config {
    let l = &spec.listeners;
    let mut listeners = Vec::new();
    if l.mqtt.enabled {
        listeners.push(listener("mqtt", l.mqtt.port, ListenerProtocol::Mqtt, None));
    }
    if l.mqtts.enabled {
        listeners.push(listener(
            "mqtts",
            l.mqtts.port,
            ListenerProtocol::Mqtt,
            l.mqtts.tls.as_ref(),
        ));
    }
    if l.websocket.enabled {
        let mut ws = listener(
            "websocket",
            l.websocket.port,
            ListenerProtocol::Websocket,
            l.websocket.tls.as_ref(),
        );
        ws.path = l.websocket.path.clone();
        listeners.push(ws);
    }
    let credentials = PathBuf::from(ConfigPaths::CREDENTIALS_DIR);
    Config {
        node: NodeConfig {
            cluster: cluster_name.to_owned(),
            name: format!("{cluster_name}-0"),
            name_from_env: Some(ConfigPaths::POD_NAME_ENV.to_owned()),
        },
        listeners,
        admin: AdminConfig {
            bind: any_addr(ADMIN_PORT),
            token_file: Some(credentials.join("admin-token")),
        },
        auth: AuthConfig {
            allow_anonymous: Some(spec.auth.allow_anonymous),
            password_file: Some(credentials.join("passwd")),
            acl: Vec::new(),
        },
        limits: limits(spec),
        persistence: PersistenceConfig {
            data_dir: Some(PathBuf::from(ConfigPaths::DATA_DIR)),
            ..PersistenceConfig::default()
        },
        cluster: mesh(cluster_name, namespace, &credentials),
        link_listener: Some(LinkListenerConfig {
            bind: any_addr(l.link.port),
            credentials_file: PathBuf::from(ConfigPaths::LINKS_DIR).join(LINK_CREDENTIALS_KEY),
            tls: l.link.tls.as_ref().map(tls_config),
        }),
        links_file: Some(PathBuf::from(ConfigPaths::LINKS_DIR).join(LINK_SET_KEY)),
        ..Config::default()
    }
}

/// The mesh between the nodes: every node listens on [`CLUSTER_PORT`] and
/// dials the addresses the headless Service's name resolves to.
fn mesh(cluster_name: &str, namespace: &str, credentials_dir: &Path) -> ClusterConfig {
    let headless = names(cluster_name).headless_service;
    ClusterConfig {
        bind: Some(any_addr(CLUSTER_PORT)),
        secret_file: Some(credentials_dir.join(CLUSTER_SECRET)),
        dns: Some(DnsDiscovery {
            name: format!("{headless}.{namespace}.svc"),
            port: port(CLUSTER_PORT),
        }),
        discovery_interval_ms: PEER_DISCOVERY_INTERVAL_MS,
        ..ClusterConfig::default()
    }
}

fn any_addr(port_number: i32) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::UNSPECIFIED, port(port_number)))
}

fn port(number: i32) -> u16 {
    // Ports are validated to 1..=65535 before anything is built.
    u16::try_from(number).unwrap_or_default()
}

fn listener(
    name: &str,
    port: i32,
    protocol: ListenerProtocol,
    tls: Option<&TlsSpec>,
) -> ListenerConfig {
    ListenerConfig {
        name: name.to_owned(),
        bind: any_addr(port),
        protocol,
        tls: tls.map(tls_config),
        ..ListenerConfig::default()
    }
}

/// A listener's TLS, from the Secret mounted at its folder.
fn tls_config(tls: &TlsSpec) -> TlsConfig {
    let dir = ConfigPaths::tls_dir(&tls.certificate_secret);
    TlsConfig {
        cert_file: dir.join("tls.crt"),
        key_file: dir.join("tls.key"),
        client_ca_file: tls.require_client_cert.then(|| dir.join("ca.crt")),
        require_client_cert: tls.require_client_cert,
        use_cert_cn_as_username: false,
    }
}

/// The spec's limits over the broker's defaults. Values are range-checked by
/// validation first; a value that still does not fit keeps the default.
fn limits(spec: &MqttClusterSpec) -> Limits {
    fn set<T: TryFrom<i64>>(target: &mut T, value: Option<i64>) {
        if let Some(v) = value.and_then(|v| T::try_from(v).ok()) {
            *target = v;
        }
    }
    let s = &spec.limits;
    let mut limits = Limits::default();
    set(&mut limits.max_connections, s.max_connections);
    set(&mut limits.max_packet_size, s.max_packet_size);
    set(&mut limits.max_inflight, s.max_inflight);
    set(&mut limits.max_queued_messages, s.max_queued_messages);
    if let Some(policy) = s.queue_full_policy {
        limits.queue_full_policy = match policy {
            QueueFullPolicySpec::Backpressure => QueueFullPolicy::Backpressure,
            QueueFullPolicySpec::Drop => QueueFullPolicy::Drop,
        };
    }
    set(
        &mut limits.backpressure_max_wait_ms,
        s.backpressure_max_wait_ms,
    );
    set(
        &mut limits.max_session_expiry_secs,
        s.max_session_expiry_secs,
    );
    set(&mut limits.max_keep_alive_secs, s.max_keep_alive_secs);
    limits
}
