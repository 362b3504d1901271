//! Counters of the mesh, rendered after the node's own metrics.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::peer::Peer;

/// What the mesh has done since start.
#[derive(Debug, Default)]
pub struct ClusterMetrics {
    forwarded_messages: AtomicU64,
    forwarded_bytes: AtomicU64,
    received_messages: AtomicU64,
    received_bytes: AtomicU64,
    forward_dropped: AtomicU64,
    forward_lost: AtomicU64,
    resyncs: AtomicU64,
    handshakes_refused: AtomicU64,
    peers_declared_dead: AtomicU64,
    takeovers_asked: AtomicU64,
    sessions_superseded: AtomicU64,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl ClusterMetrics {
    /// A message was queued for a peer (payload bytes).
    pub fn forwarded(&self, bytes: usize) {
        add(&self.forwarded_messages, 1);
        add(&self.forwarded_bytes, bytes as u64);
    }

    /// A message arrived from a peer (payload bytes).
    pub fn received(&self, bytes: usize) {
        add(&self.received_messages, 1);
        add(&self.received_bytes, bytes as u64);
    }

    /// A message for a peer was dropped: its queue was full.
    pub fn forward_dropped(&self) {
        add(&self.forward_dropped, 1);
    }

    /// Messages queued for a peer that can no longer reach it (it restarted,
    /// or was declared dead, before acknowledging them).
    pub fn forward_lost(&self, n: u64) {
        add(&self.forward_lost, n);
    }

    pub fn resync(&self) {
        add(&self.resyncs, 1);
    }

    pub fn handshake_refused(&self) {
        add(&self.handshakes_refused, 1);
    }

    pub fn peer_declared_dead(&self) {
        add(&self.peers_declared_dead, 1);
    }

    /// A connecting client's session was asked of the peer holding it.
    pub fn takeover_asked(&self) {
        add(&self.takeovers_asked, 1);
    }

    /// A local session lost a race to a peer's newer claim (0x8E), or a
    /// restored one turned out to have moved.
    pub fn session_superseded(&self) {
        add(&self.sessions_superseded, 1);
    }

    pub fn takeovers_asked_total(&self) -> u64 {
        self.takeovers_asked.load(Ordering::Relaxed)
    }

    pub fn sessions_superseded_total(&self) -> u64 {
        self.sessions_superseded.load(Ordering::Relaxed)
    }

    pub fn forwarded_total(&self) -> u64 {
        self.forwarded_messages.load(Ordering::Relaxed)
    }

    pub fn received_total(&self) -> u64 {
        self.received_messages.load(Ordering::Relaxed)
    }

    pub fn lost_total(&self) -> u64 {
        self.forward_lost.load(Ordering::Relaxed)
    }

    pub fn resyncs_total(&self) -> u64 {
        self.resyncs.load(Ordering::Relaxed)
    }

    pub fn handshakes_refused_total(&self) -> u64 {
        self.handshakes_refused.load(Ordering::Relaxed)
    }

    pub fn peers_declared_dead_total(&self) -> u64 {
        self.peers_declared_dead.load(Ordering::Relaxed)
    }

    /// Prometheus text for the counters and the current state of `peers`.
    pub fn render(&self, peers: &[Arc<Peer>], local_routes: usize, directory: usize) -> String {
        let mut out = String::with_capacity(2048);
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP strait_cluster_{name} {help}\n# TYPE strait_cluster_{name} {kind}\nstrait_cluster_{name} {value}"
            );
        };
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let connected = peers.iter().filter(|p| p.is_connected()).count();
        let remote_routes: usize = peers.iter().map(|p| p.inbound().routes.len()).sum();
        let lag: usize = peers.iter().map(|p| p.outbox().len()).sum();
        metric("peers", "gauge", "Peer nodes known.", peers.len() as u64);
        metric(
            "peer_connections",
            "gauge",
            "Peers this node's own connection reaches now.",
            connected as u64,
        );
        metric(
            "local_routes",
            "gauge",
            "Distinct subscription filters advertised to peers.",
            local_routes as u64,
        );
        metric(
            "remote_routes",
            "gauge",
            "Filters advertised by peers, summed over peers.",
            remote_routes as u64,
        );
        metric(
            "pending_ops",
            "gauge",
            "Ops queued for peers and not yet acknowledged.",
            lag as u64,
        );
        metric(
            "forwarded_messages_total",
            "counter",
            "Messages queued for peers with interest.",
            load(&self.forwarded_messages),
        );
        metric(
            "forwarded_bytes_total",
            "counter",
            "Payload bytes of the messages queued for peers.",
            load(&self.forwarded_bytes),
        );
        metric(
            "received_messages_total",
            "counter",
            "Messages received from peers.",
            load(&self.received_messages),
        );
        metric(
            "received_bytes_total",
            "counter",
            "Payload bytes of the messages received from peers.",
            load(&self.received_bytes),
        );
        metric(
            "forward_dropped_total",
            "counter",
            "Messages for a peer dropped because its queue was full.",
            load(&self.forward_dropped),
        );
        metric(
            "forward_lost_total",
            "counter",
            "Messages queued for a peer that restarted or died before acknowledging them.",
            load(&self.forward_lost),
        );
        metric(
            "resyncs_total",
            "counter",
            "Full route resyncs sent to peers (first contact, or a resume that was not possible).",
            load(&self.resyncs),
        );
        metric(
            "handshakes_refused_total",
            "counter",
            "Peer connections refused: wrong secret, cluster, or protocol version.",
            load(&self.handshakes_refused),
        );
        metric(
            "session_directory_entries",
            "gauge",
            "Client ids whose holding node this node knows, its own included.",
            directory as u64,
        );
        metric(
            "takeovers_asked_total",
            "counter",
            "Connecting clients whose session was asked of the peer holding it.",
            load(&self.takeovers_asked),
        );
        metric(
            "sessions_superseded_total",
            "counter",
            "Local sessions given up for a peer's newer claim (a simultaneous connect, or a session that moved while this node was down).",
            load(&self.sessions_superseded),
        );
        metric(
            "peers_declared_dead_total",
            "counter",
            "Peers declared dead after a peer timeout without any connection.",
            load(&self.peers_declared_dead),
        );
        out
    }
}
