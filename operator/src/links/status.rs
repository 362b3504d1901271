//! The link's status: computed from its assessment, written only when it
//! changed, with an Event for each transition worth telling.

use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::context::LinkContext;
use super::health::{reasons, types, Assessment};
use super::Error;
use crate::conditions::{now_to_the_second, settle, Transition};
use crate::crd::{ClusterLink, ClusterLinkStatus, NodeLinkStatus};
use crate::settings::Settings;

/// The queue depth changes all the time; it is written at most this often
/// (the operator's metrics have it live).
const QUEUE_DEPTH_EVERY: Duration = Duration::from_secs(60);

/// Everything the status says besides the assessment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    pub peer: Option<String>,
    pub credentials_secret: Option<String>,
    pub link_endpoint: Option<String>,
    pub revision: Option<String>,
}

/// The status after `previous`, and the conditions that flipped.
pub fn next_status(
    previous: &ClusterLinkStatus,
    assessment: &Assessment,
    facts: &Facts,
    generation: Option<i64>,
    now: Timestamp,
    queue_due: bool,
) -> (ClusterLinkStatus, Vec<Transition>) {
    let mut conditions = assessment.conditions.clone();
    for c in &mut conditions {
        c.observed_generation = generation;
    }
    let transitions = settle(
        &previous.conditions,
        &mut conditions,
        now_to_the_second(now),
    );
    let mut next = ClusterLinkStatus {
        observed_generation: generation,
        peer: facts.peer.clone(),
        credentials_secret: facts.credentials_secret.clone(),
        link_endpoint: facts.link_endpoint.clone(),
        revision: facts.revision.clone(),
        nodes: sorted_nodes(assessment.nodes.clone()),
        queued_messages: previous.queued_messages,
        conditions,
    };
    let rest_changed = next != *previous;
    if queue_due || rest_changed || previous.queued_messages.is_none() {
        next.queued_messages = Some(assessment.queued);
    }
    (next, transitions)
}

/// A status with its lists in the order [`next_status`] gives them: the API
/// server merges keyed lists in an order of its own (an entry added later
/// goes last), which must not look like a change.
fn normalized(mut status: ClusterLinkStatus) -> ClusterLinkStatus {
    status.nodes = sorted_nodes(status.nodes);
    status.conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
    status
}

fn sorted_nodes(mut nodes: Vec<NodeLinkStatus>) -> Vec<NodeLinkStatus> {
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    nodes
}

/// Writes the link's status when it changed (compared with the cached copy,
/// then the live one: the cache may lag behind the last write).
pub async fn report(
    lctx: &LinkContext,
    link: &ClusterLink,
    assessment: &Assessment,
    facts: &Facts,
) -> Result<(), Error> {
    let namespace = link.namespace().ok_or(Error::MissingNamespace)?;
    let key = format!("{namespace}/{}", link.name_any());
    let queue_due = lctx
        .queue_written
        .lock()
        .get(&key)
        .is_none_or(|at| at.elapsed() >= QUEUE_DEPTH_EVERY);
    let generation = link.metadata.generation;
    let cached = normalized(link.status.clone().unwrap_or_default());
    let (mut next, mut transitions) = next_status(
        &cached,
        assessment,
        facts,
        generation,
        Timestamp::now(),
        queue_due,
    );
    if next == cached {
        return Ok(());
    }
    let api: Api<ClusterLink> = Api::namespaced(lctx.base.client.clone(), &namespace);
    lctx.base.metrics.read();
    let Some(live) = api.get_opt(&link.name_any()).await? else {
        return Ok(());
    };
    let live = normalized(live.status.unwrap_or_default());
    if live != cached {
        (next, transitions) = next_status(
            &live,
            assessment,
            facts,
            generation,
            Timestamp::now(),
            queue_due,
        );
        if next == live {
            return Ok(());
        }
    }
    let patch = json!({
        "apiVersion": ClusterLink::api_version(&()),
        "kind": ClusterLink::kind(&()),
        "status": next,
    });
    lctx.base.metrics.write();
    api.patch_status(
        &link.name_any(),
        &PatchParams::apply(Settings::FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    if next.queued_messages != live.queued_messages {
        lctx.queue_written.lock().insert(key, Instant::now());
    }
    for transition in transitions.iter().filter(|t| t.type_ == types::READY) {
        publish(lctx, link, transition).await;
    }
    Ok(())
}

/// An Event for a change of `Ready`: a warning when it says what to fix.
async fn publish(lctx: &LinkContext, link: &ClusterLink, t: &Transition) {
    let benign = [
        reasons::LINK_READY,
        reasons::NOT_CONNECTED,
        reasons::NODES_NOT_CONFIGURED,
        reasons::NO_READY_NODES,
        reasons::INTEREST_NOT_SYNCED,
        reasons::PAUSED,
    ];
    let type_ = if benign.contains(&t.reason.as_str()) {
        EventType::Normal
    } else {
        EventType::Warning
    };
    let note = format!("Ready is {}: {}", t.status, t.message);
    event(lctx, link, type_, &t.reason, "Reconcile", note).await;
}

/// Publishes an Event about `link`; one that cannot be written is logged,
/// never a failed reconcile.
pub async fn event(
    lctx: &LinkContext,
    link: &ClusterLink,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: action.to_owned(),
        secondary: None,
    };
    lctx.base.metrics.event();
    if let Err(error) = lctx
        .base
        .recorder
        .publish(&event, &link.object_ref(&()))
        .await
    {
        tracing::warn!(%error, "publishing an event");
    }
}
