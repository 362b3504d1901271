//! Who a routed message goes to: a session of this node, or a peer node that
//! has subscribers for it.

use crate::cluster::PeerRef;

use super::registry::SessionRef;

/// A router key. Peers sit in the same trie as sessions, so one match finds
/// both, and a shared group picks among local sessions and peers alike.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    Session(SessionRef),
    Peer(PeerRef),
}

impl Target {
    /// Whether a message sent now would reach its receiver without waiting:
    /// it is online and has room. A shared group prefers such members.
    pub fn is_ready(&self) -> bool {
        match self {
            Target::Session(session) => session.0.is_connected() && !session.0.is_full(),
            Target::Peer(peer) => peer.0.is_connected() && !peer.0.is_backlogged(),
        }
    }
}
