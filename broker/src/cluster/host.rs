//! What the mesh needs from the broker node it runs in.

use std::sync::Arc;

use bytes::Bytes;
use std::time::Duration;

use super::peer::Peer;
use super::wire::{Forward, RetainedVersion, WireMessage};
use crate::flow::{Pushback, Release};
use crate::shutdown::Shutdown;
use crate::store::{SessionOwner, StoredSession};

/// A session belongs to another identity than the one asking for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the session belongs to another identity")]
pub struct NotOwner;

/// The broker operations the mesh drives when peers speak. Implemented by the
/// server's `Broker`; keeping it a trait keeps the mesh free of the server's
/// internals (sessions, connections, the store).
pub trait Host: Send + Sync + 'static {
    /// Flips to true when the node shuts down.
    fn shutdown_signal(&self) -> Shutdown;
    /// `peer` has subscribers for `filter`.
    fn add_peer_route(&self, peer: &Arc<Peer>, filter: &str);
    /// `peer` no longer has subscribers for `filter`.
    fn remove_peer_route(&self, peer: &Arc<Peer>, filter: &str);
    /// Delivers a message a peer forwarded to this node's own sessions, and
    /// says whether (and for whom) the peer's stream should be held.
    fn deliver_forwarded(&self, forward: Forward) -> Pushback;
    /// How long a stream is held for full queues, at most.
    fn backpressure_wait(&self) -> Duration;
    /// A hold ended (counted with the node's other holds).
    fn held(&self, release: Release);
    /// Stores (or, with an empty payload, clears) a peer's retained message
    /// if `version` is newer than what this node has for the topic.
    fn retain_versioned(&self, message: WireMessage, version: RetainedVersion);
    /// Gives up `client_id`'s session to a peer where the client is
    /// connecting: its connection here is told 0x8E, and its state goes
    /// along unless `clean_start`.
    /// Refused (and nothing changes) when the session belongs to another
    /// identity than `owner`, the connecting client's.
    fn surrender_session(
        &self,
        client_id: &str,
        clean_start: bool,
        owner: &SessionOwner,
    ) -> Result<Option<StoredSession>, NotOwner>;
    /// A peer's newer claim beat this node's to `client_id`: its session
    /// here ends, and its connection is told 0x8E.
    fn session_superseded(&self, client_id: &str);
    /// Every retained message and every recent clearing, with its version,
    /// for a peer met for the first time.
    fn retained_for_peer(&self) -> Vec<(WireMessage, RetainedVersion)>;
    /// A link op a peer sent (see [`Op::Link`](super::wire::Op)); says
    /// whether the peer's stream should be held.
    fn link_op(&self, link: &str, op: Bytes) -> Pushback;
    /// Another node claimed `link`, or gave it up.
    fn link_moved(&self, link: &str);
    /// What a peer met for the first time must learn of the links: the
    /// interest learned over each.
    fn links_for_peer(&self) -> Vec<(String, Bytes)>;
}
