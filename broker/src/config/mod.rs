//! Typed broker configuration: the one format the operator renders and the broker parses.
//!
//! Every field has a default, so an empty file (or no file) is a working
//! single-node broker on loopback. [`Config::validate`] refuses combinations that
//! would be unsafe, such as anonymous access on a non-loopback listener.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod link;
pub use link::{LinkConfig, LinkListenerConfig, LinkQueueConfig, LinkSet, LinkTlsConfig, WhenFull};

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot parse {path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_yaml::Error,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The whole broker configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// This node's identity within its cluster.
    pub node: NodeConfig,
    /// Client-facing listeners; MQTT 3.1.1 and 5.0 share each one.
    pub listeners: Vec<ListenerConfig>,
    /// The admin HTTP endpoint: health, readiness, metrics.
    pub admin: AdminConfig,
    pub auth: AuthConfig,
    pub limits: Limits,
    pub persistence: PersistenceConfig,
    /// `$SYS/` statistics topics.
    pub sys: SysConfig,
    /// The mesh with the other nodes of this cluster; off (one node) by default.
    pub cluster: ClusterConfig,
    /// Where other clusters' links connect; unset: this node only dials.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_listener: Option<LinkListenerConfig>,
    /// Links to other clusters (see `link/`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<LinkConfig>,
    /// A file holding more links as a link set (`{revision, links}`, the
    /// body of `PUT /api/v1/links`), read at start. The operator keeps a
    /// cluster's link set there, apart from the static configuration, so
    /// that a link coming or going never rolls the pods; a file that does
    /// not exist (yet) adds no links.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub links_file: Option<PathBuf>,
    /// The revision the links file names, shown by `GET /api/v1/links`.
    #[serde(skip)]
    pub links_revision: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node: NodeConfig::default(),
            listeners: vec![ListenerConfig::default()],
            admin: AdminConfig::default(),
            auth: AuthConfig::default(),
            limits: Limits::default(),
            persistence: PersistenceConfig::default(),
            sys: SysConfig::default(),
            cluster: ClusterConfig::default(),
            link_listener: None,
            links: Vec::new(),
            links_file: None,
            links_revision: None,
        }
    }
}

/// Identity of this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeConfig {
    /// The cluster this node belongs to; unique among linked clusters.
    pub cluster: String,
    /// This node's name within the cluster (the pod name on Kubernetes).
    pub name: String,
    /// An environment variable that, when set, overrides `name` at load time:
    /// the pods of a StatefulSet share one configuration file, so each reads
    /// its own name from the environment (the operator renders `POD_NAME`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name_from_env: Option<String>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            cluster: "strait".into(),
            name: "strait-0".into(),
            name_from_env: None,
        }
    }
}

/// The transport a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ListenerProtocol {
    /// MQTT over TCP (or TLS).
    #[default]
    Mqtt,
    /// MQTT over WebSocket, subprotocol `mqtt` (or over TLS: wss).
    Websocket,
}

/// One client-facing listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct ListenerConfig {
    /// A name for logs and metrics.
    pub name: String,
    pub bind: SocketAddr,
    pub protocol: ListenerProtocol,
    /// Serve TLS on this listener.
    pub tls: Option<TlsConfig>,
    /// HTTP path for WebSocket upgrades; ignored for plain MQTT.
    pub path: String,
    /// What this listener's publishers meet when a subscriber's queue is
    /// full; unset follows `limits.queueFullPolicy`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_full_policy: Option<QueueFullPolicy>,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            name: "mqtt".into(),
            bind: SocketAddr::from(([127, 0, 0, 1], 1883)),
            protocol: ListenerProtocol::Mqtt,
            tls: None,
            path: "/mqtt".into(),
            queue_full_policy: None,
        }
    }
}

/// TLS material for a listener (PEM files).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// CA bundle to verify client certificates against.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// Refuse clients without a certificate signed by `client_ca_file`.
    #[serde(default)]
    pub require_client_cert: bool,
    /// Use the client certificate's common name as the MQTT username.
    #[serde(default)]
    pub use_cert_cn_as_username: bool,
}

/// The admin HTTP endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminConfig {
    pub bind: SocketAddr,
    /// File holding the bearer token that guards the admin API (not the probes
    /// or metrics). Without it the admin API is only served on loopback.
    pub token_file: Option<PathBuf>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            token_file: None,
        }
    }
}

/// Authentication and authorisation of clients.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthConfig {
    /// Allow clients without credentials. Unset means: only when every
    /// listener is bound to loopback. Set it to `true` explicitly to allow
    /// anonymous access on other addresses.
    pub allow_anonymous: Option<bool>,
    /// Credentials file: one `username:<PHC argon2 hash>` per line
    /// (`strait-broker passwd` writes them).
    pub password_file: Option<PathBuf>,
    /// Access rules; without any, every authenticated client may publish and
    /// subscribe anywhere.
    pub acl: Vec<AclRule>,
}

/// One access rule. `%u` and `%c` in filters stand for the username and client id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AclRule {
    /// The username the rule applies to; `*` for everyone (anonymous clients included).
    pub user: String,
    /// Whether the rule's filters are granted or refused. Rules are read in
    /// order and the first whose filter matches decides.
    #[serde(default)]
    pub permission: Permission,
    /// Topic filters the user may publish to.
    #[serde(default)]
    pub publish: Vec<String>,
    /// Topic filters the user may subscribe to (a subscription must be covered by one).
    #[serde(default)]
    pub subscribe: Vec<String>,
}

/// What an access rule does to the topics its filters match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Permission {
    #[default]
    Allow,
    Deny,
}

/// Resource limits; each is enforced with its MQTT reason code and counted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Limits {
    /// Concurrent client connections; more are refused with 0x97 / 0x89.
    pub max_connections: usize,
    /// Largest packet accepted (and announced to v5 clients), in bytes.
    pub max_packet_size: u32,
    /// QoS 1/2 messages in flight per client, each way (v5 receive maximum).
    pub max_inflight: u16,
    /// Messages queued per session while offline or beyond the inflight window.
    pub max_queued_messages: usize,
    /// What a publisher meets when a connected subscriber's queue is full
    /// (offline sessions always drop beyond their bound, counted).
    pub queue_full_policy: QueueFullPolicy,
    /// How long a publisher is held for a full queue before the subscriber
    /// counts as stalled and further messages for it are dropped (counted).
    pub backpressure_max_wait_ms: u64,
    /// Longest topic name or filter, in bytes.
    pub max_topic_length: usize,
    /// Most levels in a topic name or filter.
    pub max_topic_levels: usize,
    /// Topic aliases a v5 client may use towards the broker.
    pub topic_alias_maximum: u16,
    /// Longest session expiry granted, in seconds.
    pub max_session_expiry_secs: u32,
    /// Largest keepalive accepted; larger requests are lowered (v5 server keep alive).
    pub max_keep_alive_secs: u16,
    /// Time a new connection has to send CONNECT.
    pub connect_timeout_secs: u64,
}

/// What happens to a QoS 1/2 message whose connected subscriber's queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum QueueFullPolicy {
    /// Queue it anyway and stop reading from its publisher until the queue has
    /// room again (at most `backpressureMaxWaitMs`): an acknowledged message is
    /// never dropped for a subscriber that is still draining.
    #[default]
    Backpressure,
    /// Drop it for that subscriber, counted as
    /// `strait_messages_dropped_total{reason="queue_full"}`.
    Drop,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 100_000,
            max_packet_size: 1024 * 1024,
            max_inflight: 64,
            max_queued_messages: 1000,
            queue_full_policy: QueueFullPolicy::Backpressure,
            backpressure_max_wait_ms: 5000,
            max_topic_length: 65535,
            max_topic_levels: 128,
            topic_alias_maximum: 64,
            max_session_expiry_secs: u32::MAX,
            max_keep_alive_secs: 65535,
            connect_timeout_secs: 10,
        }
    }
}

/// Durable state: retained messages and persistent sessions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct PersistenceConfig {
    /// Where the store lives; unset keeps everything in memory.
    pub data_dir: Option<PathBuf>,
    /// How often changes are committed to disk; a crash loses at most this much.
    pub flush_interval_ms: u64,
}

impl Default for PersistenceConfig {
    fn default() -> Self {
        PersistenceConfig {
            data_dir: None,
            flush_interval_ms: 1000,
        }
    }
}

/// `$SYS/` statistics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct SysConfig {
    /// Seconds between updates; 0 turns `$SYS/` off.
    pub interval_secs: u64,
}

impl Default for SysConfig {
    fn default() -> Self {
        SysConfig { interval_secs: 10 }
    }
}

/// The mesh between the nodes of one cluster (see `cluster/`). Without
/// `bind` the node runs alone.
///
/// Every node dials every peer it knows of (a static list, DNS, or both) and
/// accepts the peers that dial it; the cluster secret authenticates both ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterConfig {
    /// Where this node accepts its peers' connections; unset turns the mesh off.
    pub bind: Option<SocketAddr>,
    /// File holding the shared cluster secret (required with `bind`). It is
    /// never sent: each handshake proves knowledge of it with a keyed hash
    /// over a fresh challenge.
    pub secret_file: Option<PathBuf>,
    /// Peers' cluster addresses as `host:port`; this node's own address may be
    /// listed too (it is recognised and skipped).
    pub peers: Vec<String>,
    /// Peers found by DNS, re-resolved periodically so scaling is followed.
    pub dns: Option<DnsDiscovery>,
    /// How often `peers` and `dns` are resolved again.
    pub discovery_interval_ms: u64,
    /// How often an idle peer connection sends a heartbeat.
    pub heartbeat_interval_ms: u64,
    /// Silence after which a peer connection is dropped and redialled; a node
    /// with no connection for this long is declared dead and its routes removed.
    pub peer_timeout_ms: u64,
    /// Largest pause between reconnect attempts (the backoff doubles up to it).
    pub max_backoff_ms: u64,
    /// Forwarded messages kept per peer until it acknowledges them, so a cut
    /// loses nothing; past it new messages for the peer are dropped and
    /// counted (route changes are always kept).
    pub max_pending_frames: usize,
    /// Lanes a node delivers a peer's forwarded messages in, in parallel (each
    /// publisher's messages keep their order in one lane); 0 picks half the
    /// cores, at most four.
    pub delivery_lanes: usize,
    /// Mutual TLS between nodes; plain TCP when unset.
    pub tls: Option<PeerTlsConfig>,
}

/// TLS between the nodes of a cluster: every node presents `certFile` and
/// accepts only peers whose certificate is signed by `caFile`, in both
/// directions. Peers are dialled by address, so each node's certificate must
/// carry `serverName` (for example `<name>-headless.<namespace>.svc`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerTlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub ca_file: PathBuf,
    pub server_name: String,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            bind: None,
            secret_file: None,
            peers: Vec::new(),
            dns: None,
            discovery_interval_ms: 5000,
            heartbeat_interval_ms: 500,
            peer_timeout_ms: 3000,
            max_backoff_ms: 2000,
            max_pending_frames: 100_000,
            delivery_lanes: 0,
            tls: None,
        }
    }
}

/// Peer discovery through DNS, typically the StatefulSet's headless Service
/// (`<name>-headless.<namespace>.svc`, with `publishNotReadyAddresses`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DnsDiscovery {
    /// The name whose A/AAAA records are the peers' addresses.
    pub name: String,
    /// The peers' cluster port.
    pub port: u16,
}

impl Config {
    /// Reads and validates a YAML configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config: Config =
            serde_yaml::from_str(&text).map_err(|source| ConfigError::Parse {
                path: path.to_owned(),
                source,
            })?;
        if let Some(Ok(name)) = config.node.name_from_env.as_deref().map(std::env::var) {
            config.node.name = name;
        }
        if let Some(file) = config.links_file.clone() {
            config.add_links_file(&file)?;
        }
        config.validate()?;
        Ok(config)
    }

    /// Adds the links of the link-set file at `path`, when it exists.
    fn add_links_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                tracing::info!(path = %path.display(), "no links file yet: no links from it");
                return Ok(());
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        let mut set: LinkSet =
            serde_yaml::from_str(&text).map_err(|source| ConfigError::Parse {
                path: path.to_owned(),
                source,
            })?;
        set.resolve_paths(path.parent().unwrap_or(Path::new(".")));
        self.links.extend(set.links);
        self.links_revision = set.revision;
        Ok(())
    }

    /// Whether clients without credentials are let in.
    pub fn anonymous_allowed(&self) -> bool {
        self.auth
            .allow_anonymous
            .unwrap_or_else(|| self.listeners.iter().all(|l| l.bind.ip().is_loopback()))
    }

    /// Refuses configurations that cannot work or would be unsafe.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |msg: String| Err(ConfigError::Invalid(msg));
        if self.listeners.is_empty() {
            return invalid("at least one listener is required".into());
        }
        // Port 0 asks the OS for any free port, so it never clashes.
        let clashes = |a: &SocketAddr, b: &SocketAddr| a == b && a.port() != 0;
        for (i, listener) in self.listeners.iter().enumerate() {
            let clash = self.listeners[..i]
                .iter()
                .find(|l| clashes(&l.bind, &listener.bind));
            if let Some(other) = clash {
                return invalid(format!(
                    "listeners {:?} and {:?} both bind {}",
                    other.name, listener.name, listener.bind
                ));
            }
            if clashes(&listener.bind, &self.admin.bind) {
                return invalid(format!(
                    "listener {:?} and the admin endpoint both bind {}",
                    listener.name, listener.bind
                ));
            }
            if let Some(tls) = &listener.tls {
                if tls.require_client_cert && tls.client_ca_file.is_none() {
                    return invalid(format!(
                        "listener {:?} requires client certificates but has no clientCaFile",
                        listener.name
                    ));
                }
            }
        }
        let open = self.listeners.iter().find(|l| !l.bind.ip().is_loopback());
        if let (Some(listener), None) = (open, self.auth.allow_anonymous) {
            if self.auth.password_file.is_none() {
                return invalid(format!(
                    "listener {:?} binds non-loopback address {} with no passwordFile; \
                     set auth.passwordFile, or auth.allowAnonymous: true to allow anonymous clients",
                    listener.name, listener.bind
                ));
            }
        }
        let limits = &self.limits;
        if limits.max_packet_size < 16 {
            return invalid("limits.maxPacketSize must be at least 16 bytes".into());
        }
        if limits.max_inflight == 0 {
            return invalid("limits.maxInflight must be at least 1".into());
        }
        if limits.max_queued_messages == 0 {
            // Nothing could ever be queued: every message would be dropped,
            // or every publisher held until it gave up.
            return invalid("limits.maxQueuedMessages must be at least 1".into());
        }
        if limits.backpressure_max_wait_ms == 0 {
            return invalid("limits.backpressureMaxWaitMs must be at least 1".into());
        }
        if limits.max_connections == 0 {
            return invalid("limits.maxConnections must be at least 1".into());
        }
        if limits.max_topic_levels == 0 || limits.max_topic_length == 0 {
            return invalid("limits.maxTopicLength and maxTopicLevels must be at least 1".into());
        }
        if self.persistence.flush_interval_ms == 0 {
            return invalid("persistence.flushIntervalMs must be at least 1".into());
        }
        self.validate_cluster()?;
        self.validate_links()
    }

    fn validate_links(&self) -> Result<(), ConfigError> {
        if let Some(listener) = &self.link_listener {
            let taken = self.listeners.iter().any(|l| l.bind == listener.bind)
                || self.admin.bind == listener.bind
                || self.cluster.bind == Some(listener.bind);
            if taken && listener.bind.port() != 0 {
                return Err(ConfigError::Invalid(format!(
                    "linkListener.bind {} clashes with a listener, the admin or the cluster endpoint",
                    listener.bind
                )));
            }
        }
        link::validate(&self.node.cluster, self.link_listener.as_ref(), &self.links)
            .map_err(ConfigError::Invalid)
    }

    fn validate_cluster(&self) -> Result<(), ConfigError> {
        let invalid = |msg: &str| Err(ConfigError::Invalid(format!("cluster: {msg}")));
        let cluster = &self.cluster;
        let Some(bind) = cluster.bind else {
            if !cluster.peers.is_empty() || cluster.dns.is_some() {
                return invalid("peers or dns are set but bind is not");
            }
            return Ok(());
        };
        if cluster.secret_file.is_none() {
            return invalid("secretFile is required: peers must authenticate");
        }
        if self
            .listeners
            .iter()
            .any(|l| l.bind == bind && bind.port() != 0)
            || (self.admin.bind == bind && bind.port() != 0)
        {
            return invalid("bind clashes with a listener or the admin endpoint");
        }
        if cluster.heartbeat_interval_ms == 0
            || cluster.peer_timeout_ms <= cluster.heartbeat_interval_ms
        {
            return invalid("peerTimeoutMs must be longer than heartbeatIntervalMs (> 0)");
        }
        if cluster.max_backoff_ms == 0 || cluster.max_pending_frames == 0 {
            return invalid("maxBackoffMs and maxPendingFrames must be at least 1");
        }
        if cluster.dns.as_ref().is_some_and(|dns| dns.name.is_empty()) {
            return invalid("dns needs a name");
        }
        if cluster
            .tls
            .as_ref()
            .is_some_and(|tls| tls.server_name.is_empty())
        {
            return invalid("tls.serverName must name what every node certificate carries");
        }
        if cluster.discovery_interval_ms == 0 {
            return invalid("discoveryIntervalMs must be at least 1");
        }
        if self.node.name.is_empty() || self.node.cluster.is_empty() {
            return invalid("node.name and node.cluster must be set");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_a_loopback_broker_with_anonymous_access() {
        let config: Config = serde_yaml::from_str("{}").expect("parse");
        config.validate().expect("valid");
        assert_eq!(config, Config::default());
        assert!(config.anonymous_allowed());
    }

    #[test]
    fn non_loopback_listener_needs_credentials_or_explicit_anonymous() {
        let yaml = "listeners: [{bind: '0.0.0.0:1883'}]";
        let config: Config = serde_yaml::from_str(yaml).expect("parse");
        let err = config.validate().expect_err("must refuse");
        assert!(err.to_string().contains("allowAnonymous"), "{err}");

        let yaml = "listeners: [{bind: '0.0.0.0:1883'}]\nauth: {allowAnonymous: true}";
        let config: Config = serde_yaml::from_str(yaml).expect("parse");
        config.validate().expect("explicit anonymous is allowed");
        assert!(config.anonymous_allowed());

        let yaml = "listeners: [{bind: '0.0.0.0:1883'}]\nauth: {passwordFile: /etc/p}";
        let config: Config = serde_yaml::from_str(yaml).expect("parse");
        config.validate().expect("credentials make it safe");
        assert!(!config.anonymous_allowed());
    }

    #[test]
    fn clashing_binds_and_unknown_fields_are_refused() {
        let yaml =
            "listeners: [{name: a, bind: '127.0.0.1:1883'}, {name: b, bind: '127.0.0.1:1883'}]";
        let config: Config = serde_yaml::from_str(yaml).expect("parse");
        assert!(config.validate().is_err());
        assert!(serde_yaml::from_str::<Config>("listners: []").is_err());
    }

    #[test]
    fn limits_that_could_never_work_are_refused_naming_the_field() {
        for (limits, field) in [
            ("{maxQueuedMessages: 0}", "limits.maxQueuedMessages"),
            ("{backpressureMaxWaitMs: 0}", "limits.backpressureMaxWaitMs"),
            ("{maxInflight: 0}", "limits.maxInflight"),
        ] {
            let config: Config = serde_yaml::from_str(&format!("limits: {limits}")).expect("parse");
            let err = config.validate().expect_err(limits).to_string();
            assert!(err.contains(field), "{err}");
        }
        let config: Config =
            serde_yaml::from_str("limits: {queueFullPolicy: drop}").expect("parse");
        assert_eq!(config.limits.queue_full_policy, QueueFullPolicy::Drop);
        assert!(serde_yaml::from_str::<Config>("limits: {queueFullPolicy: block}").is_err());
    }

    #[test]
    fn name_from_env_overrides_the_node_name_at_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("strait.yaml");
        let var = "STRAIT_TEST_NODE_NAME_FROM_ENV";
        std::fs::write(
            &path,
            format!("node: {{name: fallback, nameFromEnv: {var}}}"),
        )
        .expect("write");
        std::env::set_var(var, "strait-2");
        let config = Config::load(&path).expect("load");
        assert_eq!(config.node.name, "strait-2");
        std::env::remove_var(var);
        assert_eq!(Config::load(&path).expect("load").node.name, "fallback");
    }

    #[test]
    fn a_cluster_needs_a_secret_and_sane_timings() {
        let parse = |yaml: &str| serde_yaml::from_str::<Config>(yaml).expect("parse");
        let base = "cluster: {bind: '127.0.0.1:7946', secretFile: /s";
        parse(&format!("{base}}}"))
            .validate()
            .expect("a minimal cluster");
        let refused = [
            "cluster: {bind: '127.0.0.1:7946'}".to_owned(),
            "cluster: {peers: ['a:1']}".to_owned(),
            format!("{base}, heartbeatIntervalMs: 500, peerTimeoutMs: 400}}"),
            format!("{base}, discoveryIntervalMs: 0}}"),
            format!("{base}, dns: {{name: '', port: 7946}}}}"),
            "cluster: {bind: '127.0.0.1:8080', secretFile: /s}\nadmin: {bind: '127.0.0.1:8080'}"
                .to_owned(),
        ];
        for yaml in refused {
            let err = parse(&yaml).validate().expect_err(&yaml);
            assert!(
                err.to_string()
                    .starts_with("invalid configuration: cluster:"),
                "{err}"
            );
        }
    }

    #[test]
    fn round_trips_through_yaml() {
        let mut config = Config::default();
        config.persistence.data_dir = Some("/var/lib/strait".into());
        config.cluster.bind = Some("0.0.0.0:7946".parse().expect("addr"));
        config.cluster.secret_file = Some("/etc/strait/cluster-secret".into());
        config.cluster.dns = Some(DnsDiscovery {
            name: "eu-headless.mqtt.svc".into(),
            port: 7946,
        });
        config.auth.acl.push(AclRule {
            user: "*".into(),
            permission: Permission::Deny,
            publish: vec!["devices/%c/#".into()],
            subscribe: vec!["#".into()],
        });
        let yaml = serde_yaml::to_string(&config).expect("render");
        let back: Config = serde_yaml::from_str(&yaml).expect("parse");
        assert_eq!(back, config);
    }
}
