//! Link credentials: a remote cluster proves it holds its secret without
//! sending it, and the accepting side stores only a hash of it.
//!
//! The scheme is SCRAM's (RFC 5802) with BLAKE2b and Argon2id in place of
//! HMAC-SHA and PBKDF2. From the secret and a salt both sides can derive
//! `salted = Argon2id(secret, salt)`, then `client_key = MAC(salted, "client
//! key")` and `server_key = MAC(salted, "server key")`. The acceptor stores
//! only the salt, `stored_key = H(client_key)` and `server_key`. Over a fresh
//! nonce from each side, the dialer sends `client_key XOR MAC(stored_key,
//! transcript)`; the acceptor recovers `client_key` and checks its hash. The
//! acceptor answers with `MAC(server_key, transcript)`, so the dialer knows it
//! reached a cluster that was given its credential. The transcript covers
//! both nonces, both cluster names and the dialer's incarnation: a recorded
//! handshake cannot be replayed, and a credential issued to cluster X cannot
//! be used to claim to be Y. Stealing the stored hash is not enough to dial in.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::OnceLock;

use crate::peering::proof::{self, LEN};

const CONTEXT: &[u8] = b"strait-link-credential-v1";
/// The prefix of a hashed credential in a credentials file.
const SCHEME: &str = "strait-link-v1";
pub const SALT_LEN: usize = 16;

/// A secret this side proves when it dials. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct LinkSecret(Vec<u8>);

impl fmt::Debug for LinkSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LinkSecret(<redacted>)")
    }
}

/// What the accepting side keeps of a remote cluster's secret. `Debug`
/// never shows the keys.
#[derive(Clone, PartialEq, Eq)]
pub struct HashedCredential {
    pub salt: [u8; SALT_LEN],
    stored_key: [u8; LEN],
    server_key: [u8; LEN],
}

impl fmt::Debug for HashedCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HashedCredential(<redacted>)")
    }
}

/// Why a credential could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: the link secret is shorter than 16 bytes")]
    TooShort { path: std::path::PathBuf },
    #[error("{path} line {line}: expected <cluster>:{SCHEME}$<salt>$<stored key>$<server key>")]
    Malformed {
        path: std::path::PathBuf,
        line: usize,
    },
    #[error("hashing the secret failed: {0}")]
    Hash(String),
}

/// The keys both sides derive from the secret and salt.
#[derive(Clone)]
pub struct SaltedKeys {
    client_key: [u8; LEN],
    server_key: [u8; LEN],
}

impl fmt::Debug for SaltedKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SaltedKeys(<redacted>)")
    }
}

impl LinkSecret {
    /// Reads a secret file (surrounding whitespace ignored: Secrets often end in a newline).
    pub fn load(path: &Path) -> Result<LinkSecret, CredentialError> {
        let text = std::fs::read(path).map_err(|source| CredentialError::Read {
            path: path.to_owned(),
            source,
        })?;
        LinkSecret::new(text.trim_ascii()).ok_or_else(|| CredentialError::TooShort {
            path: path.to_owned(),
        })
    }

    /// A secret of at least 16 bytes.
    pub fn new(bytes: &[u8]) -> Option<LinkSecret> {
        (bytes.len() >= 16).then(|| LinkSecret(bytes.to_vec()))
    }

    /// Derives the keys for `salt` (Argon2id: deliberately slow, so run it
    /// off the async threads; a dialer caches the result per salt).
    pub fn salted(&self, salt: &[u8; SALT_LEN]) -> Result<SaltedKeys, CredentialError> {
        self.salted_in(salt, &mut HashMemory::new())
    }

    /// [`LinkSecret::salted`] in `memory`, kept by a caller that derives
    /// many keys.
    pub fn salted_in(
        &self,
        salt: &[u8; SALT_LEN],
        memory: &mut HashMemory,
    ) -> Result<SaltedKeys, CredentialError> {
        let mut salted = [0u8; LEN];
        argon2::Argon2::default()
            .hash_password_into_with_memory(&self.0, salt, &mut salted, &mut memory.0)
            .map_err(|e| CredentialError::Hash(e.to_string()))?;
        Ok(SaltedKeys {
            client_key: proof::mac(&salted, CONTEXT, &[b"client key"]),
            server_key: proof::mac(&salted, CONTEXT, &[b"server key"]),
        })
    }

    /// The hashed form the accepting side stores, with a fresh salt.
    pub fn hash(&self) -> Result<HashedCredential, CredentialError> {
        self.hash_with_salt(rand::random())
    }

    /// The hashed form with a given salt: the operator derives the salt from
    /// a per-cluster key, so that hashing the same secret again gives the
    /// same line and a reconcile rewrites nothing.
    pub fn hash_with_salt(
        &self,
        salt: [u8; SALT_LEN],
    ) -> Result<HashedCredential, CredentialError> {
        self.hash_with_salt_in(salt, &mut HashMemory::new())
    }

    /// [`LinkSecret::hash_with_salt`] in `memory`, kept by a caller that
    /// hashes many credentials.
    pub fn hash_with_salt_in(
        &self,
        salt: [u8; SALT_LEN],
        memory: &mut HashMemory,
    ) -> Result<HashedCredential, CredentialError> {
        let keys = self.salted_in(&salt, memory)?;
        Ok(HashedCredential {
            salt,
            stored_key: proof::hash(&keys.client_key),
            server_key: keys.server_key,
        })
    }
}

/// Argon2's working memory (19 MiB), for reuse: the allocator may keep each
/// freed block for the thread that freed it rather than return it, so a
/// process that hashes many credentials would grow by most of a block per
/// hash; one kept block bounds it.
pub struct HashMemory(Vec<argon2::Block>);

impl HashMemory {
    pub fn new() -> HashMemory {
        let blocks = usize::try_from(argon2::Params::DEFAULT_M_COST).unwrap_or(19 * 1024);
        HashMemory(vec![argon2::Block::default(); blocks])
    }
}

impl Default for HashMemory {
    fn default() -> Self {
        HashMemory::new()
    }
}

impl fmt::Debug for HashMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HashMemory({} blocks)", self.0.len())
    }
}

/// Everything a handshake's proofs cover.
#[derive(Debug, Clone, Copy)]
pub struct Transcript<'a> {
    pub acceptor_nonce: &'a [u8; LEN],
    pub dialer_nonce: &'a [u8; LEN],
    pub dialer_cluster: &'a str,
    pub acceptor_cluster: &'a str,
    pub incarnation: u64,
}

impl Transcript<'_> {
    fn mac(&self, key: &[u8; LEN], purpose: &[u8]) -> [u8; LEN] {
        let incarnation = self.incarnation.to_be_bytes();
        proof::mac(
            key,
            CONTEXT,
            &[
                purpose,
                self.acceptor_nonce,
                self.dialer_nonce,
                self.dialer_cluster.as_bytes(),
                self.acceptor_cluster.as_bytes(),
                &incarnation,
            ],
        )
    }
}

fn xor(a: &[u8; LEN], b: &[u8; LEN]) -> [u8; LEN] {
    std::array::from_fn(|i| a[i] ^ b[i])
}

impl SaltedKeys {
    /// The dialer's proof.
    pub fn client_proof(&self, transcript: &Transcript<'_>) -> [u8; LEN] {
        let stored_key = proof::hash(&self.client_key);
        xor(
            &self.client_key,
            &transcript.mac(&stored_key, b"client proof"),
        )
    }

    /// Whether the acceptor's signature shows it holds this credential's hash.
    pub fn verify_server(&self, transcript: &Transcript<'_>, signature: &[u8; LEN]) -> bool {
        let expected = transcript.mac(&self.server_key, b"server signature");
        constant_time_eq(&expected, signature)
    }
}

impl HashedCredential {
    /// Whether `client_proof` comes from the holder of the secret.
    pub fn verify_client(&self, transcript: &Transcript<'_>, client_proof: &[u8; LEN]) -> bool {
        let client_key = xor(
            client_proof,
            &transcript.mac(&self.stored_key, b"client proof"),
        );
        constant_time_eq(&proof::hash(&client_key), &self.stored_key)
    }

    /// The acceptor's answer, proving it holds the hash.
    pub fn server_signature(&self, transcript: &Transcript<'_>) -> [u8; LEN] {
        transcript.mac(&self.server_key, b"server signature")
    }

    /// A credential that no secret answers, for a cluster that has none
    /// here: its salt is stable per name, so a prober cannot tell known
    /// cluster names from unknown ones before failing the proof.
    pub fn decoy(cluster: &str) -> HashedCredential {
        static KEY: OnceLock<[u8; LEN]> = OnceLock::new();
        let key = KEY.get_or_init(proof::nonce);
        let salt = proof::mac(key, CONTEXT, &[b"decoy salt", cluster.as_bytes()]);
        HashedCredential {
            salt: std::array::from_fn(|i| salt[i]),
            stored_key: proof::nonce(),
            server_key: proof::nonce(),
        }
    }

    /// The credentials-file form.
    pub fn encode(&self) -> String {
        format!(
            "{SCHEME}${}${}${}",
            hex(&self.salt),
            hex(&self.stored_key),
            hex(&self.server_key)
        )
    }

    fn decode(text: &str) -> Option<HashedCredential> {
        let mut parts = text.split('$');
        if parts.next()? != SCHEME {
            return None;
        }
        let credential = HashedCredential {
            salt: unhex(parts.next()?)?,
            stored_key: unhex(parts.next()?)?,
            server_key: unhex(parts.next()?)?,
        };
        parts.next().is_none().then_some(credential)
    }
}

/// The remote clusters allowed in, by name.
#[derive(Debug, Clone, Default)]
pub struct Credentials(HashMap<String, HashedCredential>);

impl Credentials {
    /// Reads a credentials file: `<cluster>:<hashed credential>` per line;
    /// blank lines and `#` comments are skipped.
    pub fn load(path: &Path) -> Result<Credentials, CredentialError> {
        let text = std::fs::read_to_string(path).map_err(|source| CredentialError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut map = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let malformed = || CredentialError::Malformed {
                path: path.to_owned(),
                line: i + 1,
            };
            let (cluster, hashed) = line.split_once(':').ok_or_else(malformed)?;
            let credential = HashedCredential::decode(hashed).ok_or_else(malformed)?;
            map.insert(cluster.to_owned(), credential);
        }
        Ok(Credentials(map))
    }

    /// The credential of `cluster`, or a decoy when it has none.
    pub fn for_cluster(&self, cluster: &str) -> (HashedCredential, bool) {
        match self.0.get(cluster) {
            Some(credential) => (credential.clone(), true),
            None => (HashedCredential::decoy(cluster), false),
        }
    }
}

/// The link listener's credentials file, read again whenever it changes
/// (its modification time or length), so that a credential added or
/// rotated by the operator (a Secret the kubelet updates in place) admits
/// the remote without a restart.
#[derive(Debug)]
pub struct CredentialsFile {
    path: std::path::PathBuf,
    cached: parking_lot::Mutex<(Option<FileStamp>, std::sync::Arc<Credentials>)>,
}

/// What tells a changed file from an unchanged one.
type FileStamp = (Option<std::time::SystemTime>, u64);

impl CredentialsFile {
    /// Reads `path` now. A file that cannot be read (yet) admits nobody and
    /// is tried again at the next handshake.
    pub fn open(path: &Path) -> CredentialsFile {
        let file = CredentialsFile {
            path: path.to_owned(),
            cached: parking_lot::Mutex::new((None, std::sync::Arc::default())),
        };
        if file.current().0.is_empty() {
            tracing::warn!(path = %path.display(), "the link credentials file is missing or empty: no remote cluster is admitted until it lists one");
        }
        file
    }

    /// The credentials as the file holds them now; the last good ones when
    /// it has become unreadable or malformed (logged).
    pub fn current(&self) -> std::sync::Arc<Credentials> {
        let stamp = std::fs::metadata(&self.path)
            .ok()
            .map(|m| (m.modified().ok(), m.len()));
        let mut cached = self.cached.lock();
        if stamp.is_some() && cached.0 == stamp {
            return cached.1.clone();
        }
        match Credentials::load(&self.path) {
            Ok(credentials) => {
                if cached.0.is_some() {
                    tracing::info!(path = %self.path.display(), clusters = credentials.0.len(), "link credentials reloaded");
                }
                *cached = (stamp, std::sync::Arc::new(credentials));
            }
            Err(error) => {
                if cached.0.is_some() || stamp.is_some() {
                    tracing::warn!(%error, "keeping the link credentials read before");
                }
                // Tried again next time, unless the file stays as it is.
                cached.0 = stamp.filter(|_| matches!(error, CredentialError::Malformed { .. }));
            }
        }
        cached.1.clone()
    }
}

fn constant_time_eq(a: &[u8; LEN], b: &[u8; LEN]) -> bool {
    a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transcript<'a>(a: &'a [u8; LEN], d: &'a [u8; LEN], from: &'a str) -> Transcript<'a> {
        Transcript {
            acceptor_nonce: a,
            dialer_nonce: d,
            dialer_cluster: from,
            acceptor_cluster: "cloud",
            incarnation: 7,
        }
    }

    #[test]
    fn the_holder_of_the_secret_proves_it_and_both_sides_are_authenticated() {
        let secret = LinkSecret::new(b"edge-secret-0123456789").expect("long enough");
        let stored = secret.hash().expect("hash");
        let keys = secret.salted(&stored.salt).expect("derive");
        let (a, d) = (proof::nonce(), proof::nonce());
        let t = transcript(&a, &d, "edge");
        let client = keys.client_proof(&t);
        assert!(stored.verify_client(&t, &client));
        assert!(keys.verify_server(&t, &stored.server_signature(&t)));

        // Another cluster's name, another nonce, another secret: refused.
        assert!(!stored.verify_client(&transcript(&a, &d, "other"), &client));
        assert!(
            !stored.verify_client(&transcript(&proof::nonce(), &d, "edge"), &client),
            "replayed"
        );
        let wrong = LinkSecret::new(b"not-the-edge-secret!!").expect("long enough");
        let wrong_keys = wrong.salted(&stored.salt).expect("derive");
        assert!(!stored.verify_client(&t, &wrong_keys.client_proof(&t)));
        // A decoy never verifies, and the dialer notices a fake acceptor.
        let decoy = HashedCredential::decoy("edge");
        assert_eq!(
            decoy.salt,
            HashedCredential::decoy("edge").salt,
            "stable per name"
        );
        assert!(!decoy.verify_client(&t, &client));
        assert!(!keys.verify_server(&t, &decoy.server_signature(&t)));
    }

    #[test]
    fn credentials_files_round_trip_and_nothing_secret_is_debug_printed() {
        let secret = LinkSecret::new(b"edge-secret-0123456789").expect("long enough");
        let stored = secret.hash().expect("hash");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("credentials");
        std::fs::write(
            &path,
            format!("# links allowed in\nedge:{}\n\n", stored.encode()),
        )
        .expect("write");
        let credentials = Credentials::load(&path).expect("load");
        assert_eq!(credentials.for_cluster("edge"), (stored.clone(), true));
        assert!(!credentials.for_cluster("nobody").1);
        std::fs::write(&path, "edge:plain-text-secret\n").expect("write");
        assert!(matches!(
            Credentials::load(&path),
            Err(CredentialError::Malformed { line: 1, .. })
        ));
        let printed = format!(
            "{secret:?} {stored:?} {:?} {credentials:?}",
            secret.salted(&stored.salt).expect("derive")
        );
        assert!(!printed.contains("edge-secret"), "{printed}");
        assert!(!printed.contains(&hex(&stored.salt)), "{printed}");
    }
}
