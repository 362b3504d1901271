//! Who gets a message: the subscription trie, shared subscription groups, and the
//! retained-message store. Pure data structures, generic over the subscriber key,
//! so they are tested without a server; the server keeps them behind a lock that is
//! never held across an `.await`.

pub mod retained;

use std::hash::Hash;

use crate::protocol::{QoS, SubscriptionOptions};

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
}

/// The subscription table of one broker node.
#[derive(Debug)]
pub struct Router<K> {
    _key: std::marker::PhantomData<K>,
}

impl<K: Clone + Eq + Hash> Default for Router<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Clone + Eq + Hash> Router<K> {
    pub fn new() -> Self {
        todo!("router")
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
        let _ = (key, filter, options, subscription_id);
        todo!("router")
    }

    /// Removes `key`'s subscription to `filter`; false if it had none.
    pub fn unsubscribe(&mut self, key: &K, filter: &str) -> bool {
        let _ = (key, filter);
        todo!("router")
    }

    /// Appends one [`Delivery`] per subscriber that should receive a message
    /// published to `topic` by `publisher` (whose no-local subscriptions are
    /// skipped). For each matching shared group, one member is chosen, in turn,
    /// preferring members for which `online` is true.
    pub fn route(
        &self,
        topic: &str,
        publisher: Option<&K>,
        online: impl Fn(&K) -> bool,
        out: &mut Vec<(K, Delivery)>,
    ) {
        let _ = (topic, publisher, online, out);
        todo!("router")
    }

    /// Number of subscriptions (shared ones included).
    pub fn len(&self) -> usize {
        todo!("router")
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
