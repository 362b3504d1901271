//! One test per decoding rule, each asserting the exact [`DecodeError`].

use bytes::BytesMut;

use crate::protocol::packet::*;
use crate::protocol::{decode, DecodeError, ReasonCode};

const V311: Option<ProtocolVersion> = Some(ProtocolVersion::V311);
const V5: Option<ProtocolVersion> = Some(ProtocolVersion::V5);

/// A packet with `first` as its first byte and `body` after a one-byte remaining length.
fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let len = u8::try_from(body.len()).expect("short test body");
    assert!(len < 128, "short test body");
    let mut bytes = vec![first, len];
    bytes.extend_from_slice(body);
    bytes
}

/// A CONNECT body: protocol "MQTT", `level`, `flags`, keep alive 10, then `rest`.
fn connect(level: u8, flags: u8, rest: &[u8]) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', level, flags, 0, 10];
    body.extend_from_slice(rest);
    packet(0x10, &body)
}

fn decode_bytes(
    bytes: &[u8],
    version: Option<ProtocolVersion>,
) -> Result<Option<Packet>, DecodeError> {
    decode(&mut BytesMut::from(bytes), version, u32::MAX)
}

fn decode_err(bytes: &[u8], version: Option<ProtocolVersion>) -> DecodeError {
    match decode_bytes(bytes, version) {
        Err(error) => error,
        Ok(packet) => panic!("expected an error, decoded {packet:?}"),
    }
}

fn decode_ok(bytes: &[u8], version: Option<ProtocolVersion>) -> Packet {
    decode_bytes(bytes, version)
        .expect("valid")
        .expect("complete")
}

fn is_malformed(error: DecodeError) -> bool {
    matches!(error, DecodeError::Malformed(_))
}

fn is_protocol(error: DecodeError) -> bool {
    matches!(error, DecodeError::Protocol(_))
}

/// A v5 PUBLISH at QoS 0 to topic "t" with the given property bytes.
fn v5_publish_with_properties(properties: &[u8]) -> Vec<u8> {
    let mut body = vec![0, 1, b't', u8::try_from(properties.len()).expect("short")];
    body.extend_from_slice(properties);
    packet(0x30, &body)
}

#[test]
fn oversized_packet_is_refused_from_its_fixed_header() {
    // Remaining length 16383, no body at all yet.
    let mut buf = BytesMut::from(&[0x30, 0xFF, 0x7F][..]);
    assert_eq!(
        decode(&mut buf, V5, 100),
        Err(DecodeError::TooLarge {
            size: 16_386,
            max: 100
        })
    );
}

#[test]
fn packet_exactly_at_the_limit_is_accepted() {
    let bytes = packet(0xC0, &[]);
    let mut buf = BytesMut::from(&bytes[..]);
    assert_eq!(decode(&mut buf, V5, 2), Ok(Some(Packet::PingReq)));
}

#[test]
fn remaining_length_over_four_bytes_is_malformed() {
    assert!(is_malformed(decode_err(
        &[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
        V5
    )));
}

#[test]
fn non_minimal_remaining_length_is_malformed() {
    assert!(is_malformed(decode_err(&[0xC0, 0x80, 0x00], V5)));
}

#[test]
fn only_connect_before_connect() {
    assert!(is_protocol(decode_err(&packet(0xC0, &[]), None)));
    assert!(is_protocol(decode_err(&packet(0x30, &[0, 1, b't']), None)));
}

#[test]
fn old_or_unknown_protocol_levels_are_unsupported() {
    let mqisdp = packet(
        0x10,
        &[0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 2, 0, 10, 0, 0],
    );
    assert_eq!(
        decode_err(&mqisdp, None),
        DecodeError::UnsupportedProtocolVersion(3)
    );
    assert_eq!(
        decode_err(&connect(6, 0x02, &[0, 0]), None),
        DecodeError::UnsupportedProtocolVersion(6)
    );
    let wrong_name = packet(0x10, &[0, 4, b'M', b'Q', b'T', b'X', 4, 2, 0, 10, 0, 0]);
    assert_eq!(
        decode_err(&wrong_name, None),
        DecodeError::UnsupportedProtocolVersion(4)
    );
    assert_eq!(
        decode_err(&connect(6, 0x02, &[0, 0]), None).reason_code(),
        ReasonCode::UnsupportedProtocolVersion
    );
}

#[test]
fn second_connect_is_a_protocol_error() {
    let bytes = connect(4, 0x02, &[0, 0]);
    assert!(matches!(decode_ok(&bytes, None), Packet::Connect(_)));
    assert!(is_protocol(decode_err(&bytes, V311)));
}

#[test]
fn reserved_fixed_header_flags_are_malformed() {
    for first in [
        0x60, 0x63, 0x80, 0xA0, 0x41, 0x22, 0xC1, 0xD8, 0xE1, 0x72, 0x92, 0xB4, 0x11,
    ] {
        let version = if first >> 4 == 1 { None } else { V5 };
        assert!(
            is_malformed(decode_err(&packet(first, &[0, 1]), version)),
            "first byte {first:#04x}"
        );
    }
    assert!(matches!(
        decode_ok(&packet(0x62, &[0, 1]), V5),
        Packet::PubRel(_)
    ));
}

#[test]
fn publish_qos_3_is_malformed() {
    assert!(is_malformed(decode_err(
        &packet(0x36, &[0, 1, b't', 0, 1]),
        V311
    )));
}

#[test]
fn dup_on_qos_0_is_malformed() {
    assert!(is_malformed(decode_err(&packet(0x38, &[0, 1, b't']), V311)));
}

#[test]
fn wildcards_in_publish_topic_are_refused() {
    assert_eq!(
        decode_err(&packet(0x30, &[0, 3, b'a', b'/', b'+']), V311),
        DecodeError::TopicNameInvalid("topic name contains a wildcard")
    );
    assert!(matches!(
        decode_err(&packet(0x30, &[0, 1, b'#', 0]), V5),
        DecodeError::TopicNameInvalid(_)
    ));
}

#[test]
fn empty_topic_is_invalid_in_v311() {
    assert!(matches!(
        decode_err(&packet(0x30, &[0, 0, b'x']), V311),
        DecodeError::TopicNameInvalid(_)
    ));
}

#[test]
fn empty_topic_in_v5_needs_a_topic_alias() {
    assert!(is_protocol(decode_err(&packet(0x30, &[0, 0, 0]), V5)));
    let Packet::Publish(publish) = decode_ok(&packet(0x30, &[0, 0, 3, 0x23, 0, 4]), V5) else {
        panic!("not a PUBLISH");
    };
    assert_eq!(publish.topic, "");
    assert_eq!(publish.properties.topic_alias, Some(4));
}

#[test]
fn invalid_utf8_and_nul_are_malformed() {
    assert!(is_malformed(decode_err(
        &packet(0x30, &[0, 2, 0xC3, 0x28]),
        V311
    )));
    assert!(is_malformed(decode_err(
        &packet(0x30, &[0, 3, b'a', 0, b'b']),
        V311
    )));
    // In the client identifier of a CONNECT, too.
    assert!(is_malformed(decode_err(
        &connect(4, 0x02, &[0, 1, 0xFF]),
        None
    )));
}

#[test]
fn string_longer_than_the_packet_is_malformed() {
    assert!(is_malformed(decode_err(&packet(0x30, &[0, 9, b't']), V311)));
}

#[test]
fn connect_reserved_flag_is_malformed() {
    assert!(is_malformed(decode_err(&connect(4, 0x03, &[0, 0]), None)));
}

#[test]
fn will_qos_or_retain_without_will_flag_is_malformed() {
    assert!(is_malformed(decode_err(&connect(4, 0x08, &[0, 0]), None)));
    assert!(is_malformed(decode_err(&connect(4, 0x20, &[0, 0]), None)));
}

#[test]
fn will_qos_3_is_malformed() {
    let will = [0, 0, 0, 1, b't', 0, 0];
    assert!(is_malformed(decode_err(&connect(4, 0x1C, &will), None)));
}

#[test]
fn will_topic_with_wildcard_is_invalid() {
    let will = [0, 0, 0, 1, b'#', 0, 0];
    assert!(matches!(
        decode_err(&connect(4, 0x04, &will), None),
        DecodeError::TopicNameInvalid(_)
    ));
}

#[test]
fn password_without_username_is_malformed_only_in_v311() {
    let rest = [0, 0, 0, 1, b'p'];
    assert!(is_malformed(decode_err(&connect(4, 0x40, &rest), None)));
    let v5_rest = [0, 0, 0, 0, 1, b'p'];
    let Packet::Connect(connect) = decode_ok(&connect(5, 0x40, &v5_rest), None) else {
        panic!("not a CONNECT");
    };
    assert_eq!(connect.password.as_deref(), Some(&b"p"[..]));
    assert_eq!(connect.username, None);
}

#[test]
fn subscribe_without_filters_is_a_protocol_error() {
    assert!(is_protocol(decode_err(&packet(0x82, &[0, 1]), V311)));
    assert!(is_protocol(decode_err(&packet(0x82, &[0, 1, 0]), V5)));
}

#[test]
fn unsubscribe_without_filters_is_a_protocol_error() {
    assert!(is_protocol(decode_err(&packet(0xA2, &[0, 1]), V311)));
}

#[test]
fn v311_subscription_options_upper_bits_are_malformed() {
    assert!(is_malformed(decode_err(
        &packet(0x82, &[0, 1, 0, 1, b'a', 0x04]),
        V311
    )));
    assert!(is_malformed(decode_err(
        &packet(0x82, &[0, 1, 0, 1, b'a', 0x03]),
        V311
    )));
}

#[test]
fn v5_subscription_option_reserved_bits_are_malformed() {
    assert!(is_malformed(decode_err(
        &packet(0x82, &[0, 1, 0, 0, 1, b'a', 0x40]),
        V5
    )));
    assert!(is_malformed(decode_err(
        &packet(0x82, &[0, 1, 0, 0, 1, b'a', 0x80]),
        V5
    )));
}

/// MQTT 5.0 section 3.8.3.1 makes Retain Handling 3 and QoS 3 protocol errors.
#[test]
fn v5_retain_handling_3_and_qos_3_are_protocol_errors() {
    assert!(is_protocol(decode_err(
        &packet(0x82, &[0, 1, 0, 0, 1, b'a', 0x30]),
        V5
    )));
    assert!(is_protocol(decode_err(
        &packet(0x82, &[0, 1, 0, 0, 1, b'a', 0x03]),
        V5
    )));
}

#[test]
fn property_not_allowed_in_the_packet_is_malformed() {
    // Session Expiry Interval belongs to CONNECT, not PUBLISH.
    assert_eq!(
        decode_err(&v5_publish_with_properties(&[0x11, 0, 0, 0, 1]), V5),
        DecodeError::Malformed("property not allowed in this packet")
    );
    // Topic Alias belongs to PUBLISH, not CONNECT.
    assert!(is_malformed(decode_err(
        &connect(5, 0x02, &[3, 0x23, 0, 1, 0, 0]),
        None
    )));
}

#[test]
fn unknown_property_is_malformed() {
    assert_eq!(
        decode_err(&v5_publish_with_properties(&[0x05, 0]), V5),
        DecodeError::Malformed("unknown property")
    );
}

#[test]
fn repeated_single_property_is_a_protocol_error() {
    assert_eq!(
        decode_err(&v5_publish_with_properties(&[0x01, 1, 0x01, 1]), V5),
        DecodeError::Protocol("property appears more than once")
    );
}

#[test]
fn repeatable_properties_may_repeat() {
    let properties = [
        0x0B, 1, 0x0B, 2, 0x26, 0, 1, b'k', 0, 0, 0x26, 0, 1, b'k', 0, 0,
    ];
    let Packet::Publish(publish) = decode_ok(&v5_publish_with_properties(&properties), V5) else {
        panic!("not a PUBLISH");
    };
    assert_eq!(publish.properties.subscription_identifiers, [1, 2]);
    assert_eq!(publish.properties.user_properties.len(), 2);
}

#[test]
fn property_length_beyond_the_packet_is_malformed() {
    assert_eq!(
        decode_err(&packet(0x30, &[0, 1, b't', 10, 0x01, 1]), V5),
        DecodeError::Malformed("property length exceeds the packet")
    );
}

#[test]
fn property_value_cut_by_property_length_is_malformed() {
    // Property length 2 covers the id and one of Message Expiry's four bytes.
    assert!(is_malformed(decode_err(
        &packet(0x30, &[0, 1, b't', 2, 0x02, 0, 0, 0, 0]),
        V5
    )));
}

#[test]
fn zero_valued_properties_are_protocol_errors() {
    assert_eq!(
        decode_err(&v5_publish_with_properties(&[0x0B, 0]), V5),
        DecodeError::Protocol("subscription identifier 0")
    );
    assert_eq!(
        decode_err(&v5_publish_with_properties(&[0x23, 0, 0]), V5),
        DecodeError::Protocol("topic alias 0")
    );
    assert_eq!(
        decode_err(&connect(5, 0x02, &[3, 0x21, 0, 0, 0, 0]), None),
        DecodeError::Protocol("receive maximum 0")
    );
    assert_eq!(
        decode_err(&connect(5, 0x02, &[5, 0x27, 0, 0, 0, 0, 0, 0]), None),
        DecodeError::Protocol("maximum packet size 0")
    );
}

#[test]
fn boolean_property_other_than_0_or_1_is_a_protocol_error() {
    assert!(is_protocol(decode_err(
        &connect(5, 0x02, &[2, 0x17, 2, 0, 0]),
        None
    )));
}

#[test]
fn packet_id_0_is_a_protocol_error() {
    assert!(is_protocol(decode_err(
        &packet(0x32, &[0, 1, b't', 0, 0]),
        V311
    )));
    assert!(is_protocol(decode_err(
        &packet(0x82, &[0, 0, 0, 1, b'a', 0]),
        V311
    )));
    assert!(is_protocol(decode_err(
        &packet(0xA2, &[0, 0, 0, 1, b'a']),
        V311
    )));
    assert!(is_protocol(decode_err(&packet(0x40, &[0, 0]), V5)));
}

#[test]
fn trailing_bytes_are_malformed() {
    assert!(is_malformed(decode_err(&packet(0xC0, &[0]), V311)));
    assert!(is_malformed(decode_err(&packet(0xD0, &[0]), V5)));
    assert!(is_malformed(decode_err(&packet(0x40, &[0, 1, 0]), V311)));
    assert!(is_malformed(decode_err(
        &packet(0x40, &[0, 1, 0, 0, 7]),
        V5
    )));
    assert!(is_malformed(decode_err(&packet(0xB0, &[0, 1, 0]), V311)));
    assert!(is_malformed(decode_err(&packet(0xE0, &[0]), V311)));
    assert!(is_malformed(decode_err(&packet(0xE0, &[0, 0, 9]), V5)));
    assert!(is_malformed(decode_err(&packet(0x20, &[0, 0, 0]), V311)));
    assert!(is_malformed(decode_err(
        &connect(4, 0x02, &[0, 0, 9]),
        None
    )));
}

#[test]
fn reserved_packet_types_are_malformed() {
    assert!(is_malformed(decode_err(&packet(0x00, &[]), V311)));
    assert!(is_malformed(decode_err(&packet(0x00, &[]), V5)));
    assert!(is_malformed(decode_err(&packet(0xF0, &[]), V311)));
}

#[test]
fn auth_exists_only_in_v5() {
    assert_eq!(
        decode_err(&packet(0xF0, &[]), V311),
        DecodeError::Malformed("AUTH does not exist in MQTT 3.1.1")
    );
    assert_eq!(
        decode_ok(&packet(0xF0, &[]), V5),
        Packet::Auth(Auth {
            reason: ReasonCode::Success,
            properties: AuthProperties::default(),
        })
    );
}

#[test]
fn reason_codes_not_valid_for_the_packet_are_malformed() {
    let invalid = DecodeError::Malformed("reason code not valid for this packet");
    assert_eq!(decode_err(&packet(0x40, &[0, 1, 0x03]), V5), invalid);
    assert_eq!(decode_err(&packet(0x62, &[0, 1, 0x10]), V5), invalid);
    assert_eq!(decode_err(&packet(0xF0, &[0x87, 0]), V5), invalid);
    assert_eq!(decode_err(&packet(0xE0, &[0x01]), V5), invalid);
    assert_eq!(decode_err(&packet(0x90, &[0, 1, 0, 0x11]), V5), invalid);
    assert_eq!(decode_err(&packet(0x20, &[0, 0x04, 0]), V5), invalid);
    assert!(is_malformed(decode_err(&packet(0x20, &[0, 6]), V311)));
    assert!(is_malformed(decode_err(&packet(0x90, &[0, 1, 0x03]), V311)));
}

#[test]
fn connack_reserved_flags_are_malformed() {
    assert!(is_malformed(decode_err(&packet(0x20, &[0x02, 0]), V311)));
}

#[test]
fn v5_ack_with_remaining_length_2_is_success_without_properties() {
    assert_eq!(
        decode_ok(&packet(0x40, &[0, 9]), V5),
        Packet::PubAck(PubAck::success(9))
    );
    assert_eq!(
        decode_ok(&packet(0x70, &[0, 9]), V5),
        Packet::PubComp(PubAck::success(9))
    );
}

#[test]
fn v5_disconnect_with_remaining_length_0_is_normal() {
    assert_eq!(
        decode_ok(&packet(0xE0, &[]), V5),
        Packet::Disconnect(Disconnect::with_reason(ReasonCode::NORMAL_DISCONNECTION))
    );
}

#[test]
fn v311_connack_codes_map_to_reasons() {
    let Packet::ConnAck(connack) = decode_ok(&packet(0x20, &[1, 5]), V311) else {
        panic!("not a CONNACK");
    };
    assert!(connack.session_present);
    assert_eq!(connack.code, ReasonCode::NotAuthorized);
}

#[test]
fn authentication_data_without_method_is_a_protocol_error() {
    let expected = DecodeError::Protocol("authentication data without an authentication method");
    assert_eq!(
        decode_err(&connect(5, 0x02, &[3, 0x16, 0, 0, 0, 0]), None),
        expected
    );
    assert_eq!(
        decode_err(&packet(0x20, &[0, 0, 3, 0x16, 0, 0]), V5),
        expected
    );
    assert_eq!(
        decode_err(&packet(0xF0, &[0x18, 3, 0x16, 0, 0]), V5),
        expected
    );
}

#[test]
fn response_topic_with_wildcard_is_a_protocol_error() {
    assert_eq!(
        decode_err(&v5_publish_with_properties(&[0x08, 0, 1, b'#']), V5),
        DecodeError::Protocol("response topic is not a valid topic name")
    );
}

#[test]
fn no_local_on_a_shared_subscription_is_a_protocol_error() {
    let mut body = vec![0, 1, 0, 0, 10];
    body.extend_from_slice(b"$share/g/t");
    body.push(0x04);
    assert_eq!(
        decode_err(&packet(0x82, &body), V5),
        DecodeError::Protocol("No Local on a shared subscription")
    );
}

#[test]
fn an_empty_topic_filter_is_malformed_in_subscribe_and_unsubscribe() {
    // SUBSCRIBE id 1: filter "" QoS 0.
    let subscribe = packet(0x82, &[0, 1, 0, 0, 0]);
    assert!(is_malformed(decode_err(&subscribe, V311)));
    let subscribe_v5 = packet(0x82, &[0, 1, 0, 0, 0, 0]);
    assert!(is_malformed(decode_err(&subscribe_v5, V5)));
    // UNSUBSCRIBE id 1: a valid filter "a", then "".
    let unsubscribe = packet(0xA2, &[0, 1, 0, 1, b'a', 0, 0]);
    assert!(is_malformed(decode_err(&unsubscribe, V311)));
    let unsubscribe_v5 = packet(0xA2, &[0, 1, 0, 0, 0]);
    assert!(is_malformed(decode_err(&unsubscribe_v5, V5)));
}
