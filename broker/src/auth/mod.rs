//! Who may connect, and what they may do: password authentication against a
//! credentials file of salted Argon2 hashes, and per-user access rules.

pub mod acl;
pub mod password;

pub use acl::Acl;
pub use password::{hash_password, verify, AuthError, Authenticator, Verdict};
