//! MQTT 5 properties (OASIS MQTT 5.0 section 2.2.2): reading one property at a
//! time, checking it belongs in the packet at hand, and writing property sets.

use bytes::Bytes;

use super::decode::DecodeError;
use super::encode::EncodeError;
use super::packet::{
    AckProperties, AuthProperties, ConnAckProperties, ConnectProperties, DisconnectProperties,
    PublishProperties, SubscribeProperties, UserProperty, WillProperties,
};
use super::topic::validate_topic_name;
use super::wire::{
    read_binary, read_string, read_string_pair, read_u16, read_u32, read_u8, read_varint, Counter,
    Sink,
};

const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
const CONTENT_TYPE: u8 = 0x03;
const RESPONSE_TOPIC: u8 = 0x08;
const CORRELATION_DATA: u8 = 0x09;
const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
const SERVER_KEEP_ALIVE: u8 = 0x13;
const AUTHENTICATION_METHOD: u8 = 0x15;
const AUTHENTICATION_DATA: u8 = 0x16;
const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
const WILL_DELAY_INTERVAL: u8 = 0x18;
const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
const RESPONSE_INFORMATION: u8 = 0x1A;
const SERVER_REFERENCE: u8 = 0x1C;
const REASON_STRING: u8 = 0x1F;
const RECEIVE_MAXIMUM: u8 = 0x21;
const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
const TOPIC_ALIAS: u8 = 0x23;
const MAXIMUM_QOS: u8 = 0x24;
const RETAIN_AVAILABLE: u8 = 0x25;
const USER_PROPERTY: u8 = 0x26;
const MAXIMUM_PACKET_SIZE: u8 = 0x27;
const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;

/// One decoded property, with its value already range-checked. Deliberately
/// not `Debug`: it may hold authentication data.
pub(super) enum Property {
    PayloadFormatIndicator(u8),
    MessageExpiryInterval(u32),
    ContentType(String),
    ResponseTopic(String),
    CorrelationData(Bytes),
    SubscriptionIdentifier(u32),
    SessionExpiryInterval(u32),
    AssignedClientIdentifier(String),
    ServerKeepAlive(u16),
    AuthenticationMethod(String),
    AuthenticationData(Bytes),
    RequestProblemInformation(u8),
    WillDelayInterval(u32),
    RequestResponseInformation(u8),
    ResponseInformation(String),
    ServerReference(String),
    ReasonString(String),
    ReceiveMaximum(u16),
    TopicAliasMaximum(u16),
    TopicAlias(u16),
    MaximumQoS(u8),
    RetainAvailable(u8),
    UserProperty(UserProperty),
    MaximumPacketSize(u32),
    WildcardSubscriptionAvailable(u8),
    SubscriptionIdentifierAvailable(u8),
    SharedSubscriptionAvailable(u8),
}

/// The error for a property the packet at hand may not carry.
const NOT_ALLOWED: DecodeError = DecodeError::Malformed("property not allowed in this packet");

/// Reads a byte property whose only valid values are 0 and 1.
fn read_flag(buf: &mut Bytes, what: &'static str) -> Result<u8, DecodeError> {
    match read_u8(buf)? {
        value @ (0 | 1) => Ok(value),
        _ => Err(DecodeError::Protocol(what)),
    }
}

/// Reads a two byte property that may not be 0.
fn read_nonzero_u16(buf: &mut Bytes, what: &'static str) -> Result<u16, DecodeError> {
    match read_u16(buf)? {
        0 => Err(DecodeError::Protocol(what)),
        value => Ok(value),
    }
}

/// Reads a Response Topic, which is a topic name: no wildcards (MQTT-3.3.2-14).
fn read_response_topic(buf: &mut Bytes) -> Result<String, DecodeError> {
    let topic = read_string(buf)?;
    validate_topic_name(&topic)
        .map_err(|_| DecodeError::Protocol("response topic is not a valid topic name"))?;
    Ok(topic)
}

impl Property {
    /// Reads one property (identifier and value) off the front of `buf`.
    fn read(buf: &mut Bytes) -> Result<Property, DecodeError> {
        let id = read_varint(buf)?;
        let id = u8::try_from(id).map_err(|_| DecodeError::Malformed("unknown property"))?;
        Ok(match id {
            PAYLOAD_FORMAT_INDICATOR => Property::PayloadFormatIndicator(read_flag(
                buf,
                "payload format indicator other than 0 or 1",
            )?),
            MESSAGE_EXPIRY_INTERVAL => Property::MessageExpiryInterval(read_u32(buf)?),
            CONTENT_TYPE => Property::ContentType(read_string(buf)?),
            RESPONSE_TOPIC => Property::ResponseTopic(read_response_topic(buf)?),
            CORRELATION_DATA => Property::CorrelationData(read_binary(buf)?),
            SUBSCRIPTION_IDENTIFIER => match read_varint(buf)? {
                0 => return Err(DecodeError::Protocol("subscription identifier 0")),
                value => Property::SubscriptionIdentifier(value),
            },
            SESSION_EXPIRY_INTERVAL => Property::SessionExpiryInterval(read_u32(buf)?),
            ASSIGNED_CLIENT_IDENTIFIER => Property::AssignedClientIdentifier(read_string(buf)?),
            SERVER_KEEP_ALIVE => Property::ServerKeepAlive(read_u16(buf)?),
            AUTHENTICATION_METHOD => Property::AuthenticationMethod(read_string(buf)?),
            AUTHENTICATION_DATA => Property::AuthenticationData(read_binary(buf)?),
            REQUEST_PROBLEM_INFORMATION => Property::RequestProblemInformation(read_flag(
                buf,
                "request problem information other than 0 or 1",
            )?),
            WILL_DELAY_INTERVAL => Property::WillDelayInterval(read_u32(buf)?),
            REQUEST_RESPONSE_INFORMATION => Property::RequestResponseInformation(read_flag(
                buf,
                "request response information other than 0 or 1",
            )?),
            RESPONSE_INFORMATION => Property::ResponseInformation(read_string(buf)?),
            SERVER_REFERENCE => Property::ServerReference(read_string(buf)?),
            REASON_STRING => Property::ReasonString(read_string(buf)?),
            RECEIVE_MAXIMUM => {
                Property::ReceiveMaximum(read_nonzero_u16(buf, "receive maximum 0")?)
            }
            TOPIC_ALIAS_MAXIMUM => Property::TopicAliasMaximum(read_u16(buf)?),
            TOPIC_ALIAS => Property::TopicAlias(read_nonzero_u16(buf, "topic alias 0")?),
            MAXIMUM_QOS => Property::MaximumQoS(read_flag(buf, "maximum QoS other than 0 or 1")?),
            RETAIN_AVAILABLE => {
                Property::RetainAvailable(read_flag(buf, "retain available other than 0 or 1")?)
            }
            USER_PROPERTY => Property::UserProperty(read_string_pair(buf)?),
            MAXIMUM_PACKET_SIZE => match read_u32(buf)? {
                0 => return Err(DecodeError::Protocol("maximum packet size 0")),
                value => Property::MaximumPacketSize(value),
            },
            WILDCARD_SUBSCRIPTION_AVAILABLE => Property::WildcardSubscriptionAvailable(read_flag(
                buf,
                "wildcard subscription available other than 0 or 1",
            )?),
            SUBSCRIPTION_IDENTIFIER_AVAILABLE => Property::SubscriptionIdentifierAvailable(
                read_flag(buf, "subscription identifier available other than 0 or 1")?,
            ),
            SHARED_SUBSCRIPTION_AVAILABLE => Property::SharedSubscriptionAvailable(read_flag(
                buf,
                "shared subscription available other than 0 or 1",
            )?),
            _ => return Err(DecodeError::Malformed("unknown property")),
        })
    }
}

/// Stores a property that may appear at most once (a repeat is a protocol error).
fn once<T>(slot: &mut Option<T>, value: T) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(DecodeError::Protocol("property appears more than once"));
    }
    *slot = Some(value);
    Ok(())
}

/// Authentication Data without an Authentication Method is a protocol error
/// (MQTT 5.0 sections 3.1.2.11.10, 3.2.2.3.18, 3.15.2.2.3).
pub(super) fn check_authentication<T>(
    method: &Option<String>,
    data: &Option<T>,
) -> Result<(), DecodeError> {
    if data.is_some() && method.is_none() {
        return Err(DecodeError::Protocol(
            "authentication data without an authentication method",
        ));
    }
    Ok(())
}

/// The property set of one packet type: which properties it may hold.
pub(super) trait PropertySet: Default {
    /// Takes one decoded property: malformed if this packet may not carry it,
    /// a protocol error if it may appear only once and already did.
    fn accept(&mut self, property: Property) -> Result<(), DecodeError>;
}

/// Properties that can be written.
pub(super) trait WriteProperties {
    /// Writes every property that is set, in a fixed order.
    fn write<S: Sink>(&self, sink: &mut S) -> Result<(), EncodeError>;
}

/// Reads a property length and the properties it covers.
pub(super) fn read_properties<P: PropertySet>(buf: &mut Bytes) -> Result<P, DecodeError> {
    let len = read_varint(buf)? as usize;
    if len > buf.len() {
        return Err(DecodeError::Malformed("property length exceeds the packet"));
    }
    let mut set = P::default();
    if len == 0 {
        return Ok(set);
    }
    let mut block = buf.split_to(len);
    while !block.is_empty() {
        set.accept(Property::read(&mut block)?)?;
    }
    Ok(set)
}

/// Writes a property length followed by the properties.
pub(super) fn write_properties<P: WriteProperties + ?Sized, S: Sink>(
    set: &P,
    sink: &mut S,
) -> Result<(), EncodeError> {
    let mut counter = Counter::default();
    set.write(&mut counter)?;
    let len = u32::try_from(counter.0).map_err(|_| EncodeError::PacketTooLarge(counter.0))?;
    sink.put_varint("property length", len)?;
    set.write(sink)
}

fn put_u8<S: Sink>(sink: &mut S, id: u8, value: Option<u8>) {
    if let Some(value) = value {
        sink.put_u8(id);
        sink.put_u8(value);
    }
}

fn put_u16<S: Sink>(sink: &mut S, id: u8, value: Option<u16>) {
    if let Some(value) = value {
        sink.put_u8(id);
        sink.put_u16(value);
    }
}

fn put_u32<S: Sink>(sink: &mut S, id: u8, value: Option<u32>) {
    if let Some(value) = value {
        sink.put_u8(id);
        sink.put_u32(value);
    }
}

fn put_varint<S: Sink>(
    sink: &mut S,
    id: u8,
    field: &'static str,
    value: u32,
) -> Result<(), EncodeError> {
    sink.put_u8(id);
    sink.put_varint(field, value)
}

fn put_str<S: Sink>(
    sink: &mut S,
    id: u8,
    field: &'static str,
    value: &Option<String>,
) -> Result<(), EncodeError> {
    if let Some(value) = value {
        sink.put_u8(id);
        sink.put_str(field, value)?;
    }
    Ok(())
}

fn put_binary<S: Sink>(
    sink: &mut S,
    id: u8,
    field: &'static str,
    value: &Option<Bytes>,
) -> Result<(), EncodeError> {
    if let Some(value) = value {
        sink.put_u8(id);
        sink.put_binary(field, value)?;
    }
    Ok(())
}

fn put_user_properties<S: Sink>(sink: &mut S, pairs: &[UserProperty]) -> Result<(), EncodeError> {
    for (name, value) in pairs {
        sink.put_u8(USER_PROPERTY);
        sink.put_str("user property name", name)?;
        sink.put_str("user property value", value)?;
    }
    Ok(())
}

impl PropertySet for ConnectProperties {
    fn accept(&mut self, property: Property) -> Result<(), DecodeError> {
        match property {
            Property::SessionExpiryInterval(v) => once(&mut self.session_expiry_interval, v),
            Property::ReceiveMaximum(v) => once(&mut self.receive_maximum, v),
            Property::MaximumPacketSize(v) => once(&mut self.maximum_packet_size, v),
            Property::TopicAliasMaximum(v) => once(&mut self.topic_alias_maximum, v),
            Property::RequestResponseInformation(v) => {
                once(&mut self.request_response_information, v)
            }
            Property::RequestProblemInformation(v) => {
                once(&mut self.request_problem_information, v)
            }
            Property::UserProperty(pair) => {
                self.user_properties.push(pair);
                Ok(())
            }
            Property::AuthenticationMethod(v) => once(&mut self.authentication_method, v),
            Property::AuthenticationData(v) => once(&mut self.authentication_data, v),
            _ => Err(NOT_ALLOWED),
        }
    }
}

impl WriteProperties for ConnectProperties {
    fn write<S: Sink>(&self, sink: &mut S) -> Result<(), EncodeError> {
        put_u32(sink, SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        put_u16(sink, RECEIVE_MAXIMUM, self.receive_maximum);
        put_u32(sink, MAXIMUM_PACKET_SIZE, self.maximum_packet_size);
        put_u16(sink, TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        put_u8(
            sink,
            REQUEST_RESPONSE_INFORMATION,
            self.request_response_information,
        );
        put_u8(
            sink,
            REQUEST_PROBLEM_INFORMATION,
            self.request_problem_information,
        );
        put_user_properties(sink, &self.user_properties)?;
        put_str(
            sink,
            AUTHENTICATION_METHOD,
            "authentication method",
            &self.authentication_method,
        )?;
        put_binary(
            sink,
            AUTHENTICATION_DATA,
            "authentication data",
            &self.authentication_data,
        )
    }
}

impl PropertySet for WillProperties {
    fn accept(&mut self, property: Property) -> Result<(), DecodeError> {
        match property {
            Property::WillDelayInterval(v) => once(&mut self.will_delay_interval, v),
            Property::PayloadFormatIndicator(v) => once(&mut self.payload_format_indicator, v),
            Property::MessageExpiryInterval(v) => once(&mut self.message_expiry_interval, v),
            Property::ContentType(v) => once(&mut self.content_type, v),
            Property::ResponseTopic(v) => once(&mut self.response_topic, v),
            Property::CorrelationData(v) => once(&mut self.correlation_data, v),
            Property::UserProperty(pair) => {
                self.user_properties.push(pair);
                Ok(())
            }
            _ => Err(NOT_ALLOWED),
        }
    }
}

impl WriteProperties for WillProperties {
    fn write<S: Sink>(&self, sink: &mut S) -> Result<(), EncodeError> {
        put_u32(sink, WILL_DELAY_INTERVAL, self.will_delay_interval);
        put_u8(
            sink,
            PAYLOAD_FORMAT_INDICATOR,
            self.payload_format_indicator,
        );
        put_u32(sink, MESSAGE_EXPIRY_INTERVAL, self.message_expiry_interval);
        put_str(sink, CONTENT_TYPE, "content type", &self.content_type)?;
        put_str(sink, RESPONSE_TOPIC, "response topic", &self.response_topic)?;
        put_binary(
            sink,
            CORRELATION_DATA,
            "correlation data",
            &self.correlation_data,
        )?;
        put_user_properties(sink, &self.user_properties)
    }
}

impl PropertySet for ConnAckProperties {
    fn accept(&mut self, property: Property) -> Result<(), DecodeError> {
        match property {
            Property::SessionExpiryInterval(v) => once(&mut self.session_expiry_interval, v),
            Property::ReceiveMaximum(v) => once(&mut self.receive_maximum, v),
            Property::MaximumQoS(v) => once(&mut self.maximum_qos, v),
            Property::RetainAvailable(v) => once(&mut self.retain_available, v),
            Property::MaximumPacketSize(v) => once(&mut self.maximum_packet_size, v),
            Property::AssignedClientIdentifier(v) => once(&mut self.assigned_client_identifier, v),
            Property::TopicAliasMaximum(v) => once(&mut self.topic_alias_maximum, v),
            Property::ReasonString(v) => once(&mut self.reason_string, v),
            Property::UserProperty(pair) => {
                self.user_properties.push(pair);
                Ok(())
            }
            Property::WildcardSubscriptionAvailable(v) => {
                once(&mut self.wildcard_subscription_available, v)
            }
            Property::SubscriptionIdentifierAvailable(v) => {
                once(&mut self.subscription_identifiers_available, v)
            }
            Property::SharedSubscriptionAvailable(v) => {
                once(&mut self.shared_subscription_available, v)
            }
            Property::ServerKeepAlive(v) => once(&mut self.server_keep_alive, v),
            Property::ResponseInformation(v) => once(&mut self.response_information, v),
            Property::ServerReference(v) => once(&mut self.server_reference, v),
            Property::AuthenticationMethod(v) => once(&mut self.authentication_method, v),
            Property::AuthenticationData(v) => once(&mut self.authentication_data, v),
            _ => Err(NOT_ALLOWED),
        }
    }
}

impl WriteProperties for ConnAckProperties {
    fn write<S: Sink>(&self, sink: &mut S) -> Result<(), EncodeError> {
        put_u32(sink, SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        put_u16(sink, RECEIVE_MAXIMUM, self.receive_maximum);
        put_u8(sink, MAXIMUM_QOS, self.maximum_qos);
        put_u8(sink, RETAIN_AVAILABLE, self.retain_available);
        put_u32(sink, MAXIMUM_PACKET_SIZE, self.maximum_packet_size);
        put_str(
            sink,
            ASSIGNED_CLIENT_IDENTIFIER,
            "assigned client identifier",
            &self.assigned_client_identifier,
        )?;
        put_u16(sink, TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        put_str(sink, REASON_STRING, "reason string", &self.reason_string)?;
        put_user_properties(sink, &self.user_properties)?;
        put_u8(
            sink,
            WILDCARD_SUBSCRIPTION_AVAILABLE,
            self.wildcard_subscription_available,
        );
        put_u8(
            sink,
            SUBSCRIPTION_IDENTIFIER_AVAILABLE,
            self.subscription_identifiers_available,
        );
        put_u8(
            sink,
            SHARED_SUBSCRIPTION_AVAILABLE,
            self.shared_subscription_available,
        );
        put_u16(sink, SERVER_KEEP_ALIVE, self.server_keep_alive);
        put_str(
            sink,
            RESPONSE_INFORMATION,
            "response information",
            &self.response_information,
        )?;
        put_str(
            sink,
            SERVER_REFERENCE,
            "server reference",
            &self.server_reference,
        )?;
        put_str(
            sink,
            AUTHENTICATION_METHOD,
            "authentication method",
            &self.authentication_method,
        )?;
        put_binary(
            sink,
            AUTHENTICATION_DATA,
            "authentication data",
            &self.authentication_data,
        )
    }
}

impl PropertySet for PublishProperties {
    fn accept(&mut self, property: Property) -> Result<(), DecodeError> {
        match property {
            Property::PayloadFormatIndicator(v) => once(&mut self.payload_format_indicator, v),
            Property::MessageExpiryInterval(v) => once(&mut self.message_expiry_interval, v),
            Property::TopicAlias(v) => once(&mut self.topic_alias, v),
            Property::ResponseTopic(v) => once(&mut self.response_topic, v),
            Property::CorrelationData(v) => once(&mut self.correlation_data, v),
            Property::UserProperty(pair) => {
                self.user_properties.push(pair);
                Ok(())
            }
            Property::SubscriptionIdentifier(v) => {
                self.subscription_identifiers.push(v);
                Ok(())
            }
            Property::ContentType(v) => once(&mut self.content_type, v),
            _ => Err(NOT_ALLOWED),
        }
    }
}

impl WriteProperties for PublishProperties {
    fn write<S: Sink>(&self, sink: &mut S) -> Result<(), EncodeError> {
        put_u8(
            sink,
            PAYLOAD_FORMAT_INDICATOR,
            self.payload_format_indicator,
        );
        put_u32(sink, MESSAGE_EXPIRY_INTERVAL, self.message_expiry_interval);
        put_u16(sink, TOPIC_ALIAS, self.topic_alias);
        put_str(sink, RESPONSE_TOPIC, "response topic", &self.response_topic)?;
        put_binary(
            sink,
            CORRELATION_DATA,
            "correlation data",
            &self.correlation_data,
        )?;
        put_user_properties(sink, &self.user_properties)?;
        for &id in &self.subscription_identifiers {
            put_varint(sink, SUBSCRIPTION_IDENTIFIER, "subscription identifier", id)?;
        }
        put_str(sink, CONTENT_TYPE, "content type", &self.content_type)
    }
}

impl PropertySet for AckProperties {
    fn accept(&mut self, property: Property) -> Result<(), DecodeError> {
        match property {
            Property::ReasonString(v) => once(&mut self.reason_string, v),
            Property::UserProperty(pair) => {
                self.user_properties.push(pair);
                Ok(())
            }
            _ => Err(NOT_ALLOWED),
        }
    }
}

impl WriteProperties for AckProperties {
    fn write<S: Sink>(&self, sink: &mut S) -> Result<(), EncodeError> {
        put_str(sink, REASON_STRING, "reason string", &self.reason_string)?;
        put_user_properties(sink, &self.user_properties)
    }
}

impl AckProperties {
    /// Whether there is nothing to write, so the property length may be left out.
    pub(super) fn is_empty(&self) -> bool {
        self.reason_string.is_none() && self.user_properties.is_empty()
    }
}

impl PropertySet for SubscribeProperties {
    fn accept(&mut self, property: Property) -> Result<(), DecodeError> {
        match property {
            Property::SubscriptionIdentifier(v) => once(&mut self.subscription_identifier, v),
            Property::UserProperty(pair) => {
                self.user_properties.push(pair);
                Ok(())
            }
            _ => Err(NOT_ALLOWED),
        }
    }
}

impl WriteProperties for SubscribeProperties {
    fn write<S: Sink>(&self, sink: &mut S) -> Result<(), EncodeError> {
        if let Some(id) = self.subscription_identifier {
            put_varint(sink, SUBSCRIPTION_IDENTIFIER, "subscription identifier", id)?;
        }
        put_user_properties(sink, &self.user_properties)
    }
}

/// UNSUBSCRIBE carries only user properties.
#[derive(Debug, Default)]
pub(super) struct UnsubscribeProperties(pub(super) Vec<UserProperty>);

impl PropertySet for UnsubscribeProperties {
    fn accept(&mut self, property: Property) -> Result<(), DecodeError> {
        match property {
            Property::UserProperty(pair) => {
                self.0.push(pair);
                Ok(())
            }
            _ => Err(NOT_ALLOWED),
        }
    }
}

/// UNSUBSCRIBE's properties are written straight from its user properties.
impl WriteProperties for [UserProperty] {
    fn write<S: Sink>(&self, sink: &mut S) -> Result<(), EncodeError> {
        put_user_properties(sink, self)
    }
}

impl PropertySet for DisconnectProperties {
    fn accept(&mut self, property: Property) -> Result<(), DecodeError> {
        match property {
            Property::SessionExpiryInterval(v) => once(&mut self.session_expiry_interval, v),
            Property::ReasonString(v) => once(&mut self.reason_string, v),
            Property::UserProperty(pair) => {
                self.user_properties.push(pair);
                Ok(())
            }
            Property::ServerReference(v) => once(&mut self.server_reference, v),
            _ => Err(NOT_ALLOWED),
        }
    }
}

impl WriteProperties for DisconnectProperties {
    fn write<S: Sink>(&self, sink: &mut S) -> Result<(), EncodeError> {
        put_u32(sink, SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        put_str(sink, REASON_STRING, "reason string", &self.reason_string)?;
        put_user_properties(sink, &self.user_properties)?;
        put_str(
            sink,
            SERVER_REFERENCE,
            "server reference",
            &self.server_reference,
        )
    }
}

impl DisconnectProperties {
    /// Whether there is nothing to write, so the property length may be left out.
    pub(super) fn is_empty(&self) -> bool {
        self.session_expiry_interval.is_none()
            && self.reason_string.is_none()
            && self.user_properties.is_empty()
            && self.server_reference.is_none()
    }
}

impl PropertySet for AuthProperties {
    fn accept(&mut self, property: Property) -> Result<(), DecodeError> {
        match property {
            Property::AuthenticationMethod(v) => once(&mut self.authentication_method, v),
            Property::AuthenticationData(v) => once(&mut self.authentication_data, v),
            Property::ReasonString(v) => once(&mut self.reason_string, v),
            Property::UserProperty(pair) => {
                self.user_properties.push(pair);
                Ok(())
            }
            _ => Err(NOT_ALLOWED),
        }
    }
}

impl WriteProperties for AuthProperties {
    fn write<S: Sink>(&self, sink: &mut S) -> Result<(), EncodeError> {
        put_str(
            sink,
            AUTHENTICATION_METHOD,
            "authentication method",
            &self.authentication_method,
        )?;
        put_binary(
            sink,
            AUTHENTICATION_DATA,
            "authentication data",
            &self.authentication_data,
        )?;
        put_str(sink, REASON_STRING, "reason string", &self.reason_string)?;
        put_user_properties(sink, &self.user_properties)
    }
}

impl AuthProperties {
    /// Whether there is nothing to write, so the property length may be left out.
    pub(super) fn is_empty(&self) -> bool {
        self.authentication_method.is_none()
            && self.authentication_data.is_none()
            && self.reason_string.is_none()
            && self.user_properties.is_empty()
    }
}
