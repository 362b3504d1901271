//! The tables of the database and how records are filed in them.
//!
//! Keys are stored as raw bytes (the UTF-8 of the topic or client id) rather
//! than as redb's `&str` key type: redb decodes `&str` keys with a panicking
//! UTF-8 check, so a damaged key would crash start-up instead of being
//! reported. Byte order of UTF-8 equals string order, so nothing else changes.

use redb::{ReadTransaction, ReadableTable, TableDefinition};
use serde::Serialize;

use super::codec;
use super::error::{database, Corruption, StoreError};
use super::records::{StoredLink, StoredMessage, StoredSession};

/// Key and value types of every table: UTF-8 key bytes to encoded record.
pub(super) type Definition = TableDefinition<'static, &'static [u8], &'static [u8]>;

/// An open table inside a write transaction.
pub(super) type WriteTable<'txn> = redb::Table<'txn, &'static [u8], &'static [u8]>;

/// A record type that has its own table, keyed by one of its fields.
pub(super) trait Record: Serialize + codec::Migrate {
    /// Table name, also used in error messages.
    const TABLE: &'static str;

    /// The field the record is filed under.
    fn key(&self) -> &str;

    /// The redb definition of this record's table.
    fn definition() -> Definition {
        TableDefinition::new(Self::TABLE)
    }
}

impl Record for StoredMessage {
    const TABLE: &'static str = "retained";

    fn key(&self) -> &str {
        &self.topic
    }
}

impl Record for StoredSession {
    const TABLE: &'static str = "sessions";

    fn key(&self) -> &str {
        &self.client_id
    }
}

impl Record for StoredLink {
    const TABLE: &'static str = "links";

    fn key(&self) -> &str {
        &self.name
    }
}

/// Files `record` under its key, replacing what was there.
pub(super) fn put<R: Record>(table: &mut WriteTable<'_>, record: &R) -> Result<(), StoreError> {
    let value = codec::encode(record).map_err(|source| StoreError::Encode {
        table: R::TABLE,
        key: record.key().to_owned(),
        source,
    })?;
    table
        .insert(record.key().as_bytes(), value.as_slice())
        .map_err(database("write a record"))?;
    Ok(())
}

/// Removes the record filed under `key`, if any.
pub(super) fn delete(table: &mut WriteTable<'_>, key: &str) -> Result<(), StoreError> {
    table
        .remove(key.as_bytes())
        .map_err(database("delete a record"))?;
    Ok(())
}

/// Reads every record of `R`'s table, in key order.
pub(super) fn read_all<R: Record>(txn: &ReadTransaction) -> Result<Vec<R>, StoreError> {
    let table = txn
        .open_table(R::definition())
        .map_err(database("open a table for reading"))?;
    let mut records = Vec::new();
    for entry in table.iter().map_err(database("read a table"))? {
        let (key, value) = entry.map_err(database("read a record"))?;
        records.push(decode_entry(key.value(), value.value())?);
    }
    Ok(records)
}

/// Decodes one stored entry, checking it is filed under its own key.
fn decode_entry<R: Record>(key: &[u8], value: &[u8]) -> Result<R, StoreError> {
    let corrupt = |reason| StoreError::Corrupt {
        table: R::TABLE,
        key: String::from_utf8_lossy(key).into_owned(),
        reason,
    };
    let key = std::str::from_utf8(key).map_err(|_| corrupt(Corruption::KeyNotUtf8))?;
    let record: R = codec::decode(value).map_err(|e| corrupt(Corruption::Value(e)))?;
    if record.key() != key {
        return Err(corrupt(Corruption::KeyMismatch(record.key().to_owned())));
    }
    Ok(record)
}
