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

    /// Adds or replaces `key`'s subscription, in `group` if given
    /// (`full_filter` is the `$share/...` text that names the group).
    pub fn upsert(
        &mut self,
        group: Option<&str>,
        full_filter: &str,
        key: K,
        sub: Sub,
    ) -> SubscribeOutcome {
        let Some(group) = group else {
            return match self.plain.insert(key, sub) {
                Some(_) => SubscribeOutcome::Replaced,
                None => SubscribeOutcome::New,
            };
        };
        match self.shared.iter_mut().find(|g| g.name() == group) {
            Some(existing) => existing.upsert(key, sub),
            None => {
                let mut created = SharedGroup::new(group, full_filter);
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

/// Which subscriber set of its node a filter is kept in.
#[derive(Debug, Clone, Copy)]
enum Slot {
    Exact,
    Multi,
}

/// Splits a (validated) filter into the path of levels leading to its node,
/// `None` for the root, and the subscriber set there that holds it.
fn locate(filter: &str) -> (Option<&str>, Slot) {
    if filter == "#" {
        return (None, Slot::Multi);
    }
    match filter.strip_suffix("/#") {
        Some(path) => (Some(path), Slot::Multi),
        None => (Some(filter), Slot::Exact),
    }
}

fn levels(path: Option<&str>) -> impl Iterator<Item = &str> {
    path.into_iter().flat_map(|path| path.split('/'))
}

impl<K> Node<K> {
    fn child(&self, level: &str) -> Option<&Node<K>> {
        match level {
            "+" => self.plus.as_deref(),
            _ => self.literal.get(level),
        }
    }

    fn child_mut(&mut self, level: &str) -> Option<&mut Node<K>> {
        match level {
            "+" => self.plus.as_deref_mut(),
            _ => self.literal.get_mut(level),
        }
    }

    fn slot_mut(&mut self, slot: Slot) -> &mut Subscribers<K> {
        match slot {
            Slot::Exact => &mut self.exact,
            Slot::Multi => &mut self.multi,
        }
    }

    fn child_count(&self) -> usize {
        self.literal.len() + usize::from(self.plus.is_some())
    }

    /// Moves this node's children into `into`, leaving it a leaf.
    fn move_children(&mut self, into: &mut Vec<Node<K>>) {
        into.extend(self.literal.drain().map(|(_, child)| child));
        if let Some(plus) = self.plus.take() {
            into.push(*plus);
        }
    }
}

/// Dropping nested maps the default way recurses once per level, and filters
/// can be thousands of levels deep: descendants are dropped from a flat list.
impl<K> Drop for Node<K> {
    fn drop(&mut self) {
        let mut below = Vec::new();
        self.move_children(&mut below);
        while let Some(mut node) = below.pop() {
            node.move_children(&mut below);
        }
    }
}

impl<K: Clone + Eq + Hash> Node<K> {
    /// The subscriber set of `filter` (without any `$share/` prefix), creating
    /// the nodes on its path.
    pub fn subscribers_mut(&mut self, filter: &str) -> &mut Subscribers<K> {
        let (path, slot) = locate(filter);
        let mut node = self;
        for level in levels(path) {
            node = match level {
                "+" => node.plus.get_or_insert_with(Box::default),
                _ => node.literal.entry_ref(level).or_default(),
            };
        }
        node.slot_mut(slot)
    }

    /// Runs `remove` on the subscriber set of `filter` if it exists, then
    /// drops the nodes on its path that were left with nothing in them, so a
    /// subscribe/unsubscribe cycle gives all its memory back. Returns what
    /// `remove` returned (false if the set did not exist).
    pub fn remove<F>(&mut self, filter: &str, remove: F) -> bool
    where
        F: FnOnce(&mut Subscribers<K>) -> bool,
    {
        let (path, slot) = locate(filter);
        let mut node = &mut *self;
        for level in levels(path) {
            match node.child_mut(level) {
                Some(child) => node = child,
                None => return false,
            }
        }
        if !remove(node.slot_mut(slot)) {
            return false;
        }
        self.prune(path);
        true
    }

    /// Detaches the longest tail of `path` whose nodes hold nothing but the
    /// rest of the path. Iterative, like everything that follows a filter.
    fn prune(&mut self, path: Option<&str>) {
        let Some(path) = path else {
            return;
        };
        // Depth (0 = the first level) where the empty tail starts, if any.
        let mut cut = None;
        let mut node: &Node<K> = self;
        let mut walk = path.split('/').enumerate().peekable();
        while let Some((depth, level)) = walk.next() {
            let Some(child) = node.child(level) else {
                return;
            };
            let leads_on = walk.peek().is_some();
            let holds_only_path = child.exact.is_empty()
                && child.multi.is_empty()
                && child.child_count() == usize::from(leads_on);
            cut = match (holds_only_path, cut) {
                (true, None) => Some(depth),
                (true, start) => start,
                (false, _) => None,
            };
            node = child;
        }
        let Some(cut) = cut else {
            return;
        };
        let mut parent = self;
        let mut walk = path.split('/');
        for level in walk.by_ref().take(cut) {
            match parent.child_mut(level) {
                Some(child) => parent = child,
                None => return,
            }
        }
        match walk.next() {
            Some("+") => parent.plus = None,
            Some(level) => {
                parent.literal.remove(level);
                shrink_if_sparse(&mut parent.literal);
            }
            None => {}
        }
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
    ///
    /// Recurses only where a node has both a literal and a `+` child for the
    /// next level, each such fork needing its own subscription; a single path
    /// is followed in the loop, however deep.
    fn walk<'a, F>(&'a self, mut rest: Option<&str>, visit: &mut F)
    where
        F: FnMut(&'a Subscribers<K>),
    {
        let mut node = self;
        loop {
            // `a/#` matches `a` itself as well as everything below it.
            if !node.multi.is_empty() {
                visit(&node.multi);
            }
            let Some(levels) = rest else {
                if !node.exact.is_empty() {
                    visit(&node.exact);
                }
                return;
            };
            let (level, below) = split_first(levels);
            node = match (node.literal.get(level), node.plus.as_deref()) {
                (Some(literal), Some(plus)) => {
                    plus.walk(below, visit);
                    literal
                }
                (Some(next), None) | (None, Some(next)) => next,
                (None, None) => return,
            };
            rest = below;
        }
    }

    /// Number of nodes, this one included.
    #[cfg(test)]
    pub fn node_count(&self) -> usize {
        let mut count = 0;
        let mut pending = vec![self];
        while let Some(node) = pending.pop() {
            count += 1;
            pending.extend(node.literal.values());
            pending.extend(node.plus.as_deref());
        }
        count
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
