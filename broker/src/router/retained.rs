//! Retained messages, indexed by topic level so a wildcard subscribe finds them
//! without scanning every topic.

/// Retained values by topic name.
#[derive(Debug)]
pub struct RetainedStore<V> {
    _value: std::marker::PhantomData<V>,
}

impl<V: Clone> Default for RetainedStore<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V: Clone> RetainedStore<V> {
    pub fn new() -> Self {
        todo!("router")
    }

    /// Stores `value` as the retained message of `topic`, replacing any other.
    pub fn insert(&mut self, topic: &str, value: V) {
        let _ = (topic, value);
        todo!("router")
    }

    /// Clears `topic`'s retained message; returns it if there was one.
    pub fn remove(&mut self, topic: &str) -> Option<V> {
        let _ = topic;
        todo!("router")
    }

    /// Appends every retained value whose topic matches `filter` (no `$share/`).
    pub fn matching(&self, filter: &str, out: &mut Vec<V>) {
        let _ = (filter, out);
        todo!("router")
    }

    pub fn len(&self) -> usize {
        todo!("router")
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
