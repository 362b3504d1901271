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

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use credential::{CredentialError, Credentials, CredentialsFile, LinkSecret};
pub use state::{Link, LinkDrop, LinkStatus};

use crate::cluster::wire::WireMessage;
use crate::config::{LinkConfig, LinkListenerConfig};
use crate::flow::{Gate, Pushback, Release};
use crate::shutdown::Shutdown;
use crate::store::{StoreOp, StoredInterest, StoredLink};
use interest::Interest;
use wire::{LinkMessage, LinkOp};

/// How often an idle link connection sends a heartbeat.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// Silence after which a link connection is given up and redialled.
const TIMEOUT: Duration = Duration::from_secs(5);

/// What links need from the broker node they run in.
pub trait LinkHost: Send + Sync + 'static {
    fn shutdown_signal(&self) -> Shutdown;
    /// Delivers a message that came over `link` (admitted: within the hop
    /// limit, not looping, imported) into this cluster (if it is
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
    /// Whether this node is the one of its cluster that dials links.
    fn dials_links(&self) -> bool;
    /// This node holds `link` now: its cluster hears of it. Returns the
    /// claim's stamp (`None` on a node without a mesh).
    fn claim_link(&self, link: &str) -> Option<u64>;
    /// This node's claim to `link`, made with `stamp`, ends.
    fn release_link(&self, link: &str, stamp: u64);
    /// The other node of this cluster that holds `link`, if one does.
    fn link_holder(&self, link: &str) -> Option<Arc<str>>;
    /// Sends an encoded [`LinkOp`] to `node` of this cluster, or to every
    /// other node; false when it could not be queued.
    fn send_link_op(&self, node: Option<&str>, link: &str, op: Bytes) -> bool;
}

/// How a message reaches [`Links::forward`]: where it has been, and, when
/// it came over a link, what it was addressed to and by which link.
#[derive(Debug, Clone, Copy)]
pub struct Via<'a> {
    /// The clusters it has been in, its origin first and this one last.
    pub path: &'a [String],
    /// The clusters it was addressed to (`None`: published here, so every
    /// interested cluster).
    pub to: Option<&'a [String]>,
    /// The link it came over.
    pub from: Option<&'a str>,
    /// A retained message sent for a new interest, passed on as such.
    pub replay: bool,
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
    /// Read by every publish, written when interest changes. Lock order:
    /// `interest`, then the link map, then a link's queue.
    interest: RwLock<Interest>,
    /// The link listener's credentials (`None`: no listener).
    credentials: Option<CredentialsFile>,
    /// The revision the last `PUT /api/v1/links` named (the operator's hash
    /// of the link set), shown by `GET` so it can tell which nodes run what.
    applied: RwLock<Option<String>>,
    /// Bumped by every installed link set.
    revision: std::sync::atomic::AtomicU64,
    /// Each dialling link's task, so a link removed at runtime stops dialling.
    dialers: Mutex<BTreeMap<String, JoinHandle<()>>>,
    refused: std::sync::atomic::AtomicU64,
    /// Links removed since the store last heard: what it kept of them goes.
    removed: Mutex<Vec<String>>,
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
        revision: Option<String>,
    ) -> Links {
        let credentials = listener.map(|l| CredentialsFile::open(&l.credentials_file));
        let links = Links {
            me: me.to_owned(),
            links: RwLock::new(BTreeMap::new()),
            interest: RwLock::new(Interest::new(me)),
            credentials,
            applied: RwLock::new(revision),
            revision: std::sync::atomic::AtomicU64::new(0),
            dialers: Mutex::new(BTreeMap::new()),
            refused: std::sync::atomic::AtomicU64::new(0),
            starter: std::sync::OnceLock::new(),
            removed: Mutex::new(Vec::new()),
        };
        links.install(configs);
        links
    }

    /// This cluster's name.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// The path of a message published here: this cluster alone.
    pub fn path_here(&self) -> &[String] {
        std::slice::from_ref(&self.me)
    }

    /// How a message published here reaches [`Links::forward`].
    pub fn published_here(&self) -> Via<'_> {
        Via {
            path: self.path_here(),
            to: None,
            from: None,
            replay: false,
        }
    }

    /// Makes `configs` the link set: links that stay keep their connection,
    /// queue and what they learned; new ones start empty; removed ones are
    /// dropped with their queues. Returns the links that are new.
    fn install(&self, configs: &[LinkConfig]) -> Vec<Arc<Link>> {
        let revision = self
            .revision
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let mut interest = self.interest.write();
        let mut links = self.links.write();
        let mut added = Vec::new();
        links.retain(|name, link| {
            let keep = configs.iter().any(|c| &c.name == name);
            if !keep {
                link.abandon();
                self.removed.lock().push(name.clone());
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
                    let link = Arc::new(Link::new(config.clone(), revision));
                    links.insert(config.name.clone(), link.clone());
                    added.push(link);
                }
            }
        }
        let (resend, ops) = interest.set_links(configs);
        // A link whose stream is not here gets its snapshot when it connects.
        for name in resend {
            if let Some(link) = links.get(&name).filter(|l| l.streams_here()) {
                for op in interest.snapshot(&name) {
                    push_op(link, &op);
                }
            }
        }
        drop(links);
        self.queue_ops(ops);
        added
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

    /// A filter gained its first subscriber on a node of this cluster (this
    /// one, or a peer that advertised it over the mesh).
    pub fn own_added(&self, filter: &str) {
        let ops = self.interest.write().own_added(filter);
        self.queue_ops(ops);
    }

    /// A filter lost its last subscriber on a node of this cluster.
    pub fn own_removed(&self, filter: &str) {
        let ops = self.interest.write().own_removed(filter);
        self.queue_ops(ops);
    }

    /// Queues advertisement changes on the links whose stream lives on this
    /// node (the ones it holds, or held last while nobody else took them);
    /// the others only keep their tables, and the node that holds such a
    /// link sends the change itself.
    fn queue_ops(&self, ops: interest::Outgoing) {
        if ops.is_empty() {
            return;
        }
        let links = self.links.read();
        for (name, op) in ops {
            let Some(link) = links.get(&name) else {
                continue;
            };
            if link.streams_here() {
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
        host: &impl LinkHost,
        topic: &str,
        message: impl FnOnce() -> WireMessage,
        via: Via<'_>,
    ) -> Forwarded {
        let mut forwarded = Forwarded::default();
        let routes = self
            .interest
            .read()
            .route(topic, via.path, via.to, via.from);
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
                id: rand::random(),
                message: message.clone(),
                path: via.path.to_vec(),
                to,
                replay: via.replay,
            });
            let body = match wire::encode_op(&op) {
                Ok(body) => body,
                Err(err) => {
                    link.stats
                        .dropped(LinkDrop::TooLarge, 1, message.payload.len());
                    tracing::warn!(link = %name, error = %err, "cannot encode a message for a link; dropped");
                    continue;
                }
            };
            match self.queue_message(host, link, body, &message) {
                Queued::Handed => forwarded.queued += 1,
                Queued::Here { backlogged } => {
                    forwarded.queued += 1;
                    if backlogged {
                        forwarded.pushback.congested = true;
                        hold_for(link, &message, &mut forwarded.pushback);
                    }
                }
                Queued::Dropped => forwarded.pushback.congested = true,
            }
        }
        forwarded
    }

    /// Whether messages on `topic` are accepted from `link`'s remote.
    pub fn imports(&self, link: &str, topic: &str) -> bool {
        self.interest.read().imports(link, topic)
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
                let mut interest = self.interest.write();
                if interest.counts(&link.name).0 > 0 {
                    tracing::info!(link = %link.name, retention, "forgetting the interest of a link down longer than its retention");
                    interest.forget_link(&link.name, &mut ops);
                }
                drop(interest);
                self.queue_ops(ops);
            }
        }
    }

    /// The revision named by the last link set put at runtime.
    pub fn applied_revision(&self) -> Option<String> {
        self.applied.read().clone()
    }

    /// Each link's state and counters, as `/api/v1/links` shows them.
    pub fn status(&self) -> Vec<LinkStatus> {
        let interest = self.interest.read();
        let counts: Vec<_> = self
            .all()
            .into_iter()
            .map(|l| (interest.counts(&l.name), l))
            .collect();
        drop(interest);
        counts
            .into_iter()
            .map(|((received, sent), link)| {
                let holder = link.holder().map(|h| h.to_string());
                link.status(received, sent, holder)
            })
            .collect()
    }

    /// A link op from another node of this cluster: interest the holder of
    /// `link` learned (kept here too, so this node can address messages and
    /// take the link over), or a message for this node to send over `link`.
    pub fn from_mesh(&self, host: &impl LinkHost, link_name: &str, body: Bytes) -> Pushback {
        let Some(link) = self.get(link_name) else {
            tracing::debug!(link = %link_name, "a peer sent an op for a link this node does not have");
            return Pushback::default();
        };
        let op = match postcard::from_bytes::<LinkOp>(&body) {
            Ok(op) => op,
            Err(err) => {
                tracing::warn!(link = %link_name, error = %err, "a peer sent a malformed link op");
                return Pushback::default();
            }
        };
        let mut pushback = Pushback::default();
        match op {
            LinkOp::Publish(message) => {
                // Passed on again when the link moved on meanwhile.
                if let Queued::Here { backlogged: true } =
                    self.queue_message(host, &link, body, &message.message)
                {
                    hold_for(&link, &message.message, &mut pushback);
                }
            }
            other => {
                self.learned(&link, other);
            }
        }
        pushback
    }

    /// Applies an interest op of `link`'s remote (received here, or relayed
    /// by the node that holds the link). Returns, for a new advertisement,
    /// its origin and the filters messages may be sent for.
    pub(crate) fn learned(&self, link: &Link, op: LinkOp) -> Option<(String, Vec<String>)> {
        let mut ops = Vec::new();
        let mut wanted = None;
        match op {
            LinkOp::Reset => self.interest.write().forget_link(&link.name, &mut ops),
            LinkOp::Interest {
                origin,
                filter,
                path,
            } => {
                let learned = self
                    .interest
                    .write()
                    .learn(&link.name, &origin, &filter, path);
                match learned {
                    Ok((effective, out)) => {
                        ops = out;
                        wanted = Some((origin, effective));
                    }
                    Err(refusal) => {
                        link.stats
                            .interest_refused
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tracing::debug!(link = %link.name, %origin, %filter, %refusal, "refused an interest advertisement");
                    }
                }
            }
            LinkOp::InterestGone { origin, filter } => {
                ops = self.interest.write().forget(&link.name, &origin, &filter);
            }
            LinkOp::Position {
                incarnation,
                applied,
            } => link.position_elsewhere(incarnation, applied),
            LinkOp::Publish(_) => {}
        }
        link.mark_dirty();
        self.queue_ops(ops);
        wanted
    }

    /// Another node of this cluster claimed `link`, or gave it up: when it
    /// is another node's now, this node's connection for it ends and what
    /// was queued here goes to the holder, in order.
    pub fn moved(&self, host: &impl LinkHost, link_name: &str) {
        let Some(link) = self.get(link_name) else {
            return;
        };
        let holder = host.link_holder(link_name);
        link.set_holder(holder.clone());
        let Some(holder) = holder else {
            return;
        };
        let messages = link.hand_over();
        if !messages.is_empty() {
            tracing::info!(link = %link_name, %holder, messages = messages.len(), "handing queued messages to the node that holds the link now");
        }
        for body in messages {
            let body_len = body.len();
            if !host.send_link_op(Some(&holder), link_name, body) {
                link.stats.dropped(LinkDrop::QueueFull, 1, body_len);
            }
        }
    }

    /// The interest learned over every link, for a node of this cluster met
    /// for the first time.
    pub fn for_peer(&self) -> Vec<(String, Bytes)> {
        let interest = self.interest.read();
        let mut out = Vec::new();
        for link in self.links.read().keys() {
            for (origin, filter, path) in interest.learned(link) {
                let op = LinkOp::Interest {
                    origin,
                    filter,
                    path,
                };
                if let Ok(body) = wire::encode_op(&op) {
                    out.push((link.clone(), body));
                }
            }
        }
        out
    }

    /// What the store must write: every link whose queue or interest
    /// changed since the last call, and the links removed since.
    pub fn store_ops(&self) -> Vec<StoreOp> {
        let mut ops: Vec<StoreOp> = std::mem::take(&mut *self.removed.lock())
            .into_iter()
            .map(StoreOp::DeleteLink)
            .collect();
        for link in self.all() {
            if !link.take_dirty() {
                continue;
            }
            let interest = self
                .interest
                .read()
                .learned(&link.name)
                .into_iter()
                .map(|(origin, filter, path)| StoredInterest {
                    origin,
                    filter,
                    path,
                })
                .collect();
            ops.push(StoreOp::PutLink(StoredLink {
                name: link.name.clone(),
                messages: link.queued_bodies().iter().map(|b| b.to_vec()).collect(),
                interest,
            }));
        }
        ops
    }

    /// Takes back what the store kept of the links at start-up: messages
    /// queue again, interest is known again. A link no longer configured is
    /// dropped from the store.
    pub fn restore(&self, stored: Vec<StoredLink>) {
        for kept in stored {
            let Some(link) = self.get(&kept.name) else {
                self.removed.lock().push(kept.name);
                continue;
            };
            let mut interest = self.interest.write();
            for entry in kept.interest {
                // Nothing is connected yet: what it would relay is sent
                // with each link's first snapshot.
                let _ = interest.learn(&link.name, &entry.origin, &entry.filter, entry.path);
            }
            drop(interest);
            let queued =
                link.restore_messages(kept.messages.into_iter().map(Bytes::from).collect());
            tracing::info!(link = %link.name, queued, "restored the link's queue and interest from the store");
        }
    }

    /// Queues an encoded message for `link`'s remote: handed to the node of
    /// this cluster that holds the link, or on this node's queue. Counts it,
    /// or the drop and its reason.
    fn queue_message(
        &self,
        host: &impl LinkHost,
        link: &Link,
        body: Bytes,
        message: &WireMessage,
    ) -> Queued {
        let payload = message.payload.len();
        if let Some(holder) = link.holder() {
            if host.send_link_op(Some(&holder), &link.name, body) {
                return Queued::Handed;
            }
            link.stats.dropped(LinkDrop::QueueFull, 1, payload);
            return Queued::Dropped;
        }
        match link.push_message(body, message.qos, payload) {
            Ok(backlogged) => {
                self.count_forwarded(link, message);
                Queued::Here { backlogged }
            }
            Err(reason) => {
                link.stats.dropped(reason, 1, payload);
                Queued::Dropped
            }
        }
    }

    fn count_forwarded(&self, link: &Link, message: &WireMessage) {
        link.stats
            .forwarded
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        link.stats.forwarded_bytes.fetch_add(
            message.payload.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// The Prometheus text of every link's metrics.
    pub fn metrics_text(&self) -> String {
        use std::fmt::Write;
        let statuses = self.status();
        let mut out = String::new();
        for (name, kind, help, value) in FAMILIES {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for status in &statuses {
                let _ = writeln!(out, "{name}{{link=\"{}\"}} {}", status.name, value(status));
            }
        }
        let by_reason: [ByReason; 2] = [
            (
                "strait_link_messages_dropped_total",
                "Messages for or from a link that were dropped, by reason.",
                |s| &s.dropped,
            ),
            (
                "strait_link_bytes_dropped_total",
                "Payload bytes of the messages dropped, by reason.",
                |s| &s.dropped_bytes,
            ),
        ];
        for (name, help, counts) in by_reason {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for status in &statuses {
                for reason in LinkDrop::ALL {
                    let count = counts(status).get(reason.label()).copied().unwrap_or(0);
                    let _ = writeln!(
                        out,
                        "{name}{{link=\"{}\",reason=\"{}\"}} {count}",
                        status.name,
                        reason.label()
                    );
                }
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

/// A per-link family counted by reason: name, help, and its counts in a status.
type ByReason = (
    &'static str,
    &'static str,
    fn(&LinkStatus) -> &BTreeMap<&'static str, u64>,
);

/// A per-link metric family: name, type, help, and its value in a status.
type Family = (
    &'static str,
    &'static str,
    &'static str,
    fn(&LinkStatus) -> u64,
);

/// Every per-link family except the drops (which have a reason label too).
const FAMILIES: [Family; 11] = [
    (
        "strait_link_up",
        "gauge",
        "Whether the link's connection is up on this node.",
        |s| u64::from(s.state == "connected"),
    ),
    (
        "strait_link_connects_total",
        "counter",
        "Connections that carried the link on this node.",
        |s| s.connects,
    ),
    (
        "strait_link_messages_forwarded_total",
        "counter",
        "Messages queued for the link's remote cluster.",
        |s| s.forwarded_messages,
    ),
    (
        "strait_link_bytes_forwarded_total",
        "counter",
        "Payload bytes queued for the link's remote cluster.",
        |s| s.forwarded_bytes,
    ),
    (
        "strait_link_messages_received_total",
        "counter",
        "Messages received over the link.",
        |s| s.received_messages,
    ),
    (
        "strait_link_bytes_received_total",
        "counter",
        "Payload bytes received over the link.",
        |s| s.received_bytes,
    ),
    (
        "strait_link_queue_messages",
        "gauge",
        "Messages queued for the remote and not yet acknowledged.",
        |s| s.queued_messages as u64,
    ),
    (
        "strait_link_queue_bytes",
        "gauge",
        "Bytes of the messages queued for the remote.",
        |s| s.queued_bytes as u64,
    ),
    (
        "strait_link_routes_received",
        "gauge",
        "Interest advertisements learned from the remote.",
        |s| s.routes_received as u64,
    ),
    (
        "strait_link_routes_sent",
        "gauge",
        "Interest advertisements made to the remote.",
        |s| s.routes_sent as u64,
    ),
    (
        "strait_link_interest_refused_total",
        "counter",
        "Advertisements refused (loops, hop limit, bad paths or filters).",
        |s| s.interest_refused,
    ),
];

/// Where [`Links::queue_message`] put a message.
enum Queued {
    /// To the node of this cluster that holds the link.
    Handed,
    /// On this node's queue, which is `backlogged` or not.
    Here { backlogged: bool },
    /// Nowhere: dropped and counted.
    Dropped,
}

/// A backlogged link holds the publisher of a QoS 1/2 message while its
/// connection is up (while it is down, its bound and policy rule).
fn hold_for(link: &Arc<Link>, message: &WireMessage, pushback: &mut Pushback) {
    if link.is_connected() && message.qos > 0 {
        pushback.gates.push(link.clone() as Arc<dyn Gate>);
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
    pub fn replace(&self, configs: &[LinkConfig], revision: Option<String>) {
        *self.applied.write() = revision;
        for link in self.install(configs) {
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
    // The other nodes take the links over at once instead of after the peer timeout.
    for link in links.all() {
        if let Some(stamp) = link.claim().take() {
            host.release_link(&link.name, stamp);
        }
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
    for message in host.retained_matching(effective) {
        let op = LinkOp::Publish(LinkMessage {
            id: rand::random(),
            message,
            path: links.path_here().to_vec(),
            to: vec![origin.to_owned()],
            replay: true,
        });
        // Queued and counted like any message for the remote.
        if let (Ok(body), LinkOp::Publish(linked)) = (wire::encode_op(&op), &op) {
            links.queue_message(host, link, body, &linked.message);
        }
    }
}
