//! The cluster's users, as the broker's credentials file lists them.
//!
//! A users Secret may give a password as an Argon2 hash (what `strait-broker
//! passwd` prints) or in plain text: the operator hashes plain passwords, so
//! that nobody needs the broker's binary to make a user. When the spec names
//! no users Secret at all, the operator generates a first user and keeps its
//! credentials in the `<cluster>-default-user` Secret.
//!
//! A fresh hash has a fresh salt, so hashing on every reconcile would change
//! the credentials file every time and every pod would reload it. A password
//! is hashed only when the live credentials file has no hash for that user
//! that it still matches. Checking that costs an Argon2 computation too, so
//! the operator remembers ([`KnownHashes`]) which hashes it has seen match
//! which passwords: a steady reconcile computes none.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::Mutex;

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::credentials::{random_token, HashError};
use super::meta::ChildMeta;

/// Username of the user the operator generates when the spec names none.
pub const DEFAULT_USERNAME: &str = "strait";
const USERNAME: &str = "username";
const PASSWORD: &str = "password";

/// A password as a users Secret (or the operator) gives it. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub enum Password {
    /// An Argon2 hash in PHC format, used as it is.
    Hash(String),
    /// A password chosen by a person: hashed with the broker's own parameters.
    Plain(String),
    /// 256 random bits drawn by the operator: brute force is out of reach,
    /// so light hashing parameters do.
    Generated(String),
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Password::Hash(_) => "Hash(<redacted>)",
            Password::Plain(_) => "Plain(<redacted>)",
            Password::Generated(_) => "Generated(<redacted>)",
        })
    }
}

/// One user of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub password: Password,
}

/// The first user, generated when the spec names no users Secret.
#[derive(Clone, PartialEq, Eq)]
pub struct DefaultUser {
    password: String,
}

impl fmt::Debug for DefaultUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DefaultUser(<redacted>)")
    }
}

impl DefaultUser {
    /// Reads the user back from its Secret; `None` when it has no password.
    pub fn from_secret(secret: &Secret) -> Option<DefaultUser> {
        let password = secret.data.as_ref()?.get(PASSWORD)?;
        let password = String::from_utf8(password.0.clone()).ok()?;
        (!password.is_empty()).then_some(DefaultUser { password })
    }

    /// Draws a new password.
    pub fn generate() -> DefaultUser {
        DefaultUser {
            password: random_token(),
        }
    }

    /// A fixed password, for tests and fixtures.
    pub fn fixed(password: &str) -> DefaultUser {
        DefaultUser {
            password: password.to_owned(),
        }
    }

    /// The user, for the credentials file.
    pub fn user(&self) -> User {
        User {
            name: DEFAULT_USERNAME.to_owned(),
            password: Password::Generated(self.password.clone()),
        }
    }
}

/// The generated user's Secret, as the spec wants it.
#[derive(Debug, Clone)]
pub enum DefaultUserSecret {
    /// The spec names no users Secret: the user's credentials.
    Active(Secret),
    /// The spec names users Secrets, so the generated user is gone: its
    /// Secret keeps only the username and says why. It is applied only
    /// over one that exists, since the operator may not delete Secrets (its
    /// RBAC grants no `delete` on them); the cluster's deletion removes it.
    Retired(Secret),
}

/// Annotation of a retired default-user Secret: why it holds no password.
pub const RETIRED_ANNOTATION: &str = "strait.dev/retired";

/// The `<cluster>-default-user` Secret: what a client connects with, or,
/// without `user`, its retired form.
pub(super) fn build_default_user(
    meta: &ChildMeta,
    user: Option<&DefaultUser>,
) -> DefaultUserSecret {
    let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
    let mut data = BTreeMap::from([(USERNAME.to_owned(), bytes(DEFAULT_USERNAME))]);
    let mut metadata = meta.object(&meta.names.default_user);
    if let Some(user) = user {
        data.insert(PASSWORD.to_owned(), bytes(&user.password));
    } else {
        metadata.annotations = Some(BTreeMap::from([(
            RETIRED_ANNOTATION.to_owned(),
            "spec.auth.users names users Secrets: the generated user is removed".to_owned(),
        )]));
    }
    let secret = Secret {
        metadata,
        type_: Some("kubernetes.io/basic-auth".to_owned()),
        data: Some(data),
        ..Secret::default()
    };
    match user {
        Some(_) => DefaultUserSecret::Active(secret),
        None => DefaultUserSecret::Retired(secret),
    }
}

/// Hashes this process has seen match their passwords, by a digest of the
/// two (never a password itself). Without it every reconcile would check
/// every password again: an Argon2 computation each, and its memory (up to
/// 19 MiB) on a blocking thread.
#[derive(Debug, Default)]
pub struct KnownHashes(Mutex<HashSet<[u8; 32]>>);

impl KnownHashes {
    /// More than any operator needs; beyond it the set starts afresh.
    const LIMIT: usize = 100_000;

    fn key(hash: &str, password: &str) -> [u8; 32] {
        let mut digest = Sha256::new();
        digest.update(hash.as_bytes());
        digest.update([0]);
        digest.update(password.as_bytes());
        digest.finalize().into()
    }

    fn contains(&self, hash: &str, password: &str) -> bool {
        self.0
            .lock()
            .is_ok_and(|known| known.contains(&Self::key(hash, password)))
    }

    fn insert(&self, hash: &str, password: &str) {
        if let Ok(mut known) = self.0.lock() {
            if known.len() >= Self::LIMIT {
                known.clear();
            }
            known.insert(Self::key(hash, password));
        }
    }
}

/// `user:hash` pairs of a credentials file.
fn parse_live(live: Option<&str>) -> HashMap<&str, &str> {
    live.unwrap_or_default()
        .lines()
        .filter_map(|line| line.trim().split_once(':'))
        .collect()
}

/// The credentials-file lines of `users` when they take no Argon2
/// computation: every password is a hash, or has a live hash `known` says it
/// matches. `None` when one must be checked or hashed ([`credentials_lines`]).
pub fn known_lines(users: &[User], live: Option<&str>, known: &KnownHashes) -> Option<Vec<String>> {
    let live = parse_live(live);
    users
        .iter()
        .map(|user| {
            let hash = match &user.password {
                Password::Hash(hash) => hash.as_str(),
                Password::Plain(password) | Password::Generated(password) => live
                    .get(user.name.as_str())
                    .filter(|hash| known.contains(hash, password))?,
            };
            Some(format!("{}:{hash}", user.name))
        })
        .collect()
}

/// Credentials-file lines (`username:<hash>`) for `users`, in their order.
///
/// `live` is the credentials file the pods have now: a user's hash there is
/// kept when the password still matches it. Each plain password not in
/// `known` costs one Argon2 computation (a check or a hash), so call this off
/// the async runtime.
pub fn credentials_lines(
    users: &[User],
    live: Option<&str>,
    known: &KnownHashes,
) -> Result<Vec<String>, HashError> {
    let live = parse_live(live);
    users
        .iter()
        .map(|user| {
            let hash = match &user.password {
                Password::Hash(hash) => hash.clone(),
                Password::Plain(password) | Password::Generated(password) => {
                    let matching = live.get(user.name.as_str()).filter(|hash| {
                        known.contains(hash, password)
                            || strait_broker::auth::verify(password.as_bytes(), hash)
                    });
                    let hash = match matching {
                        Some(hash) => (*hash).to_owned(),
                        None => hash(&user.password)?,
                    };
                    known.insert(&hash, password);
                    hash
                }
            };
            Ok(format!("{}:{hash}", user.name))
        })
        .collect()
}

fn hash(password: &Password) -> Result<String, HashError> {
    match password {
        Password::Hash(hash) => Ok(hash.clone()),
        Password::Plain(password) => {
            strait_broker::auth::hash_password(password).map_err(|e| HashError::new(e.to_string()))
        }
        Password::Generated(password) => light_hash(password),
    }
}

/// Argon2id at its least cost (8 KiB, one pass) for the operator's own
/// 256-bit random secrets: a verifier of a secret that cannot be guessed needs
/// no work factor, and a costly one would cost twice. Each hash and each
/// check of a 4 MiB one freed a 4 MiB buffer, after which glibc's malloc
/// raised its mmap threshold and kept far more memory: the operator's peak RSS
/// over 100 new clusters went from 44 MiB to 96 MiB (`make bench-operator`).
/// The brokers check these hashes at every internal and link connection, so
/// they gain too.
pub(super) fn light_hash(password: &str) -> Result<String, HashError> {
    let mut salt = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| HashError::new(e.to_string()))?;
    let params =
        Params::new(Params::MIN_M_COST, 1, 1, None).map_err(|e| HashError::new(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| HashError::new(e.to_string()))?
        .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, password: Password) -> User {
        User {
            name: name.to_owned(),
            password,
        }
    }

    fn hash_of(line: &str) -> &str {
        line.split_once(':').expect("user:hash").1
    }

    #[test]
    fn plain_passwords_are_hashed_and_hashes_kept() {
        let given = "$argon2id$v=19$m=4096,t=1,p=1$c2FsdHNhbHQ$aGFzaA";
        let users = [
            user("alice", Password::Plain("wonderland".into())),
            user("bob", Password::Hash(given.into())),
        ];
        let lines = credentials_lines(&users, None, &KnownHashes::default()).expect("lines");
        assert!(lines[0].starts_with("alice:$argon2id$"), "{}", lines[0]);
        assert!(strait_broker::auth::verify(
            b"wonderland",
            hash_of(&lines[0])
        ));
        assert_eq!(lines[1], format!("bob:{given}"));
    }

    #[test]
    fn a_matching_live_hash_is_reused_and_a_stale_one_replaced() {
        let users = [user("alice", Password::Plain("wonderland".into()))];
        let first = credentials_lines(&users, None, &KnownHashes::default()).expect("lines");
        // Checked by Argon2 in a fresh process, remembered in this one.
        let fresh = KnownHashes::default();
        let live = format!("other:x\n{}\n", first[0]);
        assert_eq!(known_lines(&users, Some(&live), &fresh), None);
        let again = credentials_lines(&users, Some(&live), &fresh).expect("lines");
        assert_eq!(again, first, "an unchanged password keeps its hash");
        assert_eq!(
            known_lines(&users, Some(&live), &fresh),
            Some(first.clone())
        );

        let changed = [user("alice", Password::Plain("looking-glass".into()))];
        assert_eq!(known_lines(&changed, Some(&first[0]), &fresh), None);
        let rehashed = credentials_lines(&changed, Some(&first[0]), &fresh).expect("lines");
        assert_ne!(rehashed, first);
        assert!(strait_broker::auth::verify(
            b"looking-glass",
            hash_of(&rehashed[0])
        ));
    }

    #[test]
    fn the_default_user_round_trips_through_its_secret_and_hides_its_password() {
        let user = DefaultUser::generate();
        assert_ne!(user, DefaultUser::generate());
        let secret = Secret {
            data: Some(BTreeMap::from([(
                PASSWORD.to_owned(),
                ByteString(user.password.as_bytes().to_vec()),
            )])),
            ..Secret::default()
        };
        assert_eq!(DefaultUser::from_secret(&secret), Some(user.clone()));
        assert_eq!(DefaultUser::from_secret(&Secret::default()), None);

        let line = credentials_lines(&[user.user()], None, &KnownHashes::default()).expect("lines");
        assert!(line[0].starts_with("strait:$argon2id$v=19$m=8,t=1,p=1$"));
        for shown in [format!("{user:?}"), format!("{:?}", user.user())] {
            assert!(!shown.contains(&user.password), "{shown}");
        }
    }
}
