//! The operator's HTTP endpoint: `/metrics`, `/healthz`, `/readyz`.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use tokio::sync::watch;

use crate::operator::{wait_for, Handle};

/// Serves the endpoints on `bind` until `shutdown` turns `true`.
pub async fn serve(
    bind: SocketAddr,
    handle: Handle,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .with_state(handle);
    let listener = tokio::net::TcpListener::bind(bind).await?;
    tracing::info!(%bind, "serving metrics and health");
    axum::serve(listener, app)
        .with_graceful_shutdown(wait_for(shutdown))
        .await
}

async fn metrics(State(handle): State<Handle>) -> String {
    let mut text = handle.metrics.render();
    let leading = u8::from(handle.leading.load(Ordering::Relaxed));
    text.push_str(&format!(
        "# HELP strait_operator_leader Whether this instance leads.\n\
         # TYPE strait_operator_leader gauge\nstrait_operator_leader {leading}\n"
    ));
    text
}

/// Ready once the controller has started, leader or standby: a standby is a
/// healthy replica waiting for the Lease.
async fn ready(State(handle): State<Handle>) -> (StatusCode, &'static str) {
    if handle.started.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}
