//! The PodDisruptionBudget that bounds voluntary evictions.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::meta::{selector_labels, ChildMeta};
use crate::crd::MqttCluster;

/// The budget as `policy/v1`; the controller serves it as `policy/v1beta1` to
/// servers older than 1.21, whose spec has the same fields.
pub(super) fn build(meta: &ChildMeta, cluster: &MqttCluster) -> Option<PodDisruptionBudget> {
    let spec = &cluster.spec.pod_disruption_budget;
    spec.enabled.then(|| PodDisruptionBudget {
        metadata: meta.object(&meta.names.pdb),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(spec.max_unavailable)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(&meta.name)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    })
}
