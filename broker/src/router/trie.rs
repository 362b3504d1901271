//! The subscription trie: one node per filter level. `+` and `#` are kept apart
//! from literal levels, so matching a topic costs one hash lookup per level and
//! per live branch, and never a scan over sibling levels.

use std::hash::Hash;

use hashbrown::HashMap;

use super::shared::SharedGroup;
use super::SubscribeOutcome;
use crate::protocol::SubscriptionOptions;

/// What a subscriber asked for with one filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Sub {
    pub options: SubscriptionOptions,
    pub id: Option<u32>,
}

/// All subscriptions of one filter: ordinary ones by key, and shared groups by
/// group name. Groups are few per filter in practice, so they live in a `Vec`.
#[derive(Debug)]
pub(super) struct Subscribers<K> {
    pub plain: HashMap<K, Sub>,
    pub shared: Vec<SharedGroup<K>>,
}

impl<K> Default for Subscribers<K> {
    fn default() -> Self {
        Self {
            plain: HashMap::default(),
            shared: Vec::new(),
        }
    }
}

impl<K: Clone + Eq + Hash> Subscribers<K> {
    pub fn is_empty(&self) -> bool {
        self.plain.is_empty() && self.shared.is_empty()
    }

    /// Adds or replaces `key`'s subscription, in `group` if given.
    pub fn upsert(&mut self, group: Option<&str>, key: K, sub: Sub) -> SubscribeOutcome {
        let Some(group) = group else {
            return match self.plain.insert(key, sub) {
                Some(_) => SubscribeOutcome::Replaced,
                None => SubscribeOutcome::New,
            };
        };
        match self.shared.iter_mut().find(|g| g.name() == group) {
            Some(existing) => existing.upsert(key, sub),
            None => {
                let mut created = SharedGroup::new(group);
                let outcome = created.upsert(key, sub);
                self.shared.push(created);
                outcome
            }
        }
    }

    /// Removes `key`'s subscription (in `group` if given); false if it had none.
    pub fn remove(&mut self, group: Option<&str>, key: &K) -> bool {
        let Some(group) = group else {
            let removed = self.plain.remove(key).is_some();
            shrink_if_sparse(&mut self.plain);
            return removed;
        };
        let Some(at) = self.shared.iter().position(|g| g.name() == group) else {
            return false;
        };
        let removed = self.shared[at].remove(key);
        if self.shared[at].is_empty() {
            self.shared.swap_remove(at);
        }
        removed
    }
}

/// One level of the trie.
#[derive(Debug)]
pub(super) struct Node<K> {
    /// Children for literal levels (the empty level included).
    literal: HashMap<String, Node<K>>,
    /// Child for a `+` level.
    plus: Option<Box<Node<K>>>,
    /// Filters that end at this node (`a/b` ends at node `b`).
    exact: Subscribers<K>,
    /// Filters that end with `#` right below this node (`a/#` is kept at node
    /// `a`, `#` at the root): `#` is always last, so it needs no node of its own.
    multi: Subscribers<K>,
}

impl<K> Default for Node<K> {
    fn default() -> Self {
        Self {
            literal: HashMap::default(),
            plus: None,
            exact: Subscribers::default(),
            multi: Subscribers::default(),
        }
    }
}

impl<K: Clone + Eq + Hash> Node<K> {
    /// The subscriber set of `filter` (without any `$share/` prefix), creating
    /// the nodes on its path.
    pub fn subscribers_mut(&mut self, filter: &str) -> &mut Subscribers<K> {
        let mut node = self;
        for level in filter.split('/') {
            node = match level {
                // Validated filters have `#` only as the last level.
                "#" => return &mut node.multi,
                "+" => node.plus.get_or_insert_with(Box::default),
                _ => node.literal.entry_ref(level).or_default(),
            };
        }
        &mut node.exact
    }

    /// Runs `remove` on the subscriber set of `filter` if it exists, then
    /// drops every node on the path that was left with nothing in it, so a
    /// subscribe/unsubscribe cycle gives all its memory back.
    pub fn remove<F>(&mut self, filter: &str, remove: F) -> bool
    where
        F: FnOnce(&mut Subscribers<K>) -> bool,
    {
        self.remove_below(filter.split('/'), remove)
    }

    fn remove_below<'f, F>(&mut self, mut levels: std::str::Split<'f, char>, remove: F) -> bool
    where
        F: FnOnce(&mut Subscribers<K>) -> bool,
    {
        match levels.next() {
            None => remove(&mut self.exact),
            Some("#") => remove(&mut self.multi),
            Some("+") => {
                let Some(child) = self.plus.as_deref_mut() else {
                    return false;
                };
                let removed = child.remove_below(levels, remove);
                if child.is_empty() {
                    self.plus = None;
                }
                removed
            }
            Some(level) => {
                let Some(child) = self.literal.get_mut(level) else {
                    return false;
                };
                let removed = child.remove_below(levels, remove);
                if child.is_empty() {
                    self.literal.remove(level);
                    shrink_if_sparse(&mut self.literal);
                }
                removed
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.literal.is_empty()
            && self.plus.is_none()
            && self.exact.is_empty()
            && self.multi.is_empty()
    }

    /// Calls `visit` once for every non-empty subscriber set whose filter
    /// matches `topic` (a topic name, so no wildcards in it).
    pub fn for_each_match<'a, F>(&'a self, topic: &str, visit: &mut F)
    where
        F: FnMut(&'a Subscribers<K>),
    {
        // MQTT 5 section 4.7.2: a filter starting with a wildcard never matches
        // a topic starting with `$` (such as `$SYS/...`).
        let system = topic.starts_with('$');
        if !system && !self.multi.is_empty() {
            visit(&self.multi);
        }
        let (level, rest) = split_first(topic);
        if let Some(child) = self.literal.get(level) {
            child.walk(rest, visit);
        }
        if let (false, Some(plus)) = (system, self.plus.as_deref()) {
            plus.walk(rest, visit);
        }
    }

    /// Matching below the first level: this node matched the level before
    /// `rest` (`None` once the topic is used up).
    fn walk<'a, F>(&'a self, rest: Option<&str>, visit: &mut F)
    where
        F: FnMut(&'a Subscribers<K>),
    {
        // `a/#` matches `a` itself as well as everything below it.
        if !self.multi.is_empty() {
            visit(&self.multi);
        }
        let Some(levels) = rest else {
            if !self.exact.is_empty() {
                visit(&self.exact);
            }
            return;
        };
        let (level, rest) = split_first(levels);
        if let Some(child) = self.literal.get(level) {
            child.walk(rest, visit);
        }
        if let Some(plus) = self.plus.as_deref() {
            plus.walk(rest, visit);
        }
    }

    /// Number of nodes, this one included.
    #[cfg(test)]
    pub fn node_count(&self) -> usize {
        1 + self.literal.values().map(Node::node_count).sum::<usize>()
            + self.plus.as_deref().map_or(0, Node::node_count)
    }
}

/// Splits off the first level of a topic: `("a", Some("b/c"))` for `a/b/c`,
/// `("c", None)` for `c`.
pub(super) fn split_first(levels: &str) -> (&str, Option<&str>) {
    match levels.split_once('/') {
        Some((first, rest)) => (first, Some(rest)),
        None => (levels, None),
    }
}

/// Gives memory back once a map is mostly empty; hash maps never shrink on
/// their own, and a filter that once had many subscribers may keep few.
pub(super) fn shrink_if_sparse<K: Eq + Hash, V>(map: &mut HashMap<K, V>) {
    if map.capacity() > 16 && map.len() * 4 < map.capacity() {
        map.shrink_to_fit();
    }
}
