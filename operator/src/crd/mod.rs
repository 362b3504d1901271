//! The custom resources the operator serves, and their CRD manifests.

mod cluster;
mod status;

pub use cluster::{
    AuthSpec, LimitsSpec, LinkListenerSpec, ListenersSpec, MqttCluster, MqttClusterSpec,
    PersistenceSpec, PlainListenerSpec, PodDisruptionBudgetSpec, PullPolicy, QueueFullPolicySpec,
    SchedulingSpec, TlsListenerSpec, TlsSpec, UsersSecretRef, WebSocketListenerSpec, IMAGE_PATTERN,
    NAME_PATTERN, QUANTITY_PATTERN,
};
pub use status::MqttClusterStatus;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// Every CRD the operator needs installed.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![MqttCluster::crd()]
}

/// The CRDs as one multi-document YAML stream, as committed under `crds/`.
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd)?);
    }
    Ok(out)
}
