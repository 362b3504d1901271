//! The records the store keeps, and the changes the server asks it to make.
//!
//! These are plain serde types: the store encodes them itself (`codec.rs`),
//! so the server never deals with bytes.

use serde::{Deserialize, Serialize};

/// A message as stored: retained, or queued for an offline session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
    /// Wall-clock expiry (Unix milliseconds), from the message expiry interval.
    pub expires_at_unix_ms: Option<u64>,
    pub payload_format_indicator: Option<u8>,
    pub content_type: Option<String>,
    pub response_topic: Option<String>,
    pub correlation_data: Option<Vec<u8>>,
    pub user_properties: Vec<(String, String)>,
}

/// One subscription of a stored session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSubscription {
    pub filter: String,
    pub qos: u8,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub retain_handling: u8,
    pub subscription_id: Option<u32>,
}

/// A persistent session: what a client finds when it reconnects without clean start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSession {
    pub client_id: String,
    pub expiry_interval_secs: u32,
    /// When the client went away (Unix milliseconds); `None` while connected.
    pub disconnected_at_unix_ms: Option<u64>,
    pub subscriptions: Vec<StoredSubscription>,
    /// QoS 1/2 messages not yet acknowledged by the client, oldest first.
    pub queue: Vec<StoredMessage>,
    /// The identity the session belongs to: only it may resume the session.
    pub owner: SessionOwner,
}

/// Who a session belongs to: the identity its creating connection
/// authenticated as. A client id alone is only a claim, so a session is
/// resumed only by the identity that owns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionOwner {
    /// Written before owners were recorded: the first identity to resume
    /// the session becomes its owner.
    Unknown,
    Anonymous,
    User(String),
}

impl SessionOwner {
    /// The owner a connection authenticated as `username` (`None`: anonymous) is.
    pub fn of(username: Option<&str>) -> SessionOwner {
        match username {
            Some(name) => SessionOwner::User(name.to_owned()),
            None => SessionOwner::Anonymous,
        }
    }

    /// Whether a connection owning `other` may resume a session owned by `self`.
    pub fn admits(&self, other: &SessionOwner) -> bool {
        *self == SessionOwner::Unknown || self == other
    }
}

/// A session as format version 1 wrote it (no owner), read and migrated.
#[derive(Debug, Deserialize)]
pub(super) struct StoredSessionV1 {
    client_id: String,
    expiry_interval_secs: u32,
    disconnected_at_unix_ms: Option<u64>,
    subscriptions: Vec<StoredSubscription>,
    queue: Vec<StoredMessage>,
}

impl From<StoredSessionV1> for StoredSession {
    fn from(v1: StoredSessionV1) -> StoredSession {
        StoredSession {
            client_id: v1.client_id,
            expiry_interval_secs: v1.expiry_interval_secs,
            disconnected_at_unix_ms: v1.disconnected_at_unix_ms,
            subscriptions: v1.subscriptions,
            queue: v1.queue,
            owner: SessionOwner::Unknown,
        }
    }
}

/// What a link to another cluster keeps across a restart: the messages
/// queued for the remote, and the interest it had advertised, so messages
/// published while the link is still down keep queueing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredLink {
    /// The remote cluster's name.
    pub name: String,
    /// Queued messages, oldest first, each an encoded link op (the link
    /// protocol's `LinkOp::Publish`, with its message id).
    pub messages: Vec<Vec<u8>>,
    pub interest: Vec<StoredInterest>,
}

/// One advertisement a link's remote made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredInterest {
    pub origin: String,
    pub filter: String,
    pub path: Vec<String>,
}

/// One change, applied with others in a single transaction.
///
/// Ops apply in order, so the last op for a key in a batch wins. Deleting a
/// key that is not stored is not an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreOp {
    /// Stores the retained message of its topic, replacing any earlier one.
    PutRetained(StoredMessage),
    /// Removes the retained message of this topic.
    DeleteRetained(String),
    /// Stores the session of its client id, replacing any earlier one.
    PutSession(StoredSession),
    /// Removes the session of this client id.
    DeleteSession(String),
    /// Stores a link's queue and interest, replacing what was there.
    PutLink(StoredLink),
    /// Removes what was kept for the link to this cluster.
    DeleteLink(String),
}

/// Everything the store holds, read once at start-up.
///
/// Every list is sorted by key (topic, client id, link name) in byte order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub retained: Vec<StoredMessage>,
    pub sessions: Vec<StoredSession>,
    pub links: Vec<StoredLink>,
}
