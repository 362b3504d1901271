//! The seed corpus under `broker/tests/corpus/decode/`, used by the
//! `decoder_corpus` integration test and as the fuzzer's starting inputs.
//!
//! The files are generated from the sample packets and a list of malformed
//! inputs. This test fails when the committed files drift from what the
//! encoder produces; run it with `STRAIT_WRITE_CORPUS=1` to rewrite them.

use std::path::PathBuf;

use bytes::BytesMut;

use super::samples::{v311_packets, v5_packets};
use crate::protocol::encode;
use crate::protocol::packet::{Packet, ProtocolVersion};

/// Inputs the decoder must refuse without panicking: `any-` ones whatever the
/// version, `v5-` and `v311-` ones when decoded for that version (a CONNECT
/// before any version is known).
const MALFORMED: &[(&str, &[u8])] = &[
    (
        "any-remaining-length-5-bytes",
        &[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
    ),
    ("any-remaining-length-non-minimal", &[0xC0, 0x80, 0x00]),
    ("any-reserved-type-0", &[0x00, 0x00]),
    ("any-pubrel-flags-0", &[0x60, 0x02, 0x00, 0x01]),
    ("any-subscribe-no-filters", &[0x82, 0x02, 0x00, 0x01]),
    (
        "any-publish-qos-3",
        &[0x36, 0x05, 0x00, 0x01, b't', 0x00, 0x01],
    ),
    ("any-publish-dup-qos-0", &[0x38, 0x03, 0x00, 0x01, b't']),
    (
        "any-publish-wildcard-topic",
        &[0x30, 0x03, 0x00, 0x01, b'#'],
    ),
    (
        "any-publish-nul-topic",
        &[0x30, 0x04, 0x00, 0x02, b'a', 0x00],
    ),
    (
        "any-publish-bad-utf8",
        &[0x30, 0x04, 0x00, 0x02, 0xC3, 0x28],
    ),
    (
        "any-publish-string-past-end",
        &[0x30, 0x03, 0x00, 0x09, b't'],
    ),
    (
        "v5-publish-property-past-end",
        &[0x30, 0x06, 0x00, 0x01, b't', 0x0A, 0x01, 0x01],
    ),
    (
        "v5-publish-duplicate-property",
        &[0x30, 0x08, 0x00, 0x01, b't', 0x04, 0x01, 0x01, 0x01, 0x01],
    ),
    (
        "v5-publish-subscription-id-0",
        &[0x30, 0x06, 0x00, 0x01, b't', 0x02, 0x0B, 0x00],
    ),
    (
        "any-connect-mqisdp-level-3",
        &[
            0x10, 0x0E, 0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03, 0x02, 0x00, 0x0A,
            0x00, 0x00,
        ],
    ),
    (
        "any-connect-reserved-flag",
        &[
            0x10, 0x0C, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x03, 0x00, 0x0A, 0x00, 0x00,
        ],
    ),
    (
        "any-connect-will-qos-without-will",
        &[
            0x10, 0x0C, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x08, 0x00, 0x0A, 0x00, 0x00,
        ],
    ),
    (
        "any-connect-trailing-byte",
        &[
            0x10, 0x0D, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x0A, 0x00, 0x00,
            0x07,
        ],
    ),
    ("any-pingreq-trailing-byte", &[0xC0, 0x01, 0x00]),
    ("any-puback-packet-id-0", &[0x40, 0x02, 0x00, 0x00]),
    ("any-puback-bad-reason", &[0x40, 0x03, 0x00, 0x01, 0x03]),
    ("any-auth-bad-reason", &[0xF0, 0x02, 0x87, 0x00]),
    ("any-incomplete-publish", &[0x30, 0x0A, 0x00, 0x01]),
    ("v311-auth", &[0xF0, 0x00]),
    (
        "v311-connect-password-without-username",
        &[
            0x10, 0x0F, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x40, 0x00, 0x0A, 0x00, 0x00,
            0x00, 0x01, b'p',
        ],
    ),
];

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/decode")
}

/// Every corpus file: name and contents.
fn corpus() -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for (version, packets) in [
        (ProtocolVersion::V5, v5_packets()),
        (ProtocolVersion::V311, v311_packets()),
    ] {
        let label = match version {
            ProtocolVersion::V5 => "v5",
            ProtocolVersion::V311 => "v311",
        };
        for (index, packet) in packets.iter().enumerate() {
            let mut buf = BytesMut::new();
            encode(packet, version, &mut buf).expect("sample packets encode");
            let name = format!("valid-{label}-{index:02}-{}", kind(packet));
            files.push((name, buf.to_vec()));
        }
    }
    for (name, bytes) in MALFORMED {
        files.push((format!("malformed-{name}"), bytes.to_vec()));
    }
    files
}

fn kind(packet: &Packet) -> String {
    packet.name().to_ascii_lowercase()
}

#[test]
fn seed_corpus_is_up_to_date() {
    let dir = corpus_dir();
    let write = std::env::var_os("STRAIT_WRITE_CORPUS").is_some();
    if write {
        std::fs::create_dir_all(&dir).expect("create corpus dir");
    }
    for (name, bytes) in corpus() {
        let path = dir.join(format!("{name}.bin"));
        if write {
            std::fs::write(&path, &bytes).expect("write corpus file");
        } else {
            let committed = std::fs::read(&path).unwrap_or_else(|e| {
                panic!("{}: {e}; run with STRAIT_WRITE_CORPUS=1", path.display())
            });
            assert_eq!(
                committed, bytes,
                "{name} is stale; run with STRAIT_WRITE_CORPUS=1"
            );
        }
    }
}
