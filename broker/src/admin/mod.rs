//! The admin HTTP endpoint: `/healthz`, `/readyz`, `/metrics`.
//!
//! Kubernetes probes and Prometheus scrape this endpoint, so it answers plain
//! text, reads only what [`AdminSource`] exposes, and never blocks on the broker.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

/// What the admin endpoint reads from the broker.
pub trait AdminSource: Send + Sync + 'static {
    /// Whether the node can serve clients (listeners bound, store loaded).
    fn ready(&self) -> bool;
    /// Prometheus text exposition of every metric.
    fn metrics_text(&self) -> String;
}

/// The Prometheus text exposition format, version 0.0.4.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves the admin endpoint on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    source: Arc<dyn AdminSource>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(source))
        .with_graceful_shutdown(shutdown)
        .await
}

/// The routes; anything else is axum's default 404.
fn router(source: Arc<dyn AdminSource>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(source)
}

/// Liveness: the process is up and its runtime answers.
async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: 503 keeps the node out of the Service until it can take clients.
async fn readyz(State(source): State<Arc<dyn AdminSource>>) -> (StatusCode, &'static str) {
    if source.ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn metrics(State(source): State<Arc<dyn AdminSource>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        source.metrics_text(),
    )
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::sync::oneshot;

    use super::*;

    struct FakeSource {
        ready: AtomicBool,
    }

    impl AdminSource for FakeSource {
        fn ready(&self) -> bool {
            self.ready.load(Ordering::SeqCst)
        }

        fn metrics_text(&self) -> String {
            "# TYPE strait_connections gauge\nstrait_connections 3\n".into()
        }
    }

    struct Response {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Response {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    /// One HTTP/1.1 GET over a fresh connection that the server closes after answering.
    async fn get(addr: std::net::SocketAddr, path: &str) -> Response {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .expect("send request");
        let mut raw = String::new();
        stream
            .read_to_string(&mut raw)
            .await
            .expect("read response");
        let (head, body) = raw.split_once("\r\n\r\n").expect("header/body separator");
        let mut lines = head.split("\r\n");
        let status_line = lines.next().expect("status line");
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status code");
        let headers = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
            .collect();
        Response {
            status,
            headers,
            body: body.to_owned(),
        }
    }

    async fn start(
        source: Arc<FakeSource>,
    ) -> (
        std::net::SocketAddr,
        oneshot::Sender<()>,
        tokio::task::JoinHandle<std::io::Result<()>>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, source, async {
            let _ = stopped.await;
        }));
        (addr, stop, task)
    }

    #[tokio::test]
    async fn probes_metrics_and_not_found() {
        let source = Arc::new(FakeSource {
            ready: AtomicBool::new(false),
        });
        let (addr, stop, task) = start(source.clone()).await;

        let health = get(addr, "/healthz").await;
        assert_eq!(health.status, 200);
        assert_eq!(health.body, "ok");

        let not_ready = get(addr, "/readyz").await;
        assert_eq!(not_ready.status, 503);
        assert_eq!(not_ready.body, "not ready");
        source.ready.store(true, Ordering::SeqCst);
        let ready = get(addr, "/readyz").await;
        assert_eq!(ready.status, 200);
        assert_eq!(ready.body, "ready");

        let metrics = get(addr, "/metrics").await;
        assert_eq!(metrics.status, 200);
        assert_eq!(metrics.body, source.metrics_text());
        let content_type = metrics.header("content-type").expect("content type");
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );

        assert_eq!(get(addr, "/nope").await.status, 404);

        stop.send(()).expect("server still running");
        task.await.expect("join").expect("serve ends cleanly");
    }

    #[tokio::test]
    async fn shutdown_stops_accepting() {
        let source = Arc::new(FakeSource {
            ready: AtomicBool::new(true),
        });
        let (addr, stop, task) = start(source).await;
        assert_eq!(get(addr, "/healthz").await.status, 200);
        stop.send(()).expect("server still running");
        task.await.expect("join").expect("serve ends cleanly");
        assert!(TcpStream::connect(addr).await.is_err(), "listener closed");
    }
}
