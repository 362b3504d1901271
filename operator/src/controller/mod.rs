//! The `MqttCluster` controller: watches clusters, their children and the
//! Secrets they refer to (by metadata alone), and reconciles each cluster
//! on every change.

mod apply;
mod context;
pub mod dereference;
pub mod diff;
mod reconcile;
mod status;
mod volumes;

pub use context::{ChildKinds, Context};
pub use reconcile::{error_policy, reconcile};
pub use status::node_counts;

use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::api::DynamicObject;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};

use crate::crd::MqttCluster;
use crate::resources::BuildError;
use crate::validate::tls_refs;

/// Label selector matching every child the operator manages.
pub const MANAGED_BY_SELECTOR: &str = "app.kubernetes.io/managed-by=strait-operator";

/// Why a reconcile failed (and will be retried).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Credentials(#[from] crate::resources::HashError),
    #[error("hashing passwords: {0}")]
    Blocking(#[from] tokio::task::JoinError),
    #[error("serialising a child: {0}")]
    Serialize(serde_json::Error),
    #[error("the MqttCluster has no namespace")]
    MissingNamespace,
}

/// Runs the controller until `shutdown` completes; reconciles in flight finish first.
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let client: Client = ctx.client.clone();
    let ns = ctx.settings.namespace.as_deref();
    let clusters: Api<MqttCluster> = api(&client, ns);
    let watch = watcher::Config::default();
    let controller = Controller::new(clusters, watch.clone());
    let store = controller.store();
    let kinds = ctx.kinds.clone();
    // Only children carry this label: the owned watches skip everything else.
    let owned = || watcher::Config::default().labels(MANAGED_BY_SELECTOR);
    controller
        .with_config(controller::Config::default().concurrency(ctx.settings.concurrency))
        .owns(api::<ConfigMap>(&client, ns), owned())
        .owns(api::<Service>(&client, ns), owned())
        .owns(api::<StatefulSet>(&client, ns), owned())
        .owns_with(
            dynamic_api(&client, ns, &kinds.pdb),
            kinds.pdb.clone(),
            owned(),
        )
        // Secrets by their metadata only: what a cluster refers to is found
        // by name, and no Secret's content is cached unless read.
        .watches(
            api::<PartialObjectMeta<Secret>>(&client, ns),
            watch,
            move |secret| clusters_using_secret(&store, &secret),
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "controller event");
            }
        })
        .await;
}

/// An API of `K` in `namespace`, or in every namespace.
pub fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn dynamic_api(
    client: &Client,
    namespace: Option<&str>,
    resource: &kube::api::ApiResource,
) -> Api<DynamicObject> {
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, resource),
        None => Api::all_with(client.clone(), resource),
    }
}

/// The clusters a Secret matters to: its owner (the credentials Secret), and
/// every cluster in its namespace that refers to it (TLS, users), so that a
/// missing Secret is picked up as soon as it appears.
fn clusters_using_secret(
    store: &Store<MqttCluster>,
    secret: &PartialObjectMeta<Secret>,
) -> Vec<ObjectRef<MqttCluster>> {
    let namespace = secret.namespace().unwrap_or_default();
    let name = secret.name_any();
    let mut refs: Vec<ObjectRef<MqttCluster>> = secret
        .owner_references()
        .iter()
        .filter(|o| o.kind == "MqttCluster" && o.api_version == MqttCluster::api_version(&()))
        .map(|o| ObjectRef::new(&o.name).within(&namespace))
        .collect();
    for cluster in store.state() {
        if cluster.namespace().as_deref() != Some(namespace.as_str()) {
            continue;
        }
        let spec = &cluster.spec;
        let refers = tls_refs(spec)
            .iter()
            .any(|(_, tls)| tls.certificate_secret == name)
            || spec.auth.users.iter().any(|u| u.secret_name == name);
        if refers {
            refs.push(ObjectRef::from_obj(cluster.as_ref()));
        }
    }
    refs
}
