//! The `ClusterLink` controller.
//!
//! A link has two ends, and each end's brokers run one link set: every link
//! of that cluster. So a reconcile of one `ClusterLink` issues its
//! credentials, then brings each cluster it touches up to date as a whole
//! ([`sync`]): it resolves the cluster's links from every `ClusterLink` that
//! names it ([`resolve`]), writes them to the cluster's links Secret (what a
//! restarting pod reads) and puts them to every ready node that runs another
//! revision ([`admin`]). What the nodes answer is the link's health
//! ([`health`]), written to its status when it changed.
//!
//! Watches are narrow: the links, the `MqttCluster`s, the broker pods and
//! the operator's own Secrets (by label). A Secret a user provides (an
//! imported credential, a CA) is read when a reconcile needs it, and the
//! steady health reads pick up its edits.

pub mod addresses;
pub mod admin;
mod context;
pub mod credentials;
pub mod health;
mod reconcile;
pub mod resolve;
mod status;
pub mod sync;
pub mod validate;

pub use addresses::{NodeAddresses, PodNetwork};
pub use context::LinkContext;

use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};

use crate::controller::{api, Context, MANAGED_BY_SELECTOR};
use crate::crd::{ClusterLink, MqttCluster};

/// The finalizer that removes a deleted link from the brokers of both ends.
pub const FINALIZER: &str = "strait.dev/cluster-link";

/// Label the operator puts on the Secrets it issues for a link.
pub const LINK_LABEL: &str = "strait.dev/link";

/// Why a link reconcile failed (and is retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Build(#[from] crate::resources::BuildError),
    #[error(transparent)]
    Hash(#[from] credentials::HashFailed),
    #[error("serialising: {0}")]
    Serialize(#[from] serde_json::Error),
    #[error("the ClusterLink has no namespace")]
    MissingNamespace,
    #[error("the ClusterLink has no uid: it was not read from the API server")]
    NotStored,
    #[error("the link is still on nodes that could not be reached: {0}")]
    RemovalPending(String),
}

/// Runs the controller until `shutdown` completes.
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let client: Client = ctx.client.clone();
    let ns = ctx.settings.namespace.as_deref();
    let controller = Controller::new(api::<ClusterLink>(&client, ns), watcher::Config::default());
    let links = controller.store();
    let owned = || watcher::Config::default().labels(MANAGED_BY_SELECTOR);

    let (clusters, writer) = reflector::store();
    let cluster_events = reflector::reflector(
        writer,
        watcher(api::<MqttCluster>(&client, ns), watcher::Config::default()),
    )
    .default_backoff()
    .touched_objects();
    let (pods, writer) = reflector::store();
    let pod_events = reflector::reflector(writer, watcher(api::<Pod>(&client, ns), owned()))
        .default_backoff()
        .touched_objects();
    let (secrets, writer) = reflector::store();
    let secret_events = reflector::reflector(writer, watcher(api::<Secret>(&client, ns), owned()))
        .default_backoff()
        .touched_objects();

    let lctx = Arc::new(LinkContext::new(
        ctx.clone(),
        links.clone(),
        clusters,
        pods,
        secrets,
    ));
    let (by_cluster, by_pod, by_secret) = (links.clone(), links.clone(), links);
    controller
        .with_config(controller::Config::default().concurrency(ctx.settings.concurrency))
        .watches_stream(cluster_events, move |cluster: MqttCluster| {
            involving(
                &by_cluster,
                &cluster.namespace().unwrap_or_default(),
                &cluster.name_any(),
            )
        })
        .watches_stream(pod_events, move |pod: Pod| {
            let cluster = pod.labels().get("app.kubernetes.io/instance").cloned();
            match cluster {
                Some(cluster) => involving(&by_pod, &pod.namespace().unwrap_or_default(), &cluster),
                None => Vec::new(),
            }
        })
        .watches_stream(secret_events, move |secret: Secret| {
            for_secret(&by_secret, &secret)
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile::reconcile, reconcile::error_policy, lctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "link controller event");
            }
        })
        .await;
}

/// The links with an end at the cluster `namespace/name`.
pub fn involving(
    links: &Store<ClusterLink>,
    namespace: &str,
    name: &str,
) -> Vec<ObjectRef<ClusterLink>> {
    links
        .state()
        .iter()
        .filter(|link| {
            resolve::ends(link)
                .iter()
                .any(|(ns, n)| ns == namespace && n == name)
        })
        .map(|link| ObjectRef::from_obj(link.as_ref()))
        .collect()
}

/// The links a Secret of the operator's matters to: the link that issued
/// it, or every link of the cluster it belongs to (its credentials, with
/// the admin token, and its links Secret).
fn for_secret(links: &Store<ClusterLink>, secret: &Secret) -> Vec<ObjectRef<ClusterLink>> {
    let namespace = secret.namespace().unwrap_or_default();
    if let Some(link) = secret.labels().get(LINK_LABEL) {
        return vec![ObjectRef::new(link).within(&namespace)];
    }
    secret
        .owner_references()
        .iter()
        .filter(|o| o.kind == "MqttCluster" && o.api_version == MqttCluster::api_version(&()))
        .flat_map(|o| involving(links, &namespace, &o.name))
        .collect()
}
