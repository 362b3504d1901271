//! Access rules: which topic filters a user may publish and subscribe to.

use crate::config::AclRule;

/// Compiled access rules. Without rules, everything is allowed.
#[derive(Debug, Clone)]
pub struct Acl {}

impl Acl {
    pub fn new(rules: &[AclRule]) -> Acl {
        let _ = rules;
        todo!("auth")
    }

    /// Whether `username` (connected as `client_id`) may publish to `topic`.
    pub fn can_publish(&self, username: Option<&str>, client_id: &str, topic: &str) -> bool {
        let _ = (username, client_id, topic);
        todo!("auth")
    }

    /// Whether `username` may subscribe to `filter` (every topic it matches must be allowed).
    pub fn can_subscribe(&self, username: Option<&str>, client_id: &str, filter: &str) -> bool {
        let _ = (username, client_id, filter);
        todo!("auth")
    }
}
