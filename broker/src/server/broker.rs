//! Shared broker state and the operations every connection uses: publish,
//! deliver, subscribe, end a session.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use tokio::sync::Notify;

use super::message::{Message, Outgoing};
use super::persist::{self, Persistence};
use super::registry::{
    Attached, Registry, SessionHandle, SessionRef, SessionState, SubscriptionRecord,
};
use super::retained::Retained;
use super::target::Target;
use super::ServerError;
use crate::admin::AdminSource;
use crate::auth::{Acl, Authenticator};
use crate::cluster::wire::{Forward, RetainedVersion, WireMessage};
use crate::cluster::{self, Cluster, Host, NotOwner, Peer, PeerRef};
use crate::config::{Config, QueueFullPolicy};
use crate::flow::{Pushback, Release};
use crate::link::wire::LinkMessage;
use crate::link::{Link, LinkHost, Links, Via};
use crate::metrics::{DropReason, Gauges, Metrics};
use crate::protocol::{QoS, RetainHandling, SubscriptionOptions};
use crate::router::{Delivery, Router, Scope, SubscribeOutcome};
use crate::session::Session;
use crate::shutdown::Shutdown;
use crate::store::{SessionOwner, StoredSession};

/// What routing one message did.
#[derive(Debug, Default)]
pub struct Routed {
    /// Sessions and peer nodes the message was queued for.
    pub queued: usize,
    /// What the receivers that could not take it now ask of the publisher.
    pub pushback: Pushback,
}

/// The retain flag deliveries of a retained message carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retain {
    /// Set only for subscriptions that asked for it (retain as published):
    /// a message published now.
    AsPublished,
    /// Set: the message is delivered because of a new subscription.
    Set,
}

/// How [`Broker::deliver`] queued a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Queued {
    /// Within the session's bound.
    Yes,
    /// Beyond it, by the back-pressure policy: hold the publisher on this session.
    BeyondBound,
}

/// Everything connections share. Locks are short and never held across an `.await`.
#[derive(Debug)]
pub struct Broker {
    config: Config,
    metrics: Metrics,
    router: RwLock<Router<Target>>,
    retained: RwLock<Retained>,
    registry: Registry,
    authenticator: Authenticator,
    acl: Option<Acl>,
    persistence: Option<Persistence>,
    /// The mesh with the other nodes of the cluster, when configured.
    cluster: Option<Arc<Cluster>>,
    /// Links to other clusters (possibly none, until some are configured).
    links: Arc<Links>,
    shutdown: Shutdown,
    all_closed: Notify,
    ready: AtomicBool,
    started: Instant,
}

impl Broker {
    pub(super) fn new(config: Config, shutdown: Shutdown) -> Result<Broker, ServerError> {
        let authenticator = Authenticator::new(
            config.auth.password_file.as_deref(),
            config.anonymous_allowed(),
        )?;
        let acl = (!config.auth.acl.is_empty()).then(|| Acl::new(&config.auth.acl));
        let persistence = match &config.persistence.data_dir {
            Some(dir) => Some(Persistence::open(dir)?),
            None => None,
        };
        let cluster = Cluster::new(&config.node, &config.cluster)?.map(Arc::new);
        let links = Links::new(
            &config.node.cluster,
            config.link_listener.as_ref(),
            &config.links,
            config.links_revision.clone(),
        );
        Ok(Broker {
            cluster,
            links: Arc::new(links),
            config,
            metrics: Metrics::default(),
            router: RwLock::new(Router::new()),
            retained: RwLock::new(Retained::default()),
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

    /// The mesh, on a node that is part of a cluster.
    pub fn cluster(&self) -> Option<&Cluster> {
        self.cluster.as_deref()
    }

    /// The links to other clusters.
    pub fn links(&self) -> &Arc<Links> {
        &self.links
    }

    /// The mesh, shared with the tasks that run it.
    pub(super) fn shared_cluster(&self) -> Option<Arc<Cluster>> {
        self.cluster.clone()
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

    pub(super) fn shutdown_signal(&self) -> Shutdown {
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
            retained: self.retained.read().count(),
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
            owner: SessionOwner::Unknown,
        }
    }

    /// Whether a connection authenticated as `owner` may take `client_id`'s
    /// session on this node (there is none, or it is `owner`'s).
    pub(super) fn admits(&self, client_id: &str, owner: &SessionOwner) -> bool {
        self.registry
            .get(client_id)
            .is_none_or(|handle| handle.lock().owner.admits(owner))
    }

    /// Attaches a connection to its session and drops the subscriptions of a
    /// session it replaced.
    ///
    /// `taken_over` is the session a peer node gave up for this client (see
    /// [`Cluster::take_over`]); it is resumed unless this node holds a
    /// session for the client itself.
    pub(super) fn attach(
        self: &Arc<Self>,
        client_id: &str,
        clean_start: bool,
        expiry_interval: u32,
        taken_over: Option<StoredSession>,
    ) -> Attached {
        if let Some(stored) = taken_over.filter(|_| !clean_start) {
            if self.registry.get(client_id).is_none() {
                self.adopt(stored, Instant::now());
            }
        }
        let attached = self
            .registry
            .attach(client_id, clean_start, Instant::now(), || {
                self.new_session_state(expiry_interval)
            });
        if let Some(old) = &attached.discarded {
            self.forget_session(old);
        }
        if let Some(cluster) = &self.cluster {
            attached.handle.set_claim(cluster.claim(client_id));
        }
        attached
    }

    /// Routes a message published on this node to every matching session
    /// and peer node, and stores it if retained. `publisher` is skipped by its
    /// own no-local subscriptions; `policy` says what a full queue does.
    pub(super) fn publish(
        &self,
        message: Message,
        publisher: Option<&Target>,
        policy: QueueFullPolicy,
        scratch: &mut Vec<(Target, Delivery)>,
    ) -> Routed {
        let message = Arc::new(message);
        let mut routed =
            self.publish_here(&message, publisher, policy, scratch, Retain::AsPublished);
        if !message.topic.starts_with("$SYS") {
            let over_links = self.links.forward(
                self,
                &message.topic,
                || message.to_wire(Instant::now()),
                self.links.published_here(),
            );
            routed.queued += over_links.queued;
            routed.pushback.merge(over_links.pushback);
        }
        routed
    }

    /// Routes a message within this cluster: this node's sessions and its
    /// mesh peers, and the retained store.
    fn publish_here(
        &self,
        message: &Arc<Message>,
        publisher: Option<&Target>,
        policy: QueueFullPolicy,
        scratch: &mut Vec<(Target, Delivery)>,
        retain_flag: Retain,
    ) -> Routed {
        // `$SYS/` topics describe this node alone; they stay on it.
        let node_local = message.topic.starts_with("$SYS");
        let version = match (&self.cluster, message.retain && !node_local) {
            (Some(cluster), true) => Some(cluster.next_retained_version()),
            _ => None,
        };
        if message.retain {
            self.retain(message, version.clone());
        }
        scratch.clear();
        self.router
            .read()
            .route(&message.topic, publisher, Target::is_ready, scratch);
        let mut forwards: Vec<(PeerRef, Forward)> = Vec::new();
        let mut routed = self.deliver_all(message, scratch, policy, &mut forwards, retain_flag);
        if let (Some(cluster), false) = (&self.cluster, node_local) {
            if message.retain {
                // Every node keeps every retained message, interested or not.
                for peer in cluster.peers() {
                    forward_to(&mut forwards, PeerRef(peer), message);
                }
            }
            // Messages of one publisher keep their order on the receiver.
            let lane = match publisher {
                Some(Target::Session(session)) => session.0.id,
                _ => 0,
            };
            for (peer, mut forward) in forwards {
                forward.retained.clone_from(&version);
                forward.lane = lane;
                match cluster.forward(&peer.0, forward) {
                    cluster::Queued::Yes => routed.queued += 1,
                    cluster::Queued::Backlogged => {
                        routed.queued += 1;
                        routed.pushback.congested = true;
                        if policy == QueueFullPolicy::Backpressure && peer.0.is_connected() {
                            routed.pushback.gates.push(peer.0);
                        }
                    }
                    cluster::Queued::Dropped => routed.pushback.congested = true,
                }
            }
        }
        routed
    }

    /// Queues `message` for the sessions among `targets`, and gathers per
    /// peer what it should deliver (its ordinary subscribers, and which
    /// shared groups it was chosen for).
    fn deliver_all(
        &self,
        message: &Arc<Message>,
        targets: &mut Vec<(Target, Delivery)>,
        policy: QueueFullPolicy,
        forwards: &mut Vec<(PeerRef, Forward)>,
        retain_flag: Retain,
    ) -> Routed {
        let mut routed = Routed::default();
        for (target, delivery) in targets.drain(..) {
            let session = match target {
                Target::Session(session) => session,
                Target::Peer(peer) => {
                    let forward = forward_to(forwards, peer, message);
                    match delivery.shared {
                        Some(group) => forward.groups.push(group.to_string()),
                        None => forward.plain = true,
                    }
                    continue;
                }
            };
            let outgoing = Outgoing {
                message: message.clone(),
                qos: message.qos.min(delivery.qos),
                retain: message.retain
                    && (delivery.retain_as_published || retain_flag == Retain::Set),
                subscription_ids: delivery.subscription_ids,
            };
            match self.deliver(&session.0, outgoing, policy) {
                Ok(Queued::Yes) => routed.queued += 1,
                Ok(Queued::BeyondBound) => {
                    routed.queued += 1;
                    routed.pushback.congested = true;
                    routed.pushback.gates.push(session.0);
                }
                Err(DropReason::QueueFull) => routed.pushback.congested = true,
                Err(_) => {}
            }
        }
        routed
    }

    /// Updates the retained store (an empty payload clears the topic) unless
    /// `version` is older than the topic's; persists what was applied.
    fn retain(&self, message: &Arc<Message>, version: Option<RetainedVersion>) {
        let stored = if message.payload.is_empty() {
            message.clone()
        } else {
            // The payload is a slice of a connection's read buffer; a retained
            // copy may live for days, so it gets its own allocation rather than
            // pinning the whole buffer.
            let mut stored = Message::clone(message);
            stored.payload = bytes::Bytes::copy_from_slice(&message.payload);
            Arc::new(stored)
        };
        if let (Some(version), Some(cluster)) = (&version, &self.cluster) {
            // A peer's version moves the clock past it (a local one already is).
            cluster.observe(version.stamp);
        }
        let now = Instant::now();
        let applied = self.retained.write().apply(stored, version, now);
        if let (true, false, Some(p)) = (applied, message.topic.starts_with('$'), &self.persistence)
        {
            p.retained_changed(message, now);
        }
    }

    /// Queues one message for one session and wakes its connection; says (and
    /// counts) why when it could not be queued.
    ///
    /// A full queue drops the message unless `policy` is back-pressure, the
    /// delivery is QoS 1/2 (what a PUBACK promises) and the client is connected
    /// and not stalled: then it is queued beyond the bound and the caller holds
    /// its publisher until the session has room.
    pub(super) fn deliver(
        &self,
        handle: &Arc<SessionHandle>,
        outgoing: Outgoing,
        policy: QueueFullPolicy,
    ) -> Result<Queued, DropReason> {
        let qos = outgoing.qos;
        if qos == QoS::AtMostOnce && !handle.is_connected() {
            self.metrics.dropped(DropReason::Qos0Offline);
            return Err(DropReason::Qos0Offline);
        }
        let (queued, persistent) = {
            let mut state = handle.lock();
            let queued = if !state.session.is_full() {
                // Within the bound: cannot fail.
                let _ = state.session.enqueue(outgoing);
                Queued::Yes
            } else if policy == QueueFullPolicy::Backpressure
                && qos != QoS::AtMostOnce
                && handle.is_connected()
                && !handle.is_stalled()
            {
                state.session.enqueue_beyond_bound(outgoing);
                let beyond = (state.session.queued_len())
                    .saturating_sub(self.config.limits.max_queued_messages);
                self.metrics.queue_overshoot(beyond);
                Queued::BeyondBound
            } else {
                drop(state);
                self.metrics.dropped(DropReason::QueueFull);
                return Err(DropReason::QueueFull);
            };
            handle.queue_changed(&state);
            (queued, state.expiry_interval > 0)
        };
        if persistent && qos != QoS::AtMostOnce {
            self.session_changed(handle);
        }
        if handle.is_connected() {
            handle.wake.notify_one();
        }
        Ok(queued)
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
        let outcome = self.router.write().subscribe(
            Target::Session(SessionRef(handle.clone())),
            filter,
            options,
            identifier,
        );
        if outcome == SubscribeOutcome::New {
            self.interest_added([filter]);
        }
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
            .unsubscribe(&Target::Session(SessionRef(handle.clone())), filter);
        if existed {
            self.interest_removed([filter]);
        }
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
            // Nobody to hold: a full queue drops and counts (in `deliver`);
            // the subscribe itself succeeded.
            let _ = self.deliver(handle, outgoing, QueueFullPolicy::Drop);
        }
    }

    /// Removes a session's subscriptions from the router (its state goes with the handle).
    fn forget_session(&self, handle: &Arc<SessionHandle>) {
        let filters: Vec<String> = handle.lock().subscriptions.keys().cloned().collect();
        let key = Target::Session(SessionRef(handle.clone()));
        let mut router = self.router.write();
        let removed: Vec<&str> = filters
            .iter()
            .filter(|filter| router.unsubscribe(&key, filter))
            .map(String::as_str)
            .collect();
        drop(router);
        self.interest_removed(removed);
        if let Some(p) = &self.persistence {
            p.session_deleted(&handle.client_id);
        }
        if let Some(cluster) = &self.cluster {
            cluster.release(&handle.client_id, handle.claim());
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
        self.links.restore(snapshot.links);
        let now = Instant::now();
        let mut retained = self.retained.write();
        let mut restored_retained = 0;
        for stored in snapshot.retained {
            if let Some(message) = Message::from_stored(stored, now) {
                retained.restore(Arc::new(message));
                restored_retained += 1;
            }
        }
        drop(retained);
        let mut restored_sessions = 0;
        for stored in snapshot.sessions {
            if let Some(handle) = self.adopt(stored, now) {
                if let Some(cluster) = &self.cluster {
                    handle.set_claim(cluster.claim_restored(&handle.client_id));
                }
                super::connection::schedule_expiry(self.clone(), handle, 0);
                restored_sessions += 1;
            }
        }
        tracing::info!(
            retained = restored_retained,
            sessions = restored_sessions,
            "restored state from the store"
        );
        Ok(())
    }

    /// Registers a session from its stored form (the store at start-up, or a
    /// peer that gave it up) with its subscriptions; `None` if it expired.
    fn adopt(&self, stored: StoredSession, now: Instant) -> Option<Arc<SessionHandle>> {
        let client_id = stored.client_id.clone();
        let state = persist::session_state(stored, self, now)?;
        let subscriptions: Vec<_> = state
            .subscriptions
            .iter()
            .map(|(f, r)| (f.clone(), *r))
            .collect();
        let handle = self.registry.restore(&client_id, state);
        let key = Target::Session(SessionRef(handle.clone()));
        let mut router = self.router.write();
        let added: Vec<String> = subscriptions
            .into_iter()
            .filter(|(filter, record)| {
                router.subscribe(key.clone(), filter, record.options, record.identifier)
                    == SubscribeOutcome::New
            })
            .map(|(filter, _)| filter)
            .collect();
        drop(router);
        self.interest_added(added.iter().map(String::as_str));
        self.session_changed(&handle);
        Some(handle)
    }

    /// This node's sessions gained their first subscription to each of
    /// `filters`: the one place local interest leaves the node (to the mesh).
    fn interest_added<'f>(&self, filters: impl IntoIterator<Item = &'f str>) {
        for filter in filters {
            if let Some(cluster) = &self.cluster {
                cluster.route_added(filter);
            }
            self.links.own_added(filter);
        }
    }

    /// This node's sessions dropped their last subscription to each of `filters`.
    fn interest_removed<'f>(&self, filters: impl IntoIterator<Item = &'f str>) {
        for filter in filters {
            if let Some(cluster) = &self.cluster {
                cluster.route_removed(filter);
            }
            self.links.own_removed(filter);
        }
    }

    /// Writes everything pending to the store, at shutdown.
    pub(super) async fn final_flush(&self) {
        if let Some(p) = &self.persistence {
            p.flush(&self.registry, &self.links, &self.metrics).await;
        }
    }
}

/// What `forwards` holds for `peer`, added (bound for none of its
/// subscribers yet) on the peer's first mention: one forward per peer.
fn forward_to<'f>(
    forwards: &'f mut Vec<(PeerRef, Forward)>,
    peer: PeerRef,
    message: &Message,
) -> &'f mut Forward {
    let at = match forwards.iter().position(|(p, _)| *p == peer) {
        Some(at) => at,
        None => {
            let forward = Forward {
                message: message.to_wire(Instant::now()),
                plain: false,
                groups: Vec::new(),
                retained: None,
                lane: 0,
            };
            forwards.push((peer, forward));
            forwards.len() - 1
        }
    };
    &mut forwards[at].1
}

/// Routing a message from a peer: this node's sessions only (a peer's
/// message is never forwarded again, so it reaches each node once), its
/// ordinary subscribers if the sender asked, and the groups it was chosen for.
struct FromPeer<'a> {
    plain: bool,
    groups: &'a [String],
}

impl Scope<Target> for FromPeer<'_> {
    fn allows(&self, key: &Target) -> bool {
        matches!(key, Target::Session(_))
    }
    fn plain(&self) -> bool {
        self.plain
    }
    fn group(&self, id: &str) -> bool {
        self.groups.iter().any(|g| g == id)
    }
}

/// Ordinary options for a peer's route: the highest QoS, so the message keeps
/// the QoS it was published with, and the retain flag as published, so the
/// receiving node can apply each subscriber's own choice.
const PEER_ROUTE: SubscriptionOptions = SubscriptionOptions {
    qos: QoS::ExactlyOnce,
    no_local: false,
    retain_as_published: true,
    retain_handling: RetainHandling::DoNotSend,
};

impl Host for Broker {
    fn shutdown_signal(&self) -> Shutdown {
        self.shutdown.clone()
    }

    fn add_peer_route(&self, peer: &Arc<Peer>, filter: &str) {
        let key = Target::Peer(PeerRef(peer.clone()));
        self.router.write().subscribe(key, filter, PEER_ROUTE, None);
        // A peer's subscribers are this cluster's interest too.
        self.links.own_added(filter);
    }

    fn remove_peer_route(&self, peer: &Arc<Peer>, filter: &str) {
        let key = Target::Peer(PeerRef(peer.clone()));
        self.router.write().unsubscribe(&key, filter);
        self.links.own_removed(filter);
    }

    fn deliver_forwarded(&self, forward: Forward) -> Pushback {
        let Some(message) = Message::from_wire(forward.message, Instant::now()) else {
            tracing::warn!("a peer forwarded a message with an invalid QoS; dropped");
            return Pushback::default();
        };
        let message = Arc::new(message);
        if message.retain {
            self.retain(&message, forward.retained.clone());
        }
        if !forward.plain && forward.groups.is_empty() {
            return Pushback::default();
        }
        let scope = FromPeer {
            plain: forward.plain,
            groups: &forward.groups,
        };
        let mut targets = Vec::new();
        self.router.read().route_within(
            &message.topic,
            None,
            Target::is_ready,
            &scope,
            &mut targets,
        );
        if targets.is_empty() {
            self.metrics.dropped(DropReason::NoLongerSubscribed);
            return Pushback::default();
        }
        let policy = self.config.limits.queue_full_policy;
        self.deliver_all(
            &message,
            &mut targets,
            policy,
            &mut Vec::new(),
            Retain::AsPublished,
        )
        .pushback
    }

    fn backpressure_wait(&self) -> Duration {
        Duration::from_millis(self.config.limits.backpressure_max_wait_ms)
    }

    fn held(&self, release: Release) {
        self.metrics
            .backpressure_hold(matches!(release, Release::TimedOut(_)));
    }

    fn retain_versioned(&self, message: WireMessage, version: RetainedVersion) {
        let Some(message) = Message::from_wire(message, Instant::now()) else {
            return;
        };
        self.retain(&Arc::new(message), Some(version));
    }

    fn surrender_session(
        &self,
        client_id: &str,
        clean_start: bool,
        owner: &SessionOwner,
    ) -> Result<Option<StoredSession>, NotOwner> {
        if !self.admits(client_id, owner) {
            tracing::info!(%client_id, "a peer asked for a session another identity owns; kept");
            return Err(NotOwner);
        }
        let Some(handle) = self.registry.take(client_id) else {
            return Ok(None);
        };
        let now = Instant::now();
        let stored = {
            let state = handle.lock();
            (!clean_start && !state.is_expired(now))
                .then(|| persist::stored_session(client_id, &state, now))
        };
        self.forget_session(&handle);
        tracing::debug!(%client_id, moved = stored.is_some(), "session taken over by a peer node");
        Ok(stored)
    }

    fn session_superseded(&self, client_id: &str) {
        if let Some(handle) = self.registry.take(client_id) {
            tracing::info!(%client_id, "a peer's newer claim took this session over");
            self.forget_session(&handle);
        }
    }

    fn link_op(&self, link: &str, op: bytes::Bytes) -> Pushback {
        self.links.from_mesh(self, link, op)
    }

    fn link_moved(&self, link: &str) {
        self.links.moved(self, link);
    }

    fn links_for_peer(&self) -> Vec<(String, bytes::Bytes)> {
        self.links.for_peer()
    }

    fn retained_for_peer(&self) -> Vec<(WireMessage, RetainedVersion)> {
        let weakest = RetainedVersion {
            stamp: 0,
            node: self
                .cluster
                .as_ref()
                .map_or_else(String::new, |c| c.identity().node.clone()),
        };
        self.retained.read().for_peer(Instant::now(), &weakest)
    }
}

impl LinkHost for Broker {
    fn shutdown_signal(&self) -> Shutdown {
        self.shutdown.clone()
    }

    fn deliver_linked(&self, link: &Link, linked: LinkMessage) -> Pushback {
        let me = self.links.me();
        let LinkMessage {
            id: _,
            message: wire,
            mut path,
            to,
            replay,
        } = linked;
        path.push(me.to_owned());
        let onward: Vec<String> = to.iter().filter(|c| *c != me).cloned().collect();
        let mut pushback = Pushback::default();
        if !onward.is_empty() {
            let forwarded = self.links.forward(
                self,
                &wire.topic,
                || wire.clone(),
                Via {
                    path: &path,
                    to: Some(&onward),
                    from: Some(&link.name),
                    replay,
                },
            );
            pushback.merge(forwarded.pushback);
        }
        if to.iter().any(|c| c == me) {
            let Some(message) = Message::from_wire(wire, Instant::now()) else {
                tracing::warn!(link = %link.name, "a linked cluster sent a message with an invalid QoS; dropped");
                return pushback;
            };
            let policy = self.config.limits.queue_full_policy;
            let message = Arc::new(message);
            if replay && message.payload.is_empty() {
                // A clearing sent with a new interest only clears what was
                // kept here; there is nothing to deliver.
                self.retain(&message, None);
                return pushback;
            }
            // A retained message sent because a subscriber here just gained
            // interest in it is delivered as at subscribe time: retain set.
            let retain_flag = if replay {
                Retain::Set
            } else {
                Retain::AsPublished
            };
            let routed = self.publish_here(&message, None, policy, &mut Vec::new(), retain_flag);
            pushback.merge(routed.pushback);
        }
        pushback
    }

    fn retained_matching(&self, filters: &[String]) -> Vec<WireMessage> {
        let now = Instant::now();
        let mut matching = Vec::new();
        let mut cleared = Vec::new();
        let retained = self.retained.read();
        for filter in filters {
            retained.matching(filter, &mut matching);
            cleared.extend(retained.cleared_matching(filter, now));
        }
        drop(retained);
        let mut seen = std::collections::HashSet::new();
        let set = matching
            .into_iter()
            .filter(|m| {
                !m.is_expired(now) && !m.topic.starts_with('$') && seen.insert(m.topic.clone())
            })
            .map(|m| m.to_wire(now))
            .collect::<Vec<_>>();
        // Recent clearings too: the other cluster may hold an older copy.
        let clearings = cleared
            .into_iter()
            .filter(|topic| !topic.starts_with('$') && seen.insert(topic.clone()))
            .map(|topic| WireMessage {
                topic,
                retain: true,
                ..WireMessage::default()
            });
        set.into_iter().chain(clearings).collect()
    }

    fn backpressure_wait(&self) -> Duration {
        Duration::from_millis(self.config.limits.backpressure_max_wait_ms)
    }

    fn held(&self, release: Release) {
        self.metrics
            .backpressure_hold(matches!(release, Release::TimedOut(_)));
    }

    fn dials_links(&self) -> bool {
        self.cluster.as_ref().is_none_or(|c| c.dials_links())
    }

    fn claim_link(&self, link: &str) -> Option<u64> {
        self.cluster.as_ref().map(|c| c.claim_link(link))
    }

    fn release_link(&self, link: &str, stamp: u64) {
        if let Some(cluster) = &self.cluster {
            cluster.release_link(link, stamp);
        }
    }

    fn link_holder(&self, link: &str) -> Option<Arc<str>> {
        self.cluster.as_ref()?.link_holder(link)
    }

    fn send_link_op(&self, node: Option<&str>, link: &str, op: bytes::Bytes) -> bool {
        self.cluster
            .as_ref()
            .is_some_and(|c| c.send_link_op(node, link, op) != cluster::Queued::Dropped)
    }
}

impl AdminSource for Broker {
    fn ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.shutdown.is_shutdown()
    }

    fn metrics_text(&self) -> String {
        let mut text = self.metrics.render(self.gauges());
        if let Some(cluster) = &self.cluster {
            text.push_str(&cluster.metrics_text());
        }
        if !self.links.is_empty() {
            text.push_str(&self.links.metrics_text());
        }
        text
    }

    fn cluster_status(&self) -> Option<serde_json::Value> {
        let status = self.cluster.as_ref()?.status();
        serde_json::to_value(status).ok()
    }

    fn links_status(&self) -> serde_json::Value {
        serde_json::json!({
            "revision": self.links.applied_revision(),
            "links": self.links.status(),
        })
    }

    fn replace_links(&self, body: serde_json::Value) -> Result<(), String> {
        let mut set = crate::config::LinkSet::from_json(body)?;
        if let Some(folder) = self.config.links_file.as_deref().and_then(|f| f.parent()) {
            set.resolve_paths(folder);
        }
        let mut candidate = self.config.clone();
        candidate.links = set.links;
        candidate.validate().map_err(|e| e.to_string())?;
        self.links.replace(&candidate.links, set.revision);
        Ok(())
    }
}
