//! The `MqttCluster` resource: what a user sets to run one broker cluster.
//!
//! Doc comments on fields become the CRD's field descriptions, and the
//! `schemars` attributes become its OpenAPI validation. The same rules are
//! checked again by [`crate::validate`], because a server may not run every
//! schema rule (CEL, for one, is unknown to Kubernetes 1.20).

use k8s_openapi::api::core::v1::{
    Affinity, EnvVar, LocalObjectReference, ResourceRequirements, Toleration,
    TopologySpreadConstraint,
};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::status::MqttClusterStatus;

/// Pattern of a container image reference (`[registry/]path[:tag][@digest]`),
/// shared by the CRD schema and the operator's own validation.
pub const IMAGE_PATTERN: &str = r"^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$";

/// Pattern of a Kubernetes object name (DNS-1123 subdomain, the form Secret names take).
pub const NAME_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// Pattern of a volume size (a Kubernetes quantity).
pub const QUANTITY_PATTERN: &str = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$";

/// Desired state of a Strait broker cluster.
// Clippy reads the repeated `printcolumn(type_ = ...)` keys as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "strait.dev",
    version = "v1alpha1",
    kind = "MqttCluster",
    namespaced,
    status = "MqttClusterStatus",
    shortname = "mqc",
    category = "strait",
    doc = "A cluster of Strait MQTT brokers, run as a StatefulSet.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#
    ),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(
        name = "Ready Replicas",
        type_ = "integer",
        json_path = ".status.readyReplicas"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Message",
        type_ = "string",
        priority = "1",
        json_path = r#".status.conditions[?(@.type=="Ready")].message"#
    )
)]
#[serde(rename_all = "camelCase")]
pub struct MqttClusterSpec {
    /// Number of broker nodes.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 100))]
    pub replicas: i32,
    /// Broker container image; the operator's configured default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(IMAGE_PATTERN))]
    pub image: Option<String>,
    /// When the kubelet pulls the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_pull_policy")]
    pub image_pull_policy: Option<PullPolicy>,
    /// Secrets (of type `kubernetes.io/dockerconfigjson`) the kubelet
    /// pulls the image with, from a private registry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// Additions to the broker pods: labels, annotations, environment and
    /// priority class. What the operator sets itself cannot be overridden.
    #[serde(default)]
    pub pod_template: PodTemplateSpec,
    /// Client-facing listeners and the link listener.
    #[serde(default)]
    pub listeners: ListenersSpec,
    /// Who may connect.
    #[serde(default)]
    pub auth: AuthSpec,
    /// Broker limits; unset ones keep the broker's defaults.
    #[serde(default)]
    pub limits: LimitsSpec,
    /// Durable storage for retained messages and sessions.
    #[serde(default)]
    pub persistence: PersistenceSpec,
    /// CPU and memory of the broker container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Where the broker pods run.
    #[serde(default)]
    pub scheduling: SchedulingSpec,
    /// The PodDisruptionBudget that keeps voluntary evictions from taking down the cluster.
    #[serde(default)]
    pub pod_disruption_budget: PodDisruptionBudgetSpec,
    /// Stop reconciling this cluster: its children are left exactly as they are.
    #[serde(default)]
    pub paused: bool,
}

fn default_replicas() -> i32 {
    3
}

/// Image pull policy of the broker container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

/// The schema of an optional [`PullPolicy`] (see [`super::nullable_enum`]).
fn optional_pull_policy(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    super::nullable_enum(&["Always", "IfNotPresent", "Never"])
}

impl PullPolicy {
    /// The value Kubernetes expects in a container's `imagePullPolicy`.
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// The broker's listeners. Every enabled listener needs its own port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListenersSpec {
    /// Plain MQTT over TCP.
    #[serde(default = "PlainListenerSpec::mqtt")]
    pub mqtt: PlainListenerSpec,
    /// MQTT over TLS.
    #[serde(default = "TlsListenerSpec::mqtts")]
    pub mqtts: TlsListenerSpec,
    /// MQTT over WebSocket.
    #[serde(default)]
    pub websocket: WebSocketListenerSpec,
    /// The listener other Strait clusters connect to over a ClusterLink.
    #[serde(default)]
    pub link: LinkListenerSpec,
}

impl Default for ListenersSpec {
    fn default() -> Self {
        ListenersSpec {
            mqtt: PlainListenerSpec::mqtt(),
            mqtts: TlsListenerSpec::mqtts(),
            websocket: WebSocketListenerSpec::default(),
            link: LinkListenerSpec::default(),
        }
    }
}

/// A plain TCP listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlainListenerSpec {
    /// Serve this listener.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Container and Service port.
    #[serde(default = "default_mqtt_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}

fn default_mqtt_port() -> i32 {
    1883
}

impl PlainListenerSpec {
    fn mqtt() -> Self {
        PlainListenerSpec {
            enabled: true,
            port: default_mqtt_port(),
        }
    }
}

/// A listener that serves TLS with a certificate from a Secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsListenerSpec {
    /// Serve this listener.
    #[serde(default)]
    pub enabled: bool,
    /// Container and Service port.
    #[serde(default = "default_mqtts_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// TLS settings; required when the listener is enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
}

impl TlsListenerSpec {
    fn mqtts() -> Self {
        TlsListenerSpec {
            enabled: false,
            port: default_mqtts_port(),
            tls: None,
        }
    }
}

fn default_mqtts_port() -> i32 {
    8883
}

/// Where a listener's certificate comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// A Secret in the cluster's namespace holding `tls.crt` and `tls.key`
    /// (and `ca.crt` when client certificates are required).
    #[schemars(length(min = 1, max = 253), pattern(NAME_PATTERN))]
    pub certificate_secret: String,
    /// Refuse clients without a certificate signed by the Secret's `ca.crt`.
    #[serde(default)]
    pub require_client_cert: bool,
}

/// MQTT over WebSocket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebSocketListenerSpec {
    /// Serve this listener.
    #[serde(default)]
    pub enabled: bool,
    /// Container and Service port.
    #[serde(default = "default_websocket_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// HTTP path of the WebSocket upgrade.
    #[serde(default = "default_websocket_path")]
    #[schemars(pattern(r"^/[A-Za-z0-9._~/-]*$"))]
    pub path: String,
    /// Serve wss:// with this certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
}

impl Default for WebSocketListenerSpec {
    fn default() -> Self {
        WebSocketListenerSpec {
            enabled: false,
            port: default_websocket_port(),
            path: default_websocket_path(),
            tls: None,
        }
    }
}

fn default_websocket_port() -> i32 {
    8083
}

fn default_websocket_path() -> String {
    "/mqtt".into()
}

/// The listener peer clusters connect to; always served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LinkListenerSpec {
    /// Container and Service port.
    #[serde(default = "default_link_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Serve the link listener over TLS with this certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    /// How the link Service is reached: from other regions, make it a
    /// `LoadBalancer` (or `NodePort`).
    #[serde(default)]
    pub service: LinkServiceSpec,
}

impl Default for LinkListenerSpec {
    fn default() -> Self {
        LinkListenerSpec {
            port: default_link_port(),
            tls: None,
            service: LinkServiceSpec::default(),
        }
    }
}

/// The link Service (`<cluster>-link`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LinkServiceSpec {
    /// `ClusterIP` (the default: same Kubernetes only), `LoadBalancer` or `NodePort`.
    #[serde(default, rename = "type")]
    pub type_: LinkServiceType,
    /// Annotations of the Service, such as a cloud load balancer's settings.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// The node port, for `NodePort` and `LoadBalancer`; allocated when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 30000, max = 32767))]
    pub node_port: Option<i32>,
    /// Client addresses a `LoadBalancer` lets in (CIDRs); all when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub load_balancer_source_ranges: Vec<String>,
}

/// Kinds of link Service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum LinkServiceType {
    #[default]
    ClusterIP,
    LoadBalancer,
    NodePort,
}

impl LinkServiceType {
    /// The value of a Service's `spec.type`.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkServiceType::ClusterIP => "ClusterIP",
            LinkServiceType::LoadBalancer => "LoadBalancer",
            LinkServiceType::NodePort => "NodePort",
        }
    }
}

fn default_link_port() -> i32 {
    7883
}

/// Client authentication.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// Let clients in without credentials. Off unless set here.
    #[serde(default)]
    pub allow_anonymous: bool,
    /// Secrets holding users: a key (default `passwd`) with one
    /// `username:password` line per user, the password in plain text (the
    /// operator hashes it) or as the Argon2 hash `strait-broker passwd USER`
    /// prints. Edits are picked up without restarting the pods. When none is
    /// named, the operator generates the user `strait`, whose password is in
    /// the Secret `status.defaultUserSecret` names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<UsersSecretRef>,
}

/// A Secret holding credentials-file lines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsersSecretRef {
    /// Name of the Secret in the cluster's namespace.
    #[schemars(length(min = 1, max = 253), pattern(NAME_PATTERN))]
    pub secret_name: String,
    /// Key of the Secret that holds the lines.
    #[serde(default = "default_users_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_users_key() -> String {
    "passwd".into()
}

/// Broker limits; each unset one keeps the broker's default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LimitsSpec {
    /// Concurrent client connections per node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10_000_000))]
    pub max_connections: Option<i64>,
    /// Largest packet accepted, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 16, max = 268_435_455))]
    pub max_packet_size: Option<i64>,
    /// QoS 1/2 messages in flight per client, each way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub max_inflight: Option<i64>,
    /// Messages queued per session (offline sessions drop beyond it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10_000_000))]
    pub max_queued_messages: Option<i64>,
    /// What a publisher meets when a connected subscriber's queue is full:
    /// `Backpressure` (the default) holds it until there is room, `Drop`
    /// drops the message for that subscriber (counted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_queue_full_policy")]
    pub queue_full_policy: Option<QueueFullPolicySpec>,
    /// Longest a publisher is held for a full queue, in milliseconds; then
    /// the subscriber counts as stalled and drops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3_600_000))]
    pub backpressure_max_wait_ms: Option<i64>,
    /// Longest session expiry granted, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 4_294_967_295_i64))]
    pub max_session_expiry_secs: Option<i64>,
    /// Largest keepalive accepted, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub max_keep_alive_secs: Option<i64>,
}

/// What a full subscriber queue does to its publishers (see the broker's
/// `limits.queueFullPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum QueueFullPolicySpec {
    Backpressure,
    Drop,
}

/// The schema of an optional [`QueueFullPolicySpec`] (see [`super::nullable_enum`]).
fn optional_queue_full_policy(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    super::nullable_enum(&["Backpressure", "Drop"])
}

/// Durable storage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PersistenceSpec {
    /// Keep state on a PersistentVolumeClaim per node; off keeps it on an
    /// emptyDir that lives as long as the pod.
    #[serde(default)]
    pub enabled: bool,
    /// Size of each node's volume.
    #[serde(default = "default_volume_size")]
    #[schemars(pattern(QUANTITY_PATTERN))]
    pub size: String,
    /// Storage class of the volumes; the cluster's default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

impl Default for PersistenceSpec {
    fn default() -> Self {
        PersistenceSpec {
            enabled: false,
            size: default_volume_size(),
            storage_class_name: None,
        }
    }
}

fn default_volume_size() -> String {
    "1Gi".into()
}

/// Where the broker pods run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchedulingSpec {
    /// Node labels a node must have.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Taints the pods tolerate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Node and pod affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// How pods spread over failure domains. Unset spreads them over zones
    /// (best effort); an empty list turns spreading off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,
}

/// Additions to the broker pods' template, for what a platform expects of
/// every pod: labels and annotations its tooling reads, environment such as
/// a proxy or a log filter, a priority class.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplateSpec {
    /// Labels of the pods, beside the operator's own `app.kubernetes.io/*`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations of the pods, beside the operator's own `strait.dev/*`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Environment variables of the broker container (`RUST_LOG` sets its
    /// log filter), beside the operator's own `POD_NAME`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// The PriorityClass of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(NAME_PATTERN))]
    pub priority_class_name: Option<String>,
}

/// The cluster's PodDisruptionBudget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodDisruptionBudgetSpec {
    /// Create the PodDisruptionBudget.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Nodes that may be down at once for voluntary disruptions.
    #[serde(default = "default_max_unavailable")]
    #[schemars(range(min = 1, max = 100))]
    pub max_unavailable: i32,
}

impl Default for PodDisruptionBudgetSpec {
    fn default() -> Self {
        PodDisruptionBudgetSpec {
            enabled: true,
            max_unavailable: default_max_unavailable(),
        }
    }
}

fn default_max_unavailable() -> i32 {
    1
}

fn yes() -> bool {
    true
}
