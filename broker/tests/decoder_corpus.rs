//! Replays the seed corpus (`tests/corpus/decode/`, also the fuzzer's seeds)
//! through the decoder for every version state: nothing may panic, and every
//! packet that decodes must re-encode to bytes that decode to the same packet.
//!
//! File names say what to expect: `valid-<version>-*` decodes to exactly one
//! packet for that version; `malformed-any-*` is refused whatever the version,
//! `malformed-<version>-*` when decoded for that version. Files with the word
//! `connect` in their name are decoded as the first packet of a connection.

use std::path::PathBuf;

use bytes::BytesMut;
use strait_broker::protocol::{decode, encode, Packet, ProtocolVersion};

const V311: Option<ProtocolVersion> = Some(ProtocolVersion::V311);
const V5: Option<ProtocolVersion> = Some(ProtocolVersion::V5);

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/decode");
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .expect("corpus directory")
        .map(|entry| {
            let path = entry.expect("directory entry").path();
            let name = path
                .file_stem()
                .expect("file name")
                .to_string_lossy()
                .into_owned();
            (name, std::fs::read(&path).expect("corpus file"))
        })
        .collect();
    files.sort();
    files
}

/// What became of one input.
#[derive(Debug)]
struct Replay {
    packets: usize,
    /// The decoder returned an error, or bytes were left that never made a packet.
    refused: bool,
}

/// Decodes packets off `bytes` until it is refused or runs dry, checking the
/// re-encoding of each packet on the way. A CONNECT fixes the version.
fn replay(bytes: &[u8], mut version: Option<ProtocolVersion>) -> Replay {
    let mut buf = BytesMut::from(bytes);
    let mut packets = 0;
    loop {
        match decode(&mut buf, version, u32::MAX) {
            Ok(Some(packet)) => {
                if let Packet::Connect(connect) = &packet {
                    assert_reencodes(&packet, connect.protocol, None);
                    version = Some(connect.protocol);
                } else {
                    let wire = version.expect("only CONNECT decodes before the version is known");
                    assert_reencodes(&packet, wire, version);
                }
                packets += 1;
            }
            Ok(None) => {
                return Replay {
                    packets,
                    refused: !buf.is_empty(),
                }
            }
            Err(_) => {
                return Replay {
                    packets,
                    refused: true,
                }
            }
        }
    }
}

fn assert_reencodes(packet: &Packet, wire: ProtocolVersion, version: Option<ProtocolVersion>) {
    let mut buf = BytesMut::new();
    encode(packet, wire, &mut buf).expect("a decoded packet encodes");
    let again = decode(&mut buf, version, u32::MAX).expect("re-encoded packet decodes");
    assert_eq!(again.as_ref(), Some(packet));
    assert!(
        buf.is_empty(),
        "re-encoding of {} has trailing bytes",
        packet.name()
    );
}

/// The version state to decode `name` in on a `version` connection.
fn state_for(name: &str, version: Option<ProtocolVersion>) -> Option<ProtocolVersion> {
    if name.split('-').any(|word| word == "connect") {
        None
    } else {
        version
    }
}

#[test]
fn corpus_covers_every_packet_type() {
    let files = corpus();
    assert!(files.len() >= 60, "only {} corpus files", files.len());
    for kind in [
        "connect",
        "connack",
        "publish",
        "puback",
        "pubrec",
        "pubrel",
        "pubcomp",
        "subscribe",
        "suback",
        "unsubscribe",
        "unsuback",
        "pingreq",
        "pingresp",
        "disconnect",
    ] {
        for version in ["v311", "v5"] {
            let prefix = format!("valid-{version}-");
            assert!(
                files
                    .iter()
                    .any(|(name, _)| name.starts_with(&prefix) && name.ends_with(kind)),
                "no valid {version} {kind}"
            );
        }
    }
    assert!(files
        .iter()
        .any(|(name, _)| name.starts_with("valid-v5-") && name.ends_with("auth")));
}

#[test]
fn every_file_replays_without_panicking_in_every_state() {
    for (name, bytes) in corpus() {
        for version in [None, V311, V5] {
            let outcome = replay(&bytes, version);
            // Every decoded packet was already checked inside `replay`.
            assert!(outcome.packets <= 1, "{name}: {outcome:?}");
        }
    }
}

#[test]
fn valid_files_decode_to_exactly_one_packet() {
    for (name, bytes) in corpus() {
        let version = if name.starts_with("valid-v5-") {
            V5
        } else if name.starts_with("valid-v311-") {
            V311
        } else {
            continue;
        };
        let outcome = replay(&bytes, state_for(&name, version));
        assert_eq!(outcome.packets, 1, "{name}: {outcome:?}");
        assert!(!outcome.refused, "{name}: {outcome:?}");
    }
}

#[test]
fn malformed_files_are_refused() {
    for (name, bytes) in corpus() {
        let versions: &[Option<ProtocolVersion>] = if name.starts_with("malformed-any-") {
            &[V311, V5]
        } else if name.starts_with("malformed-v5-") {
            &[V5]
        } else if name.starts_with("malformed-v311-") {
            &[V311]
        } else {
            continue;
        };
        for &version in versions {
            let outcome = replay(&bytes, state_for(&name, version));
            assert!(
                outcome.refused,
                "{name} accepted as {version:?}: {outcome:?}"
            );
            assert_eq!(outcome.packets, 0, "{name}");
        }
        if name.starts_with("malformed-any-") {
            assert!(
                replay(&bytes, None).refused,
                "{name} accepted before CONNECT"
            );
        }
    }
}
