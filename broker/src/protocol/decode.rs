//! Decoding: one packet off the front of a buffer.

use bytes::BytesMut;

use super::{Packet, ProtocolVersion, ReasonCode};

/// Why a buffer does not hold a valid packet. Each maps to the MQTT 5 reason code
/// the server sends in DISCONNECT (or CONNACK) before closing the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    #[error("packet of {size} bytes exceeds the maximum packet size of {max}")]
    TooLarge { size: usize, max: u32 },
    #[error("unsupported protocol level {0}")]
    UnsupportedProtocolVersion(u8),
    #[error("invalid topic name: {0}")]
    TopicNameInvalid(&'static str),
}

impl DecodeError {
    /// The reason code to report this error with.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            DecodeError::Malformed(_) => ReasonCode::MalformedPacket,
            DecodeError::Protocol(_) => ReasonCode::ProtocolError,
            DecodeError::TooLarge { .. } => ReasonCode::PacketTooLarge,
            DecodeError::UnsupportedProtocolVersion(_) => ReasonCode::UnsupportedProtocolVersion,
            DecodeError::TopicNameInvalid(_) => ReasonCode::TopicNameInvalid,
        }
    }
}

/// Takes one whole packet off the front of `buf`.
///
/// Returns `Ok(None)` (consuming nothing) while the packet is incomplete.
/// `version` is `None` until CONNECT has been decoded; then only CONNECT is
/// accepted. A packet whose remaining length makes it larger than
/// `max_packet_size` is refused as soon as its fixed header is read.
pub fn decode(
    buf: &mut BytesMut,
    version: Option<ProtocolVersion>,
    max_packet_size: u32,
) -> Result<Option<Packet>, DecodeError> {
    let _ = (buf, version, max_packet_size);
    todo!("codec")
}
