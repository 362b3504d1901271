//! One link's runtime state: its queue to the remote, what it applied of the
//! remote's stream, which connection carries it, and its counters.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use parking_lot::{Mutex, MutexGuard, RwLock};
use serde::Serialize;
use tokio::sync::{watch, Notify};

use super::credential::{LinkSecret, SaltedKeys, SALT_LEN};
use super::wire::{MAX_FRAME, OP_VARIANT};
use crate::config::{LinkConfig, WhenFull};
use crate::flow::Gate;
use crate::peering::outbox::{Bounds, Forgotten, Kind, Outbox, PushError, Resume};

/// Queued messages beyond which the remote counts as falling behind and
/// publishers are held (as for a slow session), at least. The mark is half
/// the queue's bound when that is more: a link across a long round trip
/// holds rate × RTT messages in flight, and a small mark would act as the
/// very inflight window that caps throughput on such links.
const MIN_BACKLOG: usize = 4096;

/// Why a message meant for a link's remote did not reach it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkDrop {
    /// The queue was at its bound (by `queue.whenFull`).
    QueueFull,
    /// It waited on the queue longer than `queue.messageTtlSecs`.
    Expired,
    /// QoS 0 while the link was down: at most once means not queued.
    Qos0Offline,
    /// Received, but outside this side's `import` filters.
    OutsideImport,
    /// Received with this cluster already on its path, or past the hop limit.
    Loop,
    /// Could not be encoded within a frame.
    TooLarge,
    /// Received again (its id was just seen): a resend after the sending
    /// node changed.
    Duplicate,
}

impl LinkDrop {
    pub const ALL: [LinkDrop; 7] = [
        LinkDrop::QueueFull,
        LinkDrop::Expired,
        LinkDrop::Qos0Offline,
        LinkDrop::OutsideImport,
        LinkDrop::Loop,
        LinkDrop::TooLarge,
        LinkDrop::Duplicate,
    ];

    pub fn label(self) -> &'static str {
        match self {
            LinkDrop::QueueFull => "queue_full",
            LinkDrop::Expired => "expired",
            LinkDrop::Qos0Offline => "qos0_offline",
            LinkDrop::OutsideImport => "outside_import",
            LinkDrop::Loop => "loop",
            LinkDrop::TooLarge => "too_large",
            LinkDrop::Duplicate => "duplicate",
        }
    }
}

/// A link's counters.
#[derive(Debug, Default)]
pub struct LinkStats {
    /// Connections that took the link over, on this node.
    pub connects: AtomicU64,
    pub forwarded: AtomicU64,
    pub forwarded_bytes: AtomicU64,
    pub received: AtomicU64,
    pub received_bytes: AtomicU64,
    pub interest_refused: AtomicU64,
    /// Messages and their payload bytes dropped, by reason.
    dropped: Mutex<BTreeMap<LinkDrop, (u64, u64)>>,
}

impl LinkStats {
    /// `count` messages of `bytes` payload bytes in all were dropped for `reason`.
    pub fn dropped(&self, reason: LinkDrop, count: u64, bytes: usize) {
        if count > 0 {
            let mut dropped = self.dropped.lock();
            let entry = dropped.entry(reason).or_insert((0, 0));
            entry.0 += count;
            entry.1 += bytes as u64;
        }
    }
}

/// Which connection carries the link, and how it has gone.
#[derive(Debug, Default)]
struct Connection {
    /// The cluster that dialled the current (or last) connection.
    dialer: Option<String>,
    endpoint: Option<String>,
    since: Option<SystemTime>,
    down_since: Option<Instant>,
    last_error: Option<String>,
}

/// Message ids remembered per link to drop resends: more than a sending
/// node can have in flight when another takes over.
const RECENT_IDS: usize = 65_536;

/// What this side applied of the remote's stream.
#[derive(Debug, Default)]
pub struct Inbound {
    pub incarnation: Option<u64>,
    pub applied: u64,
    /// The ids of the last messages received, oldest first.
    recent: std::collections::VecDeque<u64>,
    seen: hashbrown::HashSet<u64>,
}

impl Inbound {
    /// Records `id`; false when it was seen recently.
    pub fn first_sight(&mut self, id: u64) -> bool {
        if !self.seen.insert(id) {
            return false;
        }
        self.recent.push_back(id);
        if self.recent.len() > RECENT_IDS {
            if let Some(old) = self.recent.pop_front() {
                self.seen.remove(&old);
            }
        }
        true
    }
}

/// A link to one remote cluster.
#[derive(Debug)]
pub struct Link {
    pub name: String,
    config: RwLock<LinkConfig>,
    /// This side's stream, drawn when the link is created.
    pub incarnation: u64,
    outbox: Mutex<Outbox>,
    /// Acknowledgements and heartbeat answers, sent before the stream.
    control: Mutex<BytesMut>,
    pub(super) wake: Notify,
    /// Woken when a backlogged queue drains or the connection goes down.
    room: Notify,
    connected: AtomicBool,
    connection: Mutex<Connection>,
    /// Bumped for each connection that takes the link over; the one it
    /// replaced sees the change and ends.
    generation: watch::Sender<u64>,
    inbound: Mutex<Inbound>,
    pub stats: LinkStats,
    /// The keys last derived from this side's secret, with the salt and
    /// the secret they were derived for (the secret file is read at every
    /// dial, so a rotated secret is used from the next connection on).
    salted: Mutex<Option<([u8; SALT_LEN], LinkSecret, SaltedKeys)>>,
    revision: AtomicU64,
    /// This node's claim to hold the link in its cluster (a directory stamp).
    claim: Mutex<Option<u64>>,
    /// A connection carried the link on this node at some point: its stream
    /// to the remote exists, so interest changes are queued on it.
    ever_connected: AtomicBool,
    /// The queue or the interest changed since the store last saw them.
    dirty: AtomicBool,
    /// The other node of this cluster that holds the link, as the claims
    /// last said (kept here so that routing a message takes no directory lock).
    holder: RwLock<Option<std::sync::Arc<str>>>,
}

impl Link {
    pub fn new(config: LinkConfig, revision: u64) -> Link {
        let bounds = Bounds {
            messages: config.queue.max_messages,
            bytes: config.queue.max_bytes,
        };
        // The other cluster still wants what was queued for it, even when its
        // node forgot this stream (it restarted): keep the messages.
        let outbox = Outbox::new(bounds, Forgotten::KeepMessages, OP_VARIANT, MAX_FRAME)
            .with_backlog_mark(MIN_BACKLOG.max(config.queue.max_messages / 2));
        Link {
            name: config.name.clone(),
            config: RwLock::new(config),
            incarnation: rand::random(),
            outbox: Mutex::new(outbox),
            control: Mutex::new(BytesMut::new()),
            wake: Notify::new(),
            room: Notify::new(),
            connected: AtomicBool::new(false),
            connection: Mutex::new(Connection {
                down_since: Some(Instant::now()),
                ..Connection::default()
            }),
            generation: watch::channel(0).0,
            inbound: Mutex::new(Inbound::default()),
            stats: LinkStats::default(),
            salted: Mutex::new(None),
            revision: AtomicU64::new(revision),
            claim: Mutex::new(None),
            ever_connected: AtomicBool::new(false),
            dirty: AtomicBool::new(false),
            holder: RwLock::new(None),
        }
    }

    /// The other node of this cluster that holds the link, if one does.
    pub fn holder(&self) -> Option<std::sync::Arc<str>> {
        self.holder.read().clone()
    }

    /// The claims changed: `holder` holds the link now (`None`: this node
    /// or nobody).
    pub fn set_holder(&self, holder: Option<std::sync::Arc<str>>) {
        *self.holder.write() = holder;
    }

    /// Something the store keeps changed.
    pub fn mark_dirty(&self) {
        self.dirty.store(true, Ordering::Release);
    }

    /// Whether something the store keeps changed since the last call.
    pub fn take_dirty(&self) -> bool {
        self.dirty.swap(false, Ordering::AcqRel)
    }

    /// The queued messages, for the store.
    pub fn queued_bodies(&self) -> Vec<Bytes> {
        self.outbox.lock().message_bodies()
    }

    /// Queues messages read back from the store, in order, before any
    /// connection: they go out when the link is up.
    pub fn restore_messages(&self, bodies: Vec<Bytes>) -> usize {
        let mut outbox = self.outbox.lock();
        bodies
            .into_iter()
            .filter(|body| outbox.push(body.clone(), Kind::Message, None).is_ok())
            .count()
    }

    /// Whether this node's stream to the remote is the link's: a connection
    /// carried it here, and no other node holds the link since. Changes of
    /// interest are queued on such a stream; any other gets a snapshot when
    /// it connects.
    pub fn streams_here(&self) -> bool {
        self.ever_connected.load(Ordering::Acquire) && self.holder().is_none()
    }

    /// This node's claim to hold the link: the stamp it was made with.
    pub fn claim(&self) -> MutexGuard<'_, Option<u64>> {
        self.claim.lock()
    }

    /// Another node holds the link now: the connection here ends, and the
    /// messages queued here are returned, in order, for the holder.
    pub fn hand_over(&self) -> Vec<Bytes> {
        self.generation.send_modify(|g| *g += 1);
        self.connected.store(false, Ordering::Release);
        self.ever_connected.store(false, Ordering::Release);
        *self.claim.lock() = None;
        let messages = self.outbox.lock().take_messages();
        self.mark_dirty();
        // The holder counts them when it queues them.
        self.stats
            .forwarded
            .fetch_sub(messages.len() as u64, Ordering::Relaxed);
        self.room.notify_waiters();
        messages
    }

    pub fn config(&self) -> LinkConfig {
        self.config.read().clone()
    }

    /// The hop limit (read for every message received: no clone).
    pub fn max_hops(&self) -> u8 {
        self.config.read().max_hops
    }

    /// A new configuration for the same remote; the queue and connection stay.
    pub fn reconfigure(&self, config: LinkConfig, revision: u64) {
        *self.config.write() = config;
        self.revision.store(revision, Ordering::Relaxed);
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// The keys to prove this side's secret for `salt`. The secret file is
    /// read each time (it is small, and a dial is rare); the keys are
    /// derived again only for a new salt or secret (Argon2 is slow on
    /// purpose), off the async threads.
    pub async fn salted_keys(&self, salt: [u8; SALT_LEN]) -> Result<SaltedKeys, String> {
        let path = self
            .config
            .read()
            .secret_file
            .clone()
            .ok_or("no secretFile is configured to dial with")?;
        let secret = tokio::task::spawn_blocking(move || LinkSecret::load(&path))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        if let Some((cached, cached_secret, keys)) = &*self.salted.lock() {
            if *cached == salt && *cached_secret == secret {
                return Ok(keys.clone());
            }
        }
        let for_keys = secret.clone();
        let keys = tokio::task::spawn_blocking(move || for_keys.salted(&salt))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        *self.salted.lock() = Some((salt, secret, keys.clone()));
        Ok(keys)
    }

    /// Queues a message (`payload` bytes of it) for the remote, by the
    /// queue's policy; says why not.
    pub fn push_message(&self, body: Bytes, qos: u8, payload: usize) -> Result<bool, LinkDrop> {
        if qos == 0 && !self.is_connected() {
            return Err(LinkDrop::Qos0Offline);
        }
        let (ttl, when_full) = {
            let config = self.config.read();
            (config.queue.message_ttl_secs, config.queue.when_full)
        };
        let expires = ttl.map(|ttl| Instant::now() + Duration::from_secs(ttl));
        let mut outbox = self.outbox.lock();
        let pushed = match outbox.push_weighted(body.clone(), Kind::Message, expires, payload) {
            Err(PushError::Full) if when_full == WhenFull::DropOldest => {
                match outbox.drop_oldest_unsent() {
                    Some(dropped) => {
                        self.stats.dropped(LinkDrop::QueueFull, 1, dropped);
                        outbox.push_weighted(body, Kind::Message, expires, payload)
                    }
                    None => Err(PushError::Full),
                }
            }
            other => other,
        };
        match pushed {
            Ok(_) => {
                let backlogged = outbox.is_backlogged();
                drop(outbox);
                self.mark_dirty();
                self.wake.notify_one();
                Ok(backlogged)
            }
            Err(PushError::Full) => Err(LinkDrop::QueueFull),
            Err(PushError::TooLarge) => Err(LinkDrop::TooLarge),
        }
    }

    /// Queues an interest op.
    pub fn push_control(&self, body: Bytes) {
        // A control op never meets a bound; too large is impossible for a
        // filter within the topic length limit, and is logged if it happens.
        if self.outbox.lock().push(body, Kind::Control, None).is_err() {
            tracing::warn!(link = %self.name, "an interest op is larger than a frame may be; not sent");
        }
        self.wake.notify_one();
    }

    /// Queues a frame outside the stream (an acknowledgement, a heartbeat answer).
    pub fn push_reply(&self, frame: &[u8]) {
        self.control.lock().extend_from_slice(frame);
        self.wake.notify_one();
    }

    /// Appends what waits to go out to `out`; false when nothing did.
    pub fn write_unsent(&self, out: &mut Vec<u8>) -> bool {
        let before = out.len();
        out.extend_from_slice(&self.control.lock().split());
        let written = self.outbox.lock().write_unsent(Instant::now(), out);
        self.stats
            .dropped(LinkDrop::Expired, written.expired, written.expired_weight);
        out.len() > before
    }

    /// The remote applied this side's stream up to `seq`.
    pub fn acknowledged(&self, seq: u64) {
        let drained = {
            let mut outbox = self.outbox.lock();
            let was = outbox.is_backlogged();
            let before = outbox.messages().0;
            outbox.ack(seq);
            if outbox.messages().0 != before {
                self.mark_dirty();
            }
            was && !outbox.is_backlogged()
        };
        if drained {
            self.room.notify_waiters();
        }
    }

    pub fn inbound(&self) -> MutexGuard<'_, Inbound> {
        self.inbound.lock()
    }

    /// Where the remote's stream resumes for the remote incarnation given:
    /// the last op applied, or `None` (a new stream: start it over).
    pub fn resume_remote(&self, incarnation: u64) -> Option<u64> {
        let mut inbound = self.inbound.lock();
        if inbound.incarnation == Some(incarnation) {
            return Some(inbound.applied);
        }
        inbound.incarnation = Some(incarnation);
        inbound.applied = 0;
        None
    }

    /// Another node of this cluster, holding the link, applied the remote's
    /// stream `incarnation` up to `applied`.
    pub fn position_elsewhere(&self, incarnation: u64, applied: u64) {
        let mut inbound = self.inbound.lock();
        // A connection here is the authority on its own stream; a report
        // from a node that held the link before (or holds it in a race
        // about to be settled) must not move it.
        if self.is_connected() {
            return;
        }
        if inbound.incarnation != Some(incarnation) {
            inbound.incarnation = Some(incarnation);
            inbound.applied = applied;
        } else {
            inbound.applied = inbound.applied.max(applied);
        }
    }

    /// What this side applied of the remote's stream, for the handshake.
    pub fn applied_remote(&self) -> Option<(u64, u64)> {
        let inbound = self.inbound.lock();
        inbound.incarnation.map(|i| (i, inbound.applied))
    }

    /// Takes the link over for a new connection dialled by `dialer`, unless
    /// a connection dialled by the other side is up and preferred (both
    /// sides may dial; the one dialled by the cluster whose name sorts first
    /// is kept). Returns the connection's generation.
    pub fn attach(&self, dialer: &str, endpoint: String) -> Result<u64, String> {
        let mut connection = self.connection.lock();
        if self.is_connected() {
            if let Some(current) = &connection.dialer {
                if current != dialer && current.as_str() < dialer {
                    return Err(format!(
                        "the link is up over the connection {current} dialled"
                    ));
                }
            }
        }
        connection.dialer = Some(dialer.to_owned());
        connection.endpoint = Some(endpoint);
        connection.since = Some(SystemTime::now());
        connection.down_since = None;
        connection.last_error = None;
        let mut generation = 0;
        self.generation.send_modify(|g| {
            *g += 1;
            generation = *g;
        });
        self.connected.store(true, Ordering::Release);
        self.ever_connected.store(true, Ordering::Release);
        self.stats.connects.fetch_add(1, Ordering::Relaxed);
        Ok(generation)
    }

    /// Resumes this side's stream for the remote, which last applied `after`.
    pub fn resume_local(&self, after: Option<u64>) -> Resume {
        self.outbox.lock().resume(after)
    }

    /// A watch that changes when another connection takes the link over.
    pub fn generations(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    pub fn is_current(&self, generation: u64) -> bool {
        *self.generation.borrow() == generation
    }

    /// The connection of `generation` ended (with `error`, if it failed).
    pub fn detach(&self, generation: u64, error: Option<String>) {
        let mut connection = self.connection.lock();
        if error.is_some() {
            connection.last_error = error;
        }
        if !self.is_current(generation) {
            return;
        }
        self.connected.store(false, Ordering::Release);
        connection.down_since = Some(Instant::now());
        drop(connection);
        self.outbox.lock().disconnected();
        self.control.lock().clear();
        self.room.notify_waiters();
    }

    /// A dial or handshake failed before any connection carried the link.
    pub fn failed(&self, error: String) {
        self.connection.lock().last_error = Some(error);
    }

    /// How long the link has been down, if it is.
    pub fn down_for(&self) -> Option<Duration> {
        if self.is_connected() {
            return None;
        }
        self.connection.lock().down_since.map(|at| at.elapsed())
    }

    /// The whole queue is dropped: the link was removed.
    pub fn abandon(&self) -> u64 {
        self.outbox.lock().abandon()
    }

    /// What `/api/v1/links` shows.
    pub fn status(
        &self,
        routes_received: usize,
        routes_sent: usize,
        holder: Option<String>,
    ) -> LinkStatus {
        let connection = self.connection.lock();
        let (queued, queued_bytes) = self.outbox.lock().messages();
        let config = self.config.read();
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let dropped = self.stats.dropped.lock().clone();
        LinkStatus {
            name: self.name.clone(),
            state: if self.is_connected() {
                "connected"
            } else if holder.is_some() {
                "elsewhere"
            } else if config.endpoints.is_empty() {
                "waiting"
            } else {
                "connecting"
            },
            dialer: connection.dialer.clone(),
            endpoint: connection.endpoint.clone(),
            connected_since: connection
                .since
                .filter(|_| self.is_connected())
                .and_then(|at| at.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_secs()),
            last_error: connection.last_error.clone(),
            connects: load(&self.stats.connects),
            routes_received,
            routes_sent,
            queued_messages: queued,
            queued_bytes,
            forwarded_messages: load(&self.stats.forwarded),
            forwarded_bytes: load(&self.stats.forwarded_bytes),
            received_messages: load(&self.stats.received),
            received_bytes: load(&self.stats.received_bytes),
            interest_refused: load(&self.stats.interest_refused),
            dropped: dropped.iter().map(|(r, (n, _))| (r.label(), *n)).collect(),
            dropped_bytes: dropped.iter().map(|(r, (_, b))| (r.label(), *b)).collect(),
            revision: self.revision.load(Ordering::Relaxed),
            holder,
        }
    }
}

/// Publishers held for a backlogged link wait until it drains, or until it
/// goes down (then its queue bound and policy rule).
impl Gate for Link {
    fn is_open(&self) -> bool {
        !self.is_connected() || !self.outbox.lock().is_backlogged()
    }

    fn room(&self) -> &Notify {
        &self.room
    }

    fn stalled(&self) {
        tracing::debug!(link = %self.name, "the link's remote made no room in time");
    }
}

/// One link as `/api/v1/links` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LinkStatus {
    pub name: String,
    /// `connected`, `connecting` (dialling its endpoints), `waiting` (for
    /// the remote to dial in), or `elsewhere` (another node of this cluster
    /// holds the link; `holder` names it).
    pub state: &'static str,
    /// Which cluster dialled the current (or last) connection.
    pub dialer: Option<String>,
    pub endpoint: Option<String>,
    /// Unix seconds.
    pub connected_since: Option<u64>,
    pub last_error: Option<String>,
    /// Connections that carried the link on this node so far.
    pub connects: u64,
    pub routes_received: usize,
    pub routes_sent: usize,
    pub queued_messages: usize,
    pub queued_bytes: usize,
    pub forwarded_messages: u64,
    pub forwarded_bytes: u64,
    pub received_messages: u64,
    pub received_bytes: u64,
    pub interest_refused: u64,
    /// Messages dropped, by reason.
    pub dropped: BTreeMap<&'static str, u64>,
    /// Their payload bytes, by reason.
    pub dropped_bytes: BTreeMap<&'static str, u64>,
    /// The configuration revision this link runs (bumped by each `PUT /api/v1/links`).
    pub revision: u64,
    /// The node of this cluster that holds the link, when it is another.
    pub holder: Option<String>,
}
