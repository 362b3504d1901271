//! Durable state on disk: retained messages and persistent sessions.
//!
//! The server batches changes and hands them to [`Store::apply`] once per flush
//! interval, in one transaction; after a crash the store holds the state of the
//! last completed flush. Records are plain serde types so the on-disk encoding
//! is a well-known format inside a well-kept embedded database.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// A failure to open, read or write the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store I/O failed: {0}")]
    Io(String),
    #[error("store record is corrupt: {0}")]
    Corrupt(String),
}

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
}

/// One change, applied with others in a single transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreOp {
    PutRetained(StoredMessage),
    DeleteRetained(String),
    PutSession(StoredSession),
    DeleteSession(String),
}

/// Everything the store holds, read once at start-up.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub retained: Vec<StoredMessage>,
    pub sessions: Vec<StoredSession>,
}

/// The on-disk store of one broker node.
#[derive(Debug)]
pub struct Store {}

impl Store {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let _ = dir;
        todo!("store")
    }

    /// Reads everything back, at start-up.
    pub fn load(&self) -> Result<Snapshot, StoreError> {
        todo!("store")
    }

    /// Applies `ops` in one durable transaction. Blocking: call it from
    /// `spawn_blocking`.
    pub fn apply(&self, ops: &[StoreOp]) -> Result<(), StoreError> {
        let _ = ops;
        todo!("store")
    }
}
