//! Decoding: one packet off the front of a buffer.
//!
//! The fixed header is checked as soon as it is complete (packet type, reserved
//! flags, size limit), so garbage and oversized packets are refused before their
//! bodies arrive. The body is then split off as one frozen [`Bytes`], so the
//! payload and binary fields of the packet are zero-copy slices of the input.

use bytes::{Buf, Bytes, BytesMut};

use super::packet::{
    Auth, ConnAck, Connect, Disconnect, LastWill, PubAck, Publish, QoS, RetainHandling, SubAck,
    Subscribe, SubscribeFilter, SubscriptionOptions, UnsubAck, Unsubscribe,
};
use super::properties::{
    check_authentication, read_properties, PropertySet, UnsubscribeProperties,
};
use super::topic::{validate_topic_name, SHARE_PREFIX};
use super::wire::{parse_varint, read_binary, read_packet_id, read_string, read_u16, read_u8};
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
/// accepted. A packet whose total size (fixed header included, as MQTT 5's
/// Maximum Packet Size counts it) exceeds `max_packet_size` is refused as soon
/// as its fixed header is read. After an error the connection must be closed:
/// how much of `buf` was consumed is unspecified.
pub fn decode(
    buf: &mut BytesMut,
    version: Option<ProtocolVersion>,
    max_packet_size: u32,
) -> Result<Option<Packet>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let kind = Kind::parse(first, version)?;
    if version.is_none() && kind != Kind::Connect {
        return Err(DecodeError::Protocol("the first packet must be CONNECT"));
    }
    let Some((remaining, len_bytes)) = parse_varint(&buf[1..])? else {
        return Ok(None);
    };
    let header_len = 1 + len_bytes;
    let size = header_len + remaining as usize;
    if size > max_packet_size as usize {
        return Err(DecodeError::TooLarge {
            size,
            max: max_packet_size,
        });
    }
    if buf.len() < size {
        return Ok(None);
    }
    let mut body = buf.split_to(size).freeze();
    body.advance(header_len);
    let packet = match version {
        None => Packet::Connect(Box::new(decode_connect(body)?)),
        Some(version) => decode_packet(kind, body, version)?,
    };
    Ok(Some(packet))
}

/// The packet type from the first byte, with its fixed-header flags checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Connect,
    ConnAck,
    Publish { dup: bool, qos: QoS, retain: bool },
    PubAck,
    PubRec,
    PubRel,
    PubComp,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    PingReq,
    PingResp,
    Disconnect,
    Auth,
}

impl Kind {
    /// Reads the packet type and checks the flag bits (MQTT-2.1.3-1): PUBREL,
    /// SUBSCRIBE and UNSUBSCRIBE carry 0b0010, PUBLISH its own flags, all
    /// others 0.
    fn parse(first: u8, version: Option<ProtocolVersion>) -> Result<Kind, DecodeError> {
        let flags = first & 0x0F;
        let (kind, required_flags) = match first >> 4 {
            1 => (Kind::Connect, 0),
            2 => (Kind::ConnAck, 0),
            3 => return Kind::publish(flags),
            4 => (Kind::PubAck, 0),
            5 => (Kind::PubRec, 0),
            6 => (Kind::PubRel, 0b0010),
            7 => (Kind::PubComp, 0),
            8 => (Kind::Subscribe, 0b0010),
            9 => (Kind::SubAck, 0),
            10 => (Kind::Unsubscribe, 0b0010),
            11 => (Kind::UnsubAck, 0),
            12 => (Kind::PingReq, 0),
            13 => (Kind::PingResp, 0),
            14 => (Kind::Disconnect, 0),
            15 if version != Some(ProtocolVersion::V311) => (Kind::Auth, 0),
            15 => return Err(DecodeError::Malformed("AUTH does not exist in MQTT 3.1.1")),
            _ => return Err(DecodeError::Malformed("reserved packet type 0")),
        };
        if flags != required_flags {
            return Err(DecodeError::Malformed("reserved fixed header flags"));
        }
        Ok(kind)
    }

    /// PUBLISH flags: DUP, QoS (never 3), RETAIN; DUP must be 0 at QoS 0 (MQTT-3.3.1-2).
    fn publish(flags: u8) -> Result<Kind, DecodeError> {
        let qos = QoS::from_bits((flags >> 1) & 0b11)
            .ok_or(DecodeError::Malformed("PUBLISH with QoS 3"))?;
        let dup = flags & 0b1000 != 0;
        if dup && qos == QoS::AtMostOnce {
            return Err(DecodeError::Malformed("DUP set on a QoS 0 PUBLISH"));
        }
        Ok(Kind::Publish {
            dup,
            qos,
            retain: flags & 0b0001 != 0,
        })
    }
}

/// Decodes the body of any packet but CONNECT, once the version is known.
fn decode_packet(kind: Kind, body: Bytes, version: ProtocolVersion) -> Result<Packet, DecodeError> {
    Ok(match kind {
        Kind::Connect => return Err(DecodeError::Protocol("second CONNECT")),
        Kind::ConnAck => Packet::ConnAck(decode_connack(body, version)?),
        Kind::Publish { dup, qos, retain } => {
            Packet::Publish(decode_publish(body, version, dup, qos, retain)?)
        }
        Kind::PubAck => Packet::PubAck(decode_ack(body, version, PUBACK_REASONS)?),
        Kind::PubRec => Packet::PubRec(decode_ack(body, version, PUBACK_REASONS)?),
        Kind::PubRel => Packet::PubRel(decode_ack(body, version, PUBREL_REASONS)?),
        Kind::PubComp => Packet::PubComp(decode_ack(body, version, PUBREL_REASONS)?),
        Kind::Subscribe => Packet::Subscribe(decode_subscribe(body, version)?),
        Kind::SubAck => Packet::SubAck(decode_suback(body, version)?),
        Kind::Unsubscribe => Packet::Unsubscribe(decode_unsubscribe(body, version)?),
        Kind::UnsubAck => Packet::UnsubAck(decode_unsuback(body, version)?),
        Kind::PingReq => {
            ensure_consumed(&body)?;
            Packet::PingReq
        }
        Kind::PingResp => {
            ensure_consumed(&body)?;
            Packet::PingResp
        }
        Kind::Disconnect => Packet::Disconnect(decode_disconnect(body, version)?),
        Kind::Auth => Packet::Auth(decode_auth(body)?),
    })
}

/// Reason codes each packet may carry (OASIS MQTT 5.0 section 2.4).
const CONNACK_REASONS: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
];
const PUBACK_REASONS: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
const PUBREL_REASONS: &[u8] = &[0x00, 0x92];
const SUBACK_REASONS: &[u8] = &[
    0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
];
const UNSUBACK_REASONS: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];
const DISCONNECT_REASONS: &[u8] = &[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95,
    0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
];
const AUTH_REASONS: &[u8] = &[0x00, 0x18, 0x19];

/// Reads a v5 reason code that must be one of `allowed`.
fn read_reason(body: &mut Bytes, allowed: &[u8]) -> Result<ReasonCode, DecodeError> {
    let value = read_u8(body)?;
    if !allowed.contains(&value) {
        return Err(DecodeError::Malformed(
            "reason code not valid for this packet",
        ));
    }
    ReasonCode::try_from(value).map_err(|_| DecodeError::Malformed("unknown reason code"))
}

/// Reads properties only for MQTT 5; 3.1.1 packets have none.
fn read_properties_if<P: PropertySet>(
    body: &mut Bytes,
    version: ProtocolVersion,
) -> Result<P, DecodeError> {
    if version.is_v5() {
        read_properties(body)
    } else {
        Ok(P::default())
    }
}

/// Refuses bytes left over after the packet's declared fields.
fn ensure_consumed(body: &Bytes) -> Result<(), DecodeError> {
    if body.is_empty() {
        Ok(())
    } else {
        Err(DecodeError::Malformed(
            "bytes left after the packet's fields",
        ))
    }
}

/// CONNECT (MQTT 3.1.1 section 3.1, 5.0 section 3.1).
fn decode_connect(mut body: Bytes) -> Result<Connect, DecodeError> {
    let name = read_binary(&mut body)?;
    let level = read_u8(&mut body)?;
    let protocol = match (&name[..], level) {
        (b"MQTT", 4) => ProtocolVersion::V311,
        (b"MQTT", 5) => ProtocolVersion::V5,
        _ => return Err(DecodeError::UnsupportedProtocolVersion(level)),
    };
    let flags = read_u8(&mut body)?;
    if flags & 0x01 != 0 {
        return Err(DecodeError::Malformed("CONNECT reserved flag set"));
    }
    let will_flag = flags & 0x04 != 0;
    let will_qos =
        QoS::from_bits((flags >> 3) & 0b11).ok_or(DecodeError::Malformed("will QoS 3"))?;
    let will_retain = flags & 0x20 != 0;
    let has_password = flags & 0x40 != 0;
    let has_username = flags & 0x80 != 0;
    if !will_flag && (will_qos != QoS::AtMostOnce || will_retain) {
        return Err(DecodeError::Malformed(
            "will QoS or retain set without a will",
        ));
    }
    if has_password && !has_username && !protocol.is_v5() {
        return Err(DecodeError::Malformed("password without user name"));
    }
    let keep_alive = read_u16(&mut body)?;
    let properties: super::ConnectProperties = read_properties_if(&mut body, protocol)?;
    check_authentication(
        &properties.authentication_method,
        &properties.authentication_data,
    )?;
    let client_id = read_string(&mut body)?;
    let will = if will_flag {
        let properties = read_properties_if(&mut body, protocol)?;
        let topic = read_string(&mut body)?;
        validate_topic_name(&topic).map_err(|e| DecodeError::TopicNameInvalid(e.describe()))?;
        let payload = read_binary(&mut body)?;
        Some(LastWill {
            topic,
            payload,
            qos: will_qos,
            retain: will_retain,
            properties,
        })
    } else {
        None
    };
    let username = if has_username {
        Some(read_string(&mut body)?)
    } else {
        None
    };
    let password = if has_password {
        Some(read_binary(&mut body)?)
    } else {
        None
    };
    ensure_consumed(&body)?;
    Ok(Connect {
        protocol,
        clean_start: flags & 0x02 != 0,
        keep_alive,
        client_id,
        will,
        username,
        password,
        properties,
    })
}

/// CONNACK; a 3.1.1 return code is mapped to the closest v5 reason.
fn decode_connack(mut body: Bytes, version: ProtocolVersion) -> Result<ConnAck, DecodeError> {
    let flags = read_u8(&mut body)?;
    if flags & 0xFE != 0 {
        return Err(DecodeError::Malformed("CONNACK reserved flags set"));
    }
    let code = if version.is_v5() {
        read_reason(&mut body, CONNACK_REASONS)?
    } else {
        match read_u8(&mut body)? {
            0 => ReasonCode::Success,
            1 => ReasonCode::UnsupportedProtocolVersion,
            2 => ReasonCode::ClientIdentifierNotValid,
            3 => ReasonCode::ServerUnavailable,
            4 => ReasonCode::BadUserNameOrPassword,
            5 => ReasonCode::NotAuthorized,
            _ => return Err(DecodeError::Malformed("unknown CONNACK return code")),
        }
    };
    let properties: super::ConnAckProperties = read_properties_if(&mut body, version)?;
    check_authentication(
        &properties.authentication_method,
        &properties.authentication_data,
    )?;
    ensure_consumed(&body)?;
    Ok(ConnAck {
        session_present: flags & 0x01 != 0,
        code,
        properties,
    })
}

/// PUBLISH; the payload is whatever follows the variable header, uncopied.
fn decode_publish(
    mut body: Bytes,
    version: ProtocolVersion,
    dup: bool,
    qos: QoS,
    retain: bool,
) -> Result<Publish, DecodeError> {
    let topic = read_string(&mut body)?;
    let packet_id = if qos == QoS::AtMostOnce {
        None
    } else {
        Some(read_packet_id(&mut body)?)
    };
    let properties: super::PublishProperties = read_properties_if(&mut body, version)?;
    if topic.is_empty() {
        if !version.is_v5() {
            return Err(DecodeError::TopicNameInvalid("topic is empty"));
        }
        if properties.topic_alias.is_none() {
            return Err(DecodeError::Protocol("empty topic without a topic alias"));
        }
    } else {
        validate_topic_name(&topic).map_err(|e| DecodeError::TopicNameInvalid(e.describe()))?;
    }
    Ok(Publish {
        dup,
        qos,
        retain,
        topic,
        packet_id,
        payload: body,
        properties,
    })
}

/// PUBACK, PUBREC, PUBREL, PUBCOMP. In v5 the reason code and the properties
/// may be left off (remaining length 2 means Success, 3 means no properties).
fn decode_ack(
    mut body: Bytes,
    version: ProtocolVersion,
    allowed: &[u8],
) -> Result<PubAck, DecodeError> {
    let packet_id = read_packet_id(&mut body)?;
    let mut ack = PubAck::success(packet_id);
    if version.is_v5() && !body.is_empty() {
        ack.reason = read_reason(&mut body, allowed)?;
        if !body.is_empty() {
            ack.properties = read_properties(&mut body)?;
        }
    }
    ensure_consumed(&body)?;
    Ok(ack)
}

/// SUBSCRIBE: at least one filter with its options. Filters are not validated
/// here: an invalid one gets a failure code in SUBACK, not a disconnect.
fn decode_subscribe(mut body: Bytes, version: ProtocolVersion) -> Result<Subscribe, DecodeError> {
    let packet_id = read_packet_id(&mut body)?;
    let properties = read_properties_if(&mut body, version)?;
    let mut filters = Vec::new();
    while !body.is_empty() {
        let filter = non_empty_filter(read_string(&mut body)?)?;
        let options = subscription_options(read_u8(&mut body)?, version)?;
        if options.no_local && filter.starts_with(SHARE_PREFIX) {
            return Err(DecodeError::Protocol("No Local on a shared subscription"));
        }
        filters.push(SubscribeFilter { filter, options });
    }
    if filters.is_empty() {
        return Err(DecodeError::Protocol("SUBSCRIBE without topic filters"));
    }
    Ok(Subscribe {
        packet_id,
        filters,
        properties,
    })
}

/// A topic filter must be at least one character long [MQTT-4.7.3-1]: an
/// empty one makes the packet malformed, in 3.1.1 and 5.0 alike.
fn non_empty_filter(filter: String) -> Result<String, DecodeError> {
    if filter.is_empty() {
        return Err(DecodeError::Malformed("empty topic filter"));
    }
    Ok(filter)
}

/// The subscription options byte. 3.1.1 only has the QoS bits (MQTT-3.8.3-4);
/// v5 adds No Local, Retain As Published and Retain Handling (section 3.8.3.1),
/// where a QoS or Retain Handling of 3 is a protocol error.
fn subscription_options(
    byte: u8,
    version: ProtocolVersion,
) -> Result<SubscriptionOptions, DecodeError> {
    if !version.is_v5() {
        if byte & 0xFC != 0 {
            return Err(DecodeError::Malformed(
                "reserved subscription option bits set",
            ));
        }
        let qos = QoS::from_bits(byte).ok_or(DecodeError::Malformed("subscription QoS 3"))?;
        return Ok(SubscriptionOptions {
            qos,
            ..SubscriptionOptions::default()
        });
    }
    if byte & 0xC0 != 0 {
        return Err(DecodeError::Malformed(
            "reserved subscription option bits set",
        ));
    }
    let qos = QoS::from_bits(byte & 0b11).ok_or(DecodeError::Protocol("subscription QoS 3"))?;
    let retain_handling = match (byte >> 4) & 0b11 {
        0 => RetainHandling::SendAtSubscribe,
        1 => RetainHandling::SendIfNew,
        2 => RetainHandling::DoNotSend,
        _ => return Err(DecodeError::Protocol("retain handling 3")),
    };
    Ok(SubscriptionOptions {
        qos,
        no_local: byte & 0x04 != 0,
        retain_as_published: byte & 0x08 != 0,
        retain_handling,
    })
}

/// SUBACK: one code per filter; a 3.1.1 failure (0x80) becomes UnspecifiedError.
fn decode_suback(mut body: Bytes, version: ProtocolVersion) -> Result<SubAck, DecodeError> {
    let packet_id = read_packet_id(&mut body)?;
    let properties = read_properties_if(&mut body, version)?;
    let mut reasons = Vec::with_capacity(body.len());
    while !body.is_empty() {
        let reason = if version.is_v5() {
            read_reason(&mut body, SUBACK_REASONS)?
        } else {
            match read_u8(&mut body)? {
                0 => ReasonCode::GRANTED_QOS0,
                1 => ReasonCode::GrantedQoS1,
                2 => ReasonCode::GrantedQoS2,
                0x80 => ReasonCode::UnspecifiedError,
                _ => return Err(DecodeError::Malformed("unknown SUBACK return code")),
            }
        };
        reasons.push(reason);
    }
    if reasons.is_empty() {
        return Err(DecodeError::Protocol("SUBACK without return codes"));
    }
    Ok(SubAck {
        packet_id,
        reasons,
        properties,
    })
}

/// UNSUBSCRIBE: at least one filter (MQTT-3.10.3-2).
fn decode_unsubscribe(
    mut body: Bytes,
    version: ProtocolVersion,
) -> Result<Unsubscribe, DecodeError> {
    let packet_id = read_packet_id(&mut body)?;
    let UnsubscribeProperties(user_properties) = read_properties_if(&mut body, version)?;
    let mut filters = Vec::new();
    while !body.is_empty() {
        filters.push(non_empty_filter(read_string(&mut body)?)?);
    }
    if filters.is_empty() {
        return Err(DecodeError::Protocol("UNSUBSCRIBE without topic filters"));
    }
    Ok(Unsubscribe {
        packet_id,
        filters,
        user_properties,
    })
}

/// UNSUBACK: just the packet id in 3.1.1; properties and one code per filter in v5.
fn decode_unsuback(mut body: Bytes, version: ProtocolVersion) -> Result<UnsubAck, DecodeError> {
    let packet_id = read_packet_id(&mut body)?;
    let properties = read_properties_if(&mut body, version)?;
    let mut reasons = Vec::with_capacity(body.len());
    if version.is_v5() {
        while !body.is_empty() {
            reasons.push(read_reason(&mut body, UNSUBACK_REASONS)?);
        }
        if reasons.is_empty() {
            return Err(DecodeError::Protocol("UNSUBACK without reason codes"));
        }
    }
    ensure_consumed(&body)?;
    Ok(UnsubAck {
        packet_id,
        reasons,
        properties,
    })
}

/// DISCONNECT: empty in 3.1.1; in v5 an empty body means normal disconnection
/// and a one-byte body a reason without properties.
fn decode_disconnect(mut body: Bytes, version: ProtocolVersion) -> Result<Disconnect, DecodeError> {
    let mut disconnect = Disconnect::with_reason(ReasonCode::NORMAL_DISCONNECTION);
    if version.is_v5() && !body.is_empty() {
        disconnect.reason = read_reason(&mut body, DISCONNECT_REASONS)?;
        if !body.is_empty() {
            disconnect.properties = read_properties(&mut body)?;
        }
    }
    ensure_consumed(&body)?;
    Ok(disconnect)
}

/// AUTH (v5 only): an empty body means Success without properties.
fn decode_auth(mut body: Bytes) -> Result<Auth, DecodeError> {
    let mut auth = Auth {
        reason: ReasonCode::Success,
        properties: Default::default(),
    };
    if !body.is_empty() {
        auth.reason = read_reason(&mut body, AUTH_REASONS)?;
        if !body.is_empty() {
            auth.properties = read_properties(&mut body)?;
        }
    }
    check_authentication(
        &auth.properties.authentication_method,
        &auth.properties.authentication_data,
    )?;
    ensure_consumed(&body)?;
    Ok(auth)
}
