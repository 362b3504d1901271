//! A published message inside the broker, shared by every session it goes to.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::cluster::wire::WireMessage;
use crate::protocol::{LastWill, Publish, PublishProperties, QoS};
use crate::session::Queued;
use crate::store::StoredMessage;

/// An accepted PUBLISH, immutable once routed. Topic aliases and subscription
/// identifiers are per delivery and are not kept here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// Properties passed through to subscribers unchanged, except the expiry
    /// interval, which is recomputed from `expires_at` at each delivery.
    pub properties: PublishProperties,
    pub expires_at: Option<Instant>,
}

impl Message {
    /// Takes a client's PUBLISH (topic already resolved from any alias).
    pub fn from_publish(publish: Publish, now: Instant) -> Message {
        let mut properties = publish.properties;
        properties.topic_alias = None;
        properties.subscription_identifiers = Vec::new();
        let expires_at = properties
            .message_expiry_interval
            .map(|secs| now + Duration::from_secs(u64::from(secs)));
        Message {
            topic: publish.topic,
            payload: publish.payload,
            qos: publish.qos,
            retain: publish.retain,
            properties,
            expires_at,
        }
    }

    /// A client's will, published as it asked.
    pub fn from_will(will: LastWill, now: Instant) -> Message {
        let p = will.properties;
        let publish = Publish {
            dup: false,
            qos: will.qos,
            retain: will.retain,
            topic: will.topic,
            packet_id: None,
            payload: will.payload,
            properties: PublishProperties {
                payload_format_indicator: p.payload_format_indicator,
                message_expiry_interval: p.message_expiry_interval,
                content_type: p.content_type,
                response_topic: p.response_topic,
                correlation_data: p.correlation_data,
                user_properties: p.user_properties,
                ..PublishProperties::default()
            },
        };
        Message::from_publish(publish, now)
    }

    /// Whether the message expiry interval has run out.
    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// Seconds left before expiry, rounded up, for the forwarded expiry interval.
    pub fn remaining_expiry(&self, now: Instant) -> Option<u32> {
        self.expires_at.map(|at| {
            let left = at.saturating_duration_since(now);
            let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            u32::try_from(secs).unwrap_or(u32::MAX)
        })
    }

    /// The durable form, with expiry as wall-clock time.
    pub fn to_stored(&self, now: Instant) -> StoredMessage {
        let expires_at_unix_ms = self.expires_at.map(|at| {
            let left = at.saturating_duration_since(now);
            unix_ms(SystemTime::now() + left)
        });
        let p = &self.properties;
        StoredMessage {
            topic: self.topic.clone(),
            payload: self.payload.to_vec(),
            qos: self.qos as u8,
            retain: self.retain,
            expires_at_unix_ms,
            payload_format_indicator: p.payload_format_indicator,
            content_type: p.content_type.clone(),
            response_topic: p.response_topic.clone(),
            correlation_data: p.correlation_data.as_ref().map(|d| d.to_vec()),
            user_properties: p.user_properties.clone(),
        }
    }

    /// Back from the durable form; `None` when it has expired meanwhile or is corrupt.
    pub fn from_stored(stored: StoredMessage, now: Instant) -> Option<Message> {
        let expires_at = match stored.expires_at_unix_ms {
            None => None,
            Some(at_ms) => {
                let left_ms = at_ms.checked_sub(unix_ms(SystemTime::now()))?;
                Some(now + Duration::from_millis(left_ms))
            }
        };
        Some(Message {
            topic: stored.topic,
            payload: Bytes::from(stored.payload),
            qos: QoS::from_bits(stored.qos)?,
            retain: stored.retain,
            properties: PublishProperties {
                payload_format_indicator: stored.payload_format_indicator,
                content_type: stored.content_type,
                response_topic: stored.response_topic,
                correlation_data: stored.correlation_data.map(Bytes::from),
                user_properties: stored.user_properties,
                ..PublishProperties::default()
            },
            expires_at,
        })
    }
}

impl Message {
    /// The form that crosses to a peer node, expiry as time left.
    pub fn to_wire(&self, now: Instant) -> WireMessage {
        let p = &self.properties;
        WireMessage {
            topic: self.topic.clone(),
            payload: self.payload.clone(),
            qos: self.qos as u8,
            retain: self.retain,
            expiry_ms: self.expires_at.map(|at| {
                u64::try_from(at.saturating_duration_since(now).as_millis()).unwrap_or(u64::MAX)
            }),
            payload_format_indicator: p.payload_format_indicator,
            content_type: p.content_type.clone(),
            response_topic: p.response_topic.clone(),
            correlation_data: p.correlation_data.clone(),
            user_properties: p.user_properties.clone(),
        }
    }

    /// A message a peer forwarded; `None` if its QoS is not one (a peer bug).
    pub fn from_wire(wire: WireMessage, now: Instant) -> Option<Message> {
        let qos = QoS::from_bits(wire.qos)?;
        let expires_at = wire.expiry_ms.map(|ms| now + Duration::from_millis(ms));
        Some(Message {
            topic: wire.topic,
            payload: wire.payload,
            qos,
            retain: wire.retain,
            properties: PublishProperties {
                payload_format_indicator: wire.payload_format_indicator,
                message_expiry_interval: wire
                    .expiry_ms
                    .map(|ms| u32::try_from(ms.div_ceil(1000)).unwrap_or(u32::MAX)),
                content_type: wire.content_type,
                response_topic: wire.response_topic,
                correlation_data: wire.correlation_data,
                user_properties: wire.user_properties,
                ..PublishProperties::default()
            },
            expires_at,
        })
    }
}

/// Milliseconds since the Unix epoch (0 for a clock before 1970).
pub fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// One message on its way to one session: the shared message plus what this
/// subscriber's matching subscriptions decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub message: Arc<Message>,
    /// min(published QoS, subscription QoS).
    pub qos: QoS,
    /// The RETAIN flag as this subscriber sees it.
    pub retain: bool,
    pub subscription_ids: Vec<u32>,
}

impl Queued for Outgoing {
    fn qos(&self) -> QoS {
        self.qos
    }

    fn is_expired(&self, now: Instant) -> bool {
        self.message.is_expired(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_form_round_trips_and_keeps_expiry() {
        let now = Instant::now();
        let message = Message {
            topic: "a/b".into(),
            payload: Bytes::from_static(b"hello"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: PublishProperties {
                content_type: Some("text/plain".into()),
                user_properties: vec![("k".into(), "v".into())],
                message_expiry_interval: Some(60),
                ..PublishProperties::default()
            },
            expires_at: Some(now + Duration::from_secs(60)),
        };
        let back = Message::from_stored(message.to_stored(now), now).expect("not expired");
        assert_eq!(back.topic, message.topic);
        assert_eq!(back.payload, message.payload);
        assert_eq!(
            back.properties.content_type,
            message.properties.content_type
        );
        assert_eq!(
            back.properties.user_properties,
            message.properties.user_properties
        );
        let left = back.remaining_expiry(now).expect("has expiry");
        assert!((58..=60).contains(&left), "{left}");
    }

    #[test]
    fn wire_form_round_trips_with_time_left() {
        let now = Instant::now();
        let message = Message {
            topic: "a/b".into(),
            payload: Bytes::from_static(b"hello"),
            qos: QoS::ExactlyOnce,
            retain: true,
            properties: PublishProperties {
                payload_format_indicator: Some(1),
                content_type: Some("text/plain".into()),
                response_topic: Some("reply".into()),
                correlation_data: Some(Bytes::from_static(b"42")),
                user_properties: vec![("k".into(), "v".into())],
                message_expiry_interval: Some(60),
                ..PublishProperties::default()
            },
            expires_at: Some(now + Duration::from_secs(60)),
        };
        let later = now + Duration::from_secs(10);
        let back = Message::from_wire(message.to_wire(now), later).expect("valid");
        assert_eq!(back.expires_at, message.expires_at);
        assert_eq!(back.properties.message_expiry_interval, Some(60));
        assert_eq!(back.payload, message.payload);
        assert_eq!(back.qos, message.qos);
        assert!(back.retain);
        assert_eq!(
            back.properties.correlation_data,
            message.properties.correlation_data
        );
        assert_eq!(
            back.properties.user_properties,
            message.properties.user_properties
        );
    }

    #[test]
    fn expired_stored_message_is_dropped_on_load() {
        let now = Instant::now();
        let mut stored = Message {
            topic: "t".into(),
            payload: Bytes::new(),
            qos: QoS::AtMostOnce,
            retain: true,
            properties: PublishProperties::default(),
            expires_at: None,
        }
        .to_stored(now);
        stored.expires_at_unix_ms = Some(1);
        assert!(Message::from_stored(stored, now).is_none());
    }
}
