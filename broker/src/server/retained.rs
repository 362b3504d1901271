//! The node's retained messages, with the version of each topic's last set or
//! clear on a clustered node, so the nodes of a cluster converge on the newest
//! whatever order the changes reach them in.
//!
//! A clear is remembered as a tombstone (the topic's version, no message) for
//! [`TOMBSTONE_TTL`], so that a peer that was cut off while the topic was
//! cleared does not bring the old message back when it resyncs. A partition
//! longer than that can still resurrect a cleared topic.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::message::Message;
use crate::cluster::wire::{RetainedVersion, WireMessage};
use crate::router::retained::RetainedStore;

/// How long a cleared topic's version is kept.
pub const TOMBSTONE_TTL: Duration = Duration::from_secs(3600);

/// Retained messages plus, on a clustered node, their versions.
#[derive(Debug, Default)]
pub struct Retained {
    store: RetainedStore<Arc<Message>>,
    /// The version of each topic's last set or clear; topics set before any
    /// version was known (restored from disk) have none and lose to any.
    versions: HashMap<String, RetainedVersion>,
    /// Cleared topics by age, with the version that cleared them.
    tombstones: VecDeque<(Instant, String, RetainedVersion)>,
    /// Every topic cleared in the last [`TOMBSTONE_TTL`], versioned or not,
    /// by age: a linked cluster that gains interest in one is told, so a
    /// copy it kept from before is cleared too.
    cleared: VecDeque<(Instant, String)>,
}

impl Retained {
    /// Sets `message` for its topic, or clears the topic when the payload is
    /// empty, unless `version` is older than the topic's own. `None` is an
    /// unversioned change (a single node): always applied. Returns whether
    /// it was applied.
    pub fn apply(
        &mut self,
        message: Arc<Message>,
        version: Option<RetainedVersion>,
        now: Instant,
    ) -> bool {
        self.expire_tombstones(now);
        let topic = message.topic.clone();
        if let Some(version) = version {
            if self
                .versions
                .get(&topic)
                .is_some_and(|current| *current >= version)
            {
                return false;
            }
            if message.payload.is_empty() {
                self.tombstones
                    .push_back((now, topic.clone(), version.clone()));
            }
            self.versions.insert(topic.clone(), version);
        }
        if message.payload.is_empty() {
            self.store.remove(&topic);
            self.cleared.push_back((now, topic));
        } else {
            self.store.insert(&topic, message);
        }
        true
    }

    /// A message read back from the store at start-up (no version).
    pub fn restore(&mut self, message: Arc<Message>) {
        let topic = message.topic.clone();
        self.store.insert(&topic, message);
    }

    pub fn matching(&self, filter: &str, out: &mut Vec<Arc<Message>>) {
        self.store.matching(filter, out);
    }

    /// Topics matching `filter` that were cleared recently and hold no
    /// retained message now.
    pub fn cleared_matching(&self, filter: &str, now: Instant) -> Vec<String> {
        let mut out: Vec<String> = self
            .cleared
            .iter()
            .filter(|(at, topic)| {
                now.duration_since(*at) < TOMBSTONE_TTL
                    && crate::protocol::topic::matches(filter, topic)
                    && !self.store.contains(topic)
            })
            .map(|(_, topic)| topic.clone())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Topics with a retained message.
    pub fn count(&self) -> usize {
        self.store.len()
    }

    /// Every live retained message (not `$` topics, not expired) and every
    /// recent clearing, with versions, for a peer met for the first time.
    /// Messages without a version go with `unversioned`, the weakest version.
    pub fn for_peer(
        &self,
        now: Instant,
        unversioned: &RetainedVersion,
    ) -> Vec<(WireMessage, RetainedVersion)> {
        let mut live = Vec::new();
        self.store.matching("#", &mut live);
        let mut out: Vec<_> = live
            .iter()
            .filter(|m| !m.is_expired(now) && !m.topic.starts_with('$'))
            .map(|m| {
                let version = self.versions.get(&m.topic).unwrap_or(unversioned).clone();
                (m.to_wire(now), version)
            })
            .collect();
        for (_, topic, version) in &self.tombstones {
            if self.versions.get(topic) == Some(version) {
                let cleared = WireMessage {
                    topic: topic.clone(),
                    retain: true,
                    ..WireMessage::default()
                };
                out.push((cleared, version.clone()));
            }
        }
        out
    }

    fn expire_tombstones(&mut self, now: Instant) {
        while self
            .cleared
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) >= TOMBSTONE_TTL)
        {
            self.cleared.pop_front();
        }
        while let Some((at, topic, version)) = self.tombstones.front() {
            if now.duration_since(*at) < TOMBSTONE_TTL {
                return;
            }
            if self.versions.get(topic) == Some(version) {
                self.versions.remove(topic);
            }
            self.tombstones.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::protocol::QoS;

    fn message(topic: &str, payload: &'static [u8]) -> Arc<Message> {
        let wire = WireMessage {
            topic: topic.into(),
            payload: Bytes::from_static(payload),
            qos: 1,
            retain: true,
            ..WireMessage::default()
        };
        let message = Message::from_wire(wire, Instant::now()).expect("valid");
        assert_eq!(message.qos, QoS::AtLeastOnce);
        Arc::new(message)
    }

    fn version(stamp: u64, node: &str) -> Option<RetainedVersion> {
        Some(RetainedVersion {
            stamp,
            node: node.into(),
        })
    }

    fn payload_of(retained: &Retained, topic: &str) -> Option<Bytes> {
        let mut out = Vec::new();
        retained.matching(topic, &mut out);
        out.first().map(|m| m.payload.clone())
    }

    #[test]
    fn the_newest_set_or_clear_wins_in_any_order() {
        let now = Instant::now();
        let set = (message("t", b"old"), version(1, "a"));
        let clear = (message("t", b""), version(2, "b"));
        let mut forward = Retained::default();
        forward.apply(set.0.clone(), set.1.clone(), now);
        forward.apply(clear.0.clone(), clear.1.clone(), now);
        let mut backward = Retained::default();
        backward.apply(clear.0, clear.1, now);
        assert!(
            !backward.apply(set.0, set.1, now),
            "the older set is refused"
        );
        assert_eq!(payload_of(&forward, "t"), None);
        assert_eq!(payload_of(&backward, "t"), None);
    }

    #[test]
    fn a_clearing_travels_to_peers_until_its_tombstone_expires() {
        let now = Instant::now();
        let mut retained = Retained::default();
        retained.apply(message("gone", b"x"), version(1, "a"), now);
        retained.apply(message("gone", b""), version(2, "a"), now);
        retained.apply(message("kept", b"y"), version(3, "a"), now);
        let weakest = RetainedVersion {
            stamp: 0,
            node: "a".into(),
        };
        let sent = retained.for_peer(now, &weakest);
        let cleared: Vec<_> = sent
            .iter()
            .filter(|(m, _)| m.payload.is_empty())
            .map(|(m, v)| (m.topic.as_str(), v.stamp))
            .collect();
        assert_eq!(cleared, vec![("gone", 2)]);
        assert_eq!(sent.len(), 2);

        let later = now + TOMBSTONE_TTL + Duration::from_secs(1);
        retained.apply(message("other", b"z"), version(4, "a"), later);
        assert_eq!(
            retained.for_peer(later, &weakest).len(),
            2,
            "tombstone gone"
        );
    }

    #[test]
    fn unversioned_changes_always_apply_and_restored_messages_lose_to_any_version() {
        let now = Instant::now();
        let mut retained = Retained::default();
        retained.restore(message("t", b"from disk"));
        assert!(retained.apply(message("t", b"peer"), version(1, "b"), now));
        assert_eq!(
            payload_of(&retained, "t"),
            Some(Bytes::from_static(b"peer"))
        );
        assert!(retained.apply(message("u", b"local"), None, now));
        assert_eq!(retained.count(), 2);
    }
}
