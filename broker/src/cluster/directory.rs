//! Which node holds each client's session, cluster-wide.
//!
//! Every node announces the sessions it holds ([`Op::Claim`](super::wire::Op),
//! and `Release` when one ends) on its op stream, so each node knows where a
//! client id lives without asking: a CONNECT asks the one node that holds the
//! session, and none when nobody does.
//!
//! Claims are ordered by a Lamport stamp and, for equal stamps, the node name,
//! so every node decides a race the same way: when two nodes take the same
//! client id at once, the claim that orders last wins everywhere, and the
//! other node tells its connection 0x8E. A node's clock moves past every stamp
//! it sees, so a connection made after another has been seen claims later and
//! wins. A session restored from disk at start-up claims with stamp 0, the
//! weakest: if the client moved while the node was down, the peer's claim
//! wins and the stale copy goes.

use std::collections::HashMap;
use std::sync::Arc;

/// A node's claim to a client's session.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Claim {
    pub stamp: u64,
    pub node: Arc<str>,
}

/// What a peer's claim means for this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// Recorded; this node does not hold the session.
    Recorded,
    /// It beats this node's own claim: give the session up (0x8E).
    Supersedes,
    /// This node's own claim (or a peer's newer one) stands; ignored.
    Stale,
}

/// The clock and the latest claim per client id.
#[derive(Debug)]
pub struct Directory {
    this_node: Arc<str>,
    clock: u64,
    owners: HashMap<String, Claim>,
}

impl Directory {
    pub fn new(this_node: &str) -> Directory {
        Directory {
            this_node: Arc::from(this_node),
            clock: 0,
            owners: HashMap::new(),
        }
    }

    /// The clock has seen `stamp`.
    pub fn observe(&mut self, stamp: u64) {
        self.clock = self.clock.max(stamp);
    }

    /// The current clock, for a takeover request.
    pub fn now(&self) -> u64 {
        self.clock
    }

    /// Moves the clock on: a stamp newer than any seen.
    pub fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// This node takes `client_id`'s session now: a claim newer than any seen.
    pub fn claim(&mut self, client_id: &str) -> Claim {
        let stamp = self.tick();
        self.claim_at(client_id, stamp)
    }

    /// This node holds `client_id`'s session restored from disk: the weakest
    /// claim, which any peer's claim beats.
    pub fn claim_restored(&mut self, client_id: &str) -> Claim {
        self.claim_at(client_id, 0)
    }

    fn claim_at(&mut self, client_id: &str, stamp: u64) -> Claim {
        let claim = Claim {
            stamp,
            node: self.this_node.clone(),
        };
        self.owners.insert(client_id.to_owned(), claim.clone());
        claim
    }

    /// This node's session for `client_id`, claimed with `stamp`, is gone.
    /// Returns the claim if it was still the current one, to announce the
    /// release; a newer claim (a new session here, or a peer's) stays.
    pub fn release(&mut self, client_id: &str, stamp: u64) -> Option<Claim> {
        match self.owners.get(client_id) {
            Some(claim) if claim.node == self.this_node && claim.stamp == stamp => {
                self.owners.remove(client_id)
            }
            _ => None,
        }
    }

    /// A peer claims `client_id`.
    pub fn peer_claims(&mut self, client_id: &str, claim: Claim) -> ClaimOutcome {
        self.observe(claim.stamp);
        match self.owners.get(client_id) {
            Some(current) if *current >= claim => ClaimOutcome::Stale,
            current => {
                let ours = current.is_some_and(|c| c.node == self.this_node);
                self.owners.insert(client_id.to_owned(), claim);
                if ours {
                    ClaimOutcome::Supersedes
                } else {
                    ClaimOutcome::Recorded
                }
            }
        }
    }

    /// A peer released its claim `claim` to `client_id`; a newer claim stays.
    pub fn peer_releases(&mut self, client_id: &str, claim: &Claim) {
        if self.owners.get(client_id) == Some(claim) {
            self.owners.remove(client_id);
        }
    }

    /// The peer holding `client_id`'s session, if another node does.
    pub fn holder(&self, client_id: &str) -> Option<Arc<str>> {
        self.owners
            .get(client_id)
            .filter(|claim| claim.node != self.this_node)
            .map(|claim| claim.node.clone())
    }

    /// Forgets every claim of `node` (it restarted or is gone).
    /// Returns the keys it held.
    pub fn forget_node(&mut self, node: &str) -> Vec<String> {
        let mut forgotten = Vec::new();
        self.owners.retain(|key, claim| {
            let keep = &*claim.node != node;
            if !keep {
                forgotten.push(key.clone());
            }
            keep
        });
        forgotten
    }

    /// This node's own claims, for a peer's full resync.
    pub fn own_claims(&self) -> Vec<(String, u64)> {
        self.owners
            .iter()
            .filter(|(_, claim)| claim.node == self.this_node)
            .map(|(client_id, claim)| (client_id.clone(), claim.stamp))
            .collect()
    }

    /// Client ids with a known holder, this node's included.
    pub fn len(&self) -> usize {
        self.owners.len()
    }

    pub fn is_empty(&self) -> bool {
        self.owners.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(node: &str, stamp: u64) -> Claim {
        Claim {
            stamp,
            node: Arc::from(node),
        }
    }

    #[test]
    fn a_session_held_elsewhere_has_a_holder_and_ours_does_not() {
        let mut dir = Directory::new("a");
        dir.claim("mine");
        assert_eq!(
            dir.peer_claims("theirs", claim("b", 1)),
            ClaimOutcome::Recorded
        );
        assert_eq!(dir.holder("theirs").as_deref(), Some("b"));
        assert_eq!(dir.holder("mine"), None);
        assert_eq!(dir.holder("nobody"), None);
    }

    #[test]
    fn simultaneous_claims_are_decided_the_same_way_on_both_nodes() {
        let mut a = Directory::new("a");
        let mut b = Directory::new("b");
        let on_a = a.claim("c");
        let on_b = b.claim("c");
        assert_eq!(on_a.stamp, on_b.stamp, "a true race: equal stamps");
        let a_hears = a.peer_claims("c", on_b.clone());
        let b_hears = b.peer_claims("c", on_a.clone());
        // "b" orders after "a": b wins on both nodes.
        assert_eq!(a_hears, ClaimOutcome::Supersedes);
        assert_eq!(b_hears, ClaimOutcome::Stale);
        assert_eq!(a.holder("c").as_deref(), Some("b"));
        assert_eq!(b.holder("c"), None);
    }

    #[test]
    fn a_connection_after_a_seen_claim_wins() {
        let mut a = Directory::new("a");
        let mut z = Directory::new("z");
        let old = z.claim("c");
        assert_eq!(a.peer_claims("c", old.clone()), ClaimOutcome::Recorded);
        let new = a.claim("c");
        assert!(new > old, "the clock moved past the seen stamp");
        assert_eq!(z.peer_claims("c", new), ClaimOutcome::Supersedes);
    }

    #[test]
    fn a_restored_session_loses_to_any_peer_claim() {
        let mut a = Directory::new("z");
        a.claim_restored("c");
        assert_eq!(
            a.peer_claims("c", claim("b", 0)),
            ClaimOutcome::Stale,
            "name breaks ties"
        );
        let mut a = Directory::new("a");
        a.claim_restored("c");
        assert_eq!(a.peer_claims("c", claim("b", 1)), ClaimOutcome::Supersedes);
    }

    #[test]
    fn a_release_removes_only_the_claim_it_names() {
        let mut a = Directory::new("a");
        a.peer_claims("c", claim("b", 3));
        a.peer_releases("c", &claim("b", 2));
        assert_eq!(
            a.holder("c").as_deref(),
            Some("b"),
            "an older release is ignored"
        );
        a.peer_releases("c", &claim("b", 3));
        assert_eq!(a.holder("c"), None);
        let old = a.claim("d");
        let mine = a.claim("d");
        assert_eq!(
            a.release("d", old.stamp),
            None,
            "a newer claim of ours stays"
        );
        assert_eq!(a.release("d", mine.stamp), Some(mine.clone()));
        assert_eq!(a.release("d", mine.stamp), None);
    }

    #[test]
    fn forgetting_a_node_drops_its_claims_only() {
        let mut a = Directory::new("a");
        a.claim("mine");
        a.peer_claims("x", claim("b", 1));
        a.peer_claims("y", claim("c", 1));
        a.forget_node("b");
        assert_eq!(a.holder("x"), None);
        assert_eq!(a.holder("y").as_deref(), Some("c"));
        assert_eq!(a.own_claims(), vec![("mine".to_owned(), 1)]);
        assert_eq!(a.len(), 2);
    }
}
