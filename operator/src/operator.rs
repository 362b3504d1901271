//! The whole operator: leader election, then the controller until shutdown
//! or lost leadership. The binary and the integration tests both run this.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use tokio::sync::watch;

use futures::FutureExt;
use std::future::Future;

use crate::controller::{self, Context};
use crate::leader::{LeaderElector, LeaseTiming};
use crate::links;
use crate::settings::Settings;
use crate::telemetry::Metrics;

/// Where the leader Lease lives.
#[derive(Debug, Clone)]
pub struct Election {
    pub namespace: String,
    pub lease_name: String,
    pub timing: LeaseTiming,
}

/// Why the operator stopped other than by a requested shutdown.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("starting the controller: {0}")]
    Start(#[from] kube::Error),
    #[error("leadership was lost")]
    LostLeadership,
}

/// State the operator shares with its HTTP endpoints and with tests.
#[derive(Debug, Clone, Default)]
pub struct Handle {
    pub metrics: Arc<Metrics>,
    /// Whether this instance currently holds the leader Lease (or runs without election).
    pub leading: Arc<AtomicBool>,
    /// Whether the controller has started (the readiness probe).
    pub started: Arc<AtomicBool>,
}

/// Runs until `shutdown` turns `true`. Without `election` the controller runs
/// at once; with it, only while this instance holds the Lease.
pub async fn run(
    client: Client,
    settings: Settings,
    election: Option<Election>,
    handle: Handle,
    shutdown: watch::Receiver<bool>,
) -> Result<(), RunError> {
    let ctx =
        Arc::new(Context::new(client.clone(), settings.clone(), handle.metrics.clone()).await?);
    handle.started.store(true, Ordering::Relaxed);
    let Some(election) = election else {
        handle.leading.store(true, Ordering::Relaxed);
        controllers(ctx, wait_for(shutdown)).await;
        return Ok(());
    };

    let leases: Api<Lease> = Api::namespaced(client, &election.namespace);
    let mut elector = LeaderElector::new(
        leases,
        &election.lease_name,
        &settings.instance,
        election.timing,
    );
    tokio::select! {
        () = elector.acquire() => {}
        () = wait_for(shutdown.clone()) => return Ok(()),
    }
    handle.leading.store(true, Ordering::Relaxed);

    let (lost_tx, lost_rx) = watch::channel(false);
    let (stopping_tx, stopping_rx) = watch::channel(false);
    let holder = tokio::spawn(async move {
        tokio::select! {
            () = elector.hold() => { let _ = lost_tx.send(true); }
            () = wait_for(stopping_rx) => {}
        }
        elector
    });
    let stop = {
        let shutdown = wait_for(shutdown);
        let lost = wait_for(lost_rx.clone());
        async move {
            tokio::select! {
                () = shutdown => {}
                () = lost => {}
            }
        }
    };
    controllers(ctx, stop).await;
    handle.leading.store(false, Ordering::Relaxed);
    let _ = stopping_tx.send(true);
    let lost = *lost_rx.borrow();
    if lost {
        return Err(RunError::LostLeadership);
    }
    // Hand the Lease over at once instead of making the next leader wait it out.
    if let Ok(mut elector) = holder.await {
        if let Err(error) = elector.release().await {
            tracing::warn!(%error, "releasing the lease");
        }
    }
    Ok(())
}

/// Runs both controllers until `stop` completes.
async fn controllers(ctx: Arc<Context>, stop: impl Future<Output = ()> + Send + 'static) {
    let stop = stop.boxed().shared();
    tokio::join!(
        controller::run(ctx.clone(), stop.clone()),
        links::run(ctx, stop),
    );
}

/// Completes when `rx` turns `true` (or its sender is gone).
pub async fn wait_for(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}
