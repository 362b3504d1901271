//! What can go wrong with the store, with enough context to act on it.

use std::path::PathBuf;

use super::codec::CodecError;

/// A failure to open, read or write the store.
///
/// The underlying cause is kept as the error's `source`, so logging the
/// chain (`{:#}` with anyhow) shows both what the store was doing and why
/// it failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory did not exist and could not be created.
    #[error("cannot create store directory {}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Another process (or another [`Store`](super::Store) in this one) holds
    /// the database file: two brokers must never share a data directory.
    #[error(
        "store {} is already open by another broker; each node needs its own data directory",
        path.display()
    )]
    Locked { path: PathBuf },
    /// The database file exists but cannot be used: I/O failure, a damaged
    /// file, or a file format this build cannot read.
    #[error("cannot open store {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: redb::DatabaseError,
    },
    /// The database failed while the store was doing `action`.
    #[error("store failed to {action}")]
    Database {
        action: &'static str,
        /// Boxed: `redb::Error` is several hundred bytes (one variant holds a
        /// whole read transaction), which every `Result` would carry.
        #[source]
        source: Box<redb::Error>,
    },
    /// A record could not be encoded; nothing of its batch was written.
    #[error("cannot encode {table} record {key:?}")]
    Encode {
        table: &'static str,
        key: String,
        #[source]
        source: CodecError,
    },
    /// A stored record cannot be read back. Start-up stops rather than
    /// silently dropping a client's session or a retained message.
    #[error("store record {key:?} in table {table} is corrupt")]
    Corrupt {
        table: &'static str,
        /// The record's key; bytes that are not UTF-8 are shown replaced.
        key: String,
        #[source]
        reason: Corruption,
    },
}

/// Why a stored record was judged corrupt.
#[derive(Debug, thiserror::Error)]
pub enum Corruption {
    #[error("key is not UTF-8")]
    KeyNotUtf8,
    #[error("value cannot be decoded")]
    Value(#[source] CodecError),
    /// The record decoded, but names a different topic or client than the
    /// key it is filed under.
    #[error("record names {0:?}, not its key")]
    KeyMismatch(String),
}

/// Builds a `map_err` adapter that wraps a redb error with what the store
/// was doing.
pub(super) fn database<E: Into<redb::Error>>(action: &'static str) -> impl FnOnce(E) -> StoreError {
    move |source| StoreError::Database {
        action,
        source: Box::new(source.into()),
    }
}
