//! Retained messages, indexed by topic level so a wildcard subscribe finds them
//! without scanning every topic.

use hashbrown::HashMap;

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

impl<V> Level<V> {
    fn is_empty(&self) -> bool {
        self.value.is_none() && self.children.is_empty()
    }

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
        1 + self.children.values().map(Level::node_count).sum::<usize>()
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
        let removed = remove_below(&mut self.root, topic.split('/'));
        if removed.is_some() {
            self.len -= 1;
        }
        removed
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

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Takes the value at the end of `names` and drops the levels left empty.
fn remove_below<V>(level: &mut Level<V>, mut names: std::str::Split<'_, char>) -> Option<V> {
    let Some(name) = names.next() else {
        return level.value.take();
    };
    let child = level.children.get_mut(name)?;
    let removed = remove_below(child, names);
    if child.is_empty() {
        level.children.remove(name);
        if level.children.capacity() > 16 && level.children.len() * 4 < level.children.capacity() {
            level.children.shrink_to_fit();
        }
    }
    removed
}
