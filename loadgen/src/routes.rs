//! The barrier between subscribing and measuring: every subscriber must have
//! received a probe from every publisher whose topic its filter matches.
//!
//! On one broker a SUBACK already means the route exists. Across a cluster it
//! does not: the subscribers' node advertises their filters to the publishers'
//! node asynchronously, and until that lands, messages published there reach
//! nobody. Probing each route end to end, instead of waiting a fixed time,
//! starts the clock only once every route carries messages, and turns a cluster
//! that never forwards into an error rather than a run that measures nothing.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use bytes::Bytes;
use strait_broker::protocol::topic::matches;
use strait_broker::protocol::{Packet, PubAck, Publish, PublishProperties, QoS};
use tokio::time::{timeout_at, Instant};

use crate::client::{Client, ClientError};

/// How long a round of probes waits for arrivals before the missing ones are sent again.
const ROUND: Duration = Duration::from_millis(100);

/// Why the routes of a run never all carried a probe.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(
        "{missing} of {routes} publisher-to-subscriber routes delivered nothing within {waited:?} \
         (subscribers received no probe; for a cluster: the nodes never forwarded)"
    )]
    NoDelivery {
        missing: usize,
        routes: usize,
        waited: Duration,
    },
}

/// A probe: QoS 0 with an empty payload, too short to hold a send stamp, so
/// the measuring loops can tell probes from load and never count them.
pub fn probe(topic: &str) -> Packet {
    qos0(topic, Bytes::new())
}

/// A plain QoS 0 PUBLISH of `payload` on `topic`.
pub fn qos0(topic: &str, payload: Bytes) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: topic.to_owned(),
        packet_id: None,
        payload,
        properties: PublishProperties::default(),
    })
}

/// For each subscriber filter, the indices of the publisher topics it matches.
pub fn expected_routes(topics: &[String], filters: &[String]) -> Vec<HashSet<usize>> {
    filters
        .iter()
        .map(|filter| {
            topics
                .iter()
                .enumerate()
                .filter(|(_, topic)| matches(filter, topic))
                .map(|(i, _)| i)
                .collect()
        })
        .collect()
}

/// Publishes probes (publisher `i` on `topics[i]`) until subscriber `j`, subscribed
/// to `filters[j]`, has received one on every topic its filter matches, or
/// `limit` passes. Probes are sent again each round, only on topics still missing.
pub async fn await_routes(
    publishers: &mut [Client],
    topics: &[String],
    subscribers: &mut [Client],
    filters: &[String],
    limit: Duration,
) -> Result<(), RouteError> {
    let mut missing = expected_routes(topics, filters);
    let routes: usize = missing.iter().map(HashSet::len).sum();
    let deadline = Instant::now() + limit;
    loop {
        let wanted: BTreeSet<usize> = missing.iter().flatten().copied().collect();
        if wanted.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(RouteError::NoDelivery {
                missing: missing.iter().map(HashSet::len).sum(),
                routes,
                waited: limit,
            });
        }
        for (publisher, topic) in publishers
            .iter_mut()
            .zip(topics)
            .enumerate()
            .filter_map(|(i, pair)| wanted.contains(&i).then_some(pair))
        {
            publisher.send(&probe(topic)).await?;
        }
        let round_end = (Instant::now() + ROUND).min(deadline);
        for (subscriber, missing) in subscribers.iter_mut().zip(&mut missing) {
            while !missing.is_empty() {
                let Ok(packet) = timeout_at(round_end, subscriber.receive()).await else {
                    break;
                };
                match packet? {
                    Packet::Publish(publish) => {
                        // A broker may deliver the QoS 0 probe at the subscription's
                        // QoS 1; left unacknowledged, it would upset later acks.
                        if let Some(id) = publish.packet_id {
                            subscriber
                                .send(&Packet::PubAck(PubAck::success(id)))
                                .await?;
                        }
                        if let Some(i) = topics.iter().position(|t| *t == publish.topic) {
                            missing.remove(&i);
                        }
                    }
                    other => {
                        return Err(ClientError::Unexpected {
                            expected: "PUBLISH",
                            got: other.name(),
                        }
                        .into())
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::read_stamp;
    use crate::scenario::{Load, Scenario, Topology};

    fn routes(topology: Topology) -> Vec<HashSet<usize>> {
        let layout = Scenario {
            topology,
            qos: QoS::AtMostOnce,
            payload_size: 64,
            load: Load::Max,
        }
        .layout("run");
        expected_routes(&layout.publishers, &layout.subscribers)
    }

    #[test]
    fn each_pair_routes_only_its_own_topic() {
        let set = |i: usize| HashSet::from([i]);
        assert_eq!(routes(Topology::Pairs(3)), [set(0), set(1), set(2)]);
    }

    #[test]
    fn the_fan_in_subscriber_expects_every_publisher() {
        assert_eq!(routes(Topology::FanIn(3)), [HashSet::from([0, 1, 2])]);
    }

    #[test]
    fn every_fan_out_subscriber_expects_the_one_publisher() {
        assert_eq!(
            routes(Topology::FanOut(2)),
            [HashSet::from([0]), HashSet::from([0])]
        );
    }

    #[test]
    fn a_probe_carries_no_send_stamp() {
        let Packet::Publish(publish) = probe("run/pair/0") else {
            panic!("a probe is a PUBLISH");
        };
        assert_eq!(publish.topic, "run/pair/0");
        assert_eq!(publish.qos, QoS::AtMostOnce);
        assert_eq!(read_stamp(&publish.payload), None);
    }
}
