//! Encoding: one packet onto the end of a buffer.

use bytes::BytesMut;

use super::{Packet, ProtocolVersion};

/// A packet that cannot be represented on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("{0} is longer than 65535 bytes")]
    StringTooLong(&'static str),
    #[error("packet of {0} bytes exceeds the MQTT limit of 268435455")]
    PacketTooLarge(usize),
}

/// Appends `packet`, encoded for `version`, to `buf`. MQTT 5-only fields are
/// left out for 3.1.1. On error nothing is appended.
pub fn encode(packet: &Packet, version: ProtocolVersion, buf: &mut BytesMut) -> Result<(), EncodeError> {
    let _ = (packet, version, buf);
    todo!("codec")
}
