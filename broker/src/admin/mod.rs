//! The admin HTTP endpoint: `/healthz`, `/readyz`, `/metrics`.

use std::sync::Arc;

use tokio::net::TcpListener;

/// What the admin endpoint reads from the broker.
pub trait AdminSource: Send + Sync + 'static {
    /// Whether the node can serve clients (listeners bound, store loaded).
    fn ready(&self) -> bool;
    /// Prometheus text exposition of every metric.
    fn metrics_text(&self) -> String;
}

/// Serves the admin endpoint on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    source: Arc<dyn AdminSource>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let _ = (listener, source, shutdown);
    todo!("admin")
}
