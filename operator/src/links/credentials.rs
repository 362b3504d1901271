//! A link's credentials: the secret its dialling side proves, kept in a
//! Secret of a documented shape, and its hash, which is all the accepting
//! side's brokers hold.
//!
//! The Secret has the keys `username` (the dialling cluster's name),
//! `password` (the secret), `endpoints` (where to dial, one `host:port` a
//! line) and, when the link listener serves TLS, `ca.crt`. The side that
//! accepts issues it (once: it is read back at every reconcile, never drawn
//! again), and a user or External Secrets copies it to the dialling side's
//! region. Editing `password` rotates the credential on both ends.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::{Resource, ResourceExt};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use strait_broker::link::credential::{HashMemory, SALT_LEN};
use strait_broker::link::LinkSecret;
use strait_broker::peering::proof;

use crate::crd::ClusterLink;

pub const USERNAME_KEY: &str = "username";
pub const PASSWORD_KEY: &str = "password";
pub const ENDPOINTS_KEY: &str = "endpoints";
pub const CA_KEY: &str = "ca.crt";

/// The shortest secret the brokers take.
const MIN_PASSWORD: usize = 16;
/// Hashes kept at most; a rotation adds one.
const MAX_CACHED_HASHES: usize = 4096;

/// The Secret a link issues, named after the link. The suffix keeps it
/// apart from every Secret of an `MqttCluster` (`-credentials`, `-links`).
pub fn issued_name(link: &str) -> String {
    format!("{link}-link-secret")
}

/// A link credential as a Secret holds it. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct LinkCredential {
    pub username: String,
    pub password: String,
    pub endpoints: Vec<String>,
    pub ca: Option<Vec<u8>>,
}

impl fmt::Debug for LinkCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinkCredential")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

/// What is wrong with a credentials Secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialProblem {
    #[error("Secret {0:?} not found")]
    NotFound(String),
    #[error("Secret {secret:?} has no key {key:?}")]
    MissingKey { secret: String, key: &'static str },
    #[error("the password in Secret {0:?} is shorter than {MIN_PASSWORD} bytes")]
    TooShort(String),
    #[error(
        "Secret {secret:?} was issued for cluster {username:?}, but this side is {expected:?}"
    )]
    ForAnotherCluster {
        secret: String,
        username: String,
        expected: String,
    },
}

impl CredentialProblem {
    /// The condition reason for this problem.
    pub fn reason(&self) -> &'static str {
        match self {
            CredentialProblem::NotFound(_) => "SecretNotFound",
            CredentialProblem::MissingKey { .. } | CredentialProblem::TooShort(_) => {
                "SecretInvalid"
            }
            CredentialProblem::ForAnotherCluster { .. } => "CredentialsForAnotherCluster",
        }
    }
}

impl LinkCredential {
    /// A new credential for the cluster `username`: 256 random bits.
    pub fn generate(username: &str) -> LinkCredential {
        LinkCredential {
            username: username.to_owned(),
            password: crate::resources::random_token(),
            endpoints: Vec::new(),
            ca: None,
        }
    }

    /// Reads a credential from the Secret `name` (`None`: it does not exist).
    pub fn read(name: &str, secret: Option<&Secret>) -> Result<LinkCredential, CredentialProblem> {
        let secret = secret.ok_or_else(|| CredentialProblem::NotFound(name.to_owned()))?;
        let empty = BTreeMap::new();
        let data = secret.data.as_ref().unwrap_or(&empty);
        let text = |key: &'static str| {
            data.get(key)
                .and_then(|v| String::from_utf8(v.0.clone()).ok())
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let missing = |key| CredentialProblem::MissingKey {
            secret: name.to_owned(),
            key,
        };
        let username = text(USERNAME_KEY).ok_or_else(|| missing(USERNAME_KEY))?;
        let password = text(PASSWORD_KEY).ok_or_else(|| missing(PASSWORD_KEY))?;
        if password.len() < MIN_PASSWORD {
            return Err(CredentialProblem::TooShort(name.to_owned()));
        }
        let endpoints = text(ENDPOINTS_KEY)
            .map(|list| {
                list.split(['\n', ','])
                    .map(str::trim)
                    .filter(|e| !e.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let ca = data
            .get(CA_KEY)
            .map(|v| v.0.clone())
            .filter(|v| !v.is_empty());
        Ok(LinkCredential {
            username,
            password,
            endpoints,
            ca,
        })
    }

    /// The same credential read for the dialling cluster `expected`: a
    /// Secret issued to another cluster could never pass the handshake.
    pub fn for_cluster(
        self,
        secret: &str,
        expected: &str,
    ) -> Result<LinkCredential, CredentialProblem> {
        if self.username == expected {
            Ok(self)
        } else {
            Err(CredentialProblem::ForAnotherCluster {
                secret: secret.to_owned(),
                username: self.username,
                expected: expected.to_owned(),
            })
        }
    }
}

/// The Secret `link` issues for `credential`, owned by the link (so it goes
/// with it) and labelled so that the operator's Secret watch sees it.
pub fn issued_secret(link: &ClusterLink, credential: &LinkCredential) -> Option<Secret> {
    let owner = link.controller_owner_ref(&())?;
    let name = link.name_any();
    let mut data = BTreeMap::from([
        (USERNAME_KEY.to_owned(), bytes(&credential.username)),
        (PASSWORD_KEY.to_owned(), bytes(&credential.password)),
        (
            ENDPOINTS_KEY.to_owned(),
            bytes(&credential.endpoints.join("\n")),
        ),
    ]);
    if let Some(ca) = &credential.ca {
        data.insert(CA_KEY.to_owned(), ByteString(ca.clone()));
    }
    Some(Secret {
        metadata: ObjectMeta {
            name: Some(issued_name(&name)),
            namespace: link.namespace(),
            labels: Some(BTreeMap::from([
                (
                    "app.kubernetes.io/managed-by".to_owned(),
                    "strait-operator".to_owned(),
                ),
                ("app.kubernetes.io/component".to_owned(), "link".to_owned()),
                (super::LINK_LABEL.to_owned(), name),
            ])),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(data),
        ..Secret::default()
    })
}

fn bytes(s: &str) -> ByteString {
    ByteString(s.as_bytes().to_vec())
}

/// Why a credential could not be hashed.
#[derive(Debug, thiserror::Error)]
#[error("hashing a link credential: {0}")]
pub struct HashFailed(String);

/// A fast, keyed fingerprint of a credential, kept beside its hash in the
/// links Secret: while the fingerprint matches, the hash there is still the
/// credential's, and no Argon2 runs (not even after the operator restarts).
/// Keyed with the accepting cluster's own secret, it tells nothing about the
/// password to whoever lacks that secret.
pub fn fingerprint(cluster_secret: &str, remote: &str, password: &str) -> String {
    let key = proof::hash(cluster_secret.as_bytes());
    proof::mac(
        &key,
        b"strait link credential fingerprint",
        &[remote.as_bytes(), password.as_bytes()],
    )
    .iter()
    .map(|b| format!("{b:02x}"))
    .collect()
}

/// Hashed credentials, remembered: Argon2id is slow on purpose, and every
/// reconcile of an accepting cluster needs the hash of each credential.
///
/// The salt comes from the accepting cluster's own random secret and the
/// remote's name, so the same credential always hashes to the same line
/// (the links Secret is rewritten only when something changed) while no
/// two clusters share a salt.
///
/// Hashes are computed one at a time on a thread of their own, in one
/// Argon2 working memory kept for the operator's life (19 MiB, allocated
/// with the first hash): allocated afresh for each hash, the allocator
/// kept most of each, and fifty links cost 150 MiB.
pub struct CredentialHashes {
    known: Mutex<HashMap<[u8; 32], String>>,
    hasher: std::sync::mpsc::Sender<HashJob>,
}

/// A credential to hash, and where to send its hash.
type HashJob = (
    LinkSecret,
    [u8; SALT_LEN],
    tokio::sync::oneshot::Sender<Result<String, String>>,
);

impl fmt::Debug for CredentialHashes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CredentialHashes")
    }
}

impl Default for CredentialHashes {
    fn default() -> Self {
        let (hasher, jobs) = std::sync::mpsc::channel::<HashJob>();
        let spawned = std::thread::Builder::new()
            .name("link-credential-hasher".into())
            .spawn(move || {
                let mut memory = None;
                for (secret, salt, reply) in jobs {
                    let memory = memory.get_or_insert_with(HashMemory::new);
                    let hashed = secret
                        .hash_with_salt_in(salt, memory)
                        .map(|h| h.encode())
                        .map_err(|e| e.to_string());
                    let _ = reply.send(hashed);
                }
            });
        if let Err(error) = spawned {
            tracing::error!(%error, "cannot start the credential hasher: accepting links will fail");
        }
        CredentialHashes {
            known: Mutex::default(),
            hasher,
        }
    }
}

impl CredentialHashes {
    /// The credentials-file form of `password` for the remote cluster
    /// `remote`, accepted by the cluster whose secret is `cluster_secret`.
    pub async fn hashed(
        &self,
        cluster_secret: &str,
        remote: &str,
        password: &str,
    ) -> Result<String, HashFailed> {
        let salt = salt(cluster_secret, remote);
        let key: [u8; 32] = Sha256::new()
            .chain_update(salt)
            .chain_update(password.as_bytes())
            .finalize()
            .into();
        if let Some(hashed) = self.known.lock().get(&key) {
            return Ok(hashed.clone());
        }
        let secret = LinkSecret::new(password.as_bytes())
            .ok_or_else(|| HashFailed("the password is too short".into()))?;
        let (reply, hashed) = tokio::sync::oneshot::channel();
        self.hasher
            .send((secret, salt, reply))
            .map_err(|_| HashFailed("the hasher thread is gone".into()))?;
        let hashed = hashed
            .await
            .map_err(|_| HashFailed("the hasher thread is gone".into()))?
            .map_err(HashFailed)?;
        let mut known = self.known.lock();
        if known.len() >= MAX_CACHED_HASHES {
            known.clear();
        }
        known.insert(key, hashed.clone());
        Ok(hashed)
    }
}

fn salt(cluster_secret: &str, remote: &str) -> [u8; SALT_LEN] {
    let digest = Sha256::new()
        .chain_update(b"strait link credential salt\0")
        .chain_update((cluster_secret.len() as u64).to_be_bytes())
        .chain_update(cluster_secret.as_bytes())
        .chain_update(remote.as_bytes())
        .finalize();
    std::array::from_fn(|i| digest[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(pairs: &[(&str, &str)]) -> Secret {
        Secret {
            data: Some(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), bytes(v)))
                    .collect(),
            ),
            ..Secret::default()
        }
    }

    #[test]
    fn a_credential_reads_back_from_its_secret_and_problems_are_named() {
        let issued = LinkCredential::generate("edge-1");
        assert_eq!(issued.password.len(), 64);
        assert!(!format!("{issued:?}").contains(&issued.password));
        let read = LinkCredential::read(
            "s",
            Some(&secret(&[
                ("username", "edge-1"),
                ("password", &issued.password),
                ("endpoints", "a:1\nb:2"),
            ])),
        )
        .expect("valid");
        assert_eq!(read.endpoints, ["a:1", "b:2"]);
        assert_eq!(read.clone().for_cluster("s", "edge-1"), Ok(read.clone()));
        let other = read
            .for_cluster("s", "edge-2")
            .expect_err("another cluster");
        assert_eq!(other.reason(), "CredentialsForAnotherCluster");

        assert_eq!(
            LinkCredential::read("s", None)
                .expect_err("missing")
                .reason(),
            "SecretNotFound"
        );
        let short = secret(&[("username", "a"), ("password", "short")]);
        assert_eq!(
            LinkCredential::read("s", Some(&short)).expect_err("short"),
            CredentialProblem::TooShort("s".into())
        );
        let no_user = secret(&[("password", &issued.password)]);
        assert_eq!(
            LinkCredential::read("s", Some(&no_user))
                .expect_err("no username")
                .to_string(),
            "Secret \"s\" has no key \"username\""
        );
    }

    #[tokio::test]
    async fn the_same_credential_hashes_the_same_for_one_cluster_only() {
        let hashes = CredentialHashes::default();
        let password = "a-secret-of-at-least-16-bytes";
        let one = hashes
            .hashed("cluster-a", "edge", password)
            .await
            .expect("hash");
        assert_eq!(
            one,
            hashes
                .hashed("cluster-a", "edge", password)
                .await
                .expect("hash")
        );
        assert_ne!(
            one,
            hashes
                .hashed("cluster-b", "edge", password)
                .await
                .expect("hash")
        );
        assert!(one.starts_with("strait-link-v1$"));
        assert!(!one.contains(password));
    }

    #[test]
    fn fingerprints_follow_the_password_the_remote_and_the_key() {
        let one = fingerprint("cluster-a", "edge", "a-secret-of-at-least-16-bytes");
        assert_eq!(one.len(), 64);
        assert_eq!(
            one,
            fingerprint("cluster-a", "edge", "a-secret-of-at-least-16-bytes")
        );
        assert_ne!(
            one,
            fingerprint("cluster-a", "edge", "another-secret-of-16-bytes")
        );
        assert_ne!(
            one,
            fingerprint("cluster-a", "edge-2", "a-secret-of-at-least-16-bytes")
        );
        assert_ne!(
            one,
            fingerprint("cluster-b", "edge", "a-secret-of-at-least-16-bytes")
        );
    }
}
