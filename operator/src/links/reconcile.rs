//! One reconcile of one `ClusterLink`: finalizer, validation, credentials,
//! a sync of each end, then the health read back into the status. A deleted
//! link is taken off the brokers of both ends before its finalizer goes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use serde_json::json;

use super::context::LinkContext;
use super::credentials::{issued_secret, LinkCredential, CA_KEY};
use super::health::{self, CredentialState, End, Stop};
use super::resolve::{self, CredentialSource};
use super::status::{self, Facts};
use super::{sync, validate, Error, FINALIZER};
use crate::crd::ClusterLink;
use crate::telemetry::LinkGauges;

/// Attempts to take a deleted link off nodes that do not answer before it
/// is let go anyway (its links Secret no longer has it, so a node that comes
/// back reads a set without it).
const MAX_REMOVAL_ATTEMPTS: u32 = 5;

/// Reconciles one link; the controller calls this for every change.
#[tracing::instrument(skip_all, fields(namespace = %link.namespace().unwrap_or_default(), name = %link.name_any(), generation = link.metadata.generation))]
pub async fn reconcile(link: Arc<ClusterLink>, lctx: Arc<LinkContext>) -> Result<Action, Error> {
    lctx.caches_ready().await;
    let started = Instant::now();
    let metrics = &lctx.base.metrics;
    metrics.reconcile_started();
    let result = if link.metadata.deletion_timestamp.is_some() {
        finalize(&link, &lctx).await
    } else {
        apply(&link, &lctx).await
    };
    metrics.reconciled(
        started.elapsed(),
        result.as_ref().err().map(|_| "LinkReconcileError"),
    );
    match &result {
        Ok(_) => {
            lctx.failures.lock().remove(&key(&link));
        }
        Err(error) => tracing::warn!(%error, "link reconcile failed"),
    }
    result
}

/// Retries a failed reconcile with exponential backoff (1 s doubling to 5 min).
pub fn error_policy(link: Arc<ClusterLink>, _error: &Error, lctx: Arc<LinkContext>) -> Action {
    let attempts = {
        let mut failures = lctx.failures.lock();
        let n = failures.entry(key(&link)).or_default();
        *n = n.saturating_add(1);
        *n
    };
    let secs = 1u64 << attempts.saturating_sub(1).min(9);
    Action::requeue(Duration::from_secs(secs.min(300)))
}

fn key(link: &ClusterLink) -> String {
    format!(
        "{}/{}",
        link.namespace().unwrap_or_default(),
        link.name_any()
    )
}

async fn apply(link: &ClusterLink, lctx: &LinkContext) -> Result<Action, Error> {
    let namespace = link.namespace().ok_or(Error::MissingNamespace)?;
    set_finalizer(lctx, link, true).await?;
    let stop = match validate::spec(&link.spec, &namespace) {
        Err(invalid) => {
            tracing::info!(field = %invalid.field, reason = %invalid.reason, "invalid link");
            Some(Stop::Invalid(invalid.to_string()))
        }
        Ok(()) if link.spec.paused => Some(Stop::Paused),
        Ok(()) => None,
    };
    let credentials = match &stop {
        Some(Stop::Invalid(message)) => CredentialState::Problem {
            reason: health::reasons::INVALID_SPEC,
            message: message.clone(),
        },
        _ => credentials(lctx, link).await?,
    };
    let remote = resolve::remote_name(link).map(str::to_owned);
    let mut ends = Vec::new();
    for (i, (ns, name)) in resolve::ends(link).into_iter().enumerate() {
        let remote = if i == 0 {
            remote.clone().unwrap_or_default()
        } else {
            link.spec.cluster.clone()
        };
        let Some(cluster) = lctx.cluster(&ns, &name) else {
            ends.push(End {
                cluster: format!("{ns}/{name}"),
                remote,
                revision: None,
                nodes: Vec::new(),
                left_out: None,
            });
            continue;
        };
        let synced = sync::cluster(lctx, &cluster).await?;
        let left_out = synced
            .left_out
            .get(&key(link))
            .filter(|_| stop.is_none())
            .cloned();
        ends.push(End {
            cluster: name,
            remote,
            revision: Some(synced.revision),
            nodes: synced.nodes,
            left_out,
        });
    }
    let assessment = health::assess(stop.as_ref(), &credentials, &ends);
    lctx.base.metrics.set_link(
        &key(link),
        LinkGauges {
            ready: assessment
                .conditions
                .iter()
                .any(|c| c.type_ == health::types::READY && c.status == "True"),
            nodes: ends.first().map_or(0, |e| e.nodes.len()),
            connected_nodes: assessment.connected_nodes,
            queued: assessment.queued,
        },
    );
    let facts = Facts {
        peer: remote,
        credentials_secret: match &credentials {
            CredentialState::Issued(s) | CredentialState::Imported(s) => Some(s.clone()),
            CredentialState::Problem { .. } => None,
        },
        link_endpoint: accepting(link)
            .then(|| lctx.cluster(&namespace, &link.spec.cluster))
            .flatten()
            .and_then(|c| c.status.as_ref()?.link_endpoint.clone()),
        revision: ends.first().and_then(|e| e.revision.clone()),
    };
    status::report(lctx, link, &assessment, &facts).await?;
    let ready = assessment
        .conditions
        .iter()
        .any(|c| c.type_ == health::types::READY && c.status == "True");
    Ok(match stop {
        Some(Stop::Invalid(_)) => Action::await_change(),
        Some(Stop::Paused) => Action::requeue(lctx.base.settings.link_health_interval),
        None => Action::requeue(next_read(lctx, link, ready)),
    })
}

/// When to read the link's health again: at the steady interval once it is
/// Ready, sooner while it settles (a connection coming up is no API event),
/// backing off from one second to the interval.
fn next_read(lctx: &LinkContext, link: &ClusterLink, ready: bool) -> Duration {
    let interval = lctx.base.settings.link_health_interval;
    let mut settling = lctx.settling.lock();
    if ready {
        settling.remove(&key(link));
        return interval;
    }
    let reads = settling.entry(key(link)).or_default();
    *reads = reads.saturating_add(1);
    Duration::from_secs(1u64 << (*reads - 1).min(10)).min(interval)
}

/// Whether the peer dials this side.
fn accepting(link: &ClusterLink) -> bool {
    link.spec.peer.remote.as_ref().is_some_and(|r| r.accept)
}

/// The link's credential: issued (once) into its own Secret, or read from
/// the Secret the user named.
async fn credentials(lctx: &LinkContext, link: &ClusterLink) -> Result<CredentialState, Error> {
    let namespace = link.namespace().unwrap_or_default();
    let name = match CredentialSource::of(link) {
        CredentialSource::Imported(name) => {
            return Ok(match resolve::credential(lctx, link).await? {
                Ok(_) => CredentialState::Imported(name),
                Err(problem) => CredentialState::Problem {
                    reason: problem.reason(),
                    message: problem.to_string(),
                },
            });
        }
        CredentialSource::Issued(name) => name,
    };
    let existing = lctx.own_secret(&namespace, &name);
    let mut credential = match existing.as_deref() {
        // Issued once: never drawn again while its Secret exists.
        None => LinkCredential::generate(resolve::dialler(link)),
        Some(secret) => match LinkCredential::read(&name, Some(secret)) {
            Ok(credential) => credential,
            Err(problem) => {
                return Ok(CredentialState::Problem {
                    reason: problem.reason(),
                    message: format!("{problem}; delete the Secret to have a new one issued"),
                })
            }
        },
    };
    credential.username = resolve::dialler(link).to_owned();
    credential.endpoints = dial_endpoints(lctx, link);
    credential.ca = accepting_ca(lctx, link).await?;
    let secret = issued_secret(link, &credential).ok_or(Error::NotStored)?;
    sync::apply_secret(lctx, &secret).await?;
    Ok(CredentialState::Issued(name))
}

/// Where the dialling side dials, for the issued Secret: a same-Kubernetes
/// peer's nodes, or this cluster's link endpoint for a remote that dials in.
fn dial_endpoints(lctx: &LinkContext, link: &ClusterLink) -> Vec<String> {
    let namespace = link.namespace().unwrap_or_default();
    if let Some(peer) = &link.spec.peer.cluster_ref {
        let peer_namespace = peer.namespace.clone().unwrap_or(namespace);
        return lctx
            .cluster(&peer_namespace, &peer.name)
            .map(|target| resolve::node_endpoints(lctx, &target))
            .unwrap_or_default();
    }
    lctx.cluster(&namespace, &link.spec.cluster)
        .and_then(|c| c.status.as_ref()?.link_endpoint.clone())
        .filter(|e| !e.starts_with('*'))
        .into_iter()
        .collect()
}

/// The CA a remote that dials in trusts this cluster's link listener by:
/// the `ca.crt` of its TLS Secret, when it serves TLS.
async fn accepting_ca(lctx: &LinkContext, link: &ClusterLink) -> Result<Option<Vec<u8>>, Error> {
    if !accepting(link) {
        return Ok(None);
    }
    let namespace = link.namespace().unwrap_or_default();
    let Some(cluster) = lctx.cluster(&namespace, &link.spec.cluster) else {
        return Ok(None);
    };
    let Some(tls) = &cluster.spec.listeners.link.tls else {
        return Ok(None);
    };
    Ok(resolve::user_secret_key(lctx, &namespace, &tls.certificate_secret, CA_KEY).await?)
}

/// A deleted link: taken off both ends (the sets are resolved without it),
/// then its finalizer goes, and its Secrets with it. A cluster that is gone
/// needs nothing; nodes that do not answer are tried a few times, with
/// backoff, and then left to read the set without the link when they return.
async fn finalize(link: &ClusterLink, lctx: &LinkContext) -> Result<Action, Error> {
    if !link.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    let mut pending = Vec::new();
    for (ns, name) in resolve::ends(link) {
        let Some(cluster) = lctx.cluster(&ns, &name) else {
            continue;
        };
        let synced = sync::cluster(lctx, &cluster).await?;
        for node in synced.nodes {
            match node.links {
                Ok(links) if links.revision.as_deref() == Some(synced.revision.as_str()) => {}
                Ok(_) => pending.push(format!("{}: still at another revision", node.name)),
                Err(error) => pending.push(format!("{}: {error}", node.name)),
            }
        }
    }
    let attempts = lctx.failures.lock().get(&key(link)).copied().unwrap_or(0);
    if !pending.is_empty() && attempts + 1 < MAX_REMOVAL_ATTEMPTS {
        return Err(Error::RemovalPending(pending.join("; ")));
    }
    if !pending.is_empty() {
        status::event(
            lctx,
            link,
            EventType::Warning,
            "RemovalUnconfirmed",
            "Delete",
            format!(
                "the link was removed from the links Secrets, but these nodes did not confirm it: {}",
                pending.join("; ")
            ),
        )
        .await;
    }
    lctx.base.metrics.remove_link(&key(link));
    set_finalizer(lctx, link, false).await?;
    Ok(Action::await_change())
}

/// Adds (`present`) or removes the finalizer, when it is not already so.
/// The cached link may be older than the live one (this controller's own
/// writes come back later): on a conflict, the live link decides.
async fn set_finalizer(lctx: &LinkContext, link: &ClusterLink, present: bool) -> Result<(), Error> {
    let api: Api<ClusterLink> = Api::namespaced(
        lctx.base.client.clone(),
        &link.namespace().unwrap_or_default(),
    );
    match patch_finalizers(lctx, &api, link, present).await {
        Err(kube::Error::Api(status)) if status.code == 409 => {
            lctx.base.metrics.read();
            match api.get_opt(&link.name_any()).await? {
                Some(live) => Ok(patch_finalizers(lctx, &api, &live, present).await?),
                None => Ok(()),
            }
        }
        // Gone already: nothing left to finalize.
        Err(kube::Error::Api(status)) if status.is_not_found() && !present => Ok(()),
        other => Ok(other?),
    }
}

/// Patches `link`'s finalizers as of its resource version, so that a
/// finalizer someone else added meanwhile is never dropped.
async fn patch_finalizers(
    lctx: &LinkContext,
    api: &Api<ClusterLink>,
    link: &ClusterLink,
    present: bool,
) -> Result<(), kube::Error> {
    let mut finalizers = link.finalizers().to_vec();
    if finalizers.iter().any(|f| f == FINALIZER) == present {
        return Ok(());
    }
    if present {
        finalizers.push(FINALIZER.to_owned());
    } else {
        finalizers.retain(|f| f != FINALIZER);
    }
    let patch = json!({"metadata": {
        "finalizers": finalizers,
        "resourceVersion": link.resource_version(),
    }});
    lctx.base.metrics.write();
    api.patch(
        &link.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}
