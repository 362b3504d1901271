//! One reconcile of one `MqttCluster`: dereference -> validate -> build ->
//! apply -> status. Invalid input ends in a condition and waits for a change;
//! API failures are retried with backoff.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::runtime::controller::Action;
use kube::ResourceExt;

use super::apply::apply_children;
use super::context::Context;
use super::dereference::{observe, ChildKind, Observed};
use super::status::{node_counts, report};
use super::volumes::hold_back_volume_change;
use super::Error;
use crate::conditions::{reasons, Outcome};
use crate::crd::MqttCluster;
use crate::resources::{
    build, credentials_file, credentials_lines, known_lines, Credentials, DefaultUser, Inputs,
    KnownHashes, User,
};
use crate::validate::{self, InvalidSpec};

/// How long a healthy cluster waits before a resync, watches aside.
const RESYNC: Duration = Duration::from_secs(300);

/// Reconciles one cluster; the controller calls this for every change.
#[tracing::instrument(skip_all, fields(namespace = %cluster.namespace().unwrap_or_default(), name = %cluster.name_any(), generation = cluster.metadata.generation))]
pub async fn reconcile(cluster: Arc<MqttCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    ctx.metrics.reconcile_started();
    let result = reconcile_inner(&cluster, &ctx).await;
    let failure = match &result {
        Ok(Step::Done) | Ok(Step::Paused) => None,
        Ok(Step::Invalid) => Some(reasons::INVALID_SPEC),
        Err(_) => Some(reasons::RECONCILE_ERROR),
    };
    ctx.metrics.reconciled(started.elapsed(), failure);
    let key = object_key(&cluster);
    match result {
        Ok(step) => {
            if let Ok(mut failures) = ctx.failures.lock() {
                failures.remove(&key);
            }
            tracing::debug!(?step, took = ?started.elapsed(), "reconciled");
            Ok(match step {
                Step::Done => Action::requeue(RESYNC),
                Step::Invalid | Step::Paused => Action::await_change(),
            })
        }
        Err(error) => {
            tracing::warn!(%error, "reconcile failed");
            Err(error)
        }
    }
}

/// Retries a failed reconcile with exponential backoff (1 s doubling to 5 min).
pub fn error_policy(cluster: Arc<MqttCluster>, _error: &Error, ctx: Arc<Context>) -> Action {
    let attempts = ctx
        .failures
        .lock()
        .map(|mut failures| {
            let n = failures.entry(object_key(&cluster)).or_default();
            *n = n.saturating_add(1);
            *n
        })
        .unwrap_or(1);
    let secs = 1u64 << attempts.saturating_sub(1).min(9);
    Action::requeue(Duration::from_secs(secs.min(300)))
}

fn object_key(cluster: &MqttCluster) -> String {
    format!(
        "{}/{}",
        cluster.namespace().unwrap_or_default(),
        cluster.name_any()
    )
}

/// How a reconcile ended, when it did not fail.
#[derive(Debug)]
enum Step {
    Done,
    Invalid,
    Paused,
}

async fn reconcile_inner(cluster: &MqttCluster, ctx: &Context) -> Result<Step, Error> {
    if cluster.spec.paused {
        report(ctx, cluster, &Outcome::Paused, None).await?;
        return Ok(Step::Paused);
    }
    let namespace = cluster.namespace().ok_or(Error::MissingNamespace)?;
    let observed = observe(ctx, cluster, &namespace).await?;
    let link_service = observed.link_service();
    let link_service = link_service.as_ref();
    let desired = cluster.spec.replicas;
    let current = observed.children.get(&ChildKind::StatefulSet);

    let users = match check(cluster, &observed) {
        Ok(users) => users,
        Err(invalid) => {
            tracing::info!(field = %invalid.field, reason = %invalid.reason, "invalid spec");
            let outcome = Outcome::InvalidSpec {
                message: invalid.to_string(),
                nodes: node_counts(desired, current),
            };
            report(ctx, cluster, &outcome, link_service).await?;
            return Ok(Step::Invalid);
        }
    };

    let credentials_secret = observed.credentials_secret();
    let credentials = match credentials_secret
        .as_ref()
        .and_then(Credentials::from_secret)
    {
        Some(existing) => existing,
        None => Credentials::generate()?,
    };
    let default_user = cluster.spec.auth.users.is_empty().then(|| {
        observed
            .default_user_secret()
            .as_ref()
            .and_then(DefaultUser::from_secret)
            .unwrap_or_else(DefaultUser::generate)
    });
    let user_lines = hash_users(
        users,
        default_user.as_ref(),
        credentials_secret.as_ref().and_then(credentials_file),
        &ctx.known_hashes,
    )
    .await?;
    let inputs = Inputs {
        default_image: &ctx.settings.default_image,
        credentials: &credentials,
        user_lines: &user_lines,
        default_user: default_user.as_ref(),
    };
    let mut held_back = None;
    let applied = match build(cluster, &inputs) {
        Ok(mut children) => {
            held_back = hold_back_volume_change(&mut children.stateful_set, current);
            apply_children(ctx, &namespace, &children, &observed).await
        }
        Err(error) => Err(error.into()),
    };
    match applied {
        Ok(applied) => {
            tracing::debug!(writes = applied.writes, "children applied");
            let nodes = node_counts(desired, applied.stateful_set.as_ref());
            let outcome = match held_back {
                Some(message) => {
                    tracing::info!("a volume change is held back");
                    Outcome::VolumeChangeNotApplied { message, nodes }
                }
                None => Outcome::Applied(nodes),
            };
            report(ctx, cluster, &outcome, link_service).await?;
            Ok(Step::Done)
        }
        Err(error) => {
            let outcome = Outcome::Error {
                message: error.to_string(),
                nodes: node_counts(desired, current),
            };
            // Report what went wrong, then fail so that the controller retries.
            if let Err(status_error) = report(ctx, cluster, &outcome, link_service).await {
                tracing::warn!(error = %status_error, "reporting a failed reconcile");
            }
            Err(error)
        }
    }
}

/// The credentials-file lines of `users` and the default user: at once when
/// nothing needs an Argon2 computation (a steady cluster), else on a
/// blocking thread.
async fn hash_users(
    mut users: Vec<User>,
    default_user: Option<&DefaultUser>,
    live: Option<String>,
    known: &Arc<KnownHashes>,
) -> Result<Vec<String>, Error> {
    users.extend(default_user.map(DefaultUser::user));
    if let Some(lines) = known_lines(&users, live.as_deref(), known) {
        return Ok(lines);
    }
    let known = known.clone();
    let lines =
        tokio::task::spawn_blocking(move || credentials_lines(&users, live.as_deref(), &known))
            .await??;
    Ok(lines)
}

/// Validation of the spec and of the Secrets it refers to; returns the users.
fn check(cluster: &MqttCluster, observed: &Observed) -> Result<Vec<User>, InvalidSpec> {
    validate::spec(&cluster.spec)?;
    for (field, tls) in validate::tls_refs(&cluster.spec) {
        let keys = observed
            .tls_secret_keys
            .get(&tls.certificate_secret)
            .and_then(Option::as_deref);
        validate::tls_secret(field, tls, keys)?;
    }
    let mut all: Vec<User> = Vec::new();
    for (i, users) in cluster.spec.auth.users.iter().enumerate() {
        let content = observed.users.get(i).and_then(Option::as_deref);
        for user in validate::users_secret(i, &users.secret_name, &users.key, content)? {
            if all.iter().any(|u| u.name == user.name) {
                return Err(InvalidSpec::new(
                    format!("spec.auth.users[{i}]"),
                    format!(
                        "Secret {:?} defines user {:?}, which an earlier users Secret defines",
                        users.secret_name, user.name
                    ),
                ));
            }
            all.push(user);
        }
    }
    Ok(all)
}
