//! The operator's own checks of a `ClusterLink` spec: what the CRD schema
//! says (a server may not enforce all of it), and what a schema cannot say
//! (exactly one kind of peer, a link to itself, what dialling needs). Each
//! error names its field.

use strait_broker::protocol::topic;

use crate::crd::{ClusterLinkSpec, RemoteSpec};
use crate::validate::{is_object_name, InvalidSpec};

/// Checks a link's spec; `namespace` is the link's own.
pub fn spec(spec: &ClusterLinkSpec, namespace: &str) -> Result<(), InvalidSpec> {
    if !is_cluster_name(&spec.cluster) {
        return Err(InvalidSpec::new(
            "spec.cluster",
            format!("{:?} is not an MqttCluster name", spec.cluster),
        ));
    }
    match (&spec.peer.cluster_ref, &spec.peer.remote) {
        (Some(peer), None) => {
            if !is_cluster_name(&peer.name) {
                return Err(InvalidSpec::new(
                    "spec.peer.clusterRef.name",
                    format!("{:?} is not an MqttCluster name", peer.name),
                ));
            }
            let peer_namespace = peer.namespace.as_deref().unwrap_or(namespace);
            if !is_object_name(peer_namespace) {
                return Err(InvalidSpec::new(
                    "spec.peer.clusterRef.namespace",
                    format!("{peer_namespace:?} is not a namespace name"),
                ));
            }
            // The brokers know a cluster by its name alone.
            if peer.name == spec.cluster {
                let reason = if peer_namespace == namespace {
                    "a link joins two different clusters, not a cluster to itself".to_owned()
                } else {
                    format!(
                        "clusters linked to each other need different names, and both are called {:?}",
                        spec.cluster
                    )
                };
                return Err(InvalidSpec::new("spec.peer.clusterRef", reason));
            }
        }
        (None, Some(remote)) => self::remote(spec, remote)?,
        _ => {
            return Err(InvalidSpec::new(
                "spec.peer",
                "set exactly one of clusterRef and remote",
            ))
        }
    }
    filters("spec.export", &spec.export)?;
    filters("spec.import", &spec.import)?;
    if spec.export.is_empty() && spec.import.is_empty() {
        return Err(InvalidSpec::new(
            "spec.export",
            "export and import are both empty: nothing would flow either way",
        ));
    }
    if !(1..=32).contains(&spec.max_hops) {
        return Err(InvalidSpec::new(
            "spec.maxHops",
            format!("must be between 1 and 32, got {}", spec.max_hops),
        ));
    }
    let q = &spec.queue;
    let checks: [(&str, Option<i64>, i64, i64); 3] = [
        ("maxMessages", q.max_messages, 1, 100_000_000),
        ("maxBytes", q.max_bytes, 1, 68_719_476_736),
        ("messageTtlSecs", q.message_ttl_secs, 1, 31_536_000),
    ];
    for (name, value, min, max) in checks {
        if let Some(v) = value.filter(|v| !(min..=max).contains(v)) {
            return Err(InvalidSpec::new(
                format!("spec.queue.{name}"),
                format!("must be between {min} and {max}, got {v}"),
            ));
        }
    }
    Ok(())
}

fn remote(spec: &ClusterLinkSpec, remote: &RemoteSpec) -> Result<(), InvalidSpec> {
    if !is_cluster_name(&remote.cluster_name) {
        return Err(InvalidSpec::new(
            "spec.peer.remote.clusterName",
            format!("{:?} is not a cluster name", remote.cluster_name),
        ));
    }
    if remote.cluster_name == spec.cluster {
        return Err(InvalidSpec::new(
            "spec.peer.remote.clusterName",
            format!(
                "{:?} is this cluster's own name; a link joins two different clusters",
                remote.cluster_name
            ),
        ));
    }
    if let Some(secret) = remote.credentials_secret.as_deref() {
        if !is_object_name(secret) {
            return Err(InvalidSpec::new(
                "spec.peer.remote.credentialsSecret",
                format!("{secret:?} is not a Secret name"),
            ));
        }
    }
    if remote.accept {
        if !remote.endpoints.is_empty() || remote.tls.is_some() {
            return Err(InvalidSpec::new(
                "spec.peer.remote.accept",
                "an accepting side takes no endpoints or tls: the remote dials it",
            ));
        }
        return Ok(());
    }
    if remote.credentials_secret.is_none() {
        return Err(InvalidSpec::new(
            "spec.peer.remote.credentialsSecret",
            "required to dial: the Secret the remote's accepting side issued (or set accept: true)",
        ));
    }
    for (i, endpoint) in remote.endpoints.iter().enumerate() {
        if !is_endpoint(endpoint) {
            return Err(InvalidSpec::new(
                format!("spec.peer.remote.endpoints[{i}]"),
                format!("{endpoint:?} is not host:port"),
            ));
        }
    }
    if let Some(tls) = &remote.tls {
        if tls.server_name.is_empty() {
            return Err(InvalidSpec::new(
                "spec.peer.remote.tls.serverName",
                "must be set",
            ));
        }
        if let Some(ca) = tls.ca_secret.as_deref().filter(|s| !is_object_name(s)) {
            return Err(InvalidSpec::new(
                "spec.peer.remote.tls.caSecret",
                format!("{ca:?} is not a Secret name"),
            ));
        }
    }
    Ok(())
}

/// Topic filters a link may carry: valid MQTT filters, not shared
/// subscriptions, and never under `$`.
fn filters(field: &str, list: &[String]) -> Result<(), InvalidSpec> {
    for (i, filter) in list.iter().enumerate() {
        let field = format!("{field}[{i}]");
        if let Err(error) = topic::validate_topic_filter(filter) {
            return Err(InvalidSpec::new(
                field,
                format!("{filter:?}: {}", error.describe()),
            ));
        }
        if filter.starts_with('$') {
            return Err(InvalidSpec::new(
                field,
                format!("{filter:?}: topics under $ never cross a link"),
            ));
        }
    }
    Ok(())
}

/// A DNS-1123 label: the form of an `MqttCluster` name, which is also its
/// brokers' cluster name.
fn is_cluster_name(s: &str) -> bool {
    s.len() <= 63 && !s.contains('.') && is_object_name(s)
}

/// `host:port`, with a port from 1 to 65535 and an IPv6 host in brackets.
pub fn is_endpoint(s: &str) -> bool {
    let Some((host, port)) = s.rsplit_once(':') else {
        return false;
    };
    let port_ok = port.parse::<u16>().is_ok_and(|p| p > 0);
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => {
            !host.is_empty()
                && host.len() <= 253
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        }
    };
    port_ok && host_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ClusterRef, PeerSpec, RemoteTlsSpec};

    fn base() -> ClusterLinkSpec {
        serde_json::from_value(serde_json::json!({
            "cluster": "east",
            "peer": {"clusterRef": {"name": "west"}},
            "export": ["cars/#"],
        }))
        .expect("spec")
    }

    fn remote(accept: bool) -> RemoteSpec {
        RemoteSpec {
            cluster_name: "us-east".into(),
            endpoints: Vec::new(),
            credentials_secret: None,
            tls: None,
            accept,
        }
    }

    fn field_of(spec: &ClusterLinkSpec) -> String {
        self::spec(spec, "default").expect_err("invalid").field
    }

    #[test]
    fn a_plain_link_is_valid_and_each_bad_field_is_named() {
        assert_eq!(self::spec(&base(), "default"), Ok(()));

        let mut s = base();
        s.peer.cluster_ref = Some(ClusterRef {
            name: "east".into(),
            namespace: None,
        });
        assert_eq!(field_of(&s), "spec.peer.clusterRef");

        let mut s = base();
        s.peer = PeerSpec {
            cluster_ref: None,
            remote: None,
        };
        assert_eq!(field_of(&s), "spec.peer");

        let mut s = base();
        s.export = vec!["cars/#/x".into()];
        assert_eq!(field_of(&s), "spec.export[0]");
        s.export = vec!["$SYS/#".into()];
        assert_eq!(field_of(&s), "spec.export[0]");
        s.export = vec!["$share/g/a".into()];
        assert_eq!(field_of(&s), "spec.export[0]");
        s.export = Vec::new();
        assert_eq!(field_of(&s), "spec.export", "nothing would flow");

        let mut s = base();
        s.max_hops = 0;
        assert_eq!(field_of(&s), "spec.maxHops");
        let mut s = base();
        s.queue.max_messages = Some(0);
        assert_eq!(field_of(&s), "spec.queue.maxMessages");
    }

    #[test]
    fn a_remote_either_dials_with_credentials_or_accepts() {
        let mut s = base();
        s.peer = PeerSpec {
            cluster_ref: None,
            remote: Some(remote(true)),
        };
        assert_eq!(self::spec(&s, "default"), Ok(()));

        let mut dial = remote(false);
        s.peer.remote = Some(dial.clone());
        assert_eq!(field_of(&s), "spec.peer.remote.credentialsSecret");
        dial.credentials_secret = Some("us-east-link".into());
        dial.endpoints = vec!["link.us-east.example.com:7883".into(), "[::1]:7883".into()];
        s.peer.remote = Some(dial.clone());
        assert_eq!(self::spec(&s, "default"), Ok(()));
        dial.endpoints.push("no-port".into());
        s.peer.remote = Some(dial.clone());
        assert_eq!(field_of(&s), "spec.peer.remote.endpoints[2]");

        let mut accept = remote(true);
        accept.tls = Some(RemoteTlsSpec {
            ca_secret: None,
            server_name: "x".into(),
        });
        s.peer.remote = Some(accept);
        assert_eq!(field_of(&s), "spec.peer.remote.accept");

        let mut own = remote(true);
        own.cluster_name = "east".into();
        s.peer.remote = Some(own);
        assert_eq!(field_of(&s), "spec.peer.remote.clusterName");
    }

    #[test]
    fn endpoints() {
        for good in [
            "a:1",
            "link.example.com:7883",
            "10.0.0.1:7883",
            "[fd00::1]:7883",
        ] {
            assert!(is_endpoint(good), "{good}");
        }
        for bad in [
            "",
            "a",
            "a:0",
            "a:65536",
            ":7883",
            "a b:1",
            "[zz]:1",
            "fd00::1:7883x",
        ] {
            assert!(!is_endpoint(bad), "{bad}");
        }
    }
}
