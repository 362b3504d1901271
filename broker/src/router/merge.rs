//! Folding a subscriber's overlapping non-shared subscriptions into one
//! delivery per message (MQTT 5 section 3.3.4).

use std::hash::Hash;

use hashbrown::HashMap;

use super::trie::Sub;
use super::Delivery;

/// Most key comparisons a filter's subscribers may cost when merged by linear
/// scans over the earlier deliveries; past it a map of those is built. Scans
/// win for the usual handful of subscribers (and need no allocation), the map
/// when two big fan-outs overlap.
const SCAN_BUDGET: usize = 1024;

impl From<&Sub> for Delivery {
    fn from(sub: &Sub) -> Self {
        Delivery {
            qos: sub.options.qos,
            retain_as_published: sub.options.retain_as_published,
            subscription_ids: match sub.id {
                Some(id) => vec![id],
                None => Vec::new(),
            },
            shared: None,
        }
    }
}

/// Appends deliveries for the non-shared subscriptions of one message, one
/// per key, however many of its subscriptions match.
///
/// Merging a key's matching subscriptions gives the highest QoS, every
/// subscription identifier, and retain-as-published if any of them asked for
/// it: the spec leaves that last choice open, and keeping the flag is the
/// only way not to drop information a subscription explicitly requested.
pub(super) struct Merger<'o, K> {
    out: &'o mut Vec<(K, Delivery)>,
    /// Where this message's deliveries start in `out`.
    base: usize,
    /// Position in `out` of every key in `out[base..indexed]`, built only
    /// once scanning would exceed [`SCAN_BUDGET`].
    index: Option<HashMap<K, usize>>,
    indexed: usize,
}

impl<'o, K: Clone + Eq + Hash> Merger<'o, K> {
    pub fn new(out: &'o mut Vec<(K, Delivery)>) -> Self {
        let base = out.len();
        Self {
            out,
            base,
            index: None,
            indexed: base,
        }
    }

    /// Adds the subscriptions of one matching filter, skipping the
    /// publisher's own no-local ones and keys not `allowed`.
    pub fn add(
        &mut self,
        subs: &HashMap<K, Sub>,
        publisher: Option<&K>,
        allowed: impl Fn(&K) -> bool,
    ) {
        if subs.is_empty() {
            return;
        }
        // Keys within one filter are unique, so only deliveries from earlier
        // filters need to be searched.
        let earlier = self.out.len();
        let scan_cost = (earlier - self.base).saturating_mul(subs.len());
        if self.index.is_some() || scan_cost > SCAN_BUDGET {
            self.index_up_to(earlier);
        }
        for (key, sub) in subs {
            if (sub.options.no_local && publisher == Some(key)) || !allowed(key) {
                continue;
            }
            match self.find(key, earlier) {
                Some(at) => merge(&mut self.out[at].1, sub),
                None => self.out.push((key.clone(), Delivery::from(sub))),
            }
        }
    }

    /// Puts every delivery's subscription identifiers in order, without
    /// repeats (one subscription ID can be given to several filters).
    pub fn finish(self) {
        for (_, delivery) in &mut self.out[self.base..] {
            if delivery.subscription_ids.len() > 1 {
                delivery.subscription_ids.sort_unstable();
                delivery.subscription_ids.dedup();
            }
        }
    }

    fn find(&self, key: &K, earlier: usize) -> Option<usize> {
        if earlier == self.base {
            return None;
        }
        match &self.index {
            Some(index) => index.get(key).copied(),
            None => self.out[self.base..earlier]
                .iter()
                .position(|(existing, _)| existing == key)
                .map(|offset| self.base + offset),
        }
    }

    fn index_up_to(&mut self, end: usize) {
        let index = self.index.get_or_insert_with(HashMap::default);
        for (at, (key, _)) in self.out[..end].iter().enumerate().skip(self.indexed) {
            index.insert(key.clone(), at);
        }
        self.indexed = end;
    }
}

fn merge(delivery: &mut Delivery, sub: &Sub) {
    delivery.qos = delivery.qos.max(sub.options.qos);
    delivery.retain_as_published |= sub.options.retain_as_published;
    if let Some(id) = sub.id {
        delivery.subscription_ids.push(id);
    }
}
