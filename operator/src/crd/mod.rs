//! The custom resources the operator serves, and their CRD manifests.

mod cluster;
mod link;
mod status;

pub use cluster::{
    AuthSpec, LimitsSpec, LinkListenerSpec, LinkServiceSpec, LinkServiceType, ListenersSpec,
    MqttCluster, MqttClusterSpec, PersistenceSpec, PlainListenerSpec, PodDisruptionBudgetSpec,
    PodTemplateSpec, PullPolicy, QueueFullPolicySpec, SchedulingSpec, TlsListenerSpec, TlsSpec,
    UsersSecretRef, WebSocketListenerSpec, IMAGE_PATTERN, NAME_PATTERN, QUANTITY_PATTERN,
};
pub use link::{
    ClusterLink, ClusterLinkSpec, ClusterLinkStatus, ClusterRef, LinkQueueSpec, NodeLinkStatus,
    PeerSpec, RemoteSpec, RemoteTlsSpec, WhenFullSpec, ENDPOINT_PATTERN, LINK_FILTER_PATTERN,
};
pub use status::MqttClusterStatus;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The schema of an optional string enum: schemars would list `null` among
/// the values, which Kubernetes 1.20 cannot compare and so refuses the CRD.
fn nullable_enum(values: &[&str]) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "enum": values,
        "nullable": true,
    })
}

/// Every CRD the operator needs installed.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![MqttCluster::crd(), ClusterLink::crd()]
}

/// One CRD as a YAML document, as committed under `crds/`.
pub fn crd_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_yaml::Error> {
    Ok(format!("---\n{}", serde_yaml::to_string(crd)?))
}

/// The file each CRD is committed as: `strait.dev_<plural>.yaml`.
pub fn crd_file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}_{}.yaml", crd.spec.group, crd.spec.names.plural)
}

/// The CRDs as one multi-document YAML stream.
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for crd in crds() {
        out.push_str(&crd_yaml(&crd)?);
    }
    Ok(out)
}
