//! Replays the link protocol's seed corpus (`tests/corpus/link_frame/`, also
//! the seeds of `fuzz/fuzz_targets/link_frame.rs`) through the frame decoder:
//! nothing may panic, `valid-*` files hold exactly one frame that re-encodes
//! to the same bytes, and `malformed-*` files are refused both before and
//! after the handshake.
//!
//! `STRAIT_WRITE_CORPUS=1 cargo test -p strait-broker --test link_frame_corpus`
//! writes the corpus afresh from [`seeds`].

mod support;

use std::path::PathBuf;

use support::corpus::{replay, Codec};

use bytes::{Bytes, BytesMut};
use strait_broker::cluster::wire::WireMessage;
use strait_broker::link::wire::{
    decode, encode, encode_to_bytes, LinkFrame, LinkMessage, LinkOp, MAX_FRAME,
    MAX_HANDSHAKE_FRAME, PROTOCOL_VERSION,
};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/link_frame")
}

/// One input of each kind the decoder must handle.
fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let frame = |f: LinkFrame| encode_to_bytes(&f).expect("encode").to_vec();
    let op = |seq, op| frame(LinkFrame::Op { seq, op });
    let message = WireMessage {
        topic: "fleet/truck-7/gps".into(),
        payload: Bytes::from_static(b"{\"lat\":52.1}"),
        qos: 2,
        retain: true,
        expiry_ms: Some(30_000),
        payload_format_indicator: Some(1),
        content_type: Some("application/json".into()),
        response_topic: Some("replies/7".into()),
        correlation_data: Some(Bytes::from_static(b"req-1")),
        user_properties: vec![("trace".into(), "abc".into())],
    };
    vec![
        (
            "valid-hello",
            frame(LinkFrame::Hello {
                version: PROTOCOL_VERSION,
                cluster: "edge-42".into(),
                to: "eu-west".into(),
                incarnation: 0x1234_5678_9abc_def0,
                nonce: [7; 32],
            }),
        ),
        (
            "valid-challenge",
            frame(LinkFrame::Challenge {
                salt: [3; 16],
                nonce: [9; 32],
            }),
        ),
        (
            "valid-proof",
            frame(LinkFrame::Proof {
                proof: [5; 32],
                resume: Some((42, 1000)),
            }),
        ),
        (
            "valid-proof-fresh",
            frame(LinkFrame::Proof {
                proof: [5; 32],
                resume: None,
            }),
        ),
        (
            "valid-welcome",
            frame(LinkFrame::Welcome {
                signature: [1; 32],
                incarnation: 77,
                resume_after: Some(12),
            }),
        ),
        (
            "valid-refused",
            frame(LinkFrame::Refused {
                reason: "cluster \"x\" failed authentication".into(),
            }),
        ),
        ("valid-op-reset", op(1, LinkOp::Reset)),
        (
            "valid-op-interest",
            op(
                2,
                LinkOp::Interest {
                    origin: "ap-south".into(),
                    filter: "fleet/+/gps".into(),
                    path: vec!["ap-south".into(), "eu-west".into()],
                },
            ),
        ),
        (
            "valid-op-interest-gone",
            op(
                3,
                LinkOp::InterestGone {
                    origin: "ap-south".into(),
                    filter: "fleet/+/gps".into(),
                },
            ),
        ),
        (
            "valid-op-publish",
            op(
                u64::MAX,
                LinkOp::Publish(LinkMessage {
                    id: 0x0123_4567_89ab_cdef,
                    message,
                    path: vec!["us-east".into()],
                    to: vec!["eu-west".into(), "ap-south".into()],
                    replay: true,
                }),
            ),
        ),
        ("valid-ack", frame(LinkFrame::Ack { seq: 300 })),
        ("valid-ping", frame(LinkFrame::Ping)),
        ("valid-pong", frame(LinkFrame::Pong)),
        ("malformed-unknown-variant", vec![0, 0, 0, 1, 99]),
        ("malformed-truncated-body", vec![0, 0, 0, 2, 5, 1]),
        // An interest op whose filter is not UTF-8.
        (
            "malformed-bad-utf8-filter",
            vec![0, 0, 0, 8, 5, 1, 1, 1, b'a', 1, 0xff, 0],
        ),
        (
            "malformed-oversized-length",
            ((MAX_FRAME as u32) + 1).to_be_bytes().to_vec(),
        ),
    ]
}

#[test]
fn the_seed_corpus_replays_as_its_names_say() {
    let seeds = seeds();
    let codec = Codec {
        decode,
        encode: |frame, out| encode(frame, out).expect("re-encode"),
        limits: [MAX_HANDSHAKE_FRAME, MAX_FRAME],
    };
    replay(&dir(), &seeds, &codec);
    // Every handshake frame fits the limit that applies before the handshake.
    for (name, bytes) in &seeds {
        let mut buf = BytesMut::from(&bytes[..]);
        if let Ok(Some(frame)) = decode(&mut buf, MAX_FRAME) {
            let handshake = !matches!(
                frame,
                LinkFrame::Op { .. } | LinkFrame::Ack { .. } | LinkFrame::Ping | LinkFrame::Pong
            );
            assert!(!handshake || bytes.len() <= MAX_HANDSHAKE_FRAME, "{name}");
        }
    }
}
