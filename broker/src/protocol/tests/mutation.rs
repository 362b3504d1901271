//! A small deterministic fuzzer that runs with the unit tests (the cargo-fuzz
//! target in `fuzz/` needs nightly): every byte of every sample packet is
//! replaced by a handful of interesting values, and each mutant is decoded in
//! every version state. Nothing may panic, and whatever decodes must re-encode
//! to bytes that decode to the same packet.

use bytes::BytesMut;

use super::samples::{v311_packets, v5_packets};
use crate::protocol::packet::{Packet, ProtocolVersion};
use crate::protocol::{decode, encode};

/// Decodes packets off `data` until the decoder refuses or needs more bytes;
/// returns how many decoded.
fn decode_all(data: &[u8], mut version: Option<ProtocolVersion>) -> usize {
    let mut buf = BytesMut::from(data);
    let mut count = 0;
    while let Ok(Some(packet)) = decode(&mut buf, version, u32::MAX) {
        let wire = match (&packet, version) {
            (Packet::Connect(connect), _) => connect.protocol,
            (_, Some(wire)) => wire,
            (_, None) => panic!("{} decoded before CONNECT", packet.name()),
        };
        let mut again = BytesMut::new();
        encode(&packet, wire, &mut again).expect("a decoded packet encodes");
        let redecoded = decode(&mut again, version, u32::MAX).expect("re-encoding decodes");
        assert_eq!(redecoded.as_ref(), Some(&packet));
        assert!(again.is_empty());
        version = Some(wire);
        count += 1;
    }
    count
}

/// Values a byte is replaced with: boundaries, and small edits of the original.
fn replacements(original: u8) -> [u8; 8] {
    [
        0x00,
        0x01,
        0x7F,
        0x80,
        0xFF,
        original ^ 0x01,
        original ^ 0x80,
        original.wrapping_add(1),
    ]
}

#[test]
fn mutated_samples_never_panic_and_reencode() {
    let mut decoded = 0;
    for (version, packets) in [
        (ProtocolVersion::V5, v5_packets()),
        (ProtocolVersion::V311, v311_packets()),
    ] {
        for packet in packets {
            let mut bytes = BytesMut::new();
            encode(&packet, version, &mut bytes).expect("sample encodes");
            let mut mutant = bytes.to_vec();
            for index in 0..mutant.len() {
                let original = mutant[index];
                for value in replacements(original) {
                    mutant[index] = value;
                    for state in [None, Some(ProtocolVersion::V311), Some(ProtocolVersion::V5)] {
                        decoded += decode_all(&mutant, state);
                    }
                }
                mutant[index] = original;
            }
        }
    }
    // Many mutants (changed payload bytes, flags, ids) are still valid packets:
    // make sure the re-encoding check above really ran.
    assert!(decoded > 1000, "only {decoded} mutants decoded");
}
