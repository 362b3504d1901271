//! Shared broker state and the operations every connection uses: publish,
//! deliver, subscribe, end a session.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use tokio::sync::{watch, Notify};

use super::message::{Message, Outgoing};
use super::persist::Persistence;
use super::registry::{
    Attached, Registry, SessionHandle, SessionRef, SessionState, SubscriptionRecord,
};
use super::ServerError;
use crate::admin::AdminSource;
use crate::auth::{Acl, Authenticator};
use crate::config::Config;
use crate::metrics::{DropReason, Gauges, Metrics};
use crate::protocol::{QoS, RetainHandling, SubscriptionOptions};
use crate::router::retained::RetainedStore;
use crate::router::{Router, SubscribeOutcome};
use crate::session::Session;

/// Everything connections share. Locks are short and never held across an `.await`.
#[derive(Debug)]
pub struct Broker {
    config: Config,
    metrics: Metrics,
    router: RwLock<Router<SessionRef>>,
    retained: RwLock<RetainedStore<Arc<Message>>>,
    registry: Registry,
    authenticator: Authenticator,
    acl: Option<Acl>,
    persistence: Option<Persistence>,
    shutdown: watch::Receiver<bool>,
    all_closed: Notify,
    ready: AtomicBool,
    started: Instant,
}

impl Broker {
    pub(super) fn new(
        config: Config,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Broker, ServerError> {
        let authenticator = Authenticator::new(
            config.auth.password_file.as_deref(),
            config.anonymous_allowed(),
        )?;
        let acl = (!config.auth.acl.is_empty()).then(|| Acl::new(&config.auth.acl));
        let persistence = match &config.persistence.data_dir {
            Some(dir) => Some(Persistence::open(dir)?),
            None => None,
        };
        Ok(Broker {
            config,
            metrics: Metrics::default(),
            router: RwLock::new(Router::new()),
            retained: RwLock::new(RetainedStore::new()),
            registry: Registry::default(),
            authenticator,
            acl,
            persistence,
            shutdown,
            all_closed: Notify::new(),
            ready: AtomicBool::new(false),
            started: Instant::now(),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub(super) fn registry(&self) -> &Registry {
        &self.registry
    }

    pub(super) fn authenticator(&self) -> &Authenticator {
        &self.authenticator
    }

    pub(super) fn acl(&self) -> Option<&Acl> {
        self.acl.as_ref()
    }

    pub(super) fn persistence(&self) -> Option<&Persistence> {
        self.persistence.as_ref()
    }

    pub(super) fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.clone()
    }

    pub(super) fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    pub(super) fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Current gauge values for metrics and `$SYS`.
    pub fn gauges(&self) -> Gauges {
        Gauges {
            sessions: self.registry.len(),
            subscriptions: self.router.read().len(),
            retained: self.retained.read().len(),
        }
    }

    /// Called by each connection as it ends.
    pub(super) fn connection_finished(&self) {
        self.metrics.connection_closed();
        if self.metrics.connections_current() == 0 {
            self.all_closed.notify_waiters();
        }
    }

    /// Completes once no connection is open.
    pub(super) async fn connections_closed(&self) {
        loop {
            let notified = self.all_closed.notified();
            if self.metrics.connections_current() <= 0 {
                return;
            }
            notified.await;
        }
    }

    /// A fresh session's state.
    pub(super) fn new_session_state(&self, expiry_interval: u32) -> SessionState {
        SessionState {
            session: Session::new(
                self.config.limits.max_queued_messages,
                self.config.limits.max_inflight,
            ),
            subscriptions: HashMap::new(),
            expiry_interval,
            disconnected_at: None,
        }
    }

    /// Attaches a connection to its session and drops the subscriptions of a
    /// session it replaced.
    pub(super) fn attach(
        &self,
        client_id: &str,
        clean_start: bool,
        expiry_interval: u32,
    ) -> Attached {
        let attached = self
            .registry
            .attach(client_id, clean_start, Instant::now(), || {
                self.new_session_state(expiry_interval)
            });
        if let Some(old) = &attached.discarded {
            self.forget_session(old);
        }
        attached
    }

    /// Routes a message to every matching session and stores it if retained.
    /// `publisher` is skipped by its own no-local subscriptions. Returns how many
    /// sessions it was queued for.
    pub(super) fn publish(
        &self,
        message: Message,
        publisher: Option<&SessionRef>,
        scratch: &mut Vec<(SessionRef, crate::router::Delivery)>,
    ) -> usize {
        let message = Arc::new(message);
        if message.retain {
            self.retain(&message);
        }
        scratch.clear();
        self.router
            .read()
            .route(&message.topic, publisher, |s| s.0.is_connected(), scratch);
        let mut queued = 0;
        for (target, delivery) in scratch.drain(..) {
            let outgoing = Outgoing {
                message: message.clone(),
                qos: message.qos.min(delivery.qos),
                retain: message.retain && delivery.retain_as_published,
                subscription_ids: delivery.subscription_ids,
            };
            queued += usize::from(self.deliver(&target.0, outgoing));
        }
        queued
    }

    /// Updates the retained store: an empty payload clears the topic.
    fn retain(&self, message: &Arc<Message>) {
        let persist = !message.topic.starts_with('$');
        if message.payload.is_empty() {
            self.retained.write().remove(&message.topic);
        } else {
            // The payload is a slice of a connection's read buffer; a retained
            // copy may live for days, so it gets its own allocation rather than
            // pinning the whole buffer.
            let mut stored = Message::clone(message);
            stored.payload = bytes::Bytes::copy_from_slice(&message.payload);
            self.retained
                .write()
                .insert(&message.topic, Arc::new(stored));
        }
        if let (true, Some(p)) = (persist, &self.persistence) {
            p.retained_changed(message, Instant::now());
        }
    }

    /// Queues one message for one session and wakes its connection. Returns
    /// false (and counts the drop) when it could not be queued.
    pub(super) fn deliver(&self, handle: &Arc<SessionHandle>, outgoing: Outgoing) -> bool {
        let qos = outgoing.qos;
        if qos == QoS::AtMostOnce && !handle.is_connected() {
            self.metrics.dropped(DropReason::Qos0Offline);
            return false;
        }
        let persistent = {
            let mut state = handle.lock();
            if state.session.enqueue(outgoing).is_err() {
                drop(state);
                self.metrics.dropped(DropReason::QueueFull);
                return false;
            }
            state.expiry_interval > 0
        };
        if persistent && qos != QoS::AtMostOnce {
            self.session_changed(handle);
        }
        if handle.is_connected() {
            handle.wake.notify_one();
        }
        true
    }

    /// Lists a persistent session for the next flush to the store.
    pub(super) fn session_changed(&self, handle: &Arc<SessionHandle>) {
        if let Some(p) = &self.persistence {
            if handle.mark_dirty() {
                p.session_dirty(handle.clone());
            }
        }
    }

    /// Adds a subscription to the router and the session; returns whether it is new.
    pub(super) fn subscribe(
        &self,
        handle: &Arc<SessionHandle>,
        filter: &str,
        options: SubscriptionOptions,
        identifier: Option<u32>,
    ) -> SubscribeOutcome {
        let outcome =
            self.router
                .write()
                .subscribe(SessionRef(handle.clone()), filter, options, identifier);
        handle.lock().subscriptions.insert(
            filter.to_owned(),
            SubscriptionRecord {
                options,
                identifier,
            },
        );
        self.session_changed(handle);
        outcome
    }

    /// Removes a subscription; false when the session had none for `filter`.
    pub(super) fn unsubscribe(&self, handle: &Arc<SessionHandle>, filter: &str) -> bool {
        let existed = self
            .router
            .write()
            .unsubscribe(&SessionRef(handle.clone()), filter);
        handle.lock().subscriptions.remove(filter);
        self.session_changed(handle);
        existed
    }

    /// Queues the retained messages matching a new subscription, as its retain
    /// handling option asks.
    pub(super) fn send_retained(
        &self,
        handle: &Arc<SessionHandle>,
        filter: &str,
        options: SubscriptionOptions,
        identifier: Option<u32>,
        outcome: SubscribeOutcome,
    ) {
        let wanted = match options.retain_handling {
            RetainHandling::SendAtSubscribe => true,
            RetainHandling::SendIfNew => outcome == SubscribeOutcome::New,
            RetainHandling::DoNotSend => false,
        };
        if !wanted || filter.starts_with("$share/") {
            return;
        }
        let mut matching = Vec::new();
        self.retained.read().matching(filter, &mut matching);
        let now = Instant::now();
        for message in matching {
            if message.is_expired(now) {
                continue;
            }
            let outgoing = Outgoing {
                qos: message.qos.min(options.qos),
                message,
                retain: true,
                subscription_ids: identifier.into_iter().collect(),
            };
            self.deliver(handle, outgoing);
        }
    }

    /// Removes a session's subscriptions from the router (its state goes with the handle).
    fn forget_session(&self, handle: &Arc<SessionHandle>) {
        let filters: Vec<String> = handle.lock().subscriptions.keys().cloned().collect();
        let key = SessionRef(handle.clone());
        let mut router = self.router.write();
        for filter in &filters {
            router.unsubscribe(&key, filter);
        }
        drop(router);
        if let Some(p) = &self.persistence {
            p.session_deleted(&handle.client_id);
        }
    }

    /// Ends a session that no connection holds: removes it from the registry
    /// and the router. A no-op if it was resumed or replaced meanwhile.
    pub(super) fn end_session(&self, handle: &Arc<SessionHandle>) {
        if self.registry.remove_if_idle(handle) {
            self.forget_session(handle);
        }
    }

    /// Reads the store back at start-up.
    pub(super) fn restore_from_store(self: &Arc<Self>) -> Result<(), ServerError> {
        let Some(persistence) = &self.persistence else {
            return Ok(());
        };
        let snapshot = persistence.load()?;
        let now = Instant::now();
        let mut retained = self.retained.write();
        let mut restored_retained = 0;
        for stored in snapshot.retained {
            if let Some(message) = Message::from_stored(stored, now) {
                retained.insert(&message.topic.clone(), Arc::new(message));
                restored_retained += 1;
            }
        }
        drop(retained);
        let mut restored_sessions = 0;
        for stored in snapshot.sessions {
            let client_id = stored.client_id.clone();
            let Some(state) = persistence.session_state(stored, self, now) else {
                continue;
            };
            let subscriptions: Vec<_> = state
                .subscriptions
                .iter()
                .map(|(f, r)| (f.clone(), *r))
                .collect();
            let handle = self.registry.restore(&client_id, state);
            let mut router = self.router.write();
            for (filter, record) in subscriptions {
                router.subscribe(
                    SessionRef(handle.clone()),
                    &filter,
                    record.options,
                    record.identifier,
                );
            }
            drop(router);
            super::connection::schedule_expiry(self.clone(), handle, 0);
            restored_sessions += 1;
        }
        tracing::info!(
            retained = restored_retained,
            sessions = restored_sessions,
            "restored state from the store"
        );
        Ok(())
    }

    /// Writes everything pending to the store, at shutdown.
    pub(super) async fn final_flush(&self) {
        if let Some(p) = &self.persistence {
            p.flush(&self.registry, &self.metrics).await;
        }
    }
}

impl AdminSource for Broker {
    fn ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !*self.shutdown.borrow()
    }

    fn metrics_text(&self) -> String {
        self.metrics.render(self.gauges())
    }
}
