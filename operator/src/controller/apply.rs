//! Step four: server-side apply of the children that need it, with one field
//! manager. A child that already matches is not written at all.

use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::Api;
use serde::Serialize;
use serde_json::Value;

use super::context::Context;
use super::dereference::{ChildKind, Observed};
use super::diff;
use super::Error;
use crate::resources::{Children, DefaultUserSecret};
use crate::settings::Settings;

/// The result of applying: how many writes it took, and the StatefulSet as it now is.
#[derive(Debug)]
pub struct Applied {
    pub writes: usize,
    pub stateful_set: Option<Value>,
}

/// Applies every child that differs from what `observed` holds.
pub async fn apply_children(
    ctx: &Context,
    namespace: &str,
    children: &Children,
    observed: &Observed,
) -> Result<Applied, Error> {
    let k = &ctx.kinds;
    let mut writes = 0;
    let mut stateful_set = observed.children.get(&ChildKind::StatefulSet).cloned();
    let mut plan: Vec<(ChildKind, &ApiResource, Value)> = vec![
        (
            ChildKind::ConfigMap,
            &k.config_map,
            to_value(&children.config_map)?,
        ),
        (
            ChildKind::Credentials,
            &k.secret,
            to_value(&children.credentials)?,
        ),
        (
            ChildKind::HeadlessService,
            &k.service,
            to_value(&children.headless_service)?,
        ),
        (
            ChildKind::ClientService,
            &k.service,
            to_value(&children.client_service)?,
        ),
        (
            ChildKind::LinkService,
            &k.service,
            to_value(&children.link_service)?,
        ),
        (
            ChildKind::StatefulSet,
            &k.stateful_set,
            to_value(&children.stateful_set)?,
        ),
    ];
    if let Some(pdb) = &children.pdb {
        let mut value = to_value(pdb)?;
        value["apiVersion"] = Value::String(k.pdb.api_version.clone());
        plan.push((ChildKind::Pdb, &k.pdb, value));
    } else if let Some(name) = observed
        .children
        .get(&ChildKind::Pdb)
        .and_then(|pdb| pdb["metadata"]["name"].as_str())
    {
        delete_pdb(ctx, namespace, name).await?;
        writes += 1;
    }
    match &children.default_user {
        DefaultUserSecret::Active(secret) => {
            plan.push((ChildKind::DefaultUser, &k.secret, to_value(secret)?));
        }
        DefaultUserSecret::Retired(secret)
            if observed.children.contains_key(&ChildKind::DefaultUser) =>
        {
            plan.push((ChildKind::DefaultUser, &k.secret, to_value(secret)?));
        }
        DefaultUserSecret::Retired(_) => {}
    }
    for (kind, resource, mut desired) in plan {
        diff::stamp(&mut desired);
        if !diff::needs_apply(&desired, observed.children.get(&kind)) {
            continue;
        }
        let name = desired["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        tracing::debug!(?kind, %name, "applying");
        let result = apply(ctx, namespace, resource, &name, &desired).await?;
        writes += 1;
        if kind == ChildKind::StatefulSet {
            stateful_set = Some(result);
        }
    }
    Ok(Applied {
        writes,
        stateful_set,
    })
}

fn to_value(object: &impl Serialize) -> Result<Value, Error> {
    serde_json::to_value(object).map_err(Error::Serialize)
}

async fn apply(
    ctx: &Context,
    namespace: &str,
    resource: &ApiResource,
    name: &str,
    desired: &Value,
) -> Result<Value, Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), namespace, resource);
    let params = PatchParams::apply(Settings::FIELD_MANAGER).force();
    ctx.metrics.write();
    let result = api.patch(name, &params, &Patch::Apply(desired)).await?;
    serde_json::to_value(result).map_err(Error::Serialize)
}

/// The spec turned the budget off: remove it rather than leave a stale one.
async fn delete_pdb(ctx: &Context, namespace: &str, name: &str) -> Result<(), Error> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), namespace, &ctx.kinds.pdb);
    ctx.metrics.write();
    api.delete(name, &Default::default()).await?;
    Ok(())
}
