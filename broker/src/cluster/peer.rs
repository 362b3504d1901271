//! One peer node: the queue of what this node owes it, and what it told us.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use parking_lot::{Mutex, MutexGuard};
use tokio::sync::{oneshot, Notify};

use super::metrics::ClusterMetrics;
use super::wire::{self, Frame, Op, MAX_FRAME, OP_VARIANT};
use super::NodeStatus;
use crate::flow::Gate;
use crate::peering::outbox::{Bounds, Forgotten, Kind, Outbox, PushError};
use crate::store::StoredSession;

/// Queued messages beyond which a peer counts as falling behind.
const BACKLOG: usize = 4096;

/// A peer node of this cluster, known by its name.
#[derive(Debug)]
pub struct Peer {
    /// Cheap to hash and compare as a router key; never reused.
    pub id: u64,
    pub name: Arc<str>,
    /// This node's op stream to the peer.
    outbox: Mutex<Outbox>,
    /// Requests and answers that are not part of the op stream.
    control: Mutex<Vec<Bytes>>,
    /// Woken when the outbox or the control queue has something to send.
    pub(super) wake: Notify,
    /// Woken (all waiters) when a backlogged outbox drains or our connection
    /// goes down: publishers held for this peer wait on it.
    room: Notify,
    /// Our connection to the peer is up (it welcomed us).
    out_connected: AtomicBool,
    outbound: Mutex<OutboundState>,
    inbound: Mutex<InboundState>,
    /// When this node first heard of the peer.
    created_at: Instant,
    /// Session requests awaiting the peer's answer, by request id.
    requests: Mutex<HashMap<u64, oneshot::Sender<SessionAnswer>>>,
}

/// Our side of the peer's link.
#[derive(Debug, Default)]
struct OutboundState {
    address: Option<SocketAddr>,
    /// The incarnation that welcomed us last.
    incarnation: Option<u64>,
    /// When our connection last went down (`None` while up or never up).
    lost_at: Option<Instant>,
}

/// What the peer told this node over its own connections.
#[derive(Debug, Default)]
pub(super) struct InboundState {
    /// The incarnation whose stream we are applying.
    pub incarnation: Option<u64>,
    /// The last op applied from that stream.
    pub applied: u64,
    /// Filters the peer advertised (they are in the router under its key).
    pub routes: HashSet<String>,
    /// Open connections from the peer.
    pub connections: usize,
    /// When the last of them closed.
    pub lost_at: Option<Instant>,
}

impl Peer {
    pub(super) fn new(id: u64, name: &str, max_pending: usize) -> Peer {
        let bounds = Bounds {
            messages: max_pending,
            bytes: usize::MAX,
        };
        // A peer that restarted lost its subscribers: what was queued for
        // them is lost with them.
        let outbox = Outbox::new(bounds, Forgotten::DropMessages, OP_VARIANT, MAX_FRAME)
            .with_backlog_mark(BACKLOG);
        Peer {
            id,
            name: Arc::from(name),
            outbox: Mutex::new(outbox),
            control: Mutex::new(Vec::new()),
            wake: Notify::new(),
            room: Notify::new(),
            out_connected: AtomicBool::new(false),
            outbound: Mutex::new(OutboundState::default()),
            inbound: Mutex::new(InboundState::default()),
            requests: Mutex::new(HashMap::new()),
            created_at: Instant::now(),
        }
    }

    pub(super) fn created_at(&self) -> Instant {
        self.created_at
    }

    /// Since when the peer exists without our connection ever reaching it.
    pub(super) fn never_reached_since(&self) -> Option<Instant> {
        let outbound = self.outbound.lock();
        (!self.is_connected() && outbound.incarnation.is_none()).then_some(self.created_at)
    }

    /// Whether our connection to the peer is up, so messages reach it now.
    pub fn is_connected(&self) -> bool {
        self.out_connected.load(Ordering::Acquire)
    }

    /// Queues an op of the stream, and says how that went (a drop is counted).
    pub(super) fn send(&self, op: Op, metrics: &ClusterMetrics) -> Queued {
        let encoded = match wire::encode_op(&op) {
            Ok(encoded) => encoded,
            Err(err) => {
                metrics.forward_dropped();
                tracing::warn!(peer = %self.name, error = %err, "cannot encode an op for a peer; dropped");
                return Queued::Dropped;
            }
        };
        let kind = if encoded.is_message {
            Kind::Message
        } else {
            Kind::Control
        };
        let queued = {
            let mut outbox = self.outbox.lock();
            outbox
                .push(encoded.body, kind, None)
                .map(|_| outbox.is_backlogged())
        };
        match queued {
            Ok(backlogged) => {
                self.wake.notify_one();
                if backlogged {
                    Queued::Backlogged
                } else {
                    Queued::Yes
                }
            }
            Err(PushError::Full) => {
                metrics.forward_dropped();
                Queued::Dropped
            }
            Err(PushError::TooLarge) => {
                metrics.forward_dropped();
                tracing::warn!(peer = %self.name, "an op for a peer is larger than a frame may be; dropped");
                Queued::Dropped
            }
        }
    }

    /// Sends a request outside the op stream; its answer arrives on the receiver.
    pub(super) fn request(
        &self,
        request: u64,
        frame: &Frame,
    ) -> Option<oneshot::Receiver<SessionAnswer>> {
        let bytes = wire::encode_to_bytes(frame).ok()?;
        let (tx, rx) = oneshot::channel();
        self.requests.lock().insert(request, tx);
        self.send_control(bytes);
        Some(rx)
    }

    /// Queues a frame outside the op stream (requests and answers).
    pub(super) fn send_control(&self, frame: Bytes) {
        self.control.lock().push(frame);
        self.wake.notify_one();
    }

    /// Hands an answer to the request waiting for it.
    pub(super) fn answer(&self, request: u64, session: Option<Option<StoredSession>>, clock: u64) {
        if let Some(tx) = self.requests.lock().remove(&request) {
            let _ = tx.send((session, clock));
        }
    }

    /// Appends everything waiting to go out on our connection to `out`;
    /// false when there was nothing.
    pub(super) fn write_unsent(&self, out: &mut Vec<u8>) -> bool {
        let before = out.len();
        for frame in self.control.lock().drain(..) {
            out.extend_from_slice(&frame);
        }
        self.outbox
            .lock()
            .write_unsent(std::time::Instant::now(), out);
        out.len() > before
    }

    pub(super) fn outbox(&self) -> MutexGuard<'_, Outbox> {
        self.outbox.lock()
    }

    /// Whether the peer is falling behind: messages for it should hold their
    /// publishers (more than a healthy link holds in flight is queued).
    pub fn is_backlogged(&self) -> bool {
        self.outbox.lock().is_backlogged()
    }

    /// The peer applied our ops up to `seq`; publishers held for a backlog
    /// go on once it has drained.
    pub(super) fn acknowledged(&self, seq: u64) {
        let drained = {
            let mut outbox = self.outbox.lock();
            let was = outbox.is_backlogged();
            outbox.ack(seq);
            was && !outbox.is_backlogged()
        };
        if drained {
            self.room.notify_waiters();
        }
    }

    pub(super) fn inbound(&self) -> MutexGuard<'_, InboundState> {
        self.inbound.lock()
    }

    /// Our connection was welcomed by `incarnation` at `address`; false when
    /// another connection of ours already reaches the peer.
    pub(super) fn claim_outbound(&self, address: SocketAddr, incarnation: u64) -> bool {
        if self
            .out_connected
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        let mut outbound = self.outbound.lock();
        outbound.address = Some(address);
        outbound.incarnation = Some(incarnation);
        outbound.lost_at = None;
        true
    }

    /// Our connection ended: unacknowledged ops go out again on the next one,
    /// and pending requests are answered with nothing.
    pub(super) fn outbound_down(&self) {
        self.out_connected.store(false, Ordering::Release);
        self.outbound.lock().lost_at = Some(Instant::now());
        self.outbox.lock().disconnected();
        self.control.lock().clear();
        self.requests.lock().clear();
        // Nothing drains the outbox now: held publishers stop waiting for it.
        self.room.notify_waiters();
    }

    /// Since when our connection is down, if it is.
    pub(super) fn outbound_lost_at(&self) -> Option<Instant> {
        if self.is_connected() {
            return None;
        }
        let outbound = self.outbound.lock();
        outbound.lost_at
    }

    pub(super) fn status(&self) -> NodeStatus {
        let inbound = self.inbound.lock();
        let outbound = self.outbound.lock();
        let both = self.is_connected() && inbound.connections > 0;
        let either = self.is_connected() || inbound.connections > 0;
        NodeStatus {
            name: self.name.to_string(),
            state: match (both, either) {
                (true, _) => "connected",
                (false, true) => "connecting",
                (false, false) => "unreachable",
            },
            address: outbound.address.map(|a| a.to_string()),
            incarnation: outbound.incarnation.map(|i| format!("{i:016x}")),
            routes: inbound.routes.len(),
            lag: self.outbox.lock().len(),
        }
    }
}

/// Publishers held for a backlogged peer wait until it has drained, or until
/// our connection to it goes down (then its queue bound and drop policy rule,
/// as they do for an offline session).
impl Gate for Peer {
    fn is_open(&self) -> bool {
        !self.is_connected() || !self.is_backlogged()
    }

    fn room(&self) -> &Notify {
        &self.room
    }

    fn stalled(&self) {
        tracing::debug!(peer = %self.name, "peer made no room in time");
    }
}

/// A peer's answer to a takeover request: the session it gave up (if any;
/// `None` when it refused, the session being another identity's) and its clock.
pub type SessionAnswer = (Option<Option<StoredSession>>, u64);

/// What queueing an op for a peer did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queued {
    Yes,
    /// Queued, but the peer is falling behind: its publishers should be held.
    Backlogged,
    /// Not queued: the peer's queue is full (counted).
    Dropped,
}

/// A peer as a router key: compared and hashed by its id.
#[derive(Debug, Clone)]
pub struct PeerRef(pub Arc<Peer>);

impl PartialEq for PeerRef {
    fn eq(&self, other: &Self) -> bool {
        self.0.id == other.0.id
    }
}

impl Eq for PeerRef {}

impl Hash for PeerRef {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.id.hash(state);
    }
}
