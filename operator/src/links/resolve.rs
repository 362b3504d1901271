//! A cluster's links, resolved from every `ClusterLink` with an end there:
//! the link's own cluster dials (or, for `remote.accept`, accepts), a
//! same-Kubernetes peer accepts with export and import swapped.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt};

use super::context::LinkContext;
use super::credentials::{self, issued_name, CredentialProblem, LinkCredential, CA_KEY};
use super::health::reasons;
use super::{validate, Error};
use crate::crd::{ClusterLink, MqttCluster};
use crate::resources::links::{
    Accepted, Dial, DialTls, SideLink, FINGERPRINTS_KEY, LINK_CREDENTIALS_KEY,
};
use crate::resources::{names, CLUSTER_SECRET};

/// The clusters `link` has an end at, as `(namespace, name)`: its own
/// cluster, then a peer in the same Kubernetes.
pub fn ends(link: &ClusterLink) -> Vec<(String, String)> {
    let namespace = link.namespace().unwrap_or_default();
    let mut ends = vec![(namespace.clone(), link.spec.cluster.clone())];
    if let Some(peer) = &link.spec.peer.cluster_ref {
        let peer = (
            peer.namespace.clone().unwrap_or(namespace),
            peer.name.clone(),
        );
        // A link to its own cluster (refused by validation) has one end.
        if peer != ends[0] {
            ends.push(peer);
        }
    }
    ends
}

/// The name the link has on the brokers of its own cluster: the peer's.
pub fn remote_name(link: &ClusterLink) -> Option<&str> {
    match (&link.spec.peer.cluster_ref, &link.spec.peer.remote) {
        (Some(peer), _) => Some(&peer.name),
        (None, Some(remote)) => Some(&remote.cluster_name),
        (None, None) => None,
    }
}

/// Where a link's credential comes from, and whether the operator issues it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    /// Issued in this Secret (the link's own).
    Issued(String),
    /// Provided by the user in this Secret.
    Imported(String),
}

impl CredentialSource {
    pub fn of(link: &ClusterLink) -> CredentialSource {
        let provided = link
            .spec
            .peer
            .remote
            .as_ref()
            .and_then(|r| r.credentials_secret.clone());
        match provided {
            Some(secret) => CredentialSource::Imported(secret),
            None => CredentialSource::Issued(issued_name(&link.name_any())),
        }
    }

    pub fn secret(&self) -> &str {
        match self {
            CredentialSource::Issued(s) | CredentialSource::Imported(s) => s,
        }
    }
}

/// The cluster whose name the dialling side proves: the link's own
/// cluster, unless it only accepts (then the remote dials).
pub fn dialler(link: &ClusterLink) -> &str {
    match &link.spec.peer.remote {
        Some(remote) if remote.accept => &remote.cluster_name,
        _ => &link.spec.cluster,
    }
}

/// Reads the link's credential from its Secret.
pub async fn credential(
    lctx: &LinkContext,
    link: &ClusterLink,
) -> Result<Result<LinkCredential, CredentialProblem>, kube::Error> {
    let namespace = link.namespace().unwrap_or_default();
    let source = CredentialSource::of(link);
    let secret = match &source {
        CredentialSource::Issued(name) => lctx.own_secret(&namespace, name).map(|s| (*s).clone()),
        CredentialSource::Imported(name) => user_secret(lctx, &namespace, name).await?,
    };
    let name = source.secret();
    Ok(
        LinkCredential::read(name, secret.as_ref())
            .and_then(|c| c.for_cluster(name, dialler(link))),
    )
}

/// A Secret the user provided: not cached (the operator watches only its
/// own), so read when needed.
pub async fn user_secret(
    lctx: &LinkContext,
    namespace: &str,
    name: &str,
) -> Result<Option<Secret>, kube::Error> {
    let api: Api<Secret> = Api::namespaced(lctx.base.client.clone(), namespace);
    lctx.base.metrics.read();
    api.get_opt(name).await
}

/// The value under `key` of a Secret the user provided, when both exist.
pub async fn user_secret_key(
    lctx: &LinkContext,
    namespace: &str,
    name: &str,
    key: &str,
) -> Result<Option<Vec<u8>>, kube::Error> {
    Ok(user_secret(lctx, namespace, name)
        .await?
        .and_then(|s| s.data)
        .and_then(|mut d| d.remove(key))
        .map(|v| v.0))
}

/// Where another cluster dials each node `cluster` is to have.
pub fn node_endpoints(lctx: &LinkContext, cluster: &MqttCluster) -> Vec<String> {
    let name = cluster.name_any();
    let addresses = &lctx.base.settings.addresses;
    (0..cluster.spec.replicas)
        .map(|i| addresses.link_endpoint(cluster, &format!("{name}-{i}")))
        .collect()
}

/// A cluster's links, and the links with an end there that are left out.
#[derive(Debug, Default)]
pub struct Resolved {
    pub links: Vec<SideLink>,
    /// By `namespace/name`: the reason and the message.
    pub left_out: BTreeMap<String, (&'static str, String)>,
}

/// Resolves every link of `cluster`.
pub async fn cluster_links(lctx: &LinkContext, cluster: &MqttCluster) -> Result<Resolved, Error> {
    let namespace = cluster.namespace().unwrap_or_default();
    let name = cluster.name_any();
    let mut candidates: Vec<_> = lctx
        .links
        .state()
        .into_iter()
        .filter(|link| {
            link.metadata.deletion_timestamp.is_none()
                && !link.spec.paused
                && ends(link)
                    .iter()
                    .any(|(ns, n)| *ns == namespace && *n == name)
                && validate::spec(&link.spec, &link.namespace().unwrap_or_default()).is_ok()
        })
        .collect();
    // The oldest of two links between the same clusters wins.
    candidates.sort_by(|a, b| {
        (a.metadata.creation_timestamp.as_ref().map(|t| t.0), key(a))
            .cmp(&(b.metadata.creation_timestamp.as_ref().map(|t| t.0), key(b)))
    });
    let cluster_secret = lctx
        .own_secret(&namespace, &names(&name).credentials)
        .and_then(|s| s.data.as_ref()?.get(CLUSTER_SECRET).cloned())
        .and_then(|v| String::from_utf8(v.0).ok());
    let known = known_credentials(lctx.own_secret(&namespace, &names(&name).links).as_deref());
    let mut resolved = Resolved::default();
    let mut remotes: BTreeMap<String, String> = BTreeMap::new();
    for link in candidates {
        let here_local =
            link.namespace().as_deref() == Some(namespace.as_str()) && link.spec.cluster == name;
        let remote = if here_local {
            remote_name(&link).unwrap_or_default().to_owned()
        } else {
            link.spec.cluster.clone()
        };
        if let Some(first) = remotes.get(&remote) {
            resolved.left_out.insert(
                key(&link),
                (
                    reasons::DUPLICATE_LINK,
                    format!("ClusterLink {first} already links {name} and {remote}"),
                ),
            );
            continue;
        }
        let accepting = Accepting {
            cluster_secret: cluster_secret.as_deref(),
            known: &known,
        };
        match side(lctx, &link, cluster, here_local, accepting).await? {
            Ok(side) => {
                remotes.insert(remote, key(&link));
                resolved.links.push(side);
            }
            Err(why) => {
                resolved.left_out.insert(key(&link), why);
            }
        }
    }
    Ok(resolved)
}

fn key(link: &ClusterLink) -> String {
    format!(
        "{}/{}",
        link.namespace().unwrap_or_default(),
        link.name_any()
    )
}

/// What accepting a credential takes: the accepting cluster's own secret,
/// and what its links Secret already holds.
#[derive(Clone, Copy)]
struct Accepting<'a> {
    cluster_secret: Option<&'a str>,
    /// By remote: the fingerprint and hash of the credential accepted now.
    known: &'a BTreeMap<String, (String, String)>,
}

/// The credentials a cluster's links Secret holds, by remote: fingerprint
/// and hash.
fn known_credentials(secret: Option<&Secret>) -> BTreeMap<String, (String, String)> {
    let lines = |key: &str| -> BTreeMap<String, String> {
        secret
            .and_then(|s| s.data.as_ref()?.get(key))
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.split_once(':'))
            .map(|(remote, value)| (remote.to_owned(), value.to_owned()))
            .collect()
    };
    let hashes = lines(LINK_CREDENTIALS_KEY);
    lines(FINGERPRINTS_KEY)
        .into_iter()
        .filter_map(|(remote, fingerprint)| {
            let hashed = hashes.get(&remote)?.clone();
            Some((remote, (fingerprint, hashed)))
        })
        .collect()
}

/// `link`'s end at `cluster`, or why it cannot have one yet.
async fn side(
    lctx: &LinkContext,
    link: &ClusterLink,
    cluster: &MqttCluster,
    local: bool,
    accepting: Accepting<'_>,
) -> Result<Result<SideLink, (&'static str, String)>, Error> {
    let Accepting {
        cluster_secret,
        known,
    } = accepting;
    let credential = match credential(lctx, link).await? {
        Ok(credential) => credential,
        Err(problem) => return Ok(Err((problem.reason(), problem.to_string()))),
    };
    let spec = &link.spec;
    let mut side = SideLink {
        remote: spec.cluster.clone(),
        dial: None,
        accept: None,
        export: spec.import.clone(),
        import: spec.export.clone(),
        queue: spec.queue.clone(),
        max_hops: spec.max_hops,
    };
    let accepts = !local || spec.peer.remote.as_ref().is_some_and(|r| r.accept);
    if local {
        side.remote = remote_name(link).unwrap_or_default().to_owned();
        side.export = spec.export.clone();
        side.import = spec.import.clone();
    }
    if accepts {
        let Some(cluster_secret) = cluster_secret else {
            let message = format!(
                "the credentials Secret of {} is not there yet",
                cluster.name_any()
            );
            return Ok(Err((reasons::NO_READY_NODES, message)));
        };
        let fingerprint =
            credentials::fingerprint(cluster_secret, &side.remote, &credential.password);
        let hashed = match known.get(&side.remote) {
            Some((known_fingerprint, hashed)) if *known_fingerprint == fingerprint => {
                hashed.clone()
            }
            _ => {
                lctx.hashes
                    .hashed(cluster_secret, &side.remote, &credential.password)
                    .await?
            }
        };
        side.accept = Some(Accepted {
            hashed,
            fingerprint,
        });
        return Ok(Ok(side));
    }
    match (&spec.peer.cluster_ref, &spec.peer.remote) {
        (Some(peer), _) => {
            let peer_namespace = peer
                .namespace
                .clone()
                .unwrap_or_else(|| link.namespace().unwrap_or_default());
            let Some(target) = lctx.cluster(&peer_namespace, &peer.name) else {
                let message = format!("MqttCluster {peer_namespace}/{} not found", peer.name);
                return Ok(Err((reasons::CLUSTER_NOT_FOUND, message)));
            };
            let endpoints = node_endpoints(lctx, &target);
            let tls = match &target.spec.listeners.link.tls {
                None => None,
                Some(tls) => {
                    let ca =
                        user_secret_key(lctx, &peer_namespace, &tls.certificate_secret, CA_KEY)
                            .await?;
                    let Some(ca) = ca else {
                        let message = format!(
                            "{peer_namespace}/{}'s link listener serves TLS, and its Secret {:?} has no {CA_KEY} to trust it by",
                            peer.name, tls.certificate_secret
                        );
                        return Ok(Err(("PeerCaMissing", message)));
                    };
                    Some(DialTls {
                        ca,
                        server_name: format!(
                            "{}.{peer_namespace}.svc",
                            names(&peer.name).link_service
                        ),
                    })
                }
            };
            side.dial = Some(Dial {
                endpoints,
                secret: credential.password,
                tls,
            });
        }
        (None, Some(remote)) => {
            let endpoints = if remote.endpoints.is_empty() {
                credential.endpoints.clone()
            } else {
                remote.endpoints.clone()
            };
            if endpoints.is_empty() || !endpoints.iter().all(|e| validate::is_endpoint(e)) {
                let message = format!(
                    "no endpoints to dial {}: set spec.peer.remote.endpoints or the Secret's endpoints key (host:port each)",
                    remote.cluster_name
                );
                return Ok(Err(("NoEndpoints", message)));
            }
            let tls = match &remote.tls {
                None => None,
                Some(tls) => {
                    let ca = match &tls.ca_secret {
                        Some(name) => {
                            let namespace = link.namespace().unwrap_or_default();
                            user_secret_key(lctx, &namespace, name, CA_KEY).await?
                        }
                        None => credential.ca.clone(),
                    };
                    let Some(ca) = ca else {
                        let message = "spec.peer.remote.tls: no ca.crt in the CA Secret or the credentials Secret".to_owned();
                        return Ok(Err(("CaMissing", message)));
                    };
                    Some(DialTls {
                        ca,
                        server_name: tls.server_name.clone(),
                    })
                }
            };
            side.dial = Some(Dial {
                endpoints,
                secret: credential.password,
                tls,
            });
        }
        // Validation refuses a link without a peer before it gets here.
        (None, None) => {}
    }
    Ok(Ok(side))
}
