//! Who gets a message: the subscription trie, shared subscription groups, and the
//! retained-message store. Pure data structures, generic over the subscriber key,
//! so they are tested without a server; the server keeps them behind a lock that is
//! never held across an `.await`.

mod merge;
pub mod retained;
mod shared;
#[cfg(test)]
mod tests;
mod trie;

use std::hash::Hash;
use std::sync::Arc;

use crate::protocol::{QoS, SubscriptionOptions};
use merge::Merger;
use trie::{Node, Sub};

/// Whether a subscribe created a subscription or replaced one with the same filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeOutcome {
    New,
    Replaced,
}

/// What one subscriber should receive for one published message, after all its
/// matching subscriptions are merged (MQTT 5 section 3.3.4: one copy, with the
/// highest QoS and every matching subscription identifier).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub qos: QoS,
    pub retain_as_published: bool,
    pub subscription_ids: Vec<u32>,
    /// The shared group (`$share/<group>/<filter>`) this delivery was chosen
    /// for; `None` for ordinary subscriptions.
    pub shared: Option<Arc<str>>,
}

/// Which subscriptions a routing pass may deliver to. A cluster node routes
/// a message from a peer only to its own sessions, to ordinary subscribers
/// if the sender said so, and to the shared groups the sender chose it for.
pub trait Scope<K> {
    /// Whether `key` may receive anything in this pass.
    fn allows(&self, key: &K) -> bool;
    /// Whether ordinary (non-shared) subscriptions are served.
    fn plain(&self) -> bool;
    /// Whether the shared group `id` (`$share/<group>/<filter>`) is served.
    fn group(&self, id: &str) -> bool;
}

/// Every subscriber: routing a message published on this node.
#[derive(Debug, Clone, Copy)]
pub struct Everyone;

impl<K> Scope<K> for Everyone {
    fn allows(&self, _: &K) -> bool {
        true
    }
    fn plain(&self) -> bool {
        true
    }
    fn group(&self, _: &str) -> bool {
        true
    }
}

/// The subscription table of one broker node.
///
/// A key that receives a message both through a shared group and through its
/// own ordinary subscription gets two deliveries: MQTT 5 section 4.8.2 says
/// shared and non-shared subscriptions are delivered independently.
#[derive(Debug)]
pub struct Router<K> {
    root: Node<K>,
    /// Subscriptions, shared memberships included.
    len: usize,
}

impl<K: Clone + Eq + Hash> Default for Router<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Clone + Eq + Hash> Router<K> {
    pub fn new() -> Self {
        Self {
            root: Node::default(),
            len: 0,
        }
    }

    /// Adds or replaces `key`'s subscription to `filter` (already validated; may
    /// be `$share/<group>/<filter>`).
    pub fn subscribe(
        &mut self,
        key: K,
        filter: &str,
        options: SubscriptionOptions,
        subscription_id: Option<u32>,
    ) -> SubscribeOutcome {
        let (group, inner) = split_share(filter);
        let sub = Sub {
            options,
            id: subscription_id,
        };
        let outcome = self
            .root
            .subscribers_mut(inner)
            .upsert(group, filter, key, sub);
        if outcome == SubscribeOutcome::New {
            self.len += 1;
        }
        outcome
    }

    /// Removes `key`'s subscription to `filter`; false if it had none.
    pub fn unsubscribe(&mut self, key: &K, filter: &str) -> bool {
        let (group, filter) = split_share(filter);
        let removed = self.root.remove(filter, |subs| subs.remove(group, key));
        if removed {
            self.len -= 1;
        }
        removed
    }

    /// Appends one [`Delivery`] per subscriber that should receive a message
    /// published to `topic` by `publisher` (whose no-local subscriptions are
    /// skipped). For each matching shared group, one member is chosen, in turn,
    /// preferring members for which `online` is true.
    ///
    /// Allocates nothing beyond growing `out` and the subscription identifier
    /// lists of the deliveries (except when two or more large fan-outs
    /// overlap, where merging per key uses a temporary index).
    pub fn route(
        &self,
        topic: &str,
        publisher: Option<&K>,
        online: impl Fn(&K) -> bool,
        out: &mut Vec<(K, Delivery)>,
    ) {
        self.route_within(topic, publisher, online, &Everyone, out);
    }

    /// [`Router::route`], limited to what `scope` allows.
    pub fn route_within(
        &self,
        topic: &str,
        publisher: Option<&K>,
        online: impl Fn(&K) -> bool,
        scope: &impl Scope<K>,
        out: &mut Vec<(K, Delivery)>,
    ) {
        let mut any_shared = false;
        if scope.plain() {
            let mut merger = Merger::new(out);
            self.root.for_each_match(topic, &mut |subs| {
                merger.add(&subs.plain, publisher, |key| scope.allows(key));
                any_shared |= !subs.shared.is_empty();
            });
            merger.finish();
        } else {
            any_shared = true;
        }
        // Shared deliveries are never merged, so they are appended after the
        // merged ones in a second walk, only taken when a group matched.
        if any_shared {
            self.root.for_each_match(topic, &mut |subs| {
                for group in subs.shared.iter().filter(|g| scope.group(g.id())) {
                    if let Some((key, sub)) = group.pick(&online, |key| scope.allows(key)) {
                        let mut delivery = Delivery::from(sub);
                        delivery.shared = Some(group.id().clone());
                        out.push((key.clone(), delivery));
                    }
                }
            });
        }
    }

    /// Number of subscriptions (shared ones included).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Trie nodes in use, the root included (1 when there are no subscriptions).
    #[cfg(test)]
    fn node_count(&self) -> usize {
        self.root.node_count()
    }
}

/// Splits `$share/<group>/<filter>` into its group and filter; any other
/// filter has no group.
fn split_share(filter: &str) -> (Option<&str>, &str) {
    match filter
        .strip_prefix("$share/")
        .and_then(|shared| shared.split_once('/'))
    {
        Some((group, inner)) => (Some(group), inner),
        None => (None, filter),
    }
}
