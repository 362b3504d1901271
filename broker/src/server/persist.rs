//! Writing retained messages and persistent sessions to the store, once per
//! flush interval, and reading them back at start-up.
//!
//! Changes are collected as they happen (a retained topic set or cleared, a
//! session marked dirty) and written in one transaction per interval, so a
//! crash loses at most the changes of the last interval.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;

use super::broker::Broker;
use super::message::{unix_ms, Message, Outgoing};
use super::registry::{Registry, SessionHandle, SessionState, SubscriptionRecord};
use crate::link::Links;
use crate::metrics::Metrics;
use crate::protocol::{QoS, RetainHandling, SubscriptionOptions};
use crate::shutdown::Shutdown;
use crate::store::{Snapshot, Store, StoreError, StoreOp, StoredSession, StoredSubscription};

/// Pending changes and the store they go to.
#[derive(Debug)]
pub struct Persistence {
    store: Arc<Store>,
    retained: Mutex<HashMap<String, StoreOp>>,
    dirty_sessions: Mutex<Vec<Arc<SessionHandle>>>,
    deleted_sessions: Mutex<Vec<String>>,
    /// Serialises flushes so an older batch never lands after a newer one.
    flushing: tokio::sync::Mutex<()>,
}

impl Persistence {
    pub fn open(dir: &Path) -> Result<Persistence, StoreError> {
        Ok(Persistence {
            store: Arc::new(Store::open(dir)?),
            retained: Mutex::new(HashMap::new()),
            dirty_sessions: Mutex::new(Vec::new()),
            deleted_sessions: Mutex::new(Vec::new()),
            flushing: tokio::sync::Mutex::new(()),
        })
    }

    pub fn load(&self) -> Result<Snapshot, StoreError> {
        self.store.load()
    }

    /// A retained topic was set (or cleared, by an empty payload).
    pub fn retained_changed(&self, message: &Message, now: Instant) {
        let op = if message.payload.is_empty() {
            StoreOp::DeleteRetained(message.topic.clone())
        } else {
            StoreOp::PutRetained(message.to_stored(now))
        };
        self.retained.lock().insert(message.topic.clone(), op);
    }

    /// A persistent session changed (the caller saw its dirty mark go up).
    pub fn session_dirty(&self, handle: Arc<SessionHandle>) {
        self.dirty_sessions.lock().push(handle);
    }

    /// A session ended: remove it from the store.
    pub fn session_deleted(&self, client_id: &str) {
        self.deleted_sessions.lock().push(client_id.to_owned());
    }

    /// Writes every pending change in one transaction.
    pub async fn flush(&self, registry: &Registry, links: &Links, metrics: &Metrics) {
        let _turn = self.flushing.lock().await;
        let mut ops = self.collect(registry);
        ops.extend(links.store_ops());
        if ops.is_empty() {
            metrics.store_flushed(true);
            return;
        }
        let store = self.store.clone();
        let count = ops.len();
        match tokio::task::spawn_blocking(move || store.apply(&ops)).await {
            Ok(Ok(())) => {
                metrics.store_flushed(true);
                tracing::debug!(ops = count, "flushed to the store");
            }
            Ok(Err(err)) => {
                metrics.store_flushed(false);
                tracing::error!(error = %err, ops = count, "flush to the store failed; changes are lost");
            }
            Err(err) => {
                metrics.store_flushed(false);
                tracing::error!(error = %err, "flush task failed");
            }
        }
    }

    fn collect(&self, registry: &Registry) -> Vec<StoreOp> {
        let mut ops: Vec<StoreOp> = self.retained.lock().drain().map(|(_, op)| op).collect();
        for client_id in std::mem::take(&mut *self.deleted_sessions.lock()) {
            ops.push(StoreOp::DeleteSession(client_id));
        }
        let now = Instant::now();
        for handle in std::mem::take(&mut *self.dirty_sessions.lock()) {
            handle.take_dirty();
            let current = registry
                .get(&handle.client_id)
                .is_some_and(|h| Arc::ptr_eq(&h, &handle));
            if !current {
                continue; // replaced or ended; its deletion is already listed
            }
            let state = handle.lock();
            if state.expiry_interval == 0 {
                ops.push(StoreOp::DeleteSession(handle.client_id.clone()));
            } else {
                ops.push(StoreOp::PutSession(stored_session(
                    &handle.client_id,
                    &state,
                    now,
                )));
            }
        }
        ops
    }
}

/// Rebuilds a session's state from its stored form (read from the store, or
/// handed over by a peer node); `None` when it has expired.
pub fn session_state(stored: StoredSession, broker: &Broker, now: Instant) -> Option<SessionState> {
    {
        let disconnected_at = match stored.disconnected_at_unix_ms {
            // Connected at the crash: it went away then, as far as anyone can tell.
            None => now,
            Some(at_ms) => {
                let ago = unix_ms(SystemTime::now()).saturating_sub(at_ms);
                now.checked_sub(Duration::from_millis(ago)).unwrap_or(now)
            }
        };
        let mut state = broker.new_session_state(stored.expiry_interval_secs);
        state.disconnected_at = Some(disconnected_at);
        state.owner = stored.owner;
        if state.is_expired(now) {
            return None;
        }
        for sub in stored.subscriptions {
            let Some(qos) = QoS::from_bits(sub.qos) else {
                tracing::warn!(client_id = %stored.client_id, filter = %sub.filter, "stored subscription has an invalid QoS; skipped");
                continue;
            };
            let retain_handling = match sub.retain_handling {
                1 => RetainHandling::SendIfNew,
                2 => RetainHandling::DoNotSend,
                _ => RetainHandling::SendAtSubscribe,
            };
            let options = SubscriptionOptions {
                qos,
                no_local: sub.no_local,
                retain_as_published: sub.retain_as_published,
                retain_handling,
            };
            state.subscriptions.insert(
                sub.filter,
                SubscriptionRecord {
                    options,
                    identifier: sub.subscription_id,
                },
            );
        }
        for stored_message in stored.queue {
            let retain = stored_message.retain;
            if let Some(message) = Message::from_stored(stored_message, now) {
                let outgoing = Outgoing {
                    qos: message.qos,
                    retain,
                    message: Arc::new(message),
                    subscription_ids: Vec::new(),
                };
                if state.session.enqueue(outgoing).is_err() {
                    broker
                        .metrics()
                        .dropped(crate::metrics::DropReason::QueueFull);
                }
            }
        }
        Some(state)
    }
}

/// A session's durable form, for the store or for a peer node taking it over.
pub fn stored_session(client_id: &str, state: &SessionState, now: Instant) -> StoredSession {
    let disconnected_at_unix_ms = state.disconnected_at.map(|at| {
        let ago = now.saturating_duration_since(at);
        unix_ms(SystemTime::now()).saturating_sub(u64::try_from(ago.as_millis()).unwrap_or(0))
    });
    StoredSession {
        owner: state.owner.clone(),
        client_id: client_id.to_owned(),
        expiry_interval_secs: state.expiry_interval,
        disconnected_at_unix_ms,
        subscriptions: state
            .subscriptions
            .iter()
            .map(|(filter, record)| StoredSubscription {
                filter: filter.clone(),
                qos: record.options.qos as u8,
                no_local: record.options.no_local,
                retain_as_published: record.options.retain_as_published,
                retain_handling: record.options.retain_handling as u8,
                subscription_id: record.identifier,
            })
            .collect(),
        queue: state
            .session
            .pending_messages()
            .filter(|o| o.qos != QoS::AtMostOnce)
            .map(|o| {
                let mut stored = o.message.to_stored(now);
                stored.qos = o.qos as u8;
                stored.retain = o.retain;
                stored
            })
            .collect(),
    }
}

/// Flushes once per configured interval until shutdown.
pub async fn flush_loop(broker: Arc<Broker>, mut shutdown: Shutdown) {
    let Some(persistence) = broker.persistence() else {
        return;
    };
    let mut tick = tokio::time::interval(Duration::from_millis(
        broker.config().persistence.flush_interval_ms,
    ));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => persistence.flush(broker.registry(), broker.links(), broker.metrics()).await,
            _ = shutdown.recv() => return,
        }
    }
}
