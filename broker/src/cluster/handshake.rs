//! Proving knowledge of the cluster secret without sending it.
//!
//! The acceptor sends a fresh random challenge; the dialer answers with a
//! keyed BLAKE2b hash of the challenge and of everything it claims about
//! itself (cluster, node name, incarnation). A recorded handshake is useless
//! to replay, since every challenge is new, and a node of another cluster
//! cannot pass even with the same secret.

use std::fmt;
use std::path::Path;

use super::wire::NONCE_LEN;
use crate::peering::proof;

/// Separates these proofs from any other use of the same secret.
const CONTEXT: &[u8] = b"strait-cluster-handshake-v3";

/// The shared cluster secret. `Debug` never shows it.
#[derive(Clone)]
pub struct ClusterSecret(Vec<u8>);

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterSecret(<redacted>)")
    }
}

/// Why the secret could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read the cluster secret file {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("the cluster secret in {0} is shorter than 16 bytes")]
    TooShort(std::path::PathBuf),
}

impl ClusterSecret {
    /// Reads the secret (surrounding whitespace ignored, as Secrets often end
    /// in a newline).
    pub fn load(path: &Path) -> Result<ClusterSecret, SecretError> {
        let text = std::fs::read(path).map_err(|source| SecretError::Read {
            path: path.to_owned(),
            source,
        })?;
        let secret = text.trim_ascii().to_vec();
        if secret.len() < 16 {
            return Err(SecretError::TooShort(path.to_owned()));
        }
        Ok(ClusterSecret(secret))
    }

    #[cfg(test)]
    pub fn from_bytes(bytes: &[u8]) -> ClusterSecret {
        ClusterSecret(bytes.to_vec())
    }

    /// The proof a dialer sends for `challenge`.
    pub fn prove(&self, challenge: &[u8; NONCE_LEN], claim: &Claim<'_>) -> [u8; NONCE_LEN] {
        let incarnation = claim.incarnation.to_be_bytes();
        proof::mac(&self.0, CONTEXT, &claim.parts(challenge, &incarnation))
    }

    /// Whether `proof` answers `challenge` for `claim` (in constant time).
    pub fn verify(
        &self,
        challenge: &[u8; NONCE_LEN],
        claim: &Claim<'_>,
        given: &[u8; NONCE_LEN],
    ) -> bool {
        let incarnation = claim.incarnation.to_be_bytes();
        proof::verify(
            &self.0,
            CONTEXT,
            &claim.parts(challenge, &incarnation),
            given,
        )
    }
}

/// What a dialer says about itself in its hello.
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    pub cluster: &'a str,
    pub node: &'a str,
    pub incarnation: u64,
}

impl<'a> Claim<'a> {
    /// What the proof covers: the challenge and everything claimed.
    fn parts(&self, challenge: &'a [u8; NONCE_LEN], incarnation: &'a [u8; 8]) -> [&'a [u8]; 4] {
        [
            challenge,
            self.cluster.as_bytes(),
            self.node.as_bytes(),
            incarnation,
        ]
    }
}

/// A fresh random challenge.
pub fn challenge() -> [u8; NONCE_LEN] {
    proof::nonce()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLAIM: Claim<'static> = Claim {
        cluster: "eu",
        node: "eu-1",
        incarnation: 42,
    };

    #[test]
    fn a_proof_verifies_only_for_its_secret_challenge_and_claim() {
        let secret = ClusterSecret::from_bytes(b"0123456789abcdef-secret");
        let nonce = challenge();
        let proof = secret.prove(&nonce, &CLAIM);
        assert!(secret.verify(&nonce, &CLAIM, &proof));

        let other_secret = ClusterSecret::from_bytes(b"another secret of 16+ bytes");
        assert!(!other_secret.verify(&nonce, &CLAIM, &proof));
        assert!(!secret.verify(&challenge(), &CLAIM, &proof), "replayed");
        let other_cluster = Claim {
            cluster: "us",
            ..CLAIM
        };
        assert!(!secret.verify(&nonce, &other_cluster, &proof));
        let other_incarnation = Claim {
            incarnation: 43,
            ..CLAIM
        };
        assert!(!secret.verify(&nonce, &other_incarnation, &proof));
    }

    #[test]
    fn long_secrets_work_and_debug_hides_the_secret() {
        let secret = ClusterSecret::from_bytes(&[7u8; 200]);
        let nonce = challenge();
        assert!(secret.verify(&nonce, &CLAIM, &secret.prove(&nonce, &CLAIM)));
        assert!(!format!("{secret:?}").contains('7'));
    }

    #[test]
    fn short_or_missing_secret_files_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secret");
        assert!(matches!(
            ClusterSecret::load(&path),
            Err(SecretError::Read { .. })
        ));
        std::fs::write(&path, "short\n").expect("write");
        assert!(matches!(
            ClusterSecret::load(&path),
            Err(SecretError::TooShort(_))
        ));
        std::fs::write(&path, "a-long-enough-cluster-secret\n").expect("write");
        assert!(ClusterSecret::load(&path).is_ok());
    }
}
