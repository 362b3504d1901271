//! A cluster's links as its brokers run them, in one Secret
//! (`<cluster>-links`) mounted in every pod: the link set (`links.yaml`, the
//! body of `PUT /api/v1/links`), the hashed credentials of the clusters that
//! dial in (`credentials`), and the secret and CA bundle this cluster dials
//! each remote with (`<remote>.secret`, `<remote>.ca.crt`).
//!
//! Keeping links apart from the ConfigMap means a link coming or going never
//! rolls the pods, while a pod that restarts still comes up linked; the
//! operator pushes the same set to the running nodes.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use strait_broker::config::{
    Config, LinkConfig, LinkListenerConfig, LinkQueueConfig, LinkSet, LinkTlsConfig, WhenFull,
};

use super::broker_config::ConfigPaths;
use super::meta::ChildMeta;
use super::{content_hash, BuildError};
use crate::crd::{LinkQueueSpec, MqttCluster, WhenFullSpec};

/// Key of the link set in the links Secret (and its file name in the pod).
pub const LINK_SET_KEY: &str = "links.yaml";
/// Key of the link listener's credentials file in the links Secret.
pub const LINK_CREDENTIALS_KEY: &str = "credentials";
/// Key of the fingerprint of each accepted credential (one
/// `<remote>:<fingerprint>` a line): while it matches, its hash is current.
pub const FINGERPRINTS_KEY: &str = "fingerprints";

/// One link of a cluster, resolved from a `ClusterLink` and the Secrets it
/// refers to. The other end of the same `ClusterLink` gets the mirror image.
#[derive(Clone, PartialEq)]
pub struct SideLink {
    /// The other cluster's name: the link's name in the brokers.
    pub remote: String,
    /// How this side dials the remote; `None`: it only accepts.
    pub dial: Option<Dial>,
    /// The remote's credential, when it may dial in.
    pub accept: Option<Accepted>,
    pub export: Vec<String>,
    pub import: Vec<String>,
    pub queue: LinkQueueSpec,
    pub max_hops: i32,
}

/// A credential this side accepts: its hash (all the brokers hold) and its
/// fingerprint (see [`crate::links::credentials::fingerprint`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    pub hashed: String,
    pub fingerprint: String,
}

/// What dialling a remote takes.
#[derive(Clone, PartialEq)]
pub struct Dial {
    pub endpoints: Vec<String>,
    /// The secret this side proves.
    pub secret: String,
    pub tls: Option<DialTls>,
}

/// TLS towards the remote's link listener.
#[derive(Debug, Clone, PartialEq)]
pub struct DialTls {
    /// The CA bundle (PEM) the remote's certificate must chain to.
    pub ca: Vec<u8>,
    pub server_name: String,
}

impl fmt::Debug for SideLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SideLink")
            .field("remote", &self.remote)
            .field("dial", &self.dial)
            .field("accept", &self.accept.as_ref().map(|_| "<redacted>"))
            .field("export", &self.export)
            .field("import", &self.import)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Dial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dial")
            .field("endpoints", &self.endpoints)
            .field("secret", &"<redacted>")
            .field("tls", &self.tls)
            .finish()
    }
}

/// The links Secret of one cluster and the link set it holds.
#[derive(Debug, Clone)]
pub struct LinksSecret {
    pub secret: Secret,
    /// What is pushed to the running nodes; its revision names the whole
    /// content of the Secret, so a rotated secret is a new revision too.
    pub set: LinkSet,
}

impl LinksSecret {
    /// The revision of the set.
    pub fn revision(&self) -> &str {
        self.set.revision.as_deref().unwrap_or_default()
    }
}

/// Builds the links Secret of `cluster` from its links (in any order).
pub fn build(cluster: &MqttCluster, links: &[SideLink]) -> Result<LinksSecret, BuildError> {
    let meta = ChildMeta::of(cluster)?;
    let mut sorted: Vec<&SideLink> = links.iter().collect();
    sorted.sort_by(|a, b| a.remote.cmp(&b.remote));
    let mut data: BTreeMap<String, ByteString> = BTreeMap::new();
    let mut credentials = String::new();
    let mut fingerprints = String::new();
    let mut configs = Vec::new();
    for link in sorted {
        if let Some(accepted) = &link.accept {
            credentials.push_str(&format!("{}:{}\n", link.remote, accepted.hashed));
            fingerprints.push_str(&format!("{}:{}\n", link.remote, accepted.fingerprint));
        }
        let mut config = LinkConfig {
            name: link.remote.clone(),
            endpoints: Vec::new(),
            secret_file: None,
            tls: None,
            export: link.export.clone(),
            import: link.import.clone(),
            queue: queue(&link.queue),
            max_hops: u8::try_from(link.max_hops).unwrap_or(8),
            interest_retention_secs: None,
        };
        if let Some(dial) = &link.dial {
            let secret_key = format!("{}.secret", link.remote);
            data.insert(secret_key.clone(), bytes(dial.secret.as_bytes()));
            config.endpoints = dial.endpoints.clone();
            // Relative: the broker reads it beside the links file.
            config.secret_file = Some(PathBuf::from(secret_key));
            if let Some(tls) = &dial.tls {
                let ca_key = format!("{}.ca.crt", link.remote);
                data.insert(ca_key.clone(), bytes(&tls.ca));
                config.tls = Some(LinkTlsConfig {
                    ca_file: PathBuf::from(ca_key),
                    server_name: tls.server_name.clone(),
                    cert_file: None,
                    key_file: None,
                });
            }
        }
        configs.push(config);
    }
    check(&meta.name, &configs)?;
    data.insert(
        LINK_CREDENTIALS_KEY.to_owned(),
        bytes(credentials.as_bytes()),
    );
    data.insert(FINGERPRINTS_KEY.to_owned(), bytes(fingerprints.as_bytes()));
    let mut set = LinkSet {
        revision: None,
        links: configs,
    };
    data.insert(
        LINK_SET_KEY.to_owned(),
        bytes(serde_yaml::to_string(&set)?.as_bytes()),
    );
    let revision = revision(&data);
    set.revision = Some(revision);
    data.insert(
        LINK_SET_KEY.to_owned(),
        bytes(serde_yaml::to_string(&set)?.as_bytes()),
    );
    let secret = Secret {
        metadata: meta.object(&meta.names.links),
        type_: Some("Opaque".to_owned()),
        data: Some(data),
        ..Secret::default()
    };
    Ok(LinksSecret { secret, set })
}

/// The broker's own check of the set, as a node would run it.
fn check(cluster: &str, links: &[LinkConfig]) -> Result<(), BuildError> {
    let mut config = Config::default();
    config.node.cluster = cluster.to_owned();
    config.link_listener = Some(LinkListenerConfig {
        bind: ([127, 0, 0, 1], 0).into(),
        credentials_file: PathBuf::from(ConfigPaths::LINKS_DIR).join(LINK_CREDENTIALS_KEY),
        tls: None,
    });
    config.links = links.to_vec();
    config.validate()?;
    Ok(())
}

/// A short digest of everything in the Secret.
fn revision(data: &BTreeMap<String, ByteString>) -> String {
    let mut all = Vec::new();
    for (key, value) in data {
        all.extend_from_slice(&(key.len() as u64).to_be_bytes());
        all.extend_from_slice(key.as_bytes());
        all.extend_from_slice(&(value.0.len() as u64).to_be_bytes());
        all.extend_from_slice(&value.0);
    }
    content_hash(&all)
}

fn bytes(value: &[u8]) -> ByteString {
    ByteString(value.to_vec())
}

/// The spec's queue bounds over the broker's defaults (validated first).
fn queue(spec: &LinkQueueSpec) -> LinkQueueConfig {
    let mut queue = LinkQueueConfig::default();
    if let Some(n) = spec.max_messages.and_then(|n| usize::try_from(n).ok()) {
        queue.max_messages = n;
    }
    if let Some(n) = spec.max_bytes.and_then(|n| usize::try_from(n).ok()) {
        queue.max_bytes = n;
    }
    queue.message_ttl_secs = spec.message_ttl_secs.and_then(|n| u64::try_from(n).ok());
    if let Some(policy) = spec.when_full {
        queue.when_full = match policy {
            WhenFullSpec::DropNew => WhenFull::DropNew,
            WhenFullSpec::DropOldest => WhenFull::DropOldest,
        };
    }
    queue
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(name: &str) -> MqttCluster {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "strait.dev/v1alpha1",
            "kind": "MqttCluster",
            "metadata": {"name": name, "namespace": "default", "uid": "u-1"},
            "spec": {},
        }))
        .expect("cluster")
    }

    fn dialling(remote: &str, secret: &str) -> SideLink {
        SideLink {
            remote: remote.to_owned(),
            dial: Some(Dial {
                endpoints: vec![format!("{remote}-0.{remote}-headless.default.svc:7883")],
                secret: secret.to_owned(),
                tls: None,
            }),
            accept: None,
            export: vec!["cars/#".to_owned()],
            import: vec!["cmd/#".to_owned()],
            queue: LinkQueueSpec::default(),
            max_hops: 8,
        }
    }

    fn accepting(remote: &str, hashed: &str) -> SideLink {
        SideLink {
            dial: None,
            accept: Some(Accepted {
                hashed: hashed.to_owned(),
                fingerprint: "f1".to_owned(),
            }),
            ..dialling(remote, "")
        }
    }

    fn text(secret: &LinksSecret, key: &str) -> String {
        let data = secret.secret.data.as_ref().expect("data");
        String::from_utf8(data[key].0.clone()).expect("utf-8")
    }

    #[test]
    fn the_set_the_credentials_and_the_secrets_are_in_one_secret() {
        let built = build(
            &cluster("east"),
            &[
                accepting("edge", "strait-link-v1$aa$bb$cc"),
                dialling("west", "a-secret-of-32-bytes-0123456789ab"),
            ],
        )
        .expect("build");
        assert_eq!(
            built.secret.metadata.name.as_deref(),
            Some("east-links"),
            "named after the cluster"
        );
        assert_eq!(
            text(&built, LINK_CREDENTIALS_KEY),
            "edge:strait-link-v1$aa$bb$cc\n"
        );
        assert_eq!(text(&built, FINGERPRINTS_KEY), "edge:f1\n");
        assert_eq!(
            text(&built, "west.secret"),
            "a-secret-of-32-bytes-0123456789ab"
        );
        let set: LinkSet = serde_yaml::from_str(&text(&built, LINK_SET_KEY)).expect("a link set");
        assert_eq!(set, built.set);
        assert_eq!(set.revision.as_deref(), Some(built.revision()));
        let names: Vec<_> = set.links.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["edge", "west"], "sorted by remote");
        assert!(set.links[0].endpoints.is_empty(), "edge only dials in");
        assert_eq!(
            set.links[1].secret_file.as_deref(),
            Some(std::path::Path::new("west.secret")),
            "beside the links file, wherever it is mounted"
        );
        let debug = format!(
            "{:?}",
            dialling("west", "a-secret-of-32-bytes-0123456789ab")
        );
        assert!(!debug.contains("a-secret-of"), "{debug}");
    }

    #[test]
    fn the_revision_follows_the_content_and_not_the_order() {
        let a = dialling("west", "a-secret-of-32-bytes-0123456789ab");
        let b = accepting("edge", "strait-link-v1$aa$bb$cc");
        let one = build(&cluster("east"), &[a.clone(), b.clone()]).expect("build");
        let same = build(&cluster("east"), &[b.clone(), a.clone()]).expect("build");
        assert_eq!(one.revision(), same.revision());
        let rotated = dialling("west", "another-secret-of-32-bytes-012345");
        let other = build(&cluster("east"), &[rotated, b]).expect("build");
        assert_ne!(
            one.revision(),
            other.revision(),
            "a rotated secret is a new revision"
        );
        let empty = build(&cluster("east"), &[]).expect("an empty set");
        assert!(empty.set.links.is_empty());
    }

    #[test]
    fn a_set_the_broker_would_refuse_is_an_error() {
        let mut own = dialling("east", "a-secret-of-32-bytes-0123456789ab");
        own.remote = "east".to_owned();
        let error = build(&cluster("east"), &[own]).expect_err("a link to itself");
        assert!(error.to_string().contains("own name"), "{error}");
    }
}
