//! Username/password authentication against a credentials file.
//!
//! The file holds one `username:<PHC Argon2 hash>` per line, as written by
//! `strait-broker passwd`. Passwords are never stored, only salted Argon2 hashes,
//! and checking an unknown user costs as much as checking a known one, so the
//! time an answer takes does not tell whether a username exists.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

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
    /// Argon2 refused the input (only a password longer than 4 GiB can cause it).
    #[error("cannot hash the password: {0}")]
    Hash(argon2::password_hash::Error),
}

/// Checks CONNECT credentials.
pub struct Authenticator {
    /// Username -> PHC hash string, each checked to parse as an Argon2 hash at load.
    users: HashMap<String, String>,
    allow_anonymous: bool,
    /// Hash checked for unknown users so they cost as much as known ones.
    /// Present exactly when a credentials file was loaded.
    dummy_hash: Option<String>,
}

/// Lists the users but never their hashes: even salted hashes help an offline guesser.
impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut users: Vec<&str> = self.users.keys().map(String::as_str).collect();
        users.sort_unstable();
        f.debug_struct("Authenticator")
            .field("users", &users)
            .field("allow_anonymous", &self.allow_anonymous)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Loads `password_file` (if any). Without one, only anonymous access can succeed.
    pub fn new(password_file: Option<&Path>, allow_anonymous: bool) -> Result<Self, AuthError> {
        let Some(path) = password_file else {
            return Ok(Authenticator {
                users: HashMap::new(),
                allow_anonymous,
                dummy_hash: None,
            });
        };
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
            path: path.to_owned(),
            source,
        })?;
        let users = parse_credentials(path, &text)?;
        // Hashed with the same parameters `hash_password` gives real users, so a
        // miss takes as long as a hit. The password is random and thrown away.
        let dummy_password: [u8; 16] = rand::random();
        let dummy_hash = hash_bytes(&dummy_password).map_err(AuthError::Hash)?;
        Ok(Authenticator {
            users,
            allow_anonymous,
            dummy_hash: Some(dummy_hash),
        })
    }

    /// Whether these credentials may connect. Slow on purpose (Argon2): call it
    /// from `spawn_blocking`.
    ///
    /// A client without a username is anonymous (a password alone, which MQTT 5
    /// permits, grants nothing). A client that gives a username must give that
    /// user's password, even where anonymous access is allowed; only without
    /// a credentials file, where no user exists to check it against, is a
    /// username ignored and the client let in as anonymous (if allowed), since
    /// many client libraries always send one.
    pub fn authenticate(&self, username: Option<&str>, password: Option<&[u8]>) -> Verdict {
        let anonymous = if self.allow_anonymous {
            Verdict::Anonymous
        } else {
            Verdict::Refused
        };
        let (Some(username), Some(dummy_hash)) = (username, &self.dummy_hash) else {
            return anonymous;
        };
        // Always run exactly one Argon2 check, whatever is missing.
        let password = password.unwrap_or_default();
        let valid = match self.users.get(username) {
            Some(hash) => verify(password, hash),
            None => {
                verify(password, dummy_hash);
                false
            }
        };
        if valid {
            Verdict::User
        } else {
            Verdict::Refused
        }
    }

    /// Whether checking credentials is slow (a credentials file is loaded):
    /// then [`Authenticator::authenticate`] belongs on a blocking thread.
    pub fn checks_passwords(&self) -> bool {
        self.dummy_hash.is_some()
    }
}

/// Who a client is, once its credentials were checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The username it gave, proven by its password.
    User,
    /// Nobody in particular: no username, or no credentials file to check one
    /// against. Access rules for named users never apply to it.
    Anonymous,
    Refused,
}

/// A PHC-format Argon2id hash of `password` with a fresh random salt.
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    hash_bytes(password.as_bytes()).map_err(AuthError::Hash)
}

fn hash_bytes(password: &[u8]) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default()
        .hash_password(password, &salt)?
        .to_string())
}

/// Checks `password` against a PHC hash, with the parameters the hash names;
/// false for a hash that does not parse.
pub fn verify(password: &[u8], phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(hash) => Argon2::default().verify_password(password, &hash).is_ok(),
        Err(_) => false,
    }
}

/// Parses the credentials file text; line numbers in errors count from 1.
fn parse_credentials(path: &Path, text: &str) -> Result<HashMap<String, String>, AuthError> {
    let mut users = HashMap::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let error = |reason: String| AuthError::Parse {
            path: PathBuf::from(path),
            line: index + 1,
            reason,
        };
        let (username, hash) = parse_line(line).map_err(error)?;
        if users.insert(username.to_owned(), hash.to_owned()).is_some() {
            return Err(error(format!("user {username:?} is listed twice")));
        }
    }
    Ok(users)
}

/// Splits one `username:hash` line and checks the hash is an Argon2 PHC string.
/// Reasons never quote the hash.
fn parse_line(line: &str) -> Result<(&str, &str), String> {
    let (username, hash) = line
        .split_once(':')
        .ok_or_else(|| "expected `username:<argon2 hash>`".to_owned())?;
    if username.is_empty() {
        return Err("the username is empty".into());
    }
    let parsed =
        PasswordHash::new(hash).map_err(|e| format!("the hash is not a PHC string ({e})"))?;
    argon2::Algorithm::try_from(parsed.algorithm)
        .map_err(|_| format!("the hash of {username:?} is not an Argon2 hash"))?;
    if parsed.hash.is_none() {
        return Err(format!("the hash of {username:?} has no hash value"));
    }
    Ok((username, hash))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn credentials_file(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(text.as_bytes()).expect("write");
        file
    }

    fn authenticator(text: &str, allow_anonymous: bool) -> Result<Authenticator, AuthError> {
        let file = credentials_file(text);
        Authenticator::new(Some(file.path()), allow_anonymous)
    }

    #[test]
    fn hash_is_salted_argon2id_and_verifies() {
        let first = hash_password("s3cret").expect("hash");
        let second = hash_password("s3cret").expect("hash");
        assert!(first.starts_with("$argon2id$"), "{first}");
        assert_ne!(first, second, "each hash has its own salt");
        assert!(verify(b"s3cret", &first));
        assert!(verify(b"s3cret", &second));
        assert!(!verify(b"S3cret", &first));
    }

    #[test]
    fn known_user_with_the_right_password_is_accepted() {
        let hash = hash_password("pw-alice").expect("hash");
        let text = format!("# users\n\nalice:{hash}\n");
        let auth = authenticator(&text, false).expect("load");
        assert_eq!(
            auth.authenticate(Some("alice"), Some(b"pw-alice")),
            Verdict::User
        );
    }

    #[test]
    fn wrong_or_missing_password_is_refused() {
        let hash = hash_password("pw-alice").expect("hash");
        let auth = authenticator(&format!("alice:{hash}"), true).expect("load");
        for password in [Some(&b"pw-bob"[..]), Some(b""), None] {
            assert_eq!(auth.authenticate(Some("alice"), password), Verdict::Refused);
        }
    }

    #[test]
    fn unknown_user_is_refused_even_with_a_known_users_password() {
        let hash = hash_password("pw-alice").expect("hash");
        let auth = authenticator(&format!("alice:{hash}"), true).expect("load");
        assert_eq!(
            auth.authenticate(Some("mallory"), Some(b"pw-alice")),
            Verdict::Refused
        );
        assert_eq!(
            auth.authenticate(Some("Alice"), Some(b"pw-alice")),
            Verdict::Refused
        );
    }

    #[test]
    fn anonymous_access_follows_the_setting() {
        let hash = hash_password("pw-alice").expect("hash");
        let text = format!("alice:{hash}");
        let open = authenticator(&text, true).expect("load");
        let closed = authenticator(&text, false).expect("load");
        assert_eq!(open.authenticate(None, None), Verdict::Anonymous);
        assert_eq!(closed.authenticate(None, None), Verdict::Refused);
        // A password without a username is still anonymous.
        assert_eq!(
            closed.authenticate(None, Some(b"pw-alice")),
            Verdict::Refused
        );
    }

    #[test]
    fn without_a_credentials_file_a_username_is_ignored() {
        let open = Authenticator::new(None, true).expect("no file");
        assert!(!open.checks_passwords());
        assert_eq!(open.authenticate(None, None), Verdict::Anonymous);
        assert_eq!(
            open.authenticate(Some("alice"), Some(b"anything")),
            Verdict::Anonymous,
            "let in, but as nobody in particular"
        );
        let closed = Authenticator::new(None, false).expect("no file");
        assert_eq!(closed.authenticate(None, None), Verdict::Refused);
        assert_eq!(
            closed.authenticate(Some("alice"), Some(b"x")),
            Verdict::Refused
        );
    }

    fn parse_error(text: &str) -> (usize, String) {
        match authenticator(text, false) {
            Err(AuthError::Parse { line, reason, .. }) => (line, reason),
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    #[test]
    fn malformed_lines_are_reported_with_their_line_number() {
        let hash = hash_password("pw").expect("hash");
        let (line, reason) = parse_error(&format!("# header\nalice:{hash}\n\nbob\n"));
        assert_eq!(line, 4);
        assert!(reason.contains("username:"), "{reason}");

        let (line, _) = parse_error(&format!("alice:{hash}\nbob:not-a-hash\n"));
        assert_eq!(line, 2);

        let (line, reason) = parse_error(&format!(":{hash}\n"));
        assert_eq!(line, 1);
        assert!(reason.contains("empty"), "{reason}");

        let bcrypt_like = "$pbkdf2-sha256$i=1000$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo";
        let (line, reason) = parse_error(&format!("alice:{hash}\ncarol:{bcrypt_like}\n"));
        assert_eq!(line, 2);
        assert!(reason.contains("not an Argon2"), "{reason}");
    }

    #[test]
    fn duplicate_user_is_an_error() {
        let hash = hash_password("pw").expect("hash");
        let (line, reason) = parse_error(&format!("alice:{hash}\nbob:{hash}\nalice:{hash}\n"));
        assert_eq!(line, 3);
        assert!(reason.contains("alice"), "{reason}");
    }

    #[test]
    fn missing_file_is_a_read_error() {
        let dir = tempfile::tempdir().expect("dir");
        let missing = dir.path().join("nope");
        let err = Authenticator::new(Some(&missing), false).expect_err("must fail");
        assert!(matches!(err, AuthError::Read { .. }), "{err:?}");
    }

    #[test]
    fn debug_output_names_users_but_not_hashes() {
        let hash = hash_password("pw").expect("hash");
        let auth = authenticator(&format!("alice:{hash}"), false).expect("load");
        let debug = format!("{auth:?}");
        assert!(debug.contains("alice"), "{debug}");
        assert!(!debug.contains("argon2"), "{debug}");
        let salt_and_hash = hash.rsplit('$').next().expect("hash part");
        assert!(!debug.contains(salt_and_hash), "{debug}");
    }
}
