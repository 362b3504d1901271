//! What the operator reports back on an `MqttCluster`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Observed state of an `MqttCluster`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MqttClusterStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Broker pods the StatefulSet runs.
    #[serde(default)]
    pub replicas: i32,
    /// Broker pods that pass their readiness probe.
    #[serde(default)]
    pub ready_replicas: i32,
    /// `host:port` clients connect to inside the Kubernetes cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_endpoint: Option<String>,
    /// `host:port` peer clusters' links connect to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_endpoint: Option<String>,
    /// The Secret (`username`, `password`) of the user the operator
    /// generated because the spec names no users Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_user_secret: Option<String>,
    /// Current state, one condition per type: `Ready` sums up `Available`,
    /// `Progressing`, `Degraded` and `ReconciliationPaused`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
