//! Step one of a reconcile: every API read, gathered into one value that the
//! pure steps (validation, building, conditions) work from.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Secret, Service};
use kube::api::{ApiResource, DynamicObject};
use kube::Api;
use serde_json::Value;

use super::context::Context;
use crate::crd::MqttCluster;
use crate::resources::names;
use crate::validate::tls_refs;

/// Which child a live object is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ChildKind {
    ConfigMap,
    Credentials,
    DefaultUser,
    HeadlessService,
    ClientService,
    LinkService,
    StatefulSet,
    Pdb,
}

/// What the API server holds for one cluster.
#[derive(Debug, Default)]
pub struct Observed {
    /// Each child as it is now; absent when it does not exist.
    pub children: BTreeMap<ChildKind, Value>,
    /// Keys of each referenced TLS Secret; `None` when it does not exist.
    pub tls_secret_keys: BTreeMap<String, Option<Vec<String>>>,
    /// Content of each users Secret's key, by position in `spec.auth.users`;
    /// `None` when the Secret or key is missing.
    pub users: Vec<Option<String>>,
}

impl Observed {
    /// The credentials Secret as it exists now.
    pub fn credentials_secret(&self) -> Option<Secret> {
        self.typed(ChildKind::Credentials)
    }

    /// The generated first user's Secret as it exists now.
    pub fn default_user_secret(&self) -> Option<Secret> {
        self.typed(ChildKind::DefaultUser)
    }

    /// The link Service as it exists now (its status holds a load balancer's address).
    pub fn link_service(&self) -> Option<Service> {
        self.typed(ChildKind::LinkService)
    }

    fn typed<K: serde::de::DeserializeOwned>(&self, kind: ChildKind) -> Option<K> {
        serde_json::from_value(self.children.get(&kind)?.clone()).ok()
    }
}

/// Where each child kind lives, and its name for this cluster.
pub fn child_locations(ctx: &Context, cluster_name: &str) -> Vec<(ChildKind, ApiResource, String)> {
    let n = names(cluster_name);
    let k = &ctx.kinds;
    vec![
        (ChildKind::ConfigMap, k.config_map.clone(), n.config_map),
        (ChildKind::Credentials, k.secret.clone(), n.credentials),
        (ChildKind::DefaultUser, k.secret.clone(), n.default_user),
        (
            ChildKind::HeadlessService,
            k.service.clone(),
            n.headless_service,
        ),
        (
            ChildKind::ClientService,
            k.service.clone(),
            n.client_service,
        ),
        (ChildKind::LinkService, k.service.clone(), n.link_service),
        (
            ChildKind::StatefulSet,
            k.stateful_set.clone(),
            n.stateful_set,
        ),
        (ChildKind::Pdb, k.pdb.clone(), n.pdb),
    ]
}

/// Reads the children and every Secret the spec refers to.
pub async fn observe(
    ctx: &Context,
    cluster: &MqttCluster,
    namespace: &str,
) -> Result<Observed, kube::Error> {
    let name = cluster.metadata.name.as_deref().unwrap_or_default();
    let mut observed = Observed::default();
    for (kind, resource, child) in child_locations(ctx, name) {
        let api: Api<DynamicObject> =
            Api::namespaced_with(ctx.client.clone(), namespace, &resource);
        ctx.metrics.read();
        if let Some(obj) = api.get_opt(&child).await? {
            observed.children.insert(
                kind,
                serde_json::to_value(obj).map_err(kube::Error::SerdeError)?,
            );
        }
    }
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    for (_, tls) in tls_refs(&cluster.spec) {
        if observed
            .tls_secret_keys
            .contains_key(&tls.certificate_secret)
        {
            continue;
        }
        ctx.metrics.read();
        let keys = secrets
            .get_opt(&tls.certificate_secret)
            .await?
            .map(|s| s.data.unwrap_or_default().into_keys().collect());
        observed
            .tls_secret_keys
            .insert(tls.certificate_secret.clone(), keys);
    }
    for users in &cluster.spec.auth.users {
        ctx.metrics.read();
        let content = secrets
            .get_opt(&users.secret_name)
            .await?
            .and_then(|s| s.data)
            .and_then(|mut d| d.remove(&users.key))
            .and_then(|v| String::from_utf8(v.0).ok());
        observed.users.push(content);
    }
    Ok(observed)
}
