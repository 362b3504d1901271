//! Replays the cluster peer protocol's seed corpus (`tests/corpus/peer_frame/`,
//! also the seeds of `fuzz/fuzz_targets/peer_frame.rs`) through the frame
//! decoder: nothing may panic, `valid-*` files hold exactly one frame that
//! re-encodes to the same bytes, and `malformed-*` files are refused both
//! before and after the handshake.
//!
//! `STRAIT_WRITE_CORPUS=1 cargo test -p strait-broker --test peer_frame_corpus`
//! writes the corpus afresh from [`seeds`].

mod support;

use std::path::PathBuf;

use support::corpus::{replay, Codec};

use bytes::Bytes;
use strait_broker::cluster::wire::{
    decode, encode, encode_to_bytes, Forward, Frame, Op, RetainedVersion, WireMessage, MAX_FRAME,
    MAX_HANDSHAKE_FRAME, PROTOCOL_VERSION,
};
use strait_broker::store::{SessionOwner, StoredSession};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/peer_frame")
}

/// One input of each kind the decoder must handle.
fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let frame = |f: Frame| encode_to_bytes(&f).expect("encode").to_vec();
    let message = WireMessage {
        topic: "fleet/truck-7/gps".into(),
        payload: Bytes::from_static(b"{\"lat\":52.1}"),
        qos: 1,
        retain: true,
        expiry_ms: Some(30_000),
        content_type: Some("application/json".into()),
        user_properties: vec![("trace".into(), "abc".into())],
        ..WireMessage::default()
    };
    vec![
        (
            "valid-challenge",
            frame(Frame::Challenge {
                version: PROTOCOL_VERSION,
                nonce: [7; 32],
            }),
        ),
        (
            "valid-hello",
            frame(Frame::Hello {
                version: PROTOCOL_VERSION,
                cluster: "eu-west".into(),
                node: "eu-west-2".into(),
                incarnation: 0x1234_5678_9abc_def0,
                proof: [9; 32],
            }),
        ),
        (
            "valid-welcome",
            frame(Frame::Welcome {
                node: "eu-west-0".into(),
                incarnation: 42,
                resume_after: Some(1000),
            }),
        ),
        (
            "valid-refused",
            frame(Frame::Refused {
                reason: "did not prove the cluster secret".into(),
            }),
        ),
        (
            "valid-op-reset",
            frame(Frame::Op {
                seq: 1,
                op: Op::Reset,
            }),
        ),
        (
            "valid-op-route-add",
            frame(Frame::Op {
                seq: 2,
                op: Op::RouteAdd("$share/g/a/+/#".into()),
            }),
        ),
        (
            "valid-op-route-remove",
            frame(Frame::Op {
                seq: 3,
                op: Op::RouteRemove("a/#".into()),
            }),
        ),
        (
            "valid-op-publish",
            frame(Frame::Op {
                seq: u64::MAX,
                op: Op::Publish(Forward {
                    message: message.clone(),
                    plain: true,
                    groups: vec!["$share/workers/jobs/+".into()],
                    retained: Some(RetainedVersion {
                        stamp: 17,
                        node: "eu-west-1".into(),
                    }),
                    lane: 7,
                }),
            }),
        ),
        (
            "valid-op-retained",
            frame(Frame::Op {
                seq: 5,
                op: Op::Retained {
                    message,
                    version: RetainedVersion {
                        stamp: 12,
                        node: "eu-west-0".into(),
                    },
                },
            }),
        ),
        (
            "valid-op-claim",
            frame(Frame::Op {
                seq: 6,
                op: Op::Claim {
                    client_id: "truck-7".into(),
                    stamp: 41,
                },
            }),
        ),
        (
            "valid-op-release",
            frame(Frame::Op {
                seq: 7,
                op: Op::Release {
                    client_id: "truck-7".into(),
                    stamp: 41,
                },
            }),
        ),
        ("valid-ack", frame(Frame::Ack { seq: 300 })),
        ("valid-ping", frame(Frame::Ping)),
        ("valid-pong", frame(Frame::Pong)),
        (
            "valid-take-session",
            frame(Frame::TakeSession {
                request: 9,
                client_id: "truck-7".into(),
                clean_start: false,
                clock: 40,
                owner: SessionOwner::User("alice".into()),
            }),
        ),
        (
            "valid-session-taken",
            frame(Frame::SessionTaken {
                request: 9,
                session: Some(StoredSession {
                    client_id: "truck-7".into(),
                    expiry_interval_secs: 3600,
                    disconnected_at_unix_ms: None,
                    subscriptions: Vec::new(),
                    queue: Vec::new(),
                    owner: SessionOwner::User("alice".into()),
                }),
                clock: 44,
                refused: false,
            }),
        ),
        ("malformed-unknown-variant", vec![0, 0, 0, 1, 99]),
        ("malformed-truncated-body", vec![0, 0, 0, 2, 4, 1]),
        (
            "malformed-bad-utf8-filter",
            vec![0, 0, 0, 5, 4, 1, 1, 1, 0xff],
        ),
        (
            "malformed-oversized-length",
            ((MAX_FRAME as u32) + 1).to_be_bytes().to_vec(),
        ),
    ]
}

#[test]
fn the_seed_corpus_replays_as_its_names_say() {
    let codec = Codec {
        decode,
        encode: |frame, out| encode(frame, out).expect("re-encode"),
        limits: [MAX_HANDSHAKE_FRAME, MAX_FRAME],
    };
    replay(&dir(), &seeds(), &codec);
}
