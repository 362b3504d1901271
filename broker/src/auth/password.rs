//! Username/password authentication against a credentials file.

use std::path::Path;

/// Why credentials were refused or could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read credentials file {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("credentials file {path}, line {line}: {reason}")]
    Parse {
        path: std::path::PathBuf,
        line: usize,
        reason: String,
    },
}

/// Checks CONNECT credentials.
#[derive(Debug)]
pub struct Authenticator {}

impl Authenticator {
    /// Loads `password_file` (if any). Without one, only anonymous access can succeed.
    pub fn new(password_file: Option<&Path>, allow_anonymous: bool) -> Result<Self, AuthError> {
        let _ = (password_file, allow_anonymous);
        todo!("auth")
    }

    /// Whether these credentials may connect. Slow on purpose (Argon2): call it
    /// from `spawn_blocking`.
    pub fn authenticate(&self, username: Option<&str>, password: Option<&[u8]>) -> bool {
        let _ = (username, password);
        todo!("auth")
    }
}

/// A PHC-format Argon2id hash of `password` with a fresh random salt.
pub fn hash_password(password: &str) -> String {
    let _ = password;
    todo!("auth")
}
