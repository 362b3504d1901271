//! Content hashes: one rolls the pods on static configuration changes, one
//! lets the controller skip writes that would change nothing.

use sha2::{Digest, Sha256};

/// Pod-template annotation holding the hash of the broker configuration, so
/// the pods roll exactly when their static configuration changes.
pub const CONFIG_HASH_ANNOTATION: &str = "strait.dev/config-hash";

/// Annotation holding the hash of what the operator last applied to a child,
/// so that a field the operator stops setting still triggers a write.
pub const APPLIED_HASH_ANNOTATION: &str = "strait.dev/applied-hash";

/// A short, stable hex digest of `bytes`.
pub fn content_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}
