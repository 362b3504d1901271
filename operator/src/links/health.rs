//! A link's health, from what the brokers of its ends report: pure, so each
//! condition is tested without a broker.
//!
//! `Ready` sums up four independent conditions: `CredentialsReady` (the
//! Secret the dialling side proves is there and sound), `Configured` (every
//! ready node of both ends runs its cluster's link set), `Connected` (the
//! local cluster holds a connection to the peer) and `InterestSynced` (what
//! the peer subscribes to is known on every node of the local cluster).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use super::admin::NodeLinks;
use crate::conditions::condition;
use crate::crd::NodeLinkStatus;

/// Condition types.
pub mod types {
    pub const READY: &str = "Ready";
    pub const CREDENTIALS_READY: &str = "CredentialsReady";
    pub const CONFIGURED: &str = "Configured";
    pub const CONNECTED: &str = "Connected";
    pub const INTEREST_SYNCED: &str = "InterestSynced";
}

/// CamelCase reasons.
pub mod reasons {
    pub const LINK_READY: &str = "LinkReady";
    pub const ISSUED: &str = "Issued";
    pub const IMPORTED: &str = "Imported";
    pub const ALL_NODES_CONFIGURED: &str = "AllNodesConfigured";
    pub const NODES_NOT_CONFIGURED: &str = "NodesNotConfigured";
    pub const NO_READY_NODES: &str = "NoReadyNodes";
    pub const BROKER_UNREACHABLE: &str = "BrokerUnreachable";
    pub const CLUSTER_NOT_FOUND: &str = "ClusterNotFound";
    pub const CONNECTED: &str = "Connected";
    pub const NOT_CONNECTED: &str = "NotConnected";
    pub const INTEREST_SYNCED: &str = "InterestSynced";
    pub const INTEREST_NOT_SYNCED: &str = "InterestNotSynced";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const PAUSED: &str = "PausedBySpec";
    pub const DUPLICATE_LINK: &str = "DuplicateLink";
}

/// How the link's credentials stand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialState {
    /// Issued by the operator in this Secret.
    Issued(String),
    /// Read from a Secret the user provided.
    Imported(String),
    /// Not usable: the reason and what is wrong.
    Problem {
        reason: &'static str,
        message: String,
    },
}

/// One node of an end, as its admin API answered.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeReport {
    /// `namespace/pod`.
    pub name: String,
    pub links: Result<NodeLinks, String>,
}

/// One end of the link: a cluster, and what its ready nodes report.
#[derive(Debug, Clone, PartialEq)]
pub struct End {
    /// The cluster's name.
    pub cluster: String,
    /// The link's name on this end's nodes: the other cluster's name.
    pub remote: String,
    /// The link-set revision this end's nodes should run; `None` when the
    /// cluster does not exist.
    pub revision: Option<String>,
    pub nodes: Vec<NodeReport>,
    /// Why the link is left out of this end's link set, when it is by
    /// mistake (a reason and a message).
    pub left_out: Option<(&'static str, String)>,
}

/// The link's conditions and the status fields that come with them.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    /// Without transition times (see [`crate::conditions::settle`]).
    pub conditions: Vec<Condition>,
    pub nodes: Vec<NodeLinkStatus>,
    /// Messages queued on either end for the other.
    pub queued: i64,
    /// Nodes of the local end that reach the peer (their own connection, or
    /// the node that holds it).
    pub connected_nodes: usize,
}

/// Why the spec stops the link, if it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    Invalid(String),
    Paused,
}

/// Assesses the link from its ends: `ends[0]` is the local cluster, then the
/// peer when it is in the same Kubernetes.
pub fn assess(stop: Option<&Stop>, credentials: &CredentialState, ends: &[End]) -> Assessment {
    let mut nodes = Vec::new();
    let mut queued: u64 = 0;
    for end in ends {
        for node in &end.nodes {
            let state = match &node.links {
                Err(_) => "unreachable".to_owned(),
                Ok(links) => match links.link(&end.remote) {
                    Some(link) => {
                        queued += link.queued_messages;
                        link.state.clone()
                    }
                    None => "absent".to_owned(),
                },
            };
            let revision = node.links.as_ref().ok().and_then(|l| l.revision.clone());
            nodes.push(NodeLinkStatus {
                name: node.name.clone(),
                revision,
                state,
            });
        }
    }
    let credentials_ready = match (stop, credentials) {
        (Some(Stop::Invalid(message)), _) => condition(
            types::CREDENTIALS_READY,
            false,
            reasons::INVALID_SPEC,
            message.clone(),
        ),
        (_, CredentialState::Issued(secret)) => condition(
            types::CREDENTIALS_READY,
            true,
            reasons::ISSUED,
            format!("issued in Secret {secret}"),
        ),
        (_, CredentialState::Imported(secret)) => condition(
            types::CREDENTIALS_READY,
            true,
            reasons::IMPORTED,
            format!("read from Secret {secret}"),
        ),
        (_, CredentialState::Problem { reason, message }) => {
            condition(types::CREDENTIALS_READY, false, reason, message.clone())
        }
    };
    let configured = configured(stop, ends);
    let local = ends.first();
    let (connected, connected_nodes, synced) = match (stop, local) {
        (Some(Stop::Invalid(message)), _) => {
            let c = |t| condition(t, false, reasons::INVALID_SPEC, message.clone());
            (c(types::CONNECTED), 0, c(types::INTEREST_SYNCED))
        }
        (Some(Stop::Paused), _) => {
            let message = "the link is paused by spec.paused".to_owned();
            let c = |t| condition(t, false, reasons::PAUSED, message.clone());
            (c(types::CONNECTED), 0, c(types::INTEREST_SYNCED))
        }
        (None, None) => {
            let c = |t| {
                condition(
                    t,
                    false,
                    reasons::CLUSTER_NOT_FOUND,
                    "no local cluster".into(),
                )
            };
            (c(types::CONNECTED), 0, c(types::INTEREST_SYNCED))
        }
        (None, Some(end)) => connection(end),
    };
    let parts = [&credentials_ready, &configured, &connected, &synced];
    let ready = match parts.iter().find(|c| c.status != "True") {
        None => condition(
            types::READY,
            true,
            reasons::LINK_READY,
            format!("{} ({})", connected.message, configured.message),
        ),
        Some(failing) => condition(
            types::READY,
            false,
            &failing.reason,
            failing.message.clone(),
        ),
    };
    Assessment {
        conditions: vec![ready, credentials_ready, configured, connected, synced],
        nodes,
        queued: i64::try_from(queued).unwrap_or(i64::MAX),
        connected_nodes,
    }
}

fn configured(stop: Option<&Stop>, ends: &[End]) -> Condition {
    if let Some(Stop::Invalid(message)) = stop {
        return condition(
            types::CONFIGURED,
            false,
            reasons::INVALID_SPEC,
            message.clone(),
        );
    }
    let mut summary = Vec::new();
    let mut failure: Option<(&str, String)> = None;
    for end in ends {
        let Some(revision) = &end.revision else {
            failure.get_or_insert((
                reasons::CLUSTER_NOT_FOUND,
                format!("MqttCluster {} not found", end.cluster),
            ));
            continue;
        };
        if let Some((reason, message)) = &end.left_out {
            failure.get_or_insert((reason, message.clone()));
        }
        if end.nodes.is_empty() {
            failure.get_or_insert((
                reasons::NO_READY_NODES,
                format!("{} has no ready nodes", end.cluster),
            ));
            continue;
        }
        let at = end
            .nodes
            .iter()
            .filter(|n| {
                n.links
                    .as_ref()
                    .is_ok_and(|l| l.revision.as_ref() == Some(revision))
            })
            .count();
        summary.push(format!(
            "{}: {at}/{} nodes at revision {revision}",
            end.cluster,
            end.nodes.len()
        ));
        let unreachable = end
            .nodes
            .iter()
            .find_map(|n| n.links.as_ref().err().map(|e| format!("{}: {e}", n.name)));
        if let Some(message) = unreachable {
            failure.get_or_insert((reasons::BROKER_UNREACHABLE, message));
        } else if at < end.nodes.len() {
            failure.get_or_insert((reasons::NODES_NOT_CONFIGURED, String::new()));
        }
    }
    let summary = summary.join("; ");
    match failure {
        None => condition(
            types::CONFIGURED,
            true,
            reasons::ALL_NODES_CONFIGURED,
            summary,
        ),
        Some((reason, message)) => {
            let message = match (message.is_empty(), summary.is_empty()) {
                (true, _) => summary,
                (false, true) => message,
                (false, false) => format!("{message} ({summary})"),
            };
            condition(types::CONFIGURED, false, reason, message)
        }
    }
}

/// `Connected` and `InterestSynced` from the local end's nodes.
fn connection(end: &End) -> (Condition, usize, Condition) {
    let links: Vec<_> = end
        .nodes
        .iter()
        .filter_map(|n| n.links.as_ref().ok())
        .filter_map(|l| l.link(&end.remote))
        .collect();
    let total = end.nodes.len();
    let holders: Vec<_> = links.iter().filter(|l| l.state == "connected").collect();
    let reaching = links
        .iter()
        .filter(|l| l.state == "connected" || l.state == "elsewhere")
        .count();
    let Some(holder) = holders.first() else {
        let why = links
            .iter()
            .find_map(|l| l.last_error.clone())
            .map(|e| format!(": {e}"))
            .unwrap_or_default();
        let message = format!("0/{total} nodes connected to {}{why}", end.remote);
        return (
            condition(
                types::CONNECTED,
                false,
                reasons::NOT_CONNECTED,
                message.clone(),
            ),
            0,
            condition(
                types::INTEREST_SYNCED,
                false,
                reasons::NOT_CONNECTED,
                message,
            ),
        );
    };
    let connected = condition(
        types::CONNECTED,
        true,
        reasons::CONNECTED,
        format!("{reaching}/{total} nodes connected to {}", end.remote),
    );
    let routes = holder.routes_received;
    let knowing = links
        .iter()
        .filter(|l| {
            (l.state == "connected" || l.state == "elsewhere") && l.routes_received == routes
        })
        .count();
    let message = format!(
        "{}'s interest ({routes} filters) is known on {knowing}/{total} nodes",
        end.remote
    );
    let synced = if knowing == total {
        condition(
            types::INTEREST_SYNCED,
            true,
            reasons::INTEREST_SYNCED,
            message,
        )
    } else {
        condition(
            types::INTEREST_SYNCED,
            false,
            reasons::INTEREST_NOT_SYNCED,
            message,
        )
    };
    (connected, reaching, synced)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conditions::find;
    use crate::links::admin::NodeLink;

    fn node(name: &str, revision: &str, state: Option<(&str, u64)>) -> NodeReport {
        NodeReport {
            name: name.to_owned(),
            links: Ok(NodeLinks {
                revision: Some(revision.to_owned()),
                links: state
                    .map(|(state, routes)| NodeLink {
                        name: "west".to_owned(),
                        state: state.to_owned(),
                        routes_received: routes,
                        queued_messages: 2,
                        ..NodeLink::default()
                    })
                    .into_iter()
                    .collect(),
            }),
        }
    }

    fn east(nodes: Vec<NodeReport>) -> End {
        End {
            cluster: "east".to_owned(),
            remote: "west".to_owned(),
            revision: Some("r1".to_owned()),
            nodes,
            left_out: None,
        }
    }

    fn issued() -> CredentialState {
        CredentialState::Issued("l-link-secret".to_owned())
    }

    fn status<'a>(a: &'a Assessment, t: &str) -> (&'a str, &'a str, &'a str) {
        let c = find(&a.conditions, t).expect("condition");
        (c.status.as_str(), c.reason.as_str(), c.message.as_str())
    }

    #[test]
    fn a_connected_link_on_configured_nodes_with_synced_interest_is_ready() {
        let a = assess(
            None,
            &issued(),
            &[east(vec![
                node("ns/east-0", "r1", Some(("connected", 3))),
                node("ns/east-1", "r1", Some(("elsewhere", 3))),
            ])],
        );
        assert_eq!(
            status(&a, types::CONFIGURED),
            (
                "True",
                reasons::ALL_NODES_CONFIGURED,
                "east: 2/2 nodes at revision r1"
            )
        );
        assert_eq!(
            status(&a, types::CONNECTED),
            ("True", reasons::CONNECTED, "2/2 nodes connected to west")
        );
        assert_eq!(
            status(&a, types::INTEREST_SYNCED).0,
            "True",
            "{:?}",
            status(&a, types::INTEREST_SYNCED)
        );
        assert_eq!(status(&a, types::READY).0, "True");
        assert_eq!((a.queued, a.connected_nodes), (4, 2));
        assert_eq!(a.nodes[1].state, "elsewhere");
    }

    #[test]
    fn each_failing_part_says_why_ready_is_false() {
        let lagging = east(vec![
            node("ns/east-0", "r1", Some(("connected", 3))),
            node("ns/east-1", "r0", Some(("elsewhere", 1))),
        ]);
        let a = assess(None, &issued(), &[lagging]);
        assert_eq!(
            status(&a, types::CONFIGURED).1,
            reasons::NODES_NOT_CONFIGURED
        );
        assert_eq!(
            status(&a, types::INTEREST_SYNCED).1,
            reasons::INTEREST_NOT_SYNCED
        );
        assert_eq!(status(&a, types::READY).1, reasons::NODES_NOT_CONFIGURED);

        let mut unreachable = east(vec![node("ns/east-0", "r1", Some(("connecting", 0)))]);
        unreachable.nodes.push(NodeReport {
            name: "ns/east-1".to_owned(),
            links: Err("connection refused".to_owned()),
        });
        let a = assess(None, &issued(), &[unreachable]);
        let (_, reason, message) = status(&a, types::CONFIGURED);
        assert_eq!(reason, reasons::BROKER_UNREACHABLE);
        assert!(
            message.starts_with("ns/east-1: connection refused"),
            "{message}"
        );
        assert_eq!(status(&a, types::CONNECTED).1, reasons::NOT_CONNECTED);
        assert_eq!(a.nodes[1].state, "unreachable");

        let missing = End {
            revision: None,
            ..east(Vec::new())
        };
        let a = assess(None, &issued(), &[missing]);
        assert_eq!(
            status(&a, types::CONFIGURED),
            (
                "False",
                reasons::CLUSTER_NOT_FOUND,
                "MqttCluster east not found"
            )
        );

        let problem = CredentialState::Problem {
            reason: "SecretNotFound",
            message: "Secret \"x\" not found".to_owned(),
        };
        let a = assess(None, &problem, &[east(Vec::new())]);
        assert_eq!(
            status(&a, types::READY).1,
            "SecretNotFound",
            "credentials come first"
        );
        assert_eq!(status(&a, types::CONFIGURED).1, reasons::NO_READY_NODES);
    }

    #[test]
    fn an_invalid_or_paused_link_says_so_everywhere_it_matters() {
        let stop = Stop::Invalid("spec.export[0]: bad".to_owned());
        let a = assess(Some(&stop), &issued(), &[east(Vec::new())]);
        for t in [
            types::READY,
            types::CONFIGURED,
            types::CONNECTED,
            types::CREDENTIALS_READY,
        ] {
            assert_eq!(status(&a, t).1, reasons::INVALID_SPEC, "{t}");
        }
        let a = assess(
            Some(&Stop::Paused),
            &issued(),
            &[east(vec![node("ns/east-0", "r1", None)])],
        );
        assert_eq!(status(&a, types::READY).1, reasons::PAUSED);
        assert_eq!(
            status(&a, types::CONFIGURED).0,
            "True",
            "removed everywhere"
        );
        assert_eq!(a.nodes[0].state, "absent");
    }
}
