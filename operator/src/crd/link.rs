//! The `ClusterLink` resource: which topic filters flow between two
//! clusters, and how the two ends reach and trust each other.
//!
//! As for `MqttCluster`, field doc comments become the CRD's descriptions
//! and the `schemars` attributes its validation; [`crate::validate::link`]
//! checks the same rules again, and the ones a schema cannot express.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::NAME_PATTERN;

/// Pattern of an endpoint a link dials: `host:port`, an IPv6 host in brackets.
pub const ENDPOINT_PATTERN: &str =
    r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?):[0-9]{1,5}$";

/// Pattern of a topic filter a link may carry: not empty, and not under `$`
/// (`$SYS` and other broker-internal topics never cross).
pub const LINK_FILTER_PATTERN: &str = r"^[^$]";

/// Desired state of a link between the local `MqttCluster` and a peer.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "strait.dev",
    version = "v1alpha1",
    kind = "ClusterLink",
    namespaced,
    status = "ClusterLinkStatus",
    shortname = "clink",
    category = "strait",
    doc = "Which topic filters flow between two Strait clusters, one way or both.",
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.cluster"),
    printcolumn(name = "Peer", type_ = "string", json_path = ".status.peer"),
    printcolumn(
        name = "Connected",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Connected")].status"#
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Queued",
        type_ = "integer",
        priority = "1",
        json_path = ".status.queuedMessages"
    ),
    printcolumn(
        name = "Message",
        type_ = "string",
        priority = "1",
        json_path = r#".status.conditions[?(@.type=="Ready")].message"#
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterLinkSpec {
    /// The local `MqttCluster`, in this namespace.
    #[schemars(length(min = 1, max = 63), pattern(NAME_PATTERN))]
    pub cluster: String,
    /// The other end: exactly one of `clusterRef` and `remote`.
    pub peer: PeerSpec,
    /// Filters whose messages may flow from the local cluster to the peer
    /// (when someone there subscribes to them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 256),
        inner(length(min = 1, max = 65535), pattern(LINK_FILTER_PATTERN))
    )]
    pub export: Vec<String>,
    /// Filters whose messages the local cluster accepts from the peer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 256),
        inner(length(min = 1, max = 65535), pattern(LINK_FILTER_PATTERN))
    )]
    pub import: Vec<String>,
    /// What each end keeps for the other while the link is down or slow.
    #[serde(default)]
    pub queue: LinkQueueSpec,
    /// Clusters a message or an advertisement may cross, at most.
    #[serde(default = "default_max_hops")]
    #[schemars(range(min = 1, max = 32))]
    pub max_hops: i32,
    /// Take the link out of the brokers' configuration (both ends) while
    /// keeping its credentials; unpausing puts it back.
    #[serde(default)]
    pub paused: bool,
}

fn default_max_hops() -> i32 {
    8
}

/// The other end of a link.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("oneOf" = [{"required": ["clusterRef"]}, {"required": ["remote"]}]))]
pub struct PeerSpec {
    /// A cluster in this Kubernetes: both ends are wired from this resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_ref: Option<ClusterRef>,
    /// A cluster elsewhere (another region, another Kubernetes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<RemoteSpec>,
}

/// An `MqttCluster` in this Kubernetes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRef {
    #[schemars(length(min = 1, max = 63), pattern(NAME_PATTERN))]
    pub name: String,
    /// Its namespace; the link's own when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), pattern(NAME_PATTERN))]
    pub namespace: Option<String>,
}

/// A cluster elsewhere: this side dials it (`endpoints`, `credentialsSecret`)
/// or only accepts its connection (`accept: true`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RemoteSpec {
    /// The remote cluster's name, as its brokers know it (its `MqttCluster`'s name).
    #[schemars(length(min = 1, max = 63), pattern(NAME_PATTERN))]
    pub cluster_name: String,
    /// Where the remote's link listener is, as `host:port`; unset takes the
    /// `endpoints` key of the credentials Secret.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(pattern(ENDPOINT_PATTERN)))]
    pub endpoints: Vec<String>,
    /// Dialling: the Secret the remote's accepting side issued (keys
    /// `username`, `password`, and optionally `endpoints`, `ca.crt`), copied
    /// here. Accepting: an existing Secret to use instead of issuing one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(NAME_PATTERN))]
    pub credentials_secret: Option<String>,
    /// Dial over TLS, trusting this CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<RemoteTlsSpec>,
    /// Only accept the remote's connection (it dials: an edge behind NAT);
    /// the credentials Secret it needs is issued here.
    #[serde(default)]
    pub accept: bool,
}

/// TLS towards a remote cluster's link listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RemoteTlsSpec {
    /// A Secret with the CA bundle under `ca.crt`; unset takes `ca.crt` from
    /// the credentials Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(NAME_PATTERN))]
    pub ca_secret: Option<String>,
    /// The name the remote's certificate must carry.
    #[schemars(length(min = 1, max = 253))]
    pub server_name: String,
}

/// Bounds of what a link keeps for the other end; unset ones keep the broker's defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LinkQueueSpec {
    /// Messages queued, at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100_000_000))]
    pub max_messages: Option<i64>,
    /// Bytes queued, at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 68_719_476_736_i64))]
    pub max_bytes: Option<i64>,
    /// How long a message may wait, in seconds; unset: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 31_536_000))]
    pub message_ttl_secs: Option<i64>,
    /// What a full queue does with another message (counted either way).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_when_full")]
    pub when_full: Option<WhenFullSpec>,
}

/// What a full link queue drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum WhenFullSpec {
    DropNew,
    DropOldest,
}

/// The schema of an optional [`WhenFullSpec`] (see [`super::nullable_enum`]).
fn optional_when_full(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    super::nullable_enum(&["DropNew", "DropOldest"])
}

/// Observed state of a `ClusterLink`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterLinkStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The peer cluster's name, as the brokers know it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// The Secret holding the credentials the dialling side proves: issued
    /// here (for a same-Kubernetes peer or an accepting side) or imported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
    /// Where the peer dials this side (`host:port`), when it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_endpoint: Option<String>,
    /// The revision of the local cluster's link set the brokers should run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Each ready node of either end: the link-set revision it runs and the
    /// link's state there.
    // Always written, even empty: a server-side apply that leaves out every
    // item it applied before stores `null` (kubernetes/kubernetes#104694),
    // which the schema refuses, so a link whose nodes all went unready could
    // not report it.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub nodes: Vec<NodeLinkStatus>,
    /// Messages queued for the peer, as of the last status write (the
    /// operator's metrics have it live).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_messages: Option<i64>,
    /// `Ready` sums up `CredentialsReady`, `Configured`, `Connected` and
    /// `InterestSynced`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// One broker node as the link sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeLinkStatus {
    /// `namespace/pod`.
    pub name: String,
    /// The link-set revision the node runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// `connected`, `elsewhere` (another node holds the connection),
    /// `connecting`, `waiting` (for the peer to dial), `absent` (not in the
    /// node's links) or `unreachable` (its admin API did not answer).
    pub state: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_without_nodes_applies_an_empty_list_not_nothing() {
        let json = serde_json::to_value(ClusterLinkStatus::default()).expect("JSON");
        assert_eq!(json["nodes"], serde_json::json!([]));
    }
}
