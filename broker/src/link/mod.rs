//! Links between clusters: each region runs its own cluster, and a link makes
//! two (or more) of them one topic namespace while a message crosses only
//! when a subscriber on the other side wants it.
//!
//! - [`interest`] decides who wants what and by which link each cluster is
//!   reached (multi-hop, loop-free, one copy per interested cluster).
//! - [`credential`] proves a link's secret without sending it.
//! - [`wire`] is the protocol (`docs/link-protocol.md`).
//! - `state` is one link's queue, stream position and counters; `session`
//!   dials, accepts and runs a connection. One side dialling is enough: both
//!   directions flow over the one connection.
//!
//! While a link is down, its remote's interest is remembered and messages
//! for it queue (bounded, by policy, counted); when it is back, each side's
//! stream resumes where the other stopped applying it.

pub mod credential;
pub mod interest;
mod session;
mod state;
pub mod wire;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use credential::{CredentialError, Credentials, LinkSecret};
pub use state::{Link, LinkDrop, LinkStatus};

use crate::cluster::wire::WireMessage;
use crate::config::{LinkConfig, LinkListenerConfig};
use crate::flow::{Gate, Pushback, Release};
use crate::shutdown::Shutdown;
use interest::Interest;
use wire::{LinkMessage, LinkOp};

/// How often an idle link connection sends a heartbeat.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// Silence after which a link connection is given up and redialled.
const TIMEOUT: Duration = Duration::from_secs(5);

/// What links need from the broker node they run in.
pub trait LinkHost: Send + Sync + 'static {
    fn shutdown_signal(&self) -> Shutdown;
    /// Delivers a message that came over `link` into this cluster (if it is
    /// addressed here) and on over other links; says whether (and for whom)
    /// the link's stream should be held.
    fn deliver_linked(&self, link: &Link, message: LinkMessage) -> Pushback;
    /// Retained messages matching any of `filters`, to send a remote that
    /// just gained interest in them.
    fn retained_matching(&self, filters: &[String]) -> Vec<WireMessage>;
    /// How long a stream is held for full queues, at most.
    fn backpressure_wait(&self) -> Duration;
    /// A hold ended.
    fn held(&self, release: Release);
}

/// Why links could not start or be reconfigured.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(transparent)]
    Credential(#[from] CredentialError),
    #[error("invalid link configuration: {0}")]
    Invalid(String),
}

/// What routing one message over links did.
#[derive(Debug, Default)]
pub struct Forwarded {
    /// Links it was queued on.
    pub queued: usize,
    /// Links that are falling behind and want the publisher held.
    pub pushback: Pushback,
}

/// Every link of this node.
#[derive(Debug)]
pub struct Links {
    me: String,
    links: RwLock<BTreeMap<String, Arc<Link>>>,
    /// Lock order: `interest`, then a link's queue.
    interest: Mutex<Interest>,
    credentials: Option<Credentials>,
    revision: Mutex<u64>,
    /// Each dialling link's task, so a link removed at runtime stops dialling.
    dialers: Mutex<BTreeMap<String, JoinHandle<()>>>,
    refused: std::sync::atomic::AtomicU64,
    /// Starts a link's dialler; set by [`spawn`], used by [`Links::replace`].
    starter: std::sync::OnceLock<Starter>,
}

/// Starts the dialling task of a link (it holds the node weakly, so the
/// node and its links do not keep each other alive).
struct Starter(Box<dyn Fn(Arc<Link>) -> Option<JoinHandle<()>> + Send + Sync>);

impl std::fmt::Debug for Starter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Starter")
    }
}

impl Links {
    /// The links of cluster `me`, as configured (nothing runs before [`spawn`]).
    pub fn new(
        me: &str,
        listener: Option<&LinkListenerConfig>,
        configs: &[LinkConfig],
    ) -> Result<Links, LinkError> {
        let credentials = listener
            .map(|l| Credentials::load(&l.credentials_file))
            .transpose()?;
        let links = Links {
            me: me.to_owned(),
            links: RwLock::new(BTreeMap::new()),
            interest: Mutex::new(Interest::new(me)),
            credentials,
            revision: Mutex::new(0),
            dialers: Mutex::new(BTreeMap::new()),
            refused: std::sync::atomic::AtomicU64::new(0),
            starter: std::sync::OnceLock::new(),
        };
        links.install(configs)?;
        Ok(links)
    }

    /// This cluster's name.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// Makes `configs` the link set: links that stay keep their connection,
    /// queue and what they learned; new ones start empty; removed ones are
    /// dropped with their queues. Returns the links that are new.
    fn install(&self, configs: &[LinkConfig]) -> Result<Vec<Arc<Link>>, LinkError> {
        let mut secrets = BTreeMap::new();
        for config in configs {
            if let Some(path) = &config.secret_file {
                secrets.insert(config.name.clone(), LinkSecret::load(path)?);
            }
        }
        let revision = {
            let mut revision = self.revision.lock();
            *revision += 1;
            *revision
        };
        let mut interest = self.interest.lock();
        let mut links = self.links.write();
        let mut added = Vec::new();
        links.retain(|name, link| {
            let keep = configs.iter().any(|c| &c.name == name);
            if !keep {
                link.abandon();
                if let Some(task) = self.dialers.lock().remove(name) {
                    task.abort();
                }
            }
            keep
        });
        for config in configs {
            match links.get(&config.name) {
                Some(link) => link.reconfigure(config.clone(), revision),
                None => {
                    let link = Arc::new(Link::new(
                        config.clone(),
                        secrets.remove(&config.name),
                        revision,
                    ));
                    links.insert(config.name.clone(), link.clone());
                    added.push(link);
                }
            }
        }
        let (resend, ops) = interest.set_links(configs);
        for name in resend {
            if let Some(link) = links.get(&name) {
                for op in interest.snapshot(&name) {
                    push_op(link, &op);
                }
            }
        }
        drop(links);
        self.queue_ops(ops);
        Ok(added)
    }

    /// The link to `name`, if configured.
    pub fn get(&self, name: &str) -> Option<Arc<Link>> {
        self.links.read().get(name).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Link>> {
        self.links.read().values().cloned().collect()
    }

    pub fn is_empty(&self) -> bool {
        self.links.read().is_empty()
    }

    /// A filter gained its first subscriber in this cluster.
    pub fn own_added(&self, filter: &str) {
        let ops = self.interest.lock().own_added(filter);
        self.queue_ops(ops);
    }

    /// A filter lost its last subscriber in this cluster.
    pub fn own_removed(&self, filter: &str) {
        let ops = self.interest.lock().own_removed(filter);
        self.queue_ops(ops);
    }

    fn queue_ops(&self, ops: interest::Outgoing) {
        if ops.is_empty() {
            return;
        }
        let links = self.links.read();
        for (name, op) in ops {
            if let Some(link) = links.get(&name) {
                push_op(link, &op);
            }
        }
    }

    /// Queues `message` for every cluster whose interest matches: `path` is
    /// where it has been (this cluster last), `to` and `from` the addressing
    /// and link it came with (`None` when published here).
    /// The message is built by `message` only when some cluster wants `topic`.
    pub fn forward(
        &self,
        topic: &str,
        message: impl FnOnce() -> WireMessage,
        path: &[String],
        to: Option<&[String]>,
        from: Option<&str>,
    ) -> Forwarded {
        let mut forwarded = Forwarded::default();
        let routes = self.interest.lock().route(topic, path, to, from);
        if routes.is_empty() {
            return forwarded;
        }
        let message = message();
        let links = self.links.read();
        for (name, to) in routes {
            let Some(link) = links.get(&name) else {
                continue;
            };
            let op = LinkOp::Publish(LinkMessage {
                message: message.clone(),
                path: path.to_vec(),
                to,
                replay: false,
            });
            let body = match wire::encode_op(&op) {
                Ok(body) => body,
                Err(err) => {
                    link.stats.dropped(LinkDrop::TooLarge, 1);
                    tracing::warn!(link = %name, error = %err, "cannot encode a message for a link; dropped");
                    continue;
                }
            };
            match link.push_message(body, message.qos) {
                Ok(backlogged) => {
                    forwarded.queued += 1;
                    link.stats
                        .forwarded
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    link.stats.forwarded_bytes.fetch_add(
                        message.payload.len() as u64,
                        std::sync::atomic::Ordering::Relaxed,
                    );
                    if backlogged {
                        forwarded.pushback.congested = true;
                        if link.is_connected() && message.qos > 0 {
                            forwarded.pushback.gates.push(link.clone() as Arc<dyn Gate>);
                        }
                    }
                }
                Err(reason) => {
                    link.stats.dropped(reason, 1);
                    forwarded.pushback.congested = true;
                }
            }
        }
        forwarded
    }

    /// Whether messages on `topic` are accepted from `link`'s remote.
    pub fn imports(&self, link: &str, topic: &str) -> bool {
        self.interest.lock().imports(link, topic)
    }

    /// Forgets the interest of links down longer than their retention.
    fn expire_interest(&self) {
        for link in self.all() {
            let Some(retention) = link.config().interest_retention_secs else {
                continue;
            };
            if link
                .down_for()
                .is_some_and(|down| down >= Duration::from_secs(retention))
            {
                let mut ops = Vec::new();
                let mut interest = self.interest.lock();
                if interest.counts(&link.name).0 > 0 {
                    tracing::info!(link = %link.name, retention, "forgetting the interest of a link down longer than its retention");
                    interest.forget_link(&link.name, &mut ops);
                }
                drop(interest);
                self.queue_ops(ops);
            }
        }
    }

    /// What `/api/v1/links` shows.
    pub fn status(&self) -> Vec<LinkStatus> {
        let interest = self.interest.lock();
        let counts: Vec<_> = self
            .all()
            .into_iter()
            .map(|l| (interest.counts(&l.name), l))
            .collect();
        drop(interest);
        counts
            .into_iter()
            .map(|((received, sent), link)| link.status(received, sent))
            .collect()
    }

    /// The Prometheus text of every link's metrics.
    pub fn metrics_text(&self) -> String {
        use std::fmt::Write;
        let statuses = self.status();
        let mut out = String::new();
        let mut family =
            |name: &str, kind: &str, help: &str, value: &dyn Fn(&LinkStatus) -> u64| {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
                for status in &statuses {
                    let _ = writeln!(out, "{name}{{link=\"{}\"}} {}", status.name, value(status));
                }
            };
        family(
            "strait_link_up",
            "gauge",
            "Whether the link's connection is up.",
            &|s| u64::from(s.state == "connected"),
        );
        family(
            "strait_link_messages_forwarded_total",
            "counter",
            "Messages queued for the link's remote cluster.",
            &|s| s.forwarded_messages,
        );
        family(
            "strait_link_bytes_forwarded_total",
            "counter",
            "Payload bytes queued for the link's remote cluster.",
            &|s| s.forwarded_bytes,
        );
        family(
            "strait_link_messages_received_total",
            "counter",
            "Messages received over the link.",
            &|s| s.received_messages,
        );
        family(
            "strait_link_bytes_received_total",
            "counter",
            "Payload bytes received over the link.",
            &|s| s.received_bytes,
        );
        family(
            "strait_link_queue_messages",
            "gauge",
            "Messages queued for the remote and not yet acknowledged.",
            &|s| s.queued_messages as u64,
        );
        family(
            "strait_link_queue_bytes",
            "gauge",
            "Bytes of the messages queued for the remote.",
            &|s| s.queued_bytes as u64,
        );
        family(
            "strait_link_routes_received",
            "gauge",
            "Interest advertisements learned from the remote.",
            &|s| s.routes_received as u64,
        );
        family(
            "strait_link_routes_sent",
            "gauge",
            "Interest advertisements made to the remote.",
            &|s| s.routes_sent as u64,
        );
        family(
            "strait_link_interest_refused_total",
            "counter",
            "Advertisements refused (loops, hop limit, bad paths or filters).",
            &|s| s.interest_refused,
        );
        let _ = writeln!(out, "# HELP strait_link_messages_dropped_total Messages for or from a link that were dropped, by reason.\n# TYPE strait_link_messages_dropped_total counter");
        for status in &statuses {
            for reason in LinkDrop::ALL {
                let count = status.dropped.get(reason.label()).copied().unwrap_or(0);
                let _ = writeln!(
                    out,
                    "strait_link_messages_dropped_total{{link=\"{}\",reason=\"{}\"}} {count}",
                    status.name,
                    reason.label()
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP strait_link_handshakes_refused_total Link connections refused at the handshake.\n# TYPE strait_link_handshakes_refused_total counter\nstrait_link_handshakes_refused_total {}",
            self.refused.load(std::sync::atomic::Ordering::Relaxed)
        );
        out
    }

    pub(crate) fn handshake_refused(&self) {
        self.refused
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Queues an interest op (never refused: it is small and unbounded by count).
fn push_op(link: &Link, op: &LinkOp) {
    match wire::encode_op(op) {
        Ok(body) => link.push_control(body),
        Err(err) => tracing::warn!(link = %link.name, error = %err, "cannot encode an interest op"),
    }
}

/// Starts dialling every link with endpoints, accepting on `listener`, and
/// the sweep that expires the interest of links down past their retention.
pub fn spawn<H: LinkHost>(
    host: Arc<H>,
    links: Arc<Links>,
    listener: Option<(TcpListener, Option<Arc<tokio_rustls::TlsAcceptor>>)>,
) -> Vec<JoinHandle<()>> {
    let weak_host = Arc::downgrade(&host);
    let weak_links = Arc::downgrade(&links);
    let _ = links.starter.set(Starter(Box::new(move |link| {
        let (host, links) = (weak_host.upgrade()?, weak_links.upgrade()?);
        Some(tokio::spawn(session::dial_loop(host, links, link)))
    })));
    for link in links.all() {
        links.start_dialer(link);
    }
    let mut tasks = Vec::new();
    if let Some((listener, tls)) = listener {
        tasks.push(tokio::spawn(session::accept_loop(
            host.clone(),
            links.clone(),
            listener,
            tls,
        )));
    }
    tasks.push(tokio::spawn(sweep_loop(host, links)));
    tasks
}

impl Links {
    /// Replaces the link set at runtime (`PUT /api/v1/links`): links that
    /// stay keep their connections and queues.
    pub fn replace(&self, configs: &[LinkConfig]) -> Result<(), LinkError> {
        for link in self.install(configs)? {
            self.start_dialer(link);
        }
        // A link whose endpoints were added or removed dials, or stops dialling.
        for link in self.all() {
            let has_endpoints = !link.config().endpoints.is_empty();
            let dialling = self.dialers.lock().contains_key(&link.name);
            if has_endpoints && !dialling {
                self.start_dialer(link);
            } else if !has_endpoints && dialling {
                if let Some(task) = self.dialers.lock().remove(&link.name) {
                    task.abort();
                }
            }
        }
        Ok(())
    }

    fn start_dialer(&self, link: Arc<Link>) {
        if link.config().endpoints.is_empty() {
            return;
        }
        let Some(task) = self.starter.get().and_then(|start| (start.0)(link.clone())) else {
            return;
        };
        if let Some(old) = self.dialers.lock().insert(link.name.clone(), task) {
            old.abort();
        }
    }
}

async fn sweep_loop<H: LinkHost>(host: Arc<H>, links: Arc<Links>) {
    let mut shutdown = host.shutdown_signal();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(HEARTBEAT) => links.expire_interest(),
            _ = shutdown.recv() => break,
        }
    }
    for (_, task) in std::mem::take(&mut *links.dialers.lock()) {
        task.abort();
    }
}

/// Messages a remote asked for with a new advertisement: the retained ones
/// matching it, addressed to the remote's origin cluster.
fn retained_for(
    host: &impl LinkHost,
    links: &Links,
    link: &Link,
    origin: &str,
    effective: &[String],
) {
    if effective.is_empty() {
        return;
    }
    let path = [links.me.clone()];
    for message in host.retained_matching(effective) {
        let op = LinkOp::Publish(LinkMessage {
            message,
            path: path.to_vec(),
            to: vec![origin.to_owned()],
            replay: true,
        });
        if let Ok(body) = wire::encode_op(&op) {
            // Counted like any message for the remote.
            let qos = match &op {
                LinkOp::Publish(m) => m.message.qos,
                _ => 0,
            };
            match link.push_message(body, qos) {
                Ok(_) => {
                    link.stats
                        .forwarded
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Err(reason) => link.stats.dropped(reason, 1),
            }
        }
    }
}
