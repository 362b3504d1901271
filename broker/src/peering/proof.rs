//! Keyed BLAKE2b hashes over length-prefixed parts, each use separated by a
//! context string: the proofs of both handshakes (the mesh's shared secret,
//! links' per-cluster credentials) are built from it.

use blake2::digest::consts::U32;
use blake2::digest::Mac;
use blake2::Blake2bMac;

/// Bytes of a key, a challenge, a proof.
pub const LEN: usize = 32;

type KeyedHash = Blake2bMac<U32>;

/// A keyed hash of `parts` under `key` for the purpose named by `context`.
/// Length prefixes keep ("ab","c") and ("a","bc") apart; keys longer than
/// BLAKE2b takes (64 bytes) are hashed first.
pub fn mac(key: &[u8], context: &[u8], parts: &[&[u8]]) -> [u8; LEN] {
    let mut mac = keyed(key);
    feed(&mut mac, context, parts);
    mac.finalize().into_bytes().into()
}

/// Whether `expected` is [`mac`] of the same inputs, compared in constant time.
pub fn verify(key: &[u8], context: &[u8], parts: &[&[u8]], expected: &[u8; LEN]) -> bool {
    let mut mac = keyed(key);
    feed(&mut mac, context, parts);
    mac.verify_slice(expected).is_ok()
}

/// An unkeyed BLAKE2b-256 hash.
pub fn hash(data: &[u8]) -> [u8; LEN] {
    use blake2::Digest;
    blake2::Blake2b::<U32>::digest(data).into()
}

/// A fresh random challenge.
pub fn nonce() -> [u8; LEN] {
    rand::random()
}

fn keyed(key: &[u8]) -> KeyedHash {
    let key = if key.is_empty() || key.len() > 64 {
        use blake2::Digest;
        blake2::Blake2b512::digest(key).to_vec()
    } else {
        key.to_vec()
    };
    <KeyedHash as Mac>::new_from_slice(&key)
        .unwrap_or_else(|_| unreachable!("1..=64-byte keys are valid"))
}

fn feed(mac: &mut KeyedHash, context: &[u8], parts: &[&[u8]]) {
    for part in std::iter::once(&context).chain(parts) {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mac_depends_on_key_context_and_how_parts_are_split() {
        let base = mac(b"key", b"ctx", &[b"ab", b"c"]);
        assert!(verify(b"key", b"ctx", &[b"ab", b"c"], &base));
        assert!(!verify(b"other", b"ctx", &[b"ab", b"c"], &base));
        assert!(!verify(b"key", b"other", &[b"ab", b"c"], &base));
        assert!(!verify(b"key", b"ctx", &[b"a", b"bc"], &base));
        let long = [7u8; 200];
        assert!(verify(&long, b"ctx", &[], &mac(&long, b"ctx", &[])));
    }
}
