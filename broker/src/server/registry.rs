//! Sessions by client id: creation, resumption, takeover and expiry.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard};
use tokio::sync::Notify;

use super::message::Outgoing;
use crate::flow::Gate;
use crate::protocol::SubscriptionOptions;
use crate::session::Session;
use crate::store::SessionOwner;

/// A subscription as its session remembers it, to restore or remove it later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionRecord {
    pub options: SubscriptionOptions,
    pub identifier: Option<u32>,
}

/// The mutable part of a session, behind one lock that is never held across an `.await`.
#[derive(Debug)]
pub struct SessionState {
    pub session: Session<Outgoing>,
    /// Filters as the client wrote them (`$share/...` included).
    pub subscriptions: HashMap<String, SubscriptionRecord>,
    /// Seconds the session outlives its connection; `u32::MAX` is forever.
    pub expiry_interval: u32,
    /// When the last connection ended; `None` while connected.
    pub disconnected_at: Option<Instant>,
    /// The identity the session belongs to: only it may resume it.
    pub owner: SessionOwner,
}

impl SessionState {
    /// Whether the session has outlived its expiry interval.
    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires_at().is_some_and(|at| now >= at)
    }

    /// When the session ends if no connection resumes it; `None` while
    /// connected or when it never expires.
    pub fn expires_at(&self) -> Option<Instant> {
        match self.disconnected_at {
            Some(at) if self.expiry_interval != u32::MAX => {
                Some(at + Duration::from_secs(u64::from(self.expiry_interval)))
            }
            _ => None,
        }
    }
}

/// One client session, shared by the registry, the router (as a delivery
/// target) and the connection currently attached to it.
#[derive(Debug)]
pub struct SessionHandle {
    /// Internal id: cheap to hash and compare, never reused.
    pub id: u64,
    pub client_id: String,
    state: Mutex<SessionState>,
    /// Woken when messages are queued for the attached connection.
    pub wake: Notify,
    /// Woken when another connection takes the session over.
    pub kick: Notify,
    /// Woken (all waiters) when a full queue gets room or the client goes:
    /// publishers held for this session wait on it.
    room: Notify,
    /// The queue is at its bound; readable without the lock, so a shared
    /// group can prefer a member with room.
    full: AtomicBool,
    /// A publisher waited for room in vain: until the queue drains to half,
    /// what meets the full queue is dropped (counted) instead of holding anyone.
    stalled: AtomicBool,
    connected: AtomicBool,
    /// Bumped on every attach and on takeover; a connection holding an older
    /// epoch no longer owns the session.
    epoch: AtomicU64,
    /// Changed since the last flush to the store.
    dirty: AtomicBool,
    /// The stamp of this node's claim to the session in the cluster's
    /// directory (0 on a single node, or for a session restored from disk).
    claim: AtomicU64,
}

impl SessionHandle {
    fn new(id: u64, client_id: String, state: SessionState) -> SessionHandle {
        SessionHandle {
            id,
            client_id,
            state: Mutex::new(state),
            wake: Notify::new(),
            kick: Notify::new(),
            room: Notify::new(),
            full: AtomicBool::new(false),
            stalled: AtomicBool::new(false),
            connected: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            dirty: AtomicBool::new(false),
            claim: AtomicU64::new(0),
        }
    }

    /// Locks the session state. Never hold the guard across an `.await`.
    pub fn lock(&self) -> MutexGuard<'_, SessionState> {
        self.state.lock()
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// Whether a message queued now would wait for room.
    pub fn is_full(&self) -> bool {
        self.full.load(Ordering::Acquire)
    }

    /// Whether the last publisher held for this session waited in vain.
    pub fn is_stalled(&self) -> bool {
        self.stalled.load(Ordering::Acquire)
    }

    /// Records whether the queue is at its bound, from the session's state
    /// (the caller holds its lock). When room appears, held publishers are
    /// woken; when the queue has drained to half, a stall is over.
    ///
    /// Called on every delivery, so the flags are only written when they
    /// change (`full` is only written here, under the session's lock).
    pub fn queue_changed(&self, state: &SessionState) {
        let full = state.session.is_full();
        if self.full.load(Ordering::Acquire) != full {
            self.full.store(full, Ordering::Release);
            if !full {
                self.room.notify_waiters();
            }
        }
        if self.is_stalled() && state.session.is_half_empty() {
            self.stalled.store(false, Ordering::Release);
        }
    }

    /// The stamp this node claimed the session with (see `cluster::directory`).
    pub fn claim(&self) -> u64 {
        self.claim.load(Ordering::Acquire)
    }

    pub fn set_claim(&self, stamp: u64) {
        self.claim.store(stamp, Ordering::Release);
    }

    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Marks the session changed; true if it was clean (the caller then lists it for the next flush).
    pub fn mark_dirty(&self) -> bool {
        !self.dirty.swap(true, Ordering::AcqRel)
    }

    /// Clears the dirty mark before the session is snapshotted.
    pub fn take_dirty(&self) -> bool {
        self.dirty.swap(false, Ordering::AcqRel)
    }

    /// A new connection owns the session from now on; any older one is told to go.
    fn begin_connection(&self) -> u64 {
        let epoch = self.epoch.fetch_add(1, Ordering::AcqRel) + 1;
        self.connected.store(true, Ordering::Release);
        self.stalled.store(false, Ordering::Release);
        self.state.lock().disconnected_at = None;
        self.kick.notify_one();
        epoch
    }

    /// The connection holding `epoch` ended; a no-op if it had been taken over.
    /// Returns whether it still owned the session.
    pub fn end_connection(&self, epoch: u64, now: Instant) -> bool {
        let mut state = self.state.lock();
        if self.epoch() != epoch {
            return false;
        }
        self.connected.store(false, Ordering::Release);
        state.disconnected_at = Some(now);
        // Nobody drains the queue now: held publishers stop waiting for it.
        self.room.notify_waiters();
        true
    }

    /// Ends every connection's claim (the session is being discarded).
    fn retire(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.connected.store(false, Ordering::Release);
        self.kick.notify_one();
        self.room.notify_waiters();
    }
}

/// Publishers held for a full queue wait for this session to drain.
impl Gate for SessionHandle {
    fn is_open(&self) -> bool {
        !self.is_connected() || !self.is_full()
    }

    fn room(&self) -> &Notify {
        &self.room
    }

    fn stalled(&self) {
        self.stalled.store(true, Ordering::Release);
        tracing::debug!(client_id = %self.client_id, "subscriber made no room in time: stalled");
    }
}

/// A session as a router key: compared and hashed by its internal id.
#[derive(Debug, Clone)]
pub struct SessionRef(pub Arc<SessionHandle>);

impl PartialEq for SessionRef {
    fn eq(&self, other: &Self) -> bool {
        self.0.id == other.0.id
    }
}

impl Eq for SessionRef {}

impl Hash for SessionRef {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.id.hash(state);
    }
}

/// What [`Registry::attach`] did.
#[derive(Debug)]
pub struct Attached {
    pub handle: Arc<SessionHandle>,
    /// The connection's epoch: it owns the session while this is current.
    pub epoch: u64,
    /// An existing session was resumed (CONNACK session present).
    pub session_present: bool,
    /// A session discarded by clean start or expiry, whose subscriptions the
    /// caller must remove from the router.
    pub discarded: Option<Arc<SessionHandle>>,
}

/// Every session of this node, connected or not.
#[derive(Debug, Default)]
pub struct Registry {
    sessions: Mutex<HashMap<String, Arc<SessionHandle>>>,
    next_id: AtomicU64,
}

impl Registry {
    pub fn len(&self) -> usize {
        self.sessions.lock().len()
    }

    pub fn get(&self, client_id: &str) -> Option<Arc<SessionHandle>> {
        self.sessions.lock().get(client_id).cloned()
    }

    fn new_handle(&self, client_id: &str, state: SessionState) -> Arc<SessionHandle> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        Arc::new(SessionHandle::new(id, client_id.to_owned(), state))
    }

    /// Attaches a new connection to `client_id`'s session: resumes it unless
    /// `clean_start` is set or it expired, and takes it over from any
    /// connection that still holds it. `fresh` builds the state of a new session.
    pub fn attach(
        &self,
        client_id: &str,
        clean_start: bool,
        now: Instant,
        fresh: impl FnOnce() -> SessionState,
    ) -> Attached {
        let mut sessions = self.sessions.lock();
        let existing = sessions.get(client_id).cloned();
        let (handle, session_present, discarded) = match existing {
            Some(handle) if !clean_start && !handle.lock().is_expired(now) => (handle, true, None),
            Some(old) => {
                old.retire();
                let handle = self.new_handle(client_id, fresh());
                sessions.insert(client_id.to_owned(), handle.clone());
                (handle, false, Some(old))
            }
            None => {
                let handle = self.new_handle(client_id, fresh());
                sessions.insert(client_id.to_owned(), handle.clone());
                (handle, false, None)
            }
        };
        drop(sessions);
        let epoch = handle.begin_connection();
        Attached {
            handle,
            epoch,
            session_present,
            discarded,
        }
    }

    /// Puts back a session read from the store at start-up (not connected).
    pub fn restore(&self, client_id: &str, state: SessionState) -> Arc<SessionHandle> {
        let handle = self.new_handle(client_id, state);
        self.sessions
            .lock()
            .insert(client_id.to_owned(), handle.clone());
        handle
    }

    /// Removes `client_id`'s session, telling any connection holding it to go
    /// (a peer node is taking it over).
    pub fn take(&self, client_id: &str) -> Option<Arc<SessionHandle>> {
        let handle = self.sessions.lock().remove(client_id)?;
        handle.retire();
        Some(handle)
    }

    /// Removes `handle` if it is still the session registered for its client id
    /// and no connection holds it. Returns whether it was removed.
    pub fn remove_if_idle(&self, handle: &Arc<SessionHandle>) -> bool {
        let mut sessions = self.sessions.lock();
        match sessions.get(&handle.client_id) {
            Some(current) if Arc::ptr_eq(current, handle) && !handle.is_connected() => {
                sessions.remove(&handle.client_id);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh(expiry: u32) -> impl FnOnce() -> SessionState {
        move || SessionState {
            session: Session::new(10, 10),
            subscriptions: HashMap::new(),
            expiry_interval: expiry,
            disconnected_at: None,
            owner: SessionOwner::Anonymous,
        }
    }

    #[test]
    fn resume_keeps_the_session_and_clean_start_discards_it() {
        let registry = Registry::default();
        let now = Instant::now();
        let first = registry.attach("c", false, now, fresh(60));
        assert!(!first.session_present);
        assert!(first.handle.end_connection(first.epoch, now));
        let second = registry.attach("c", false, now, fresh(60));
        assert!(second.session_present);
        assert!(Arc::ptr_eq(&first.handle, &second.handle));
        let third = registry.attach("c", true, now, fresh(60));
        assert!(!third.session_present);
        assert!(third
            .discarded
            .is_some_and(|d| Arc::ptr_eq(&d, &first.handle)));
        assert_eq!(registry.len(), 1);
    }

    #[test]
    fn takeover_makes_the_old_connection_stale() {
        let registry = Registry::default();
        let now = Instant::now();
        let old = registry.attach("c", false, now, fresh(60));
        let new = registry.attach("c", false, now, fresh(60));
        assert!(new.session_present);
        assert_ne!(old.epoch, new.epoch);
        assert!(
            !old.handle.end_connection(old.epoch, now),
            "old connection no longer owns it"
        );
        assert!(new.handle.is_connected());
    }

    #[test]
    fn expired_session_is_not_resumed() {
        let registry = Registry::default();
        let now = Instant::now();
        let first = registry.attach("c", false, now, fresh(1));
        first.handle.end_connection(first.epoch, now);
        let later = now + Duration::from_secs(2);
        let second = registry.attach("c", false, later, fresh(1));
        assert!(!second.session_present);
        assert!(second.discarded.is_some());
    }

    #[test]
    fn remove_if_idle_spares_connected_and_replaced_sessions() {
        let registry = Registry::default();
        let now = Instant::now();
        let a = registry.attach("c", false, now, fresh(0));
        assert!(!registry.remove_if_idle(&a.handle), "still connected");
        a.handle.end_connection(a.epoch, now);
        let b = registry.attach("c", true, now, fresh(0));
        assert!(!registry.remove_if_idle(&a.handle), "replaced by b");
        b.handle.end_connection(b.epoch, now);
        assert!(registry.remove_if_idle(&b.handle));
        assert_eq!(registry.len(), 0);
    }
}
