//! Sample packets of every type, for round trips and the seed corpus: one set
//! using every MQTT 5 property, one restricted to what MQTT 3.1.1 can carry.

use bytes::Bytes;

use crate::protocol::packet::*;
use crate::protocol::ReasonCode;

fn user_properties() -> Vec<UserProperty> {
    vec![
        ("region".to_owned(), "eu-west".to_owned()),
        ("region".to_owned(), "a second value".to_owned()),
    ]
}

fn ack_properties() -> AckProperties {
    AckProperties {
        reason_string: Some("because".to_owned()),
        user_properties: user_properties(),
    }
}

/// A CONNECT using every MQTT 5 field and property.
pub(super) fn v5_connect() -> Connect {
    Connect {
        protocol: ProtocolVersion::V5,
        clean_start: true,
        keep_alive: 60,
        client_id: "client-1".to_owned(),
        will: Some(LastWill {
            topic: "clients/client-1/status".to_owned(),
            payload: Bytes::from_static(b"offline"),
            qos: QoS::ExactlyOnce,
            retain: true,
            properties: WillProperties {
                will_delay_interval: Some(30),
                payload_format_indicator: Some(1),
                message_expiry_interval: Some(3600),
                content_type: Some("text/plain".to_owned()),
                response_topic: Some("clients/replies".to_owned()),
                correlation_data: Some(Bytes::from_static(&[1, 2, 3])),
                user_properties: user_properties(),
            },
        }),
        username: Some("alice".to_owned()),
        password: Some(Bytes::from_static(b"s3cret")),
        properties: ConnectProperties {
            session_expiry_interval: Some(86_400),
            receive_maximum: Some(100),
            maximum_packet_size: Some(1 << 20),
            topic_alias_maximum: Some(10),
            request_response_information: Some(1),
            request_problem_information: Some(0),
            user_properties: user_properties(),
            authentication_method: Some("SCRAM-SHA-256".to_owned()),
            authentication_data: Some(Bytes::from_static(b"client-first")),
        },
    }
}

/// Every packet type, with every MQTT 5 property set.
pub(super) fn v5_packets() -> Vec<Packet> {
    let mut password_only = v5_connect();
    password_only.username = None;
    password_only.will = None;
    password_only.properties = ConnectProperties::default();
    vec![
        Packet::Connect(Box::new(v5_connect())),
        Packet::Connect(Box::new(password_only)),
        Packet::ConnAck(ConnAck {
            session_present: true,
            code: ReasonCode::Success,
            properties: ConnAckProperties {
                session_expiry_interval: Some(120),
                receive_maximum: Some(20),
                maximum_qos: Some(1),
                retain_available: Some(0),
                maximum_packet_size: Some(65_536),
                assigned_client_identifier: Some("auto-1234".to_owned()),
                topic_alias_maximum: Some(5),
                reason_string: Some("welcome".to_owned()),
                user_properties: user_properties(),
                wildcard_subscription_available: Some(1),
                subscription_identifiers_available: Some(1),
                shared_subscription_available: Some(0),
                server_keep_alive: Some(30),
                response_information: Some("replies/".to_owned()),
                server_reference: Some("other.example:1883".to_owned()),
                authentication_method: Some("SCRAM-SHA-256".to_owned()),
                authentication_data: Some(Bytes::from_static(b"server-final")),
            },
        }),
        Packet::ConnAck(ConnAck {
            session_present: false,
            code: ReasonCode::NotAuthorized,
            properties: ConnAckProperties::default(),
        }),
        Packet::Publish(Publish {
            dup: true,
            qos: QoS::AtLeastOnce,
            retain: true,
            topic: "sensors/temperature".to_owned(),
            packet_id: Some(7),
            payload: Bytes::from_static(b"21.5"),
            properties: PublishProperties {
                payload_format_indicator: Some(1),
                message_expiry_interval: Some(60),
                topic_alias: Some(3),
                response_topic: Some("sensors/replies".to_owned()),
                correlation_data: Some(Bytes::from_static(b"req-9")),
                user_properties: user_properties(),
                subscription_identifiers: vec![1, 268_435_455],
                content_type: Some("text/plain".to_owned()),
            },
        }),
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: String::new(),
            packet_id: None,
            payload: Bytes::new(),
            properties: PublishProperties {
                topic_alias: Some(3),
                ..PublishProperties::default()
            },
        }),
        Packet::PubAck(PubAck::success(1)),
        Packet::PubAck(PubAck {
            packet_id: 2,
            reason: ReasonCode::NoMatchingSubscribers,
            properties: AckProperties::default(),
        }),
        Packet::PubRec(PubAck {
            packet_id: 3,
            reason: ReasonCode::QuotaExceeded,
            properties: ack_properties(),
        }),
        Packet::PubRel(PubAck {
            packet_id: 4,
            reason: ReasonCode::PacketIdentifierNotFound,
            properties: ack_properties(),
        }),
        Packet::PubComp(PubAck {
            packet_id: 65_535,
            reason: ReasonCode::Success,
            properties: ack_properties(),
        }),
        Packet::Subscribe(Subscribe {
            packet_id: 10,
            filters: vec![
                SubscribeFilter {
                    filter: "sport/#".to_owned(),
                    options: SubscriptionOptions {
                        qos: QoS::ExactlyOnce,
                        no_local: true,
                        retain_as_published: true,
                        retain_handling: RetainHandling::DoNotSend,
                    },
                },
                SubscribeFilter {
                    filter: "$share/group/+/scores".to_owned(),
                    options: SubscriptionOptions {
                        qos: QoS::AtMostOnce,
                        no_local: false,
                        retain_as_published: false,
                        retain_handling: RetainHandling::SendIfNew,
                    },
                },
            ],
            properties: SubscribeProperties {
                subscription_identifier: Some(42),
                user_properties: user_properties(),
            },
        }),
        Packet::SubAck(SubAck {
            packet_id: 10,
            reasons: vec![
                ReasonCode::GrantedQoS2,
                ReasonCode::GRANTED_QOS0,
                ReasonCode::SharedSubscriptionsNotSupported,
            ],
            properties: ack_properties(),
        }),
        Packet::Unsubscribe(Unsubscribe {
            packet_id: 11,
            filters: vec!["sport/#".to_owned(), "news".to_owned()],
            user_properties: user_properties(),
        }),
        Packet::UnsubAck(UnsubAck {
            packet_id: 11,
            reasons: vec![ReasonCode::Success, ReasonCode::NoSubscriptionExisted],
            properties: ack_properties(),
        }),
        Packet::PingReq,
        Packet::PingResp,
        Packet::Disconnect(Disconnect::with_reason(ReasonCode::NORMAL_DISCONNECTION)),
        Packet::Disconnect(Disconnect::with_reason(
            ReasonCode::DisconnectWithWillMessage,
        )),
        Packet::Disconnect(Disconnect {
            reason: ReasonCode::ServerMoved,
            properties: DisconnectProperties {
                session_expiry_interval: Some(0),
                reason_string: Some("moving".to_owned()),
                user_properties: user_properties(),
                server_reference: Some("other.example:1883".to_owned()),
            },
        }),
        Packet::Auth(Auth {
            reason: ReasonCode::Success,
            properties: AuthProperties::default(),
        }),
        Packet::Auth(Auth {
            reason: ReasonCode::ContinueAuthentication,
            properties: AuthProperties {
                authentication_method: Some("SCRAM-SHA-256".to_owned()),
                authentication_data: Some(Bytes::from_static(b"client-final")),
                reason_string: Some("step 2".to_owned()),
                user_properties: user_properties(),
            },
        }),
    ]
}

/// Every packet type MQTT 3.1.1 has, holding only what 3.1.1 can carry.
pub(super) fn v311_packets() -> Vec<Packet> {
    let connect = Connect {
        protocol: ProtocolVersion::V311,
        clean_start: false,
        keep_alive: 10,
        client_id: "client-2".to_owned(),
        will: Some(LastWill {
            topic: "status".to_owned(),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: WillProperties::default(),
        }),
        username: Some("bob".to_owned()),
        password: Some(Bytes::from_static(b"hunter2")),
        properties: ConnectProperties::default(),
    };
    let bare_connect = Connect {
        clean_start: true,
        client_id: String::new(),
        will: None,
        username: None,
        password: None,
        ..connect.clone()
    };
    let ack = |id| PubAck::success(id);
    vec![
        Packet::Connect(Box::new(connect)),
        Packet::Connect(Box::new(bare_connect)),
        Packet::ConnAck(ConnAck {
            session_present: true,
            code: ReasonCode::Success,
            properties: ConnAckProperties::default(),
        }),
        Packet::ConnAck(ConnAck {
            session_present: false,
            code: ReasonCode::BadUserNameOrPassword,
            properties: ConnAckProperties::default(),
        }),
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::ExactlyOnce,
            retain: true,
            topic: "a/b".to_owned(),
            packet_id: Some(9),
            payload: Bytes::from_static(b"hello"),
            properties: PublishProperties::default(),
        }),
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: "/".to_owned(),
            packet_id: None,
            payload: Bytes::new(),
            properties: PublishProperties::default(),
        }),
        Packet::PubAck(ack(1)),
        Packet::PubRec(ack(2)),
        Packet::PubRel(ack(3)),
        Packet::PubComp(ack(4)),
        Packet::Subscribe(Subscribe {
            packet_id: 5,
            filters: vec![
                SubscribeFilter {
                    filter: "a/+".to_owned(),
                    options: SubscriptionOptions {
                        qos: QoS::AtLeastOnce,
                        ..SubscriptionOptions::default()
                    },
                },
                SubscribeFilter {
                    filter: "#".to_owned(),
                    options: SubscriptionOptions::default(),
                },
            ],
            properties: SubscribeProperties::default(),
        }),
        Packet::SubAck(SubAck {
            packet_id: 5,
            reasons: vec![ReasonCode::GrantedQoS1, ReasonCode::UnspecifiedError],
            properties: AckProperties::default(),
        }),
        Packet::Unsubscribe(Unsubscribe {
            packet_id: 6,
            filters: vec!["a/+".to_owned()],
            user_properties: Vec::new(),
        }),
        Packet::UnsubAck(UnsubAck {
            packet_id: 6,
            reasons: Vec::new(),
            properties: AckProperties::default(),
        }),
        Packet::PingReq,
        Packet::PingResp,
        Packet::Disconnect(Disconnect::with_reason(ReasonCode::NORMAL_DISCONNECTION)),
    ]
}
