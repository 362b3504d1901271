//! Behaviour of the store as the server sees it: through `open`, `apply`
//! and `load`, across reopen, plus damage injected with redb directly.

use std::path::Path;

use redb::Database;
use tempfile::TempDir;

use super::table::Record;
use super::{
    codec, Corruption, Snapshot, Store, StoreError, StoreOp, StoredInterest, StoredLink,
    StoredMessage, StoredSession, StoredSubscription, FILE_NAME,
};
use crate::store::SessionOwner;

fn message(topic: &str, payload: &[u8]) -> StoredMessage {
    StoredMessage {
        topic: topic.to_owned(),
        payload: payload.to_vec(),
        qos: 1,
        retain: true,
        expires_at_unix_ms: None,
        payload_format_indicator: None,
        content_type: None,
        response_topic: None,
        correlation_data: None,
        user_properties: Vec::new(),
    }
}

fn session(client_id: &str, expiry_interval_secs: u32) -> StoredSession {
    StoredSession {
        client_id: client_id.to_owned(),
        expiry_interval_secs,
        disconnected_at_unix_ms: Some(1_700_000_000_000),
        subscriptions: vec![StoredSubscription {
            filter: format!("devices/{client_id}/#"),
            qos: 1,
            no_local: false,
            retain_as_published: false,
            retain_handling: 0,
            subscription_id: None,
        }],
        queue: vec![message("devices/x/state", b"queued")],
        owner: SessionOwner::Anonymous,
    }
}

fn open(dir: &Path) -> Store {
    Store::open(dir).expect("open store")
}

/// Writes raw bytes under `key` in `R`'s table, bypassing the codec. The
/// file is first made (or opened) by `Store::open`, so it has the store's own
/// format; no `Store` may hold it during the call.
fn write_raw<R: Record>(dir: &Path, key: &[u8], value: &[u8]) {
    drop(open(dir));
    let db = Database::create(dir.join(FILE_NAME)).expect("open redb directly");
    let txn = db.begin_write().expect("begin write");
    {
        let mut table = txn.open_table(R::definition()).expect("open table");
        table.insert(key, value).expect("insert raw value");
    }
    txn.commit().expect("commit");
}

#[test]
fn open_creates_missing_directory_and_loads_empty() {
    let tmp = TempDir::new().expect("tempdir");
    let dir = tmp.path().join("nested").join("data");
    let store = open(&dir);
    assert!(dir.join(FILE_NAME).is_file());
    assert_eq!(store.load().expect("load"), Snapshot::default());
}

#[test]
fn puts_and_deletes_survive_drop_and_reopen() {
    let tmp = TempDir::new().expect("tempdir");
    let store = open(tmp.path());
    store
        .apply(&[
            StoreOp::PutRetained(message("b/topic", b"two")),
            StoreOp::PutRetained(message("a/topic", b"one")),
            StoreOp::PutRetained(message("c/topic", b"gone soon")),
            StoreOp::PutSession(session("client-2", 60)),
            StoreOp::PutSession(session("client-1", 30)),
            StoreOp::PutSession(session("client-3", 10)),
            StoreOp::PutLink(link("west")),
            StoreOp::PutLink(link("gone")),
        ])
        .expect("first batch");
    store
        .apply(&[
            StoreOp::DeleteRetained("c/topic".to_owned()),
            StoreOp::DeleteSession("client-3".to_owned()),
            StoreOp::DeleteLink("gone".to_owned()),
        ])
        .expect("second batch");
    drop(store);

    let snapshot = open(tmp.path()).load().expect("load");
    assert_eq!(
        snapshot,
        Snapshot {
            retained: vec![message("a/topic", b"one"), message("b/topic", b"two")],
            sessions: vec![session("client-1", 30), session("client-2", 60)],
            links: vec![link("west")],
        }
    );
}

/// What a link keeps: two queued messages and one advertisement.
fn link(name: &str) -> StoredLink {
    StoredLink {
        name: name.to_owned(),
        messages: vec![b"first op".to_vec(), b"second op".to_vec()],
        interest: vec![StoredInterest {
            origin: name.to_owned(),
            filter: "orders/#".to_owned(),
            path: vec![name.to_owned()],
        }],
    }
}

#[test]
fn last_write_wins_within_one_batch() {
    let tmp = TempDir::new().expect("tempdir");
    let store = open(tmp.path());
    store
        .apply(&[
            StoreOp::PutSession(session("c", 1)),
            StoreOp::PutSession(session("c", 2)),
            StoreOp::PutRetained(message("t", b"first")),
            StoreOp::DeleteRetained("t".to_owned()),
            StoreOp::PutRetained(message("u", b"old")),
            StoreOp::DeleteRetained("u".to_owned()),
            StoreOp::PutRetained(message("u", b"new")),
        ])
        .expect("apply");
    assert_eq!(
        store.load().expect("load"),
        Snapshot {
            retained: vec![message("u", b"new")],
            sessions: vec![session("c", 2)],
            links: Vec::new(),
        }
    );
}

#[test]
fn deleting_a_missing_key_is_not_an_error() {
    let tmp = TempDir::new().expect("tempdir");
    let store = open(tmp.path());
    store
        .apply(&[StoreOp::PutSession(session("kept", 5))])
        .expect("put");
    store
        .apply(&[
            StoreOp::DeleteRetained("never/stored".to_owned()),
            StoreOp::DeleteSession("never-stored".to_owned()),
        ])
        .expect("deletes of missing keys succeed");
    assert_eq!(
        store.load().expect("load").sessions,
        vec![session("kept", 5)]
    );
}

#[test]
fn empty_batch_changes_nothing() {
    let tmp = TempDir::new().expect("tempdir");
    let store = open(tmp.path());
    store
        .apply(&[StoreOp::PutRetained(message("t", b"p"))])
        .expect("put");
    store.apply(&[]).expect("empty batch");
    assert_eq!(
        store.load().expect("load").retained,
        vec![message("t", b"p")]
    );
}

#[test]
fn ten_thousand_session_ops_apply_in_one_batch() {
    let tmp = TempDir::new().expect("tempdir");
    let store = open(tmp.path());
    let ops: Vec<StoreOp> = (0..10_000)
        .map(|i| StoreOp::PutSession(session(&format!("client-{i:05}"), i)))
        .collect();
    store.apply(&ops).expect("large batch");
    drop(store);

    let sessions = open(tmp.path()).load().expect("load").sessions;
    assert_eq!(sessions.len(), 10_000);
    for (i, stored) in (0..10_000).zip(&sessions) {
        assert_eq!(stored, &session(&format!("client-{i:05}"), i));
    }
}

/// A crash leaves the file as it was after the last commit, without the
/// clean shutdown redb does on drop. Copying the file while the store is
/// still open captures exactly that state; the copy must hold every batch
/// that `apply` reported as done.
#[test]
fn committed_batches_are_on_disk_before_the_store_is_closed() {
    let tmp = TempDir::new().expect("tempdir");
    let live = tmp.path().join("live");
    let crashed = tmp.path().join("crashed");
    let store = open(&live);
    for i in 0..20 {
        store
            .apply(&[
                StoreOp::PutSession(session(&format!("c{i:02}"), i)),
                StoreOp::PutRetained(message(&format!("t/{i:02}"), b"x")),
            ])
            .expect("apply");
    }
    std::fs::create_dir(&crashed).expect("mkdir");
    std::fs::copy(live.join(FILE_NAME), crashed.join(FILE_NAME)).expect("copy live file");

    let snapshot = open(&crashed).load().expect("load crashed copy");
    assert_eq!(snapshot.sessions.len(), 20);
    assert_eq!(snapshot.retained.len(), 20);
    assert_eq!(snapshot.sessions[19], session("c19", 19));
    assert_eq!(snapshot.retained[19], message("t/19", b"x"));
    // The live store is untouched by all this.
    assert_eq!(store.load().expect("load live"), snapshot);
}

#[test]
fn second_open_of_the_same_directory_is_refused() {
    let tmp = TempDir::new().expect("tempdir");
    let first = open(tmp.path());
    match Store::open(tmp.path()) {
        Err(err @ StoreError::Locked { .. }) => {
            assert!(err.to_string().contains("already open"), "{err}");
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    drop(first);
    open(tmp.path());
}

/// Opens the store over a file with one damaged entry and returns the error
/// `load` gives.
fn load_error(dir: &Path) -> StoreError {
    match open(dir).load() {
        Err(err) => err,
        Ok(snapshot) => panic!("corrupt store loaded: {snapshot:?}"),
    }
}

#[test]
fn garbage_value_is_reported_with_table_and_key() {
    let tmp = TempDir::new().expect("tempdir");
    let store = open(tmp.path());
    store
        .apply(&[StoreOp::PutSession(session("good", 1))])
        .expect("put");
    drop(store);
    write_raw::<StoredSession>(tmp.path(), b"bad-client", &[0xde, 0xad, 0xbe, 0xef]);

    let err = load_error(tmp.path());
    assert!(
        matches!(
            &err,
            StoreError::Corrupt {
                table: "sessions",
                key,
                reason: Corruption::Value(codec::CodecError::UnknownVersion(0xde)),
            } if key == "bad-client"
        ),
        "{err:?}"
    );
    let shown = err.to_string();
    assert!(
        shown.contains("sessions") && shown.contains("bad-client"),
        "{shown}"
    );
}

#[test]
fn truncated_value_is_corrupt() {
    let tmp = TempDir::new().expect("tempdir");
    let bytes = codec::encode(&message("t", b"payload")).expect("encode");
    write_raw::<StoredMessage>(tmp.path(), b"t", &bytes[..bytes.len() - 3]);

    let err = load_error(tmp.path());
    assert!(
        matches!(
            &err,
            StoreError::Corrupt { table: "retained", key, reason: Corruption::Value(_) }
                if key == "t"
        ),
        "{err:?}"
    );
}

#[test]
fn record_filed_under_another_key_is_corrupt() {
    let tmp = TempDir::new().expect("tempdir");
    let bytes = codec::encode(&session("alice", 1)).expect("encode");
    write_raw::<StoredSession>(tmp.path(), b"bob", &bytes);

    let err = load_error(tmp.path());
    assert!(
        matches!(
            &err,
            StoreError::Corrupt {
                table: "sessions",
                key,
                reason: Corruption::KeyMismatch(named),
            } if key == "bob" && named == "alice"
        ),
        "{err:?}"
    );
}

#[test]
fn non_utf8_key_is_corrupt_not_a_panic() {
    let tmp = TempDir::new().expect("tempdir");
    let bytes = codec::encode(&message("t", b"p")).expect("encode");
    write_raw::<StoredMessage>(tmp.path(), &[b't', 0xff], &bytes);

    let err = load_error(tmp.path());
    assert!(
        matches!(
            &err,
            StoreError::Corrupt {
                table: "retained",
                reason: Corruption::KeyNotUtf8,
                ..
            }
        ),
        "{err:?}"
    );
}
