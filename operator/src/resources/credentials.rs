//! The cluster's own credentials: the admin API token, the internal user
//! the nodes authenticate to each other with, and the secret that
//! authenticates the mesh between the nodes.
//!
//! They are generated once, when the credentials Secret does not exist yet,
//! and read back from it on every later reconcile, so they never change under
//! running pods. A Secret written before the mesh existed lacks the cluster
//! secret: it gets one, and keeps its other values. The Secret also carries the broker's credentials file
//! (`passwd`): the internal user's line plus the lines of the users Secrets.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use rand::RngCore;

use super::meta::ChildMeta;
use super::users::light_hash;

/// Username of the nodes' internal user.
pub const INTERNAL_USER: &str = "strait-internal";

/// Key of the admin API token in the credentials Secret.
pub const ADMIN_TOKEN: &str = "admin-token";
const INTERNAL_USERNAME: &str = "internal-username";
const INTERNAL_PASSWORD: &str = "internal-password";
const INTERNAL_HASH: &str = "internal-password-hash";
const PASSWD: &str = "passwd";
/// Key (and file name in the pod) of the mesh's shared secret.
pub const CLUSTER_SECRET: &str = "cluster-secret";

/// Keys of the credentials Secret.
pub const CREDENTIALS_KEYS: [&str; 6] = [
    ADMIN_TOKEN,
    INTERNAL_USERNAME,
    INTERNAL_PASSWORD,
    INTERNAL_HASH,
    PASSWD,
    CLUSTER_SECRET,
];

/// Why a password could not be hashed.
#[derive(Debug, thiserror::Error)]
#[error("hashing a password: {0}")]
pub struct HashError(String);

impl HashError {
    pub(super) fn new(message: String) -> HashError {
        HashError(message)
    }
}

/// Generated secrets of one cluster. `Debug` never shows them.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    admin_token: String,
    internal_password: String,
    internal_password_hash: String,
    cluster_secret: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credentials(<redacted>)")
    }
}

impl Credentials {
    /// Reads the credentials back from the cluster's Secret; `None` when the
    /// admin token or the internal user is missing. A missing cluster secret
    /// alone is drawn afresh, so that the other values stay as they are.
    pub fn from_secret(secret: &Secret) -> Option<Credentials> {
        let data = secret.data.as_ref()?;
        let get = |key: &str| {
            data.get(key)
                .and_then(|v| String::from_utf8(v.0.clone()).ok())
                .filter(|v| !v.is_empty())
        };
        Some(Credentials {
            admin_token: get(ADMIN_TOKEN)?,
            internal_password: get(INTERNAL_PASSWORD)?,
            internal_password_hash: get(INTERNAL_HASH)?,
            cluster_secret: get(CLUSTER_SECRET).unwrap_or_else(random_token),
        })
    }

    /// Draws new random credentials.
    ///
    /// The internal password is 256 random bits, so its Argon2 hash uses the
    /// least parameters: brute force is out of reach anyway.
    pub fn generate() -> Result<Credentials, HashError> {
        let internal_password = random_token();
        let hash = light_hash(&internal_password)?;
        Ok(Credentials {
            admin_token: random_token(),
            internal_password,
            internal_password_hash: hash,
            cluster_secret: random_token(),
        })
    }

    /// Fixed credentials for tests and fixtures.
    pub fn fixed(
        admin_token: &str,
        internal_password: &str,
        internal_password_hash: &str,
        cluster_secret: &str,
    ) -> Self {
        Credentials {
            admin_token: admin_token.to_owned(),
            internal_password: internal_password.to_owned(),
            internal_password_hash: internal_password_hash.to_owned(),
            cluster_secret: cluster_secret.to_owned(),
        }
    }

    /// The credentials-file line of the internal user.
    fn internal_line(&self) -> String {
        format!("{INTERNAL_USER}:{}", self.internal_password_hash)
    }
}

/// The broker's credentials file as the credentials Secret holds it now.
pub fn credentials_file(secret: &Secret) -> Option<String> {
    let file = secret.data.as_ref()?.get(PASSWD)?;
    String::from_utf8(file.0.clone()).ok()
}

/// 256 random bits, hex-encoded: every secret the operator draws.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The credentials Secret: generated values plus the broker's credentials file.
pub(super) fn build(meta: &ChildMeta, credentials: &Credentials, user_lines: &[String]) -> Secret {
    let mut passwd = credentials.internal_line();
    passwd.push('\n');
    for line in user_lines {
        passwd.push_str(line);
        passwd.push('\n');
    }
    let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
    Secret {
        metadata: meta.object(&meta.names.credentials),
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([
            (ADMIN_TOKEN.to_owned(), bytes(&credentials.admin_token)),
            (INTERNAL_USERNAME.to_owned(), bytes(INTERNAL_USER)),
            (
                INTERNAL_PASSWORD.to_owned(),
                bytes(&credentials.internal_password),
            ),
            (
                INTERNAL_HASH.to_owned(),
                bytes(&credentials.internal_password_hash),
            ),
            (PASSWD.to_owned(), bytes(&passwd)),
            (
                CLUSTER_SECRET.to_owned(),
                bytes(&credentials.cluster_secret),
            ),
        ])),
        ..Secret::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_credentials_differ_and_never_show_in_debug() {
        let a = Credentials::generate().expect("generate");
        let b = Credentials::generate().expect("generate");
        assert_ne!(a, b);
        assert_eq!(a.admin_token.len(), 64);
        assert_eq!(a.cluster_secret.len(), 64, "256 bits, hex-encoded");
        assert_ne!(a.cluster_secret, b.cluster_secret);
        assert_ne!(a.cluster_secret, a.admin_token);
        assert!(a.internal_password_hash.starts_with("$argon2id$"));
        let debug = format!("{a:?}");
        assert!(
            !debug.contains(&a.admin_token)
                && !debug.contains(&a.internal_password)
                && !debug.contains(&a.cluster_secret)
        );
    }

    fn stored(keys: &[(&str, &str)]) -> Secret {
        Secret {
            data: Some(
                keys.iter()
                    .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        }
    }

    #[test]
    fn credentials_read_back_from_their_secret() {
        let creds = Credentials::fixed("token", "password", "$argon2id$fixed", "mesh");
        let secret = stored(&[
            (ADMIN_TOKEN, "token"),
            (INTERNAL_PASSWORD, "password"),
            (INTERNAL_HASH, "$argon2id$fixed"),
            (CLUSTER_SECRET, "mesh"),
        ]);
        assert_eq!(Credentials::from_secret(&secret), Some(creds));
        assert_eq!(Credentials::from_secret(&Secret::default()), None);
    }

    #[test]
    fn a_secret_without_a_cluster_secret_gains_one_and_keeps_the_rest() {
        let old = stored(&[
            (ADMIN_TOKEN, "token"),
            (INTERNAL_PASSWORD, "password"),
            (INTERNAL_HASH, "$argon2id$fixed"),
        ]);
        let creds = Credentials::from_secret(&old).expect("the other keys are there");
        assert_eq!(
            (
                creds.admin_token.as_str(),
                creds.internal_password.as_str(),
                creds.internal_password_hash.as_str()
            ),
            ("token", "password", "$argon2id$fixed")
        );
        assert_eq!(creds.cluster_secret.len(), 64);

        let cluster: crate::crd::MqttCluster = serde_json::from_value(serde_json::json!({
            "apiVersion": "strait.dev/v1alpha1",
            "kind": "MqttCluster",
            "metadata": {"name": "alpha", "namespace": "default", "uid": "u-1"},
            "spec": {},
        }))
        .expect("cluster");
        let meta = ChildMeta::of(&cluster).expect("meta");
        let rebuilt = build(&meta, &creds, &[]).data.expect("data");
        for key in CREDENTIALS_KEYS {
            assert!(rebuilt.contains_key(key), "{key} is written");
        }
        assert_eq!(rebuilt[ADMIN_TOKEN].0, b"token");
        assert_eq!(rebuilt[INTERNAL_PASSWORD].0, b"password");
        assert_eq!(rebuilt[CLUSTER_SECRET].0, creds.cluster_secret.as_bytes());
    }
}
