//! Brings one cluster's brokers up to date with its links: the links Secret
//! (what a pod reads when it starts), then every ready node that runs
//! another revision of the set, through its admin API.

use std::collections::BTreeMap;

use futures::future::join_all;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use strait_broker::config::LinkSet;

use super::admin::{AdminToken, NodeLinks};
use super::context::LinkContext;
use super::health::NodeReport;
use super::{resolve, Error};
use crate::controller::diff;
use crate::crd::MqttCluster;
use crate::resources::{links, names, ADMIN_TOKEN};
use crate::settings::Settings;

/// What syncing a cluster found.
#[derive(Debug)]
pub struct ClusterSync {
    /// The revision of the cluster's link set.
    pub revision: String,
    /// Each ready node after the sync.
    pub nodes: Vec<NodeReport>,
    /// Links with an end here left out of the set, and why (`namespace/name`).
    pub left_out: BTreeMap<String, (&'static str, String)>,
}

/// Syncs `cluster`'s link set to its links Secret and its ready nodes.
pub async fn cluster(lctx: &LinkContext, cluster: &MqttCluster) -> Result<ClusterSync, Error> {
    let resolved = resolve::cluster_links(lctx, cluster).await?;
    let built = links::build(cluster, &resolved.links)?;
    apply_secret(lctx, &built.secret).await?;
    let namespace = cluster.namespace().unwrap_or_default();
    let name = cluster.name_any();
    let token = lctx
        .own_secret(&namespace, &names(&name).credentials)
        .and_then(|s| s.data.as_ref()?.get(ADMIN_TOKEN).cloned())
        .and_then(|v| String::from_utf8(v.0).ok())
        .map(AdminToken);
    let pods = ready_pods(lctx, &namespace, &name);
    let nodes = join_all(
        pods.iter()
            .map(|pod| node(lctx, pod, token.as_ref(), &built.set)),
    )
    .await;
    Ok(ClusterSync {
        revision: built.revision().to_owned(),
        nodes,
        left_out: resolved.left_out,
    })
}

/// The cluster's pods that pass their readiness probe, by name.
fn ready_pods(lctx: &LinkContext, namespace: &str, cluster: &str) -> Vec<std::sync::Arc<Pod>> {
    let mut pods: Vec<_> = lctx
        .pods
        .state()
        .into_iter()
        .filter(|pod| {
            pod.namespace().as_deref() == Some(namespace)
                && pod
                    .labels()
                    .get("app.kubernetes.io/instance")
                    .map(String::as_str)
                    == Some(cluster)
                && pod.metadata.deletion_timestamp.is_none()
                && is_ready(pod)
        })
        .collect();
    pods.sort_by_key(|pod| pod.name_any());
    pods
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Reads a node's links and puts the set when it runs another revision.
async fn node(
    lctx: &LinkContext,
    pod: &Pod,
    token: Option<&AdminToken>,
    set: &LinkSet,
) -> NodeReport {
    let name = format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any());
    let links: Result<NodeLinks, String> = async {
        let token = token.ok_or("the cluster's admin token is not there yet")?;
        let addr = lctx
            .base
            .settings
            .addresses
            .admin(pod)
            .ok_or("the pod has no address yet")?;
        let links = lctx.admin.links(addr, token).await.map_err(|e| e.to_string())?;
        if links.revision == set.revision {
            return Ok(links);
        }
        tracing::info!(node = %name, from = ?links.revision, to = ?set.revision, "putting the link set");
        lctx.admin
            .put_links(addr, token, set)
            .await
            .map_err(|e| e.to_string())
    }
    .await;
    NodeReport { name, links }
}

/// Writes one of the operator's Secrets when it differs from what the API
/// server holds (as cached).
pub async fn apply_secret(lctx: &LinkContext, secret: &Secret) -> Result<(), Error> {
    let namespace = secret.namespace().unwrap_or_default();
    let name = secret.name_any();
    let mut desired = serde_json::to_value(secret)?;
    desired["apiVersion"] = "v1".into();
    desired["kind"] = "Secret".into();
    diff::stamp(&mut desired);
    let live = lctx
        .own_secret(&namespace, &name)
        .map(|s| serde_json::to_value(s.as_ref()))
        .transpose()?;
    if !diff::needs_apply(&desired, live.as_ref()) {
        return Ok(());
    }
    let api: Api<Secret> = Api::namespaced(lctx.base.client.clone(), &namespace);
    lctx.base.metrics.write();
    api.patch(
        &name,
        &PatchParams::apply(Settings::FIELD_MANAGER).force(),
        &Patch::Apply(&desired),
    )
    .await?;
    Ok(())
}
