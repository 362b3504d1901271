//! Encoding: one packet onto the end of a buffer.
//!
//! Each packet body is written by one function generic over a [`Sink`]: it runs
//! once through a [`Counter`], which yields the remaining length and surfaces
//! every error before a byte is appended, then once through a [`Writer`] into a
//! buffer reserved to the exact size. No intermediate buffers are allocated.

use bytes::BytesMut;

use super::packet::{
    Auth, ConnAck, Connect, Disconnect, PubAck, Publish, QoS, SubAck, Subscribe,
    SubscriptionOptions, UnsubAck, Unsubscribe,
};
use super::properties::{write_properties, WriteProperties};
use super::wire::{varint_len, Counter, Sink, Writer, MAX_VARINT};
use super::{Packet, ProtocolVersion, ReasonCode};

/// A packet that cannot be represented on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("{0} is longer than 65535 bytes")]
    StringTooLong(&'static str),
    #[error("packet of {0} bytes exceeds the MQTT limit of 268435455")]
    PacketTooLarge(usize),
    /// A field holds a value the wire format cannot carry, or the packet's
    /// fields contradict each other (e.g. a QoS 1 PUBLISH without packet id).
    #[error("invalid packet: {0}")]
    Invalid(&'static str),
    /// The packet type does not exist in the requested protocol version (AUTH in 3.1.1).
    #[error("{0} does not exist in MQTT 3.1.1")]
    NotInV311(&'static str),
}

/// Appends `packet`, encoded for `version`, to `buf`. MQTT 5-only fields are
/// left out for 3.1.1. On error nothing is appended.
///
/// For 3.1.1, reason codes become return codes ([`ReasonCode::to_v311_connack`],
/// [`ReasonCode::to_v311_suback`]), acknowledgements lose their reason, UNSUBACK
/// its payload, and DISCONNECT is always the empty 3.1.1 DISCONNECT; AUTH is
/// refused with [`EncodeError::NotInV311`].
pub fn encode(
    packet: &Packet,
    version: ProtocolVersion,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    let mut counter = Counter::default();
    write_body(packet, version, &mut counter)?;
    let remaining = counter.0;
    let remaining_u32 = u32::try_from(remaining)
        .ok()
        .filter(|&len| len <= MAX_VARINT)
        .ok_or(EncodeError::PacketTooLarge(remaining))?;
    buf.reserve(1 + varint_len(remaining) + remaining);
    let mut writer = Writer(buf);
    writer.put_u8(first_byte(packet));
    writer.put_varint("remaining length", remaining_u32)?;
    // Cannot fail: the counting pass above ran the same checks.
    write_body(packet, version, &mut writer)
}

/// The packet type in the high nibble and the fixed-header flags in the low one.
fn first_byte(packet: &Packet) -> u8 {
    match packet {
        Packet::Connect(_) => 0x10,
        Packet::ConnAck(_) => 0x20,
        Packet::Publish(publish) => {
            0x30 | (u8::from(publish.dup) << 3)
                | ((publish.qos as u8) << 1)
                | u8::from(publish.retain)
        }
        Packet::PubAck(_) => 0x40,
        Packet::PubRec(_) => 0x50,
        Packet::PubRel(_) => 0x62,
        Packet::PubComp(_) => 0x70,
        Packet::Subscribe(_) => 0x82,
        Packet::SubAck(_) => 0x90,
        Packet::Unsubscribe(_) => 0xA2,
        Packet::UnsubAck(_) => 0xB0,
        Packet::PingReq => 0xC0,
        Packet::PingResp => 0xD0,
        Packet::Disconnect(_) => 0xE0,
        Packet::Auth(_) => 0xF0,
    }
}

/// Writes everything after the fixed header.
fn write_body<S: Sink>(
    packet: &Packet,
    version: ProtocolVersion,
    sink: &mut S,
) -> Result<(), EncodeError> {
    match packet {
        Packet::Connect(connect) => write_connect(connect, version, sink),
        Packet::ConnAck(connack) => write_connack(connack, version, sink),
        Packet::Publish(publish) => write_publish(publish, version, sink),
        Packet::PubAck(ack) | Packet::PubRec(ack) | Packet::PubRel(ack) | Packet::PubComp(ack) => {
            write_ack(ack, version, sink)
        }
        Packet::Subscribe(subscribe) => write_subscribe(subscribe, version, sink),
        Packet::SubAck(suback) => write_suback(suback, version, sink),
        Packet::Unsubscribe(unsubscribe) => write_unsubscribe(unsubscribe, version, sink),
        Packet::UnsubAck(unsuback) => write_unsuback(unsuback, version, sink),
        Packet::PingReq | Packet::PingResp => Ok(()),
        Packet::Disconnect(disconnect) => write_disconnect(disconnect, version, sink),
        Packet::Auth(auth) => write_auth(auth, version, sink),
    }
}

/// Writes properties only for MQTT 5.
fn write_properties_if<P: WriteProperties + ?Sized, S: Sink>(
    properties: &P,
    version: ProtocolVersion,
    sink: &mut S,
) -> Result<(), EncodeError> {
    if version.is_v5() {
        write_properties(properties, sink)
    } else {
        Ok(())
    }
}

fn write_connect<S: Sink>(
    connect: &Connect,
    version: ProtocolVersion,
    sink: &mut S,
) -> Result<(), EncodeError> {
    if !version.is_v5() && connect.password.is_some() && connect.username.is_none() {
        return Err(EncodeError::Invalid(
            "MQTT 3.1.1 forbids a password without a user name",
        ));
    }
    sink.put_str("protocol name", "MQTT")?;
    sink.put_u8(version.level());
    let mut flags = u8::from(connect.clean_start) << 1;
    if let Some(will) = &connect.will {
        flags |= 0x04 | ((will.qos as u8) << 3) | (u8::from(will.retain) << 5);
    }
    if connect.password.is_some() {
        flags |= 0x40;
    }
    if connect.username.is_some() {
        flags |= 0x80;
    }
    sink.put_u8(flags);
    sink.put_u16(connect.keep_alive);
    write_properties_if(&connect.properties, version, sink)?;
    sink.put_str("client identifier", &connect.client_id)?;
    if let Some(will) = &connect.will {
        write_properties_if(&will.properties, version, sink)?;
        sink.put_str("will topic", &will.topic)?;
        sink.put_binary("will payload", &will.payload)?;
    }
    if let Some(username) = &connect.username {
        sink.put_str("user name", username)?;
    }
    if let Some(password) = &connect.password {
        sink.put_binary("password", password)?;
    }
    Ok(())
}

fn write_connack<S: Sink>(
    connack: &ConnAck,
    version: ProtocolVersion,
    sink: &mut S,
) -> Result<(), EncodeError> {
    sink.put_u8(u8::from(connack.session_present));
    if version.is_v5() {
        sink.put_u8(connack.code.as_u8());
        write_properties(&connack.properties, sink)
    } else {
        sink.put_u8(connack.code.to_v311_connack());
        Ok(())
    }
}

fn write_publish<S: Sink>(
    publish: &Publish,
    version: ProtocolVersion,
    sink: &mut S,
) -> Result<(), EncodeError> {
    sink.put_str("topic name", &publish.topic)?;
    match (publish.qos, publish.packet_id) {
        (QoS::AtMostOnce, None) => {}
        (QoS::AtMostOnce, Some(_)) => {
            return Err(EncodeError::Invalid(
                "QoS 0 PUBLISH with a packet identifier",
            ))
        }
        (_, Some(id)) => sink.put_u16(id),
        (_, None) => {
            return Err(EncodeError::Invalid(
                "QoS 1 or 2 PUBLISH without a packet identifier",
            ))
        }
    }
    write_properties_if(&publish.properties, version, sink)?;
    sink.put_slice(&publish.payload);
    Ok(())
}

/// PUBACK..PUBCOMP; in v5 the reason and properties are left off when they
/// carry nothing (MQTT 5.0 section 3.4.2.1).
fn write_ack<S: Sink>(
    ack: &PubAck,
    version: ProtocolVersion,
    sink: &mut S,
) -> Result<(), EncodeError> {
    sink.put_u16(ack.packet_id);
    if !version.is_v5() {
        return Ok(());
    }
    let no_properties = ack.properties.is_empty();
    if ack.reason == ReasonCode::Success && no_properties {
        return Ok(());
    }
    sink.put_u8(ack.reason.as_u8());
    if no_properties {
        return Ok(());
    }
    write_properties(&ack.properties, sink)
}

fn write_subscribe<S: Sink>(
    subscribe: &Subscribe,
    version: ProtocolVersion,
    sink: &mut S,
) -> Result<(), EncodeError> {
    sink.put_u16(subscribe.packet_id);
    write_properties_if(&subscribe.properties, version, sink)?;
    for filter in &subscribe.filters {
        sink.put_str("topic filter", &filter.filter)?;
        sink.put_u8(options_byte(filter.options, version));
    }
    Ok(())
}

/// The subscription options byte; 3.1.1 keeps only the QoS.
fn options_byte(options: SubscriptionOptions, version: ProtocolVersion) -> u8 {
    let qos = options.qos as u8;
    if !version.is_v5() {
        return qos;
    }
    qos | (u8::from(options.no_local) << 2)
        | (u8::from(options.retain_as_published) << 3)
        | ((options.retain_handling as u8) << 4)
}

fn write_suback<S: Sink>(
    suback: &SubAck,
    version: ProtocolVersion,
    sink: &mut S,
) -> Result<(), EncodeError> {
    sink.put_u16(suback.packet_id);
    write_properties_if(&suback.properties, version, sink)?;
    for reason in &suback.reasons {
        sink.put_u8(if version.is_v5() {
            reason.as_u8()
        } else {
            reason.to_v311_suback()
        });
    }
    Ok(())
}

fn write_unsubscribe<S: Sink>(
    unsubscribe: &Unsubscribe,
    version: ProtocolVersion,
    sink: &mut S,
) -> Result<(), EncodeError> {
    sink.put_u16(unsubscribe.packet_id);
    write_properties_if(unsubscribe.user_properties.as_slice(), version, sink)?;
    for filter in &unsubscribe.filters {
        sink.put_str("topic filter", filter)?;
    }
    Ok(())
}

fn write_unsuback<S: Sink>(
    unsuback: &UnsubAck,
    version: ProtocolVersion,
    sink: &mut S,
) -> Result<(), EncodeError> {
    sink.put_u16(unsuback.packet_id);
    if version.is_v5() {
        write_properties(&unsuback.properties, sink)?;
        for reason in &unsuback.reasons {
            sink.put_u8(reason.as_u8());
        }
    }
    Ok(())
}

/// DISCONNECT; in v5 the reason and properties are left off when they carry
/// nothing (MQTT 5.0 section 3.14.2.1).
fn write_disconnect<S: Sink>(
    disconnect: &Disconnect,
    version: ProtocolVersion,
    sink: &mut S,
) -> Result<(), EncodeError> {
    if !version.is_v5() {
        return Ok(());
    }
    let no_properties = disconnect.properties.is_empty();
    if disconnect.reason == ReasonCode::NORMAL_DISCONNECTION && no_properties {
        return Ok(());
    }
    sink.put_u8(disconnect.reason.as_u8());
    if no_properties {
        return Ok(());
    }
    write_properties(&disconnect.properties, sink)
}

/// AUTH (v5 only); empty when it is a bare Success (MQTT 5.0 section 3.15.2.1).
fn write_auth<S: Sink>(
    auth: &Auth,
    version: ProtocolVersion,
    sink: &mut S,
) -> Result<(), EncodeError> {
    if !version.is_v5() {
        return Err(EncodeError::NotInV311("AUTH"));
    }
    if auth.reason == ReasonCode::Success && auth.properties.is_empty() {
        return Ok(());
    }
    sink.put_u8(auth.reason.as_u8());
    write_properties(&auth.properties, sink)
}
