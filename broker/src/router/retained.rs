//! Retained messages, indexed by topic level so a wildcard subscribe finds them
//! without scanning every topic.

use hashbrown::HashMap;

use super::trie::shrink_if_sparse;

/// Retained values by topic name.
#[derive(Debug)]
pub struct RetainedStore<V> {
    root: Level<V>,
    len: usize,
}

/// One topic level; `value` is the retained message of the topic ending here.
#[derive(Debug)]
struct Level<V> {
    children: HashMap<String, Level<V>>,
    value: Option<V>,
}

impl<V> Default for Level<V> {
    fn default() -> Self {
        Self {
            children: HashMap::default(),
            value: None,
        }
    }
}

/// Dropping nested maps the default way recurses once per level, and topics
/// can be thousands of levels deep: descendants are dropped from a flat list.
impl<V> Drop for Level<V> {
    fn drop(&mut self) {
        let mut below: Vec<Level<V>> = self.children.drain().map(|(_, child)| child).collect();
        while let Some(mut level) = below.pop() {
            below.extend(level.children.drain().map(|(_, child)| child));
        }
    }
}

impl<V> Level<V> {
    /// Children a wildcard at this level may match: at the root, topics
    /// starting with `$` are excluded (MQTT 5 section 4.7.2).
    fn wildcard_children(&self, at_root: bool) -> impl Iterator<Item = &Level<V>> {
        self.children
            .iter()
            .filter(move |(name, _)| !(at_root && name.starts_with('$')))
            .map(|(_, child)| child)
    }

    #[cfg(test)]
    fn node_count(&self) -> usize {
        let mut count = 0;
        let mut pending = vec![self];
        while let Some(level) = pending.pop() {
            count += 1;
            pending.extend(level.children.values());
        }
        count
    }
}

impl<V: Clone> Default for RetainedStore<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V: Clone> RetainedStore<V> {
    pub fn new() -> Self {
        Self {
            root: Level::default(),
            len: 0,
        }
    }

    /// Stores `value` as the retained message of `topic`, replacing any other.
    pub fn insert(&mut self, topic: &str, value: V) {
        let mut level = &mut self.root;
        for name in topic.split('/') {
            level = level.children.entry_ref(name).or_default();
        }
        if level.value.replace(value).is_none() {
            self.len += 1;
        }
    }

    /// Clears `topic`'s retained message; returns it if there was one.
    pub fn remove(&mut self, topic: &str) -> Option<V> {
        let mut level = &mut self.root;
        for name in topic.split('/') {
            level = level.children.get_mut(name)?;
        }
        let removed = level.value.take()?;
        self.len -= 1;
        self.prune(topic);
        Some(removed)
    }

    /// Detaches the longest tail of `topic`'s path whose levels hold nothing
    /// but the rest of the path (iterative: topics can be very deep).
    fn prune(&mut self, topic: &str) {
        // Depth (0 = the first level) where the empty tail starts, if any.
        let mut cut = None;
        let mut level = &self.root;
        let mut walk = topic.split('/').enumerate().peekable();
        while let Some((depth, name)) = walk.next() {
            let Some(child) = level.children.get(name) else {
                return;
            };
            let leads_on = walk.peek().is_some();
            let holds_only_path =
                child.value.is_none() && child.children.len() == usize::from(leads_on);
            cut = match (holds_only_path, cut) {
                (true, None) => Some(depth),
                (true, start) => start,
                (false, _) => None,
            };
            level = child;
        }
        let Some(cut) = cut else {
            return;
        };
        let mut parent = &mut self.root;
        let mut walk = topic.split('/');
        for name in walk.by_ref().take(cut) {
            match parent.children.get_mut(name) {
                Some(child) => parent = child,
                None => return,
            }
        }
        if let Some(name) = walk.next() {
            parent.children.remove(name);
            shrink_if_sparse(&mut parent.children);
        }
    }

    /// Appends every retained value whose topic matches `filter` (no `$share/`).
    ///
    /// Only the branches the filter can reach are visited: a literal level is
    /// one lookup, `+` visits each child, `#` the whole subtree.
    pub fn matching(&self, filter: &str, out: &mut Vec<V>) {
        let levels: Vec<&str> = filter.split('/').collect();
        // Explicit stack rather than recursion: topics can be thousands of
        // levels deep.
        let mut pending: Vec<(&Level<V>, usize)> = vec![(&self.root, 0)];
        while let Some((level, depth)) = pending.pop() {
            let at_root = depth == 0;
            match levels.get(depth).copied() {
                None => out.extend(level.value.iter().cloned()),
                Some("#") => {
                    // `a/#` matches `a` itself; the root has no value.
                    out.extend(level.value.iter().cloned());
                    let mut subtree: Vec<&Level<V>> = level.wildcard_children(at_root).collect();
                    while let Some(below) = subtree.pop() {
                        out.extend(below.value.iter().cloned());
                        subtree.extend(below.children.values());
                    }
                }
                Some("+") => {
                    pending.extend(level.wildcard_children(at_root).map(|c| (c, depth + 1)));
                }
                Some(name) => {
                    if let Some(child) = level.children.get(name) {
                        pending.push((child, depth + 1));
                    }
                }
            }
        }
    }

    /// Whether `topic` (a topic name, no wildcards) has a retained value.
    pub fn contains(&self, topic: &str) -> bool {
        let mut level = &self.root;
        for name in topic.split('/') {
            match level.children.get(name) {
                Some(child) => level = child,
                None => return false,
            }
        }
        level.value.is_some()
    }

    /// Number of topics with a retained message.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::RetainedStore;

    fn store(topics: &[&str]) -> RetainedStore<String> {
        let mut store = RetainedStore::new();
        for topic in topics {
            store.insert(topic, (*topic).to_owned());
        }
        store
    }

    fn matching(store: &RetainedStore<String>, filter: &str) -> Vec<String> {
        let mut out = Vec::new();
        store.matching(filter, &mut out);
        out.sort();
        out
    }

    const TOPICS: [&str; 9] = [
        "sport",
        "sport/tennis",
        "sport/tennis/player1",
        "sport/golf",
        "sport/",
        "/finance",
        "finance",
        "$SYS/load",
        "$SYS",
    ];

    #[test]
    fn insert_replaces_and_counts_topics() {
        let mut store = RetainedStore::new();
        assert!(store.is_empty());
        store.insert("a/b", 1);
        store.insert("a/b", 2);
        store.insert("a", 3);
        assert_eq!(store.len(), 2);
        let mut out = Vec::new();
        store.matching("a/b", &mut out);
        assert_eq!(out, vec![2]);
    }

    #[test]
    fn literal_filters_find_only_their_topic() {
        let store = store(&TOPICS);
        assert_eq!(matching(&store, "sport/tennis"), vec!["sport/tennis"]);
        assert_eq!(matching(&store, "sport/"), vec!["sport/"]);
        assert_eq!(matching(&store, "/finance"), vec!["/finance"]);
        assert!(matching(&store, "sport/cricket").is_empty());
        assert!(matching(&store, "sport/tennis/player1/x").is_empty());
    }

    #[test]
    fn plus_matches_one_level() {
        let store = store(&TOPICS);
        assert_eq!(
            matching(&store, "sport/+"),
            vec!["sport/", "sport/golf", "sport/tennis"]
        );
        assert_eq!(
            matching(&store, "+/+"),
            vec!["/finance", "sport/", "sport/golf", "sport/tennis"]
        );
        assert_eq!(matching(&store, "+"), vec!["finance", "sport"]);
        assert_eq!(matching(&store, "+/tennis/+"), vec!["sport/tennis/player1"]);
    }

    #[test]
    fn hash_matches_the_parent_and_everything_below() {
        let store = store(&TOPICS);
        assert_eq!(
            matching(&store, "sport/#"),
            vec![
                "sport",
                "sport/",
                "sport/golf",
                "sport/tennis",
                "sport/tennis/player1"
            ]
        );
        assert_eq!(
            matching(&store, "sport/tennis/#"),
            vec!["sport/tennis", "sport/tennis/player1"]
        );
        assert_eq!(matching(&store, "+/#").len(), 7);
    }

    #[test]
    fn leading_wildcards_skip_dollar_topics() {
        let store = store(&TOPICS);
        let all = matching(&store, "#");
        assert_eq!(all.len(), 7);
        assert!(all.iter().all(|topic| !topic.starts_with('$')));
        assert!(matching(&store, "+/load").is_empty());
        assert_eq!(matching(&store, "$SYS/#"), vec!["$SYS", "$SYS/load"]);
        assert_eq!(matching(&store, "$SYS/+"), vec!["$SYS/load"]);
    }

    #[test]
    fn remove_returns_the_value_and_prunes_levels() {
        let mut store = store(&["a/b/c", "a"]);
        let nodes = store.root.node_count();
        assert_eq!(store.remove("a/b"), None);
        assert_eq!(store.remove("a/b/c/d"), None);
        assert_eq!(store.root.node_count(), nodes);
        assert_eq!(store.remove("a/b/c").as_deref(), Some("a/b/c"));
        assert_eq!(store.remove("a/b/c"), None);
        // Root and `a` are left; `a` still holds a value.
        assert_eq!(store.root.node_count(), 2);
        assert_eq!(matching(&store, "#"), vec!["a"]);
        assert_eq!(store.remove("a").as_deref(), Some("a"));
        assert!(store.is_empty());
        assert_eq!(store.root.node_count(), 1);
    }

    #[test]
    fn many_inserts_and_removes_leave_the_store_empty() {
        let mut store = RetainedStore::new();
        for n in 0..2_000u32 {
            let topic = format!("devices/{}/state/{n}", n % 13);
            store.insert(&topic, n);
            store.insert("devices", n);
            assert_eq!(store.remove(&topic), Some(n));
            assert_eq!(store.remove("devices"), Some(n));
        }
        assert!(store.is_empty());
        assert_eq!(store.root.node_count(), 1);
    }

    #[test]
    fn very_deep_topics_do_not_exhaust_the_stack() {
        let deep = vec!["a"; 20_000].join("/");
        let mut store = RetainedStore::new();
        store.insert(&deep, 1);
        store.insert("a", 2);
        let mut out = Vec::new();
        store.matching("a/#", &mut out);
        out.sort_unstable();
        assert_eq!(out, vec![1, 2]);
        assert_eq!(store.remove(&deep), Some(1));
        assert_eq!(store.root.node_count(), 2);
        store.insert(&deep, 1);
        // Dropping the deep chain must not recurse per level either.
        drop(store);
    }
}
