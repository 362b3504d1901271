//! Step five: the status, written only when it changed, and an Event for
//! each condition transition worth telling a user about.

use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use serde_json::{json, Value};

use super::context::Context;
use super::Error;
use crate::conditions::{self, reasons, types, NodeCounts, Outcome, Transition};
use crate::crd::{MqttCluster, MqttClusterStatus};
use crate::resources::{client_endpoint, link_endpoint};
use crate::settings::Settings;

/// Node counts from a StatefulSet as the API server returned it.
pub fn node_counts(desired: i32, stateful_set: Option<&Value>) -> NodeCounts {
    let Some(sts) = stateful_set else {
        return NodeCounts {
            desired,
            ..NodeCounts::default()
        };
    };
    let int = |path: &str| {
        sts.pointer(path)
            .and_then(Value::as_i64)
            .and_then(|v| i32::try_from(v).ok())
            .unwrap_or(0)
    };
    let generation = sts.pointer("/metadata/generation").and_then(Value::as_i64);
    let observed = sts
        .pointer("/status/observedGeneration")
        .and_then(Value::as_i64);
    NodeCounts {
        desired,
        current: int("/status/replicas"),
        ready: int("/status/readyReplicas"),
        updated: int("/status/updatedReplicas"),
        observed: generation.is_some() && observed >= generation,
    }
}

/// Computes the status for `outcome`, writes it if it differs from the
/// stored one, and publishes Events for transitions.
pub async fn report(ctx: &Context, cluster: &MqttCluster, outcome: &Outcome) -> Result<(), Error> {
    let namespace = cluster.namespace().unwrap_or_default();
    let previous = cluster.status.clone().unwrap_or_default();
    let (conditions, transitions) = conditions::merge(
        &previous.conditions,
        outcome,
        cluster.metadata.generation,
        Timestamp::now(),
    );
    let next = match outcome {
        Outcome::Paused => MqttClusterStatus {
            conditions,
            ..previous.clone()
        },
        Outcome::Applied(nodes)
        | Outcome::InvalidSpec { nodes, .. }
        | Outcome::Error { nodes, .. } => MqttClusterStatus {
            observed_generation: cluster.metadata.generation,
            replicas: nodes.current,
            ready_replicas: nodes.ready,
            client_endpoint: client_endpoint(cluster, &namespace),
            link_endpoint: link_endpoint(cluster, &namespace),
            conditions,
        },
    };
    if next != previous {
        let api: Api<MqttCluster> = Api::namespaced(ctx.client.clone(), &namespace);
        let patch = json!({
            "apiVersion": MqttCluster::api_version(&()),
            "kind": MqttCluster::kind(&()),
            "status": next,
        });
        ctx.metrics.write();
        api.patch_status(
            &cluster.name_any(),
            &PatchParams::apply(Settings::FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    }
    for transition in transitions.iter().filter(|t| worth_an_event(t)) {
        publish(ctx, cluster, transition).await;
    }
    Ok(())
}

/// Users hear about readiness, degradation and pausing; the other
/// conditions move with these.
fn worth_an_event(t: &Transition) -> bool {
    t.type_ == types::READY
        || t.type_ == types::PAUSED
        || (t.type_ == types::DEGRADED && t.status == "True")
}

async fn publish(ctx: &Context, cluster: &MqttCluster, t: &Transition) {
    let warning = t.reason == reasons::INVALID_SPEC
        || t.reason == reasons::RECONCILE_ERROR
        || (t.type_ == types::DEGRADED && t.status == "True");
    let event = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: t.reason.clone(),
        note: Some(format!("{} is {}: {}", t.type_, t.status, t.message)),
        action: "Reconcile".to_owned(),
        secondary: None,
    };
    ctx.metrics.event();
    // An Event that cannot be written must not fail the reconcile.
    if let Err(error) = ctx.recorder.publish(&event, &cluster.object_ref(&())).await {
        tracing::warn!(%error, "publishing an event");
    }
}
