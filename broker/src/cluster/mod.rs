//! The mesh between the nodes of one cluster, so that they act as one broker.
//!
//! Every node dials every peer address it knows (static list or DNS) and
//! accepts the peers that dial it, so each pair of nodes shares two
//! connections, one per direction ([`wire`] says what flows on each). Over
//! its own connection a node sends a numbered stream of ops: its local
//! subscription filters as they come and go (reference-counted, so a filter
//! is announced once however many sessions use it), and the messages its
//! clients publish that a peer has interest in, once per peer. The receiver
//! acknowledges the stream, so a cut loses nothing that fits the queue and a
//! reconnect resumes where the peer stopped (see `outbox.rs`).
//!
//! Peer routes live in the node's own router under [`PeerRef`] keys, so one
//! match finds local sessions and interested peers alike, and a shared group
//! picks one member among local sessions and peer nodes cluster-wide.

mod dialer;
pub mod directory;
mod discovery;
pub mod handshake;
mod host;
mod inbound;
mod metrics;
mod peer;
mod stream;
pub mod wire;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use discovery::{Discover, Discovery};
pub use handshake::{ClusterSecret, SecretError};
pub use host::{Host, NotOwner};
pub use metrics::ClusterMetrics;
pub use peer::{Peer, PeerRef, Queued};
pub use stream::PeerTls;

use crate::config::{ClusterConfig, NodeConfig};
use crate::store::{SessionOwner, StoredSession};
use directory::{Claim, ClaimOutcome, Directory};
use wire::{Forward, Frame, Op, RetainedVersion};

/// Who this node is: cluster, name, and an incarnation drawn at start, so
/// peers can tell a restarted node from one that merely reconnected.
#[derive(Debug, Clone)]
pub struct Identity {
    pub cluster: String,
    pub node: String,
    /// The StatefulSet ordinal, read off the name (`<set>-<ordinal>`).
    pub ordinal: Option<u32>,
    pub incarnation: u64,
}

/// The directory key under which a node claims to hold a link: U+0000 may
/// not appear in an MQTT client id, so it never meets a session's.
pub fn link_key(link: &str) -> String {
    format!("\0link\0{link}")
}

/// The link a directory key names, if it names one.
pub fn link_of(key: &str) -> Option<&str> {
    key.strip_prefix("\0link\0")
}

/// The ordinal of a StatefulSet pod name such as `eu-west-2`.
fn ordinal(name: &str) -> Option<u32> {
    let (_, suffix) = name.rsplit_once('-')?;
    suffix.parse().ok()
}

/// The mesh state of this node: its local routes and its peers.
#[derive(Debug)]
pub struct Cluster {
    identity: Identity,
    config: ClusterConfig,
    secret: ClusterSecret,
    /// Local subscription filters and how many sessions hold each. Its lock
    /// also orders route changes into every peer's queue, so all peers see
    /// the same sequence.
    local_routes: Mutex<HashMap<String, usize>>,
    /// Which node holds each client's session, and the cluster's Lamport clock.
    directory: Mutex<Directory>,
    peers: RwLock<HashMap<Arc<str>, Arc<Peer>>>,
    next_peer_id: AtomicU64,
    next_request: AtomicU64,
    metrics: ClusterMetrics,
    started: std::time::Instant,
}

impl Cluster {
    /// The mesh of a node configured with `cluster.bind`; `None` otherwise.
    pub fn new(node: &NodeConfig, config: &ClusterConfig) -> Result<Option<Cluster>, SecretError> {
        let (Some(_), Some(secret_file)) = (config.bind, &config.secret_file) else {
            return Ok(None);
        };
        Ok(Some(Cluster {
            identity: Identity {
                cluster: node.cluster.clone(),
                node: node.name.clone(),
                ordinal: ordinal(&node.name),
                incarnation: rand::random(),
            },
            config: config.clone(),
            secret: ClusterSecret::load(secret_file)?,
            local_routes: Mutex::new(HashMap::new()),
            directory: Mutex::new(Directory::new(&node.name)),
            peers: RwLock::new(HashMap::new()),
            next_peer_id: AtomicU64::new(0),
            next_request: AtomicU64::new(0),
            metrics: ClusterMetrics::default(),
            started: std::time::Instant::now(),
        }))
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    pub fn secret(&self) -> &ClusterSecret {
        &self.secret
    }

    pub fn metrics(&self) -> &ClusterMetrics {
        &self.metrics
    }

    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.config.heartbeat_interval_ms)
    }

    /// Lanes a peer's forwarded messages are delivered in (`deliveryLanes`;
    /// 0 means half the cores, at most four). Measured on two cores, where
    /// that gives one lane, a second one made fan-in slower: its lanes
    /// contended for the one subscriber's session.
    pub fn delivery_lanes(&self) -> usize {
        match self.config.delivery_lanes {
            0 => {
                let cores =
                    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
                (cores / 2).clamp(1, 4)
            }
            lanes => lanes,
        }
    }

    pub fn peer_timeout(&self) -> Duration {
        Duration::from_millis(self.config.peer_timeout_ms)
    }

    /// The peer called `name`, created on first contact.
    pub fn peer(&self, name: &str) -> Arc<Peer> {
        if let Some(peer) = self.peers.read().get(name) {
            return peer.clone();
        }
        self.peers
            .write()
            .entry(Arc::from(name))
            .or_insert_with(|| {
                let id = self.next_peer_id.fetch_add(1, Ordering::Relaxed);
                Arc::new(Peer::new(id, name, self.config.max_pending_frames))
            })
            .clone()
    }

    /// Every peer known now.
    pub fn peers(&self) -> Vec<Arc<Peer>> {
        self.peers.read().values().cloned().collect()
    }

    /// Forgets a peer that is gone on both sides.
    fn remove_peer(&self, peer: &Arc<Peer>) {
        let mut peers = self.peers.write();
        if peers.get(&peer.name).is_some_and(|p| Arc::ptr_eq(p, peer)) {
            peers.remove(&peer.name);
        }
    }

    /// A local session subscribed to `filter`; peers hear of it on the first.
    pub fn route_added(&self, filter: &str) {
        let mut routes = self.local_routes.lock();
        let count = routes.entry(filter.to_owned()).or_insert(0);
        *count += 1;
        if *count == 1 {
            self.tell_every_peer(|| Op::RouteAdd(filter.to_owned()));
        }
    }

    /// A local session dropped `filter`; peers hear of it on the last.
    pub fn route_removed(&self, filter: &str) {
        let mut routes = self.local_routes.lock();
        let Some(count) = routes.get_mut(filter) else {
            return;
        };
        *count -= 1;
        if *count == 0 {
            routes.remove(filter);
            self.tell_every_peer(|| Op::RouteRemove(filter.to_owned()));
        }
    }

    /// Queues a route change for every peer (the caller holds `local_routes`).
    fn tell_every_peer(&self, op: impl Fn() -> Op) {
        for peer in self.peers.read().values() {
            peer.send(op(), &self.metrics);
        }
    }

    /// Distinct local filters, as advertised to peers.
    pub fn local_route_count(&self) -> usize {
        self.local_routes.lock().len()
    }

    /// Queues `peer` a full snapshot of this node's routes and session
    /// claims, after a reset.
    pub fn resync_routes(&self, peer: &Peer) {
        let routes = self.local_routes.lock();
        peer.send(Op::Reset, &self.metrics);
        for filter in routes.keys() {
            peer.send(Op::RouteAdd(filter.clone()), &self.metrics);
        }
        drop(routes);
        let claims = self.directory.lock().own_claims();
        for (client_id, stamp) in claims {
            peer.send(Op::Claim { client_id, stamp }, &self.metrics);
        }
        self.metrics.resync();
    }

    /// A session for `client_id` now lives on this node (a client attached
    /// to it): every peer hears of it. Returns the claim's stamp.
    pub fn claim(&self, client_id: &str) -> u64 {
        let claim = self.directory.lock().claim(client_id);
        self.announce_claim(client_id, claim)
    }

    /// A session restored from disk at start-up lives here, with the weakest
    /// claim: a peer that took the client over meanwhile wins.
    pub fn claim_restored(&self, client_id: &str) -> u64 {
        let claim = self.directory.lock().claim_restored(client_id);
        self.announce_claim(client_id, claim)
    }

    /// Tells every peer of this node's `claim` to `client_id`; returns its stamp.
    fn announce_claim(&self, client_id: &str, claim: Claim) -> u64 {
        self.announce(Op::Claim {
            client_id: client_id.to_owned(),
            stamp: claim.stamp,
        });
        claim.stamp
    }

    /// The session claimed with `stamp` is gone from this node.
    pub fn release(&self, client_id: &str, stamp: u64) {
        let released = self.directory.lock().release(client_id, stamp).is_some();
        if released {
            self.announce(Op::Release {
                client_id: client_id.to_owned(),
                stamp,
            });
        }
    }

    /// `peer` claims `client_id`; says whether this node must give its own
    /// session for it up.
    pub(crate) fn peer_claims(&self, peer: &Peer, client_id: &str, stamp: u64) -> ClaimOutcome {
        let claim = Claim {
            stamp,
            node: peer.name.clone(),
        };
        self.directory.lock().peer_claims(client_id, claim)
    }

    /// `peer`'s claim with `stamp` to `client_id` ended.
    pub(crate) fn peer_releases(&self, peer: &Peer, client_id: &str, stamp: u64) {
        let claim = Claim {
            stamp,
            node: peer.name.clone(),
        };
        self.directory.lock().peer_releases(client_id, &claim);
    }

    /// Forgets what `peer` claimed (it reset its stream, restarted or died).
    /// Returns the links it held.
    pub(crate) fn forget_claims(&self, peer: &Peer) -> Vec<String> {
        let forgotten = self.directory.lock().forget_node(&peer.name);
        forgotten
            .iter()
            .filter_map(|key| link_of(key).map(str::to_owned))
            .collect()
    }

    /// The version a retained message set or cleared here now gets.
    pub fn next_retained_version(&self) -> RetainedVersion {
        let mut directory = self.directory.lock();
        RetainedVersion {
            stamp: directory.tick(),
            node: self.identity.node.clone(),
        }
    }

    /// The clock has seen `stamp` (a peer's retained version or request).
    pub fn observe(&self, stamp: u64) {
        self.directory.lock().observe(stamp);
    }

    /// This node now holds the connection of `link`; returns the claim's stamp.
    pub fn claim_link(&self, link: &str) -> u64 {
        self.claim(&link_key(link))
    }

    /// This node's claim with `stamp` to `link` ended.
    pub fn release_link(&self, link: &str, stamp: u64) {
        self.release(&link_key(link), stamp);
    }

    /// The peer that holds `link`, if another node does.
    pub fn link_holder(&self, link: &str) -> Option<Arc<str>> {
        self.directory.lock().holder(&link_key(link))
    }

    /// Whether this node is the one that dials links: the first by name
    /// among itself and the peers it reaches now. Every node computes the
    /// same answer once the mesh has formed, so none answers before a peer
    /// timeout has passed since it started (its peers have found it by
    /// then): two nodes dialling at once would each carry part of a stream.
    pub fn dials_links(&self) -> bool {
        if self.started.elapsed() < self.peer_timeout() {
            return false;
        }
        let me = &self.identity.node;
        self.peers
            .read()
            .values()
            .filter(|peer| peer.is_connected())
            .all(|peer| *peer.name > **me)
    }

    /// Queues a link op for `node`, or for every peer.
    pub fn send_link_op(&self, node: Option<&str>, link: &str, op: bytes::Bytes) -> Queued {
        let op = Op::Link {
            link: link.to_owned(),
            op,
        };
        match node {
            Some(node) => match self.peers.read().get(node) {
                Some(peer) => peer.send(op, &self.metrics),
                None => Queued::Dropped,
            },
            None => {
                self.announce(op);
                Queued::Yes
            }
        }
    }

    /// The clock now, for a peer's takeover reply.
    pub fn clock(&self) -> u64 {
        self.directory.lock().now()
    }

    /// Client ids with a known holder in the cluster.
    pub fn directory_len(&self) -> usize {
        self.directory.lock().len()
    }

    /// Queues an op for every peer.
    fn announce(&self, op: Op) {
        for peer in self.peers.read().values() {
            peer.send(op.clone(), &self.metrics);
        }
    }

    /// Queues a message for a peer with interest in it.
    pub fn forward(&self, peer: &Peer, forward: Forward) -> Queued {
        let bytes = forward.message.payload.len();
        let queued = peer.send(Op::Publish(forward), &self.metrics);
        if queued != Queued::Dropped {
            self.metrics.forwarded(bytes);
        }
        queued
    }

    /// Asks the peer holding `client_id`'s session (by the directory) to give
    /// it up; its connection there is told 0x8E. No peer holds it: no question
    /// asked. Waits at most a peer timeout; a peer that does not answer in
    /// time keeps whatever it has (and the claims decide, see `directory.rs`).
    ///
    /// Refused when the session belongs to another identity than `owner`:
    /// the holder keeps it, and the connecting client must be refused.
    pub async fn take_over(
        &self,
        client_id: &str,
        clean_start: bool,
        owner: &SessionOwner,
    ) -> Result<Option<StoredSession>, NotOwner> {
        let Some(holder) = self.directory.lock().holder(client_id) else {
            return Ok(None);
        };
        let Some(peer) = self.peers.read().get(&holder).cloned() else {
            return Ok(None);
        };
        if !peer.is_connected() {
            return Ok(None);
        }
        let request = self.next_request.fetch_add(1, Ordering::Relaxed);
        let frame = Frame::TakeSession {
            request,
            client_id: client_id.to_owned(),
            clean_start,
            clock: self.clock(),
            owner: owner.clone(),
        };
        self.metrics.takeover_asked();
        let Some(reply) = peer.request(request, &frame) else {
            return Ok(None);
        };
        // A late or lost answer is no session (the claims then decide).
        let Ok(Ok((session, clock))) = tokio::time::timeout(self.peer_timeout(), reply).await
        else {
            return Ok(None);
        };
        self.observe(clock);
        session.ok_or(NotOwner)
    }

    /// What `/api/v1/cluster` shows.
    pub fn status(&self) -> ClusterStatus {
        let mut nodes: Vec<NodeStatus> = self.peers().iter().map(|p| p.status()).collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        ClusterStatus {
            cluster: self.identity.cluster.clone(),
            node: self.identity.node.clone(),
            ordinal: self.identity.ordinal,
            incarnation: format!("{:016x}", self.identity.incarnation),
            local_routes: self.local_route_count(),
            peers: nodes,
        }
    }

    /// The Prometheus text of the mesh's metrics.
    pub fn metrics_text(&self) -> String {
        let peers = self.peers();
        self.metrics
            .render(&peers, self.local_route_count(), self.directory_len())
    }
}

/// What every mesh task works with: the broker node it serves, and the
/// mesh's own state, handed in rather than asked of the host. It derefs to
/// the host, so tasks call the host's operations on it directly.
#[derive(Debug)]
pub(crate) struct MeshHost<H> {
    host: Arc<H>,
    mesh: Arc<Cluster>,
}

impl<H> MeshHost<H> {
    /// The mesh state.
    pub fn mesh(&self) -> &Cluster {
        &self.mesh
    }
}

impl<H> Clone for MeshHost<H> {
    fn clone(&self) -> Self {
        MeshHost {
            host: self.host.clone(),
            mesh: self.mesh.clone(),
        }
    }
}

impl<H> std::ops::Deref for MeshHost<H> {
    type Target = H;

    fn deref(&self) -> &H {
        &self.host
    }
}

/// Starts the mesh's tasks: accepting peers on `listener`, dialling what
/// `discover` finds (the configured sources when `None`), and declaring
/// silent peers dead. Every peer connection runs over `tls` when given.
pub fn spawn<H: Host>(
    host: Arc<H>,
    mesh: Arc<Cluster>,
    listener: TcpListener,
    discover: Option<Arc<dyn Discover>>,
    tls: Option<PeerTls>,
) -> Vec<JoinHandle<()>> {
    let tls = tls.map(Arc::new);
    let every = discovery::interval(mesh.config());
    let discover = discover
        .unwrap_or_else(|| Arc::new(Discovery::from_config(mesh.config())) as Arc<dyn Discover>);
    let host = MeshHost { host, mesh };
    vec![
        tokio::spawn(inbound::accept_loop(host.clone(), listener, tls.clone())),
        tokio::spawn(discovery::membership_loop(
            host.clone(),
            discover,
            every,
            tls,
        )),
        tokio::spawn(inbound::sweep_loop(host)),
    ]
}

/// The mesh as one node sees it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    pub cluster: String,
    pub node: String,
    pub ordinal: Option<u32>,
    pub incarnation: String,
    /// Distinct filters this node advertises.
    pub local_routes: usize,
    pub peers: Vec<NodeStatus>,
}

/// One peer as this node sees it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    pub name: String,
    /// `connected` (both directions up), `connecting` (one is), or
    /// `unreachable` (neither, not yet declared dead).
    pub state: &'static str,
    pub address: Option<String>,
    pub incarnation: Option<String>,
    /// Filters the peer advertised to this node.
    pub routes: usize,
    /// Ops queued for the peer and not yet acknowledged: the replication lag.
    pub lag: usize,
}

#[cfg(test)]
mod tests {
    use super::ordinal;

    #[test]
    fn the_ordinal_is_read_off_a_statefulset_pod_name() {
        assert_eq!(ordinal("eu-west-2"), Some(2));
        assert_eq!(ordinal("strait-10"), Some(10));
        assert_eq!(ordinal("standalone"), None);
        assert_eq!(ordinal("node-x"), None);
    }
}
