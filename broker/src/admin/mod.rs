//! The admin HTTP endpoint: `/healthz`, `/readyz`, `/metrics`, and the admin
//! API under `/api/v1/`.
//!
//! Kubernetes probes and Prometheus scrape this endpoint, so they get plain
//! text without credentials. The admin API needs the admin token (a bearer
//! token), or, when none is configured, a caller on loopback. Everything reads
//! only what [`AdminSource`] exposes and never blocks on the broker.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tokio::net::TcpListener;

/// What the admin endpoint reads from the broker.
pub trait AdminSource: Send + Sync + 'static {
    /// Whether the node can serve clients (listeners bound, store loaded).
    fn ready(&self) -> bool;
    /// Prometheus text exposition of every metric.
    fn metrics_text(&self) -> String;
    /// The cluster mesh as this node sees it; `None` on a single node.
    fn cluster_status(&self) -> Option<serde_json::Value> {
        None
    }
    /// The revision of the link set put last, and every link's state and counters.
    fn links_status(&self) -> serde_json::Value {
        serde_json::json!({"revision": null, "links": []})
    }
    /// Replaces the link set (a [`crate::config::LinkSet`] as JSON); the
    /// error says what is wrong with it.
    fn replace_links(&self, _links: serde_json::Value) -> Result<(), String> {
        Err("this node does not run links".into())
    }
}

/// Who may call the admin API; the probes and metrics are open to all.
#[derive(Clone)]
pub enum ApiAccess {
    /// Callers must send `Authorization: Bearer <token>`.
    Token(Arc<str>),
    /// No token is configured: only callers on loopback.
    LoopbackOnly,
}

impl fmt::Debug for ApiAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiAccess::Token(_) => f.write_str("Token(<redacted>)"),
            ApiAccess::LoopbackOnly => f.write_str("LoopbackOnly"),
        }
    }
}

impl ApiAccess {
    fn allows(&self, peer: SocketAddr, headers: &HeaderMap) -> bool {
        match self {
            ApiAccess::LoopbackOnly => peer.ip().is_loopback(),
            ApiAccess::Token(token) => headers
                .get(header::AUTHORIZATION)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.strip_prefix("Bearer "))
                .is_some_and(|given| constant_time_eq(given.as_bytes(), token.as_bytes())),
        }
    }
}

/// Compares without stopping at the first difference, so response times do
/// not reveal how much of a guessed token is right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[derive(Clone)]
struct AdminState {
    source: Arc<dyn AdminSource>,
    access: ApiAccess,
}

/// The Prometheus text exposition format, version 0.0.4.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves the admin endpoint on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    source: Arc<dyn AdminSource>,
    access: ApiAccess,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(AdminState { source, access });
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// The routes; anything else is axum's default 404. Everything under
/// `/api/` passes [`require_access`] first.
fn router(state: AdminState) -> Router {
    let api = Router::new()
        .route("/api/v1/cluster", get(cluster))
        .route("/api/v1/links", get(links).put(put_links))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_access,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(api)
        .with_state(state)
}

/// The admin API needs the admin token (or, without one, a loopback caller).
async fn require_access(
    State(state): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    if !state.access.allows(peer, request.headers()) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "the admin API needs the admin token\n",
        )
            .into_response();
    }
    next.run(request).await
}

/// Liveness: the process is up and its runtime answers.
async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: 503 keeps the node out of the Service until it can take clients.
async fn readyz(State(state): State<AdminState>) -> (StatusCode, &'static str) {
    if state.source.ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        state.source.metrics_text(),
    )
}

/// Every link: state, endpoint, counters, queue, configuration revision.
async fn links(State(state): State<AdminState>) -> Response {
    Json(state.source.links_status()).into_response()
}

/// Replaces the link set at runtime: links that stay keep their connections
/// and queues. 400 with the reason when the body is not a valid link set.
async fn put_links(State(state): State<AdminState>, body: Bytes) -> Response {
    let parsed: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(value) => value,
        Err(err) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("the body is not JSON: {err}\n"),
            )
                .into_response()
        }
    };
    match state.source.replace_links(parsed) {
        Ok(()) => Json(state.source.links_status()).into_response(),
        Err(reason) => (StatusCode::BAD_REQUEST, format!("{reason}\n")).into_response(),
    }
}

/// The cluster mesh: this node, its peers with their state, routes and lag.
async fn cluster(State(state): State<AdminState>) -> Response {
    match state.source.cluster_status() {
        Some(status) => Json(status).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "this node is not part of a cluster\n",
        )
            .into_response(),
    }
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

        fn cluster_status(&self) -> Option<serde_json::Value> {
            Some(serde_json::json!({"node": "n0"}))
        }
    }

    struct HttpResponse {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl HttpResponse {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    /// One HTTP/1.1 GET over a fresh connection that the server closes after answering.
    async fn get(addr: std::net::SocketAddr, path: &str) -> HttpResponse {
        get_with(addr, path, "").await
    }

    async fn get_with(addr: std::net::SocketAddr, path: &str, extra_headers: &str) -> HttpResponse {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n{extra_headers}\r\n"
        );
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
        HttpResponse {
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
        let access = ApiAccess::Token("s3cret-token".into());
        let task = tokio::spawn(serve(listener, source, access, async {
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
    async fn the_admin_api_needs_the_token() {
        let source = Arc::new(FakeSource {
            ready: AtomicBool::new(true),
        });
        let (addr, stop, task) = start(source).await;
        let anonymous = get(addr, "/api/v1/cluster").await;
        assert_eq!(anonymous.status, 401);
        let wrong = get_with(addr, "/api/v1/cluster", "Authorization: Bearer guess\r\n").await;
        assert_eq!(wrong.status, 401);
        let right = get_with(
            addr,
            "/api/v1/cluster",
            "Authorization: Bearer s3cret-token\r\n",
        )
        .await;
        assert_eq!(right.status, 200);
        assert_eq!(right.body, r#"{"node":"n0"}"#);
        stop.send(()).expect("server still running");
        task.await.expect("join").expect("serve ends cleanly");
    }

    #[test]
    fn loopback_only_access_refuses_other_callers_and_debug_hides_tokens() {
        let headers = HeaderMap::new();
        let loopback = SocketAddr::from(([127, 0, 0, 1], 1));
        let remote = SocketAddr::from(([10, 0, 0, 1], 1));
        assert!(ApiAccess::LoopbackOnly.allows(loopback, &headers));
        assert!(!ApiAccess::LoopbackOnly.allows(remote, &headers));
        let token = ApiAccess::Token("hidden-value".into());
        assert!(!format!("{token:?}").contains("hidden"));
        assert!(
            !token.allows(loopback, &headers),
            "a token is needed even on loopback"
        );
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
