//! Step five: the status, written only when it changed, and an Event for
//! each condition transition worth telling a user about.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use serde_json::{json, Value};

use super::context::Context;
use super::Error;
use crate::conditions::{self, reasons, types, NodeCounts, Outcome, Transition};
use crate::crd::{MqttCluster, MqttClusterStatus};
use crate::resources::{client_endpoint, link_endpoint, names};
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
///
/// The cluster a reconcile gets comes from the watch cache, which can lag
/// behind the operator's own last status write: a reconcile triggered by a
/// child's event just after that write still sees the status from before
/// it. Comparing with that stale status would write the same status again
/// and repeat its Events, so a status that looks changed is first compared
/// with the live object, and computed again from it when the cache was stale.
pub async fn report(
    ctx: &Context,
    cluster: &MqttCluster,
    outcome: &Outcome,
    link_service: Option<&Service>,
) -> Result<(), Error> {
    let namespace = cluster.namespace().unwrap_or_default();
    let cached = cluster.status.clone().unwrap_or_default();
    let mut update = next_status(cluster, &namespace, &cached, outcome, link_service);
    if update.next == cached {
        return Ok(());
    }
    let api: Api<MqttCluster> = Api::namespaced(ctx.client.clone(), &namespace);
    ctx.metrics.read();
    let Some(live) = api.get_opt(&cluster.name_any()).await? else {
        // Deleted meanwhile: nothing left to report on.
        return Ok(());
    };
    let live = live.status.unwrap_or_default();
    if live != cached {
        tracing::debug!("the cached status was stale; computing the status from the live one");
        update = next_status(cluster, &namespace, &live, outcome, link_service);
        if update.next == live {
            return Ok(());
        }
    }
    tracing::debug!(previous = ?live, next = ?update.next, "writing the status");
    let patch = json!({
        "apiVersion": MqttCluster::api_version(&()),
        "kind": MqttCluster::kind(&()),
        "status": update.next,
    });
    ctx.metrics.write();
    api.patch_status(
        &cluster.name_any(),
        &PatchParams::apply(Settings::FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    for transition in update.transitions.iter().filter(|t| worth_an_event(t)) {
        publish(ctx, cluster, transition).await;
    }
    Ok(())
}

/// A status computed from a previous one, with the conditions that flipped.
struct StatusUpdate {
    next: MqttClusterStatus,
    transitions: Vec<Transition>,
}

fn next_status(
    cluster: &MqttCluster,
    namespace: &str,
    previous: &MqttClusterStatus,
    outcome: &Outcome,
    link_service: Option<&Service>,
) -> StatusUpdate {
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
        | Outcome::VolumeChangeNotApplied { nodes, .. }
        | Outcome::InvalidSpec { nodes, .. }
        | Outcome::Error { nodes, .. } => MqttClusterStatus {
            observed_generation: cluster.metadata.generation,
            replicas: nodes.current,
            ready_replicas: nodes.ready,
            client_endpoint: client_endpoint(cluster, namespace),
            link_endpoint: link_endpoint(cluster, namespace, link_service),
            default_user_secret: cluster
                .spec
                .auth
                .users
                .is_empty()
                .then(|| names(&cluster.name_any()).default_user),
            conditions,
        },
    };
    StatusUpdate { next, transitions }
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
