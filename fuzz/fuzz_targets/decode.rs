//! Feeds arbitrary bytes to the MQTT decoder in every version state (before
//! CONNECT, 3.1.1, 5.0). Decoding must never panic, and every packet that
//! decodes must re-encode to bytes that decode to the same packet.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use strait_broker::protocol::{decode, encode, Packet, ProtocolVersion};

fuzz_target!(|data: &[u8]| {
    for version in [None, Some(ProtocolVersion::V311), Some(ProtocolVersion::V5)] {
        decode_all(data, version);
    }
});

/// Decodes packets off `data` until the decoder refuses or needs more bytes.
fn decode_all(data: &[u8], mut version: Option<ProtocolVersion>) {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(packet)) = decode(&mut buf, version, u32::MAX) {
        let wire = match (&packet, version) {
            (Packet::Connect(connect), _) => connect.protocol,
            (_, Some(wire)) => wire,
            (_, None) => panic!("{} decoded before CONNECT", packet.name()),
        };
        assert_reencodes(&packet, wire, version);
        version = Some(wire);
    }
}

/// encode(packet) must succeed and decode back to `packet`, consuming every byte.
fn assert_reencodes(packet: &Packet, wire: ProtocolVersion, version: Option<ProtocolVersion>) {
    let mut buf = BytesMut::new();
    if let Err(error) = encode(packet, wire, &mut buf) {
        panic!("decoded {packet:?} does not encode: {error}");
    }
    match decode(&mut buf, version, u32::MAX) {
        Ok(Some(again)) => assert_eq!(&again, packet),
        other => panic!("re-encoded {packet:?} decodes as {other:?}"),
    }
    assert!(
        buf.is_empty(),
        "re-encoding of {} has trailing bytes",
        packet.name()
    );
}
