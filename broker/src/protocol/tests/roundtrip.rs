//! encode -> decode is the identity, for every packet type and both versions;
//! a few packets are checked byte for byte against the spec's layouts.

use bytes::BytesMut;

use super::samples::{v311_packets, v5_connect, v5_packets};
use crate::protocol::packet::*;
use crate::protocol::{decode, encode, EncodeError, ReasonCode};

/// The version argument `decode` takes for `packet` on a `version` connection.
fn decode_version(packet: &Packet, version: ProtocolVersion) -> Option<ProtocolVersion> {
    match packet {
        Packet::Connect(_) => None,
        _ => Some(version),
    }
}

fn encode_to_vec(packet: &Packet, version: ProtocolVersion) -> Vec<u8> {
    let mut buf = BytesMut::new();
    encode(packet, version, &mut buf).expect("encodable");
    buf.to_vec()
}

/// Encodes, checks every strict prefix is reported incomplete without being
/// consumed, then decodes the whole and compares.
fn assert_round_trip(packet: &Packet, version: ProtocolVersion) {
    let bytes = encode_to_vec(packet, version);
    let as_version = decode_version(packet, version);
    for split in 0..bytes.len() {
        let mut partial = BytesMut::from(&bytes[..split]);
        assert_eq!(
            decode(&mut partial, as_version, u32::MAX),
            Ok(None),
            "{} cut at {split}",
            packet.name()
        );
        assert_eq!(
            partial.len(),
            split,
            "{} consumed bytes while incomplete",
            packet.name()
        );
    }
    let mut buf = BytesMut::from(&bytes[..]);
    buf.extend_from_slice(&[0xC0, 0x00]); // a following PINGREQ must stay in the buffer
    let decoded = decode(&mut buf, as_version, u32::MAX)
        .expect("valid")
        .expect("complete");
    assert_eq!(&decoded, packet);
    assert_eq!(&buf[..], [0xC0, 0x00]);
}

#[test]
fn every_v5_packet_round_trips() {
    for packet in v5_packets() {
        assert_round_trip(&packet, ProtocolVersion::V5);
    }
}

#[test]
fn every_v311_packet_round_trips() {
    for packet in v311_packets() {
        assert_round_trip(&packet, ProtocolVersion::V311);
    }
}

#[test]
fn publish_payload_is_a_slice_of_the_input() {
    let bytes = [0x30, 0x07, 0x00, 0x03, b'a', b'/', b'b', b'h', b'i'];
    let mut buf = BytesMut::from(&bytes[..]);
    let start = buf.as_ptr() as usize;
    let Some(Packet::Publish(publish)) =
        decode(&mut buf, Some(ProtocolVersion::V311), u32::MAX).expect("valid")
    else {
        panic!("not a PUBLISH");
    };
    assert_eq!(&publish.payload[..], b"hi");
    assert_eq!(publish.payload.as_ptr() as usize, start + 7);
}

#[test]
fn v311_connect_matches_the_spec_layout() {
    let connect = Connect {
        protocol: ProtocolVersion::V311,
        clean_start: true,
        keep_alive: 10,
        client_id: "c".to_owned(),
        will: None,
        username: Some("u".to_owned()),
        password: Some(bytes::Bytes::from_static(b"p")),
        properties: ConnectProperties::default(),
    };
    let expected = [
        0x10, 19, // CONNECT, remaining length
        0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, // protocol name, level 4
        0xC2, 0x00, 0x0A, // user name + password + clean session, keep alive 10
        0x00, 0x01, b'c', 0x00, 0x01, b'u', 0x00, 0x01, b'p',
    ];
    assert_eq!(
        encode_to_vec(&Packet::Connect(Box::new(connect)), ProtocolVersion::V311),
        expected
    );
}

#[test]
fn v5_connect_has_property_length_after_keep_alive() {
    let connect = Connect {
        protocol: ProtocolVersion::V5,
        clean_start: true,
        keep_alive: 10,
        client_id: String::new(),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties {
            session_expiry_interval: Some(10),
            ..ConnectProperties::default()
        },
    };
    let expected = [
        0x10, 18, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x0A, // header
        0x05, 0x11, 0x00, 0x00, 0x00, 0x0A, // properties: session expiry 10
        0x00, 0x00, // empty client id
    ];
    assert_eq!(
        encode_to_vec(&Packet::Connect(Box::new(connect)), ProtocolVersion::V5),
        expected
    );
}

#[test]
fn publish_matches_the_spec_layout() {
    let publish = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: true,
        topic: "a/b".to_owned(),
        packet_id: Some(10),
        payload: bytes::Bytes::from_static(b"x"),
        properties: PublishProperties::default(),
    });
    assert_eq!(
        encode_to_vec(&publish, ProtocolVersion::V311),
        [0x33, 8, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x0A, b'x']
    );
    assert_eq!(
        encode_to_vec(&publish, ProtocolVersion::V5),
        [0x33, 9, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x0A, 0x00, b'x']
    );
}

#[test]
fn short_forms_of_v5_acks_and_disconnect() {
    assert_eq!(
        encode_to_vec(&Packet::PubAck(PubAck::success(1)), ProtocolVersion::V5),
        [0x40, 0x02, 0x00, 0x01]
    );
    let no_match = PubAck {
        reason: ReasonCode::NoMatchingSubscribers,
        ..PubAck::success(1)
    };
    assert_eq!(
        encode_to_vec(&Packet::PubRec(no_match), ProtocolVersion::V5),
        [0x50, 0x03, 0x00, 0x01, 0x10]
    );
    assert_eq!(
        encode_to_vec(&Packet::PubRel(PubAck::success(1)), ProtocolVersion::V5),
        [0x62, 0x02, 0x00, 0x01]
    );
    let normal = Packet::Disconnect(Disconnect::with_reason(ReasonCode::NORMAL_DISCONNECTION));
    assert_eq!(encode_to_vec(&normal, ProtocolVersion::V5), [0xE0, 0x00]);
    let busy = Packet::Disconnect(Disconnect::with_reason(ReasonCode::ServerBusy));
    assert_eq!(
        encode_to_vec(&busy, ProtocolVersion::V5),
        [0xE0, 0x01, 0x89]
    );
    assert_eq!(
        encode_to_vec(&Packet::PingReq, ProtocolVersion::V5),
        [0xC0, 0x00]
    );
}

#[test]
fn v311_encoding_maps_reason_codes() {
    let connack = Packet::ConnAck(ConnAck {
        session_present: false,
        code: ReasonCode::Banned,
        properties: ConnAckProperties {
            reason_string: Some("left out for 3.1.1".to_owned()),
            ..ConnAckProperties::default()
        },
    });
    assert_eq!(
        encode_to_vec(&connack, ProtocolVersion::V311),
        [0x20, 0x02, 0x00, 0x05]
    );
    let suback = Packet::SubAck(SubAck {
        packet_id: 1,
        reasons: vec![ReasonCode::GrantedQoS2, ReasonCode::NotAuthorized],
        properties: AckProperties::default(),
    });
    assert_eq!(
        encode_to_vec(&suback, ProtocolVersion::V311),
        [0x90, 0x04, 0x00, 0x01, 0x02, 0x80]
    );
    let unsuback = Packet::UnsubAck(UnsubAck {
        packet_id: 1,
        reasons: vec![ReasonCode::NoSubscriptionExisted],
        properties: AckProperties::default(),
    });
    assert_eq!(
        encode_to_vec(&unsuback, ProtocolVersion::V311),
        [0xB0, 0x02, 0x00, 0x01]
    );
    let puback = Packet::PubAck(PubAck {
        reason: ReasonCode::QuotaExceeded,
        ..PubAck::success(3)
    });
    assert_eq!(
        encode_to_vec(&puback, ProtocolVersion::V311),
        [0x40, 0x02, 0x00, 0x03]
    );
    let disconnect = Packet::Disconnect(Disconnect::with_reason(ReasonCode::ServerShuttingDown));
    assert_eq!(
        encode_to_vec(&disconnect, ProtocolVersion::V311),
        [0xE0, 0x00]
    );
}

#[test]
fn auth_is_refused_for_v311() {
    let auth = Packet::Auth(Auth {
        reason: ReasonCode::Success,
        properties: AuthProperties::default(),
    });
    let mut buf = BytesMut::from(&b"kept"[..]);
    assert_eq!(
        encode(&auth, ProtocolVersion::V311, &mut buf),
        Err(EncodeError::NotInV311("AUTH"))
    );
    assert_eq!(&buf[..], b"kept");
}

#[test]
fn encode_errors_append_nothing() {
    let mut long_topic = Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: "x".repeat(65_536),
        packet_id: None,
        payload: bytes::Bytes::new(),
        properties: PublishProperties::default(),
    };
    let mut buf = BytesMut::new();
    assert_eq!(
        encode(
            &Packet::Publish(long_topic.clone()),
            ProtocolVersion::V5,
            &mut buf
        ),
        Err(EncodeError::StringTooLong("topic name"))
    );
    long_topic.topic = "t".to_owned();
    long_topic.qos = QoS::AtLeastOnce;
    assert!(matches!(
        encode(
            &Packet::Publish(long_topic.clone()),
            ProtocolVersion::V5,
            &mut buf
        ),
        Err(EncodeError::Invalid(_))
    ));
    long_topic.packet_id = Some(1);
    long_topic.payload = bytes::Bytes::from(vec![0; 268_435_455]);
    assert!(matches!(
        encode(&Packet::Publish(long_topic), ProtocolVersion::V5, &mut buf),
        Err(EncodeError::PacketTooLarge(_))
    ));
    let mut connect = v5_connect();
    connect.username = None;
    assert!(matches!(
        encode(
            &Packet::Connect(Box::new(connect)),
            ProtocolVersion::V311,
            &mut buf
        ),
        Err(EncodeError::Invalid(_))
    ));
    assert!(buf.is_empty());
}

#[test]
fn several_packets_decode_one_at_a_time() {
    let mut buf = BytesMut::new();
    let packets = v5_packets();
    for packet in packets.iter().filter(|p| !matches!(p, Packet::Connect(_))) {
        encode(packet, ProtocolVersion::V5, &mut buf).expect("encodable");
    }
    for packet in packets.iter().filter(|p| !matches!(p, Packet::Connect(_))) {
        let decoded = decode(&mut buf, Some(ProtocolVersion::V5), u32::MAX).expect("valid");
        assert_eq!(decoded.as_ref(), Some(packet));
    }
    assert!(buf.is_empty());
}
