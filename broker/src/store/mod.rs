//! Durable state on disk: retained messages and persistent sessions.
//!
//! The server batches changes and hands them to [`Store::apply`] once per flush
//! interval, in one transaction; after a crash the store holds the state of the
//! last completed flush. Records are plain serde types so the on-disk encoding
//! is a well-known format inside a well-kept embedded database.
//!
//! On disk: one [redb] file, `strait.redb`, in the node's data directory, with
//! a `retained` table (topic to message), a `sessions` table (client id to
//! session) and a `links` table (remote cluster to queued messages and
//! interest). Values are postcard behind a format-version byte (see `codec.rs`).

mod codec;
mod error;
mod records;
mod table;

use std::path::Path;

use redb::{Builder, Database, DatabaseError, Durability};

pub use codec::CodecError;
pub use error::{Corruption, StoreError};
pub use records::{
    SessionOwner, Snapshot, StoreOp, StoredInterest, StoredLink, StoredMessage, StoredSession,
    StoredSubscription,
};

use error::database;
use table::Record;

/// Name of the database file inside the data directory.
const FILE_NAME: &str = "strait.redb";

/// Memory redb may use to cache pages (redb's default is 1 GiB). The store is
/// read once at start-up and then only written, so a big read cache buys
/// little and would count against the pod's memory limit.
const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// The on-disk store of one broker node.
///
/// It holds an exclusive lock on its file for as long as it lives, so a
/// second broker pointed at the same directory fails at start-up instead of
/// corrupting it. It is `Send + Sync`: share it behind an `Arc`; redb runs
/// concurrent `apply` calls one after another.
#[derive(Debug)]
pub struct Store {
    db: Database,
}

impl Store {
    /// Opens (creating if needed) the store in `dir`.
    ///
    /// A file left by a crash is repaired by redb here, which may take a while
    /// on a large store. Both tables are created on first open, so [`load`]
    /// works on a fresh store.
    ///
    /// [`load`]: Store::load
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(FILE_NAME);
        // File format v3 is the one redb 3 and later read; writing it now
        // spares a migration when the redb dependency moves on.
        let db = Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create_with_file_format_v3(true)
            .create(&path)
            .map_err(|source| match source {
                DatabaseError::DatabaseAlreadyOpen => StoreError::Locked { path: path.clone() },
                source => StoreError::Open {
                    path: path.clone(),
                    source,
                },
            })?;
        let txn = db
            .begin_write()
            .map_err(database("begin the set-up transaction"))?;
        txn.open_table(StoredMessage::definition())
            .map_err(database("create the retained table"))?;
        txn.open_table(StoredSession::definition())
            .map_err(database("create the sessions table"))?;
        txn.open_table(StoredLink::definition())
            .map_err(database("create the links table"))?;
        txn.commit()
            .map_err(database("commit the set-up transaction"))?;
        Ok(Store { db })
    }

    /// Reads everything back, at start-up.
    ///
    /// Any record that cannot be read fails the whole load with
    /// [`StoreError::Corrupt`]: skipping it would silently lose a session or
    /// a retained message.
    pub fn load(&self) -> Result<Snapshot, StoreError> {
        let txn = self
            .db
            .begin_read()
            .map_err(database("begin a read transaction"))?;
        Ok(Snapshot {
            retained: table::read_all(&txn)?,
            sessions: table::read_all(&txn)?,
            links: table::read_all(&txn)?,
        })
    }

    /// Applies `ops` in one durable transaction. Blocking: call it from
    /// `spawn_blocking`.
    ///
    /// Either every op is on disk when this returns `Ok`, or none is. An empty
    /// batch returns at once without touching the disk.
    pub fn apply(&self, ops: &[StoreOp]) -> Result<(), StoreError> {
        if ops.is_empty() {
            return Ok(());
        }
        let mut txn = self
            .db
            .begin_write()
            .map_err(database("begin a write transaction"))?;
        // redb's default, stated because the crash guarantee rests on it.
        txn.set_durability(Durability::Immediate);
        {
            let mut retained = txn
                .open_table(StoredMessage::definition())
                .map_err(database("open the retained table"))?;
            let mut sessions = txn
                .open_table(StoredSession::definition())
                .map_err(database("open the sessions table"))?;
            let mut links = txn
                .open_table(StoredLink::definition())
                .map_err(database("open the links table"))?;
            for op in ops {
                match op {
                    StoreOp::PutRetained(message) => table::put(&mut retained, message)?,
                    StoreOp::DeleteRetained(topic) => table::delete(&mut retained, topic)?,
                    StoreOp::PutSession(session) => table::put(&mut sessions, session)?,
                    StoreOp::DeleteSession(client_id) => table::delete(&mut sessions, client_id)?,
                    StoreOp::PutLink(link) => table::put(&mut links, link)?,
                    StoreOp::DeleteLink(name) => table::delete(&mut links, name)?,
                }
            }
        }
        txn.commit().map_err(database("commit a write transaction"))
    }
}

#[cfg(test)]
mod tests;
