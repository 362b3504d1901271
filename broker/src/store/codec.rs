//! Encoding of store records as bytes.
//!
//! Format choice: [postcard]. It is a serde format with a documented, frozen
//! wire specification (postcard 1.x), compact (varints, raw byte strings, no
//! field names), and fast — a good fit for records that hold binary payloads
//! and are rewritten every flush. `serde_json` would turn every payload byte
//! into a decimal number; bincode's 2.x rewrite changed both its API and its
//! format and the project has since stopped active development, while
//! postcard 1.0 froze its wire format.
//!
//! Postcard is not self-describing: adding or reordering a field changes how
//! old bytes decode. So every value starts with one format-version byte. A
//! future format bumps [`FORMAT_VERSION`] and keeps a decoder for the old
//! version, migrating records as they are read, instead of misreading them.

use serde::{de::DeserializeOwned, Serialize};

use super::records::{StoredLink, StoredMessage, StoredSession, StoredSessionV1};

/// Version byte of records written by this build. Version 2 added the
/// session's owner; version 1 sessions are migrated as they are read.
pub(super) const FORMAT_VERSION: u8 = 2;

/// Why a record could not be turned into bytes or back.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("record is empty (no format version byte)")]
    Empty,
    #[error("record has unknown format version {0} (this build reads version {FORMAT_VERSION})")]
    UnknownVersion(u8),
    #[error("record has {0} unexpected trailing bytes")]
    TrailingBytes(usize),
    #[error("postcard encoding failed")]
    Postcard(#[from] postcard::Error),
}

/// Encodes `record` as the version byte followed by its postcard encoding.
pub(super) fn encode<T: Serialize>(record: &T) -> Result<Vec<u8>, CodecError> {
    Ok(postcard::to_extend(record, vec![FORMAT_VERSION])?)
}

/// A record that can be read from the formats older builds wrote.
pub(super) trait Migrate: DeserializeOwned {
    /// Decodes the body of a record written with format `version`, if this
    /// build still reads that version.
    fn migrate(version: u8, body: &[u8]) -> Option<Result<Self, CodecError>>;
}

/// Decodes bytes written by [`encode`], or by an older build's encoder as far
/// as [`Migrate`] reads its format. Every byte must be accounted for:
/// trailing garbage means the value is not what was written.
pub(super) fn decode<T: Migrate>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version != FORMAT_VERSION {
        return T::migrate(version, body).unwrap_or(Err(CodecError::UnknownVersion(version)));
    }
    decode_body(body)
}

/// The postcard body of a record, wholly consumed.
pub(super) fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, CodecError> {
    let (record, rest) = postcard::take_from_bytes(body)?;
    if !rest.is_empty() {
        return Err(CodecError::TrailingBytes(rest.len()));
    }
    Ok(record)
}

/// Version 1 retained messages are read as they are (their format did not change).
impl Migrate for StoredMessage {
    fn migrate(version: u8, body: &[u8]) -> Option<Result<Self, CodecError>> {
        (version == 1).then(|| decode_body(body))
    }
}

/// Version 1 sessions had no owner: they are read with an unknown one.
impl Migrate for StoredSession {
    fn migrate(version: u8, body: &[u8]) -> Option<Result<Self, CodecError>> {
        (version == 1).then(|| decode_body::<StoredSessionV1>(body).map(StoredSession::from))
    }
}

/// Links were first stored with format version 2: nothing older to read.
impl Migrate for StoredLink {
    fn migrate(_version: u8, _body: &[u8]) -> Option<Result<Self, CodecError>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{SessionOwner, StoredMessage, StoredSession, StoredSubscription};

    fn message() -> StoredMessage {
        StoredMessage {
            topic: "a/b".into(),
            payload: vec![0, 1, 2, 255],
            qos: 1,
            retain: true,
            expires_at_unix_ms: Some(1_700_000_000_000),
            payload_format_indicator: Some(1),
            content_type: Some("text/plain".into()),
            response_topic: Some("r".into()),
            correlation_data: Some(vec![9, 9]),
            user_properties: vec![("k".into(), "v".into())],
        }
    }

    #[test]
    fn round_trips_a_session_with_every_field_set() {
        let session = StoredSession {
            client_id: "c".into(),
            expiry_interval_secs: 60,
            disconnected_at_unix_ms: Some(5),
            subscriptions: vec![StoredSubscription {
                filter: "a/#".into(),
                qos: 2,
                no_local: true,
                retain_as_published: true,
                retain_handling: 2,
                subscription_id: Some(7),
            }],
            queue: vec![message(), message()],
            owner: SessionOwner::User("alice".into()),
        };
        let bytes = encode(&session).expect("encode");
        assert_eq!(bytes[0], FORMAT_VERSION);
        let back: StoredSession = decode(&bytes).expect("decode");
        assert_eq!(back, session);
    }

    #[test]
    fn a_version_1_session_is_read_with_an_unknown_owner() {
        #[derive(Serialize)]
        struct V1 {
            client_id: String,
            expiry_interval_secs: u32,
            disconnected_at_unix_ms: Option<u64>,
            subscriptions: Vec<StoredSubscription>,
            queue: Vec<StoredMessage>,
        }
        let v1 = V1 {
            client_id: "old".into(),
            expiry_interval_secs: 30,
            disconnected_at_unix_ms: Some(9),
            subscriptions: Vec::new(),
            queue: vec![message()],
        };
        let bytes = postcard::to_extend(&v1, vec![1]).expect("encode");
        let back: StoredSession = decode(&bytes).expect("migrates");
        assert_eq!(back.client_id, "old");
        assert_eq!(back.queue, vec![message()]);
        assert_eq!(back.owner, SessionOwner::Unknown);
        // Retained messages of version 1 read as they are.
        let mut old_message = encode(&message()).expect("encode");
        old_message[0] = 1;
        assert_eq!(
            decode::<StoredMessage>(&old_message).expect("reads"),
            message()
        );
    }

    #[test]
    fn rejects_empty_value() {
        assert!(matches!(
            decode::<StoredMessage>(&[]),
            Err(CodecError::Empty)
        ));
    }

    #[test]
    fn rejects_unknown_version() {
        let mut bytes = encode(&message()).expect("encode");
        bytes[0] = FORMAT_VERSION + 1;
        assert!(matches!(
            decode::<StoredMessage>(&bytes),
            Err(CodecError::UnknownVersion(v)) if v == FORMAT_VERSION + 1
        ));
    }

    #[test]
    fn rejects_truncated_value() {
        let bytes = encode(&message()).expect("encode");
        let truncated = &bytes[..bytes.len() - 1];
        assert!(matches!(
            decode::<StoredMessage>(truncated),
            Err(CodecError::Postcard(_))
        ));
    }

    #[test]
    fn rejects_trailing_bytes() {
        let mut bytes = encode(&message()).expect("encode");
        bytes.extend_from_slice(&[0, 0]);
        assert!(matches!(
            decode::<StoredMessage>(&bytes),
            Err(CodecError::TrailingBytes(2))
        ));
    }
}
