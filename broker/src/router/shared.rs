//! Shared subscription groups (MQTT 5 section 4.8.2): each message matching
//! the group's filter goes to exactly one member, in turn.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::trie::Sub;
use super::SubscribeOutcome;

/// The members of one `$share/<name>/<filter>` group. Members keep their
/// subscription order, which is the rotation order.
#[derive(Debug)]
pub(super) struct SharedGroup<K> {
    name: Box<str>,
    /// The whole `$share/<name>/<filter>`, which identifies the group
    /// cluster-wide (the same name under another filter is another group).
    id: Arc<str>,
    members: Vec<(K, Sub)>,
    /// Where the next rotation starts looking (taken modulo the member count,
    /// so it stays valid when members leave). Atomic because routing only
    /// has `&self`, possibly from several threads at once.
    next: AtomicUsize,
}

impl<K: Eq> SharedGroup<K> {
    pub fn new(name: &str, id: &str) -> Self {
        Self {
            name: name.into(),
            id: id.into(),
            members: Vec::new(),
            next: AtomicUsize::new(0),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn id(&self) -> &Arc<str> {
        &self.id
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Adds `key` as a member, or replaces its options if it already is one.
    pub fn upsert(&mut self, key: K, sub: Sub) -> SubscribeOutcome {
        match self.members.iter_mut().find(|(member, _)| *member == key) {
            Some((_, existing)) => {
                *existing = sub;
                SubscribeOutcome::Replaced
            }
            None => {
                self.members.push((key, sub));
                SubscribeOutcome::New
            }
        }
    }

    /// Removes `key` from the group; false if it was not a member.
    pub fn remove(&mut self, key: &K) -> bool {
        match self.members.iter().position(|(member, _)| member == key) {
            Some(at) => {
                self.members.remove(at);
                true
            }
            None => false,
        }
    }

    /// Chooses the member that receives the next message among those
    /// `eligible`: the first one for which `online` holds, starting where the
    /// last choice left off. If no eligible member is online, the next
    /// eligible one in turn is chosen anyway, so the message is queued in its
    /// session rather than lost.
    ///
    /// The rotation resumes right after the chosen member, so members that
    /// stay online get equal shares even when others are offline.
    pub fn pick(
        &self,
        online: impl Fn(&K) -> bool,
        eligible: impl Fn(&K) -> bool,
    ) -> Option<&(K, Sub)> {
        let count = self.members.len();
        if count == 0 {
            return None;
        }
        let mut seen = self.next.load(Ordering::Relaxed);
        loop {
            let start = seen % count;
            let mut turn = (0..count)
                .map(|offset| (start + offset) % count)
                .filter(|&at| eligible(&self.members[at].0));
            let first = turn.next()?;
            let chosen = std::iter::once(first)
                .chain(turn)
                .find(|&at| online(&self.members[at].0))
                .unwrap_or(first);
            // Only advance from the value the choice was based on; if another
            // thread routed meanwhile, choose again from its position.
            match self.next.compare_exchange_weak(
                seen,
                chosen + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return self.members.get(chosen),
                Err(current) => seen = current,
            }
        }
    }
}
