//! Status conditions: computed from what the reconcile saw, merged into the
//! previous list so that a transition time moves only when a status flips.
//!
//! The list is keyed by type. `Ready` is the summary `kubectl wait
//! --for=condition=Ready` looks at; `Available`, `Progressing` and `Degraded`
//! are independent; `ReconciliationPaused` is present only while paused.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// Condition types.
pub mod types {
    pub const READY: &str = "Ready";
    pub const AVAILABLE: &str = "Available";
    pub const PROGRESSING: &str = "Progressing";
    pub const DEGRADED: &str = "Degraded";
    pub const PAUSED: &str = "ReconciliationPaused";
}

/// CamelCase reasons.
pub mod reasons {
    pub const ALL_NODES_READY: &str = "AllNodesReady";
    pub const NODES_NOT_READY: &str = "NodesNotReady";
    pub const NODES_AVAILABLE: &str = "NodesAvailable";
    pub const NO_NODES_READY: &str = "NoNodesReady";
    pub const ROLLING_OUT: &str = "RollingOut";
    pub const ROLLED_OUT: &str = "RolledOut";
    pub const AS_EXPECTED: &str = "AsExpected";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const RECONCILE_ERROR: &str = "ReconcileError";
    pub const PAUSED: &str = "PausedBySpec";
    pub const VOLUME_CHANGE_NOT_APPLIED: &str = "VolumeChangeNotApplied";
}

/// What the StatefulSet reports, reduced to what the conditions need.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeCounts {
    /// Nodes the spec asks for.
    pub desired: i32,
    /// Pods that exist.
    pub current: i32,
    /// Pods that pass their readiness probe.
    pub ready: i32,
    /// Pods that run the latest pod template.
    pub updated: i32,
    /// Whether the StatefulSet controller has seen the latest StatefulSet spec.
    pub observed: bool,
}

impl NodeCounts {
    fn message(&self) -> String {
        format!("{}/{} nodes ready", self.ready, self.desired)
    }

    fn rolled_out(&self) -> bool {
        self.observed && self.updated >= self.desired && self.current == self.desired
    }
}

/// What happened in a reconcile, as far as conditions go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The children were applied; the nodes are as counted.
    Applied(NodeCounts),
    /// The children were applied except for a volume change the API server
    /// refuses on a live StatefulSet; the message says what to do.
    VolumeChangeNotApplied { message: String, nodes: NodeCounts },
    /// The spec (or a Secret it references) is invalid; nothing was applied.
    InvalidSpec { message: String, nodes: NodeCounts },
    /// Applying failed; the message says why.
    Error { message: String, nodes: NodeCounts },
    /// `spec.paused` is set: nothing was touched.
    Paused,
}

/// A condition without its transition time or generation (see [`settle`]).
pub fn condition(type_: &str, status: bool, reason: &str, message: String) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if status { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message,
        last_transition_time: Time(Timestamp::UNIX_EPOCH),
        observed_generation: None,
    }
}

fn available(nodes: &NodeCounts) -> Condition {
    if nodes.ready > 0 {
        condition(
            types::AVAILABLE,
            true,
            reasons::NODES_AVAILABLE,
            nodes.message(),
        )
    } else {
        condition(
            types::AVAILABLE,
            false,
            reasons::NO_NODES_READY,
            nodes.message(),
        )
    }
}

/// The conditions an outcome calls for, without times or generations. `None`
/// for `Paused`: the other conditions keep what they said.
fn desired(outcome: &Outcome) -> Option<Vec<Condition>> {
    let failed = |reason: &str, message: &str, nodes: &NodeCounts| {
        vec![
            condition(types::READY, false, reason, message.to_owned()),
            available(nodes),
            condition(types::PROGRESSING, false, reason, message.to_owned()),
            condition(types::DEGRADED, true, reason, message.to_owned()),
        ]
    };
    match outcome {
        Outcome::Paused => None,
        Outcome::InvalidSpec { message, nodes } => {
            Some(failed(reasons::INVALID_SPEC, message, nodes))
        }
        Outcome::Error { message, nodes } => Some(failed(reasons::RECONCILE_ERROR, message, nodes)),
        Outcome::Applied(nodes) => Some(applied(
            nodes,
            // Never an empty message: Kubernetes 1.20's server-side
            // apply turns "" into null, which the schema refuses.
            condition(
                types::DEGRADED,
                false,
                reasons::AS_EXPECTED,
                "the children match the spec".to_owned(),
            ),
        )),
        // The nodes run as before: only Degraded tells what is held back.
        Outcome::VolumeChangeNotApplied { message, nodes } => Some(applied(
            nodes,
            condition(
                types::DEGRADED,
                true,
                reasons::VOLUME_CHANGE_NOT_APPLIED,
                message.clone(),
            ),
        )),
    }
}

/// The conditions after the children were applied, with `degraded` as given.
fn applied(nodes: &NodeCounts, degraded: Condition) -> Vec<Condition> {
    let ready = nodes.rolled_out() && nodes.ready >= nodes.desired;
    vec![
        if ready {
            condition(
                types::READY,
                true,
                reasons::ALL_NODES_READY,
                nodes.message(),
            )
        } else {
            condition(
                types::READY,
                false,
                reasons::NODES_NOT_READY,
                nodes.message(),
            )
        },
        available(nodes),
        if nodes.rolled_out() {
            condition(
                types::PROGRESSING,
                false,
                reasons::ROLLED_OUT,
                nodes.message(),
            )
        } else {
            let msg = format!(
                "{}/{} nodes updated, {}",
                nodes.updated,
                nodes.desired,
                nodes.message()
            );
            condition(types::PROGRESSING, true, reasons::ROLLING_OUT, msg)
        },
        degraded,
    ]
}

/// A condition whose status flipped (or that appeared) in a merge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
}

/// Merges the conditions an outcome calls for into `previous`.
///
/// A condition keeps its transition time unless its status flips; every
/// condition is stamped with `generation`. Returns the new list (sorted by
/// type, so equal states give equal lists) and the transitions.
pub fn merge(
    previous: &[Condition],
    outcome: &Outcome,
    generation: Option<i64>,
    now: Timestamp,
) -> (Vec<Condition>, Vec<Transition>) {
    let now = now_to_the_second(now);
    let mut next: Vec<Condition> = match desired(outcome) {
        Some(list) => list,
        None => {
            let mut kept: Vec<Condition> = previous
                .iter()
                .filter(|c| c.type_ != types::PAUSED)
                .cloned()
                .collect();
            kept.push(condition(
                types::PAUSED,
                true,
                reasons::PAUSED,
                "reconciliation is paused by spec.paused".to_owned(),
            ));
            kept
        }
    };
    for c in &mut next {
        // Paused: the kept conditions describe the last reconcile, not this generation.
        if !matches!(outcome, Outcome::Paused) || c.type_ == types::PAUSED {
            c.observed_generation = generation;
        }
    }
    let transitions = settle(previous, &mut next, now);
    (next, transitions)
}

/// Gives each condition of `next` its transition time (kept from `previous`
/// unless its status flipped), sorts them by type so that equal states give
/// equal lists, and returns the conditions that flipped or appeared.
pub fn settle(previous: &[Condition], next: &mut [Condition], now: Time) -> Vec<Transition> {
    let mut transitions = Vec::new();
    for c in next.iter_mut() {
        let before = previous.iter().find(|p| p.type_ == c.type_);
        match before {
            Some(p) if p.status == c.status => {
                c.last_transition_time = p.last_transition_time.clone();
            }
            _ => {
                c.last_transition_time = now.clone();
                transitions.push(Transition {
                    type_: c.type_.clone(),
                    status: c.status.clone(),
                    reason: c.reason.clone(),
                    message: c.message.clone(),
                });
            }
        }
    }
    next.sort_by(|a, b| a.type_.cmp(&b.type_));
    transitions
}

/// `now`, to the second, as conditions carry it.
pub fn now_to_the_second(now: Timestamp) -> Time {
    Time(now.round(k8s_openapi::jiff::Unit::Second).unwrap_or(now))
}

/// The condition of type `type_`, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).expect("timestamp")
    }

    fn nodes(desired: i32, ready: i32) -> NodeCounts {
        NodeCounts {
            desired,
            current: desired,
            ready,
            updated: desired,
            observed: true,
        }
    }

    #[test]
    fn ready_summarises_node_counts() {
        let (list, transitions) = merge(&[], &Outcome::Applied(nodes(3, 2)), Some(1), at(10));
        let ready = find(&list, types::READY).expect("ready");
        assert_eq!(ready.status, "False");
        assert_eq!(ready.reason, reasons::NODES_NOT_READY);
        assert_eq!(ready.message, "2/3 nodes ready");
        assert_eq!(ready.observed_generation, Some(1));
        assert_eq!(transitions.len(), 4, "every condition is new");
        assert_eq!(
            find(&list, types::AVAILABLE).expect("available").status,
            "True"
        );

        let (list, _) = merge(&list, &Outcome::Applied(nodes(3, 3)), Some(1), at(20));
        let ready = find(&list, types::READY).expect("ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", reasons::ALL_NODES_READY)
        );
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let (first, _) = merge(&[], &Outcome::Applied(nodes(3, 1)), Some(1), at(10));
        let (second, transitions) = merge(&first, &Outcome::Applied(nodes(3, 2)), Some(1), at(20));
        assert!(transitions.is_empty(), "{transitions:?}");
        let ready = find(&second, types::READY).expect("ready");
        assert_eq!(ready.last_transition_time, Time(at(10)));
        assert_eq!(
            ready.message, "2/3 nodes ready",
            "the message still follows"
        );

        let (third, transitions) = merge(&second, &Outcome::Applied(nodes(3, 3)), Some(1), at(30));
        let ready = find(&third, types::READY).expect("ready");
        assert_eq!(ready.last_transition_time, Time(at(30)));
        let flipped: Vec<_> = transitions.iter().map(|t| t.type_.as_str()).collect();
        assert_eq!(flipped, vec![types::READY]);
    }

    #[test]
    fn equal_inputs_give_equal_lists() {
        let (a, _) = merge(&[], &Outcome::Applied(nodes(2, 2)), Some(4), at(10));
        let (b, t) = merge(&a, &Outcome::Applied(nodes(2, 2)), Some(4), at(99));
        assert_eq!(a, b);
        assert!(t.is_empty());
    }

    #[test]
    fn invalid_spec_is_not_ready_and_degraded() {
        let outcome = Outcome::InvalidSpec {
            message: "spec.replicas: must be between 1 and 100, got 0".to_owned(),
            nodes: NodeCounts::default(),
        };
        let (list, transitions) = merge(&[], &outcome, Some(2), at(10));
        let ready = find(&list, types::READY).expect("ready");
        assert_eq!(ready.reason, reasons::INVALID_SPEC);
        assert!(ready.message.contains("spec.replicas"));
        assert_eq!(
            find(&list, types::DEGRADED).expect("degraded").status,
            "True"
        );
        assert!(transitions
            .iter()
            .any(|t| t.type_ == types::READY && t.status == "False"));
    }

    #[test]
    fn pausing_keeps_the_other_conditions_and_resuming_drops_the_pause() {
        let (applied, _) = merge(&[], &Outcome::Applied(nodes(1, 1)), Some(1), at(10));
        let (paused, transitions) = merge(&applied, &Outcome::Paused, Some(2), at(20));
        let pause = find(&paused, types::PAUSED).expect("paused");
        assert_eq!(
            (pause.status.as_str(), pause.observed_generation),
            ("True", Some(2))
        );
        assert_eq!(find(&paused, types::READY), find(&applied, types::READY));
        assert_eq!(transitions.len(), 1);

        let (resumed, _) = merge(&paused, &Outcome::Applied(nodes(1, 1)), Some(3), at(30));
        assert!(find(&resumed, types::PAUSED).is_none());
    }

    #[test]
    fn a_held_back_volume_change_degrades_a_running_cluster() {
        let (before, _) = merge(&[], &Outcome::Applied(nodes(2, 2)), Some(1), at(10));
        let outcome = Outcome::VolumeChangeNotApplied {
            message: "resize the claims".to_owned(),
            nodes: nodes(2, 2),
        };
        let (after, transitions) = merge(&before, &outcome, Some(2), at(20));
        let degraded = find(&after, types::DEGRADED).expect("degraded");
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", reasons::VOLUME_CHANGE_NOT_APPLIED)
        );
        assert_eq!(degraded.message, "resize the claims");
        assert_eq!(find(&after, types::READY).expect("ready").status, "True");
        let flipped: Vec<_> = transitions.iter().map(|t| t.type_.as_str()).collect();
        assert_eq!(flipped, vec![types::DEGRADED]);
    }

    #[test]
    fn a_rollout_in_progress_is_progressing_and_not_ready() {
        let rolling = NodeCounts {
            updated: 1,
            ..nodes(3, 3)
        };
        let (list, _) = merge(&[], &Outcome::Applied(rolling), Some(1), at(10));
        assert_eq!(find(&list, types::PROGRESSING).expect("p").status, "True");
        assert_eq!(find(&list, types::READY).expect("r").status, "False");
    }
}
