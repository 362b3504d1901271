//! The operator's own checks of an `MqttCluster` spec.
//!
//! The CRD schema refuses most bad input at admission, but not on every server
//! and not across fields (two listeners on one port, a TLS listener without a
//! certificate), so every spec is checked here before anything is built. Each
//! error names the field it is about. Checks of referenced objects (Secrets)
//! take what [`crate::controller::dereference`] read, so this module stays pure.

use std::collections::BTreeMap;

use crate::crd::{LinkServiceType, MqttClusterSpec, TlsSpec};
use crate::resources::{
    ConfigPaths, Password, User, ADMIN_PORT, CLUSTER_PORT, INTERNAL_USER, OPERATOR_LABELS,
};

/// Why a spec was refused: the field at fault and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidSpec {
    /// JSON path of the offending field, such as `spec.listeners.mqtts.port`.
    pub field: String,
    /// What is wrong, in words.
    pub reason: String,
}

impl InvalidSpec {
    /// An error about `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        InvalidSpec {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Checks a spec on its own: ranges, formats, and consistency between fields.
pub fn spec(spec: &MqttClusterSpec) -> Result<(), InvalidSpec> {
    if !(1..=100).contains(&spec.replicas) {
        return Err(InvalidSpec::new(
            "spec.replicas",
            format!("must be between 1 and 100, got {}", spec.replicas),
        ));
    }
    if let Some(image) = &spec.image {
        if !is_image_reference(image) {
            return Err(InvalidSpec::new(
                "spec.image",
                format!("{image:?} is not an image reference"),
            ));
        }
    }
    listeners(spec)?;
    limits(spec)?;
    if spec.persistence.enabled && !is_quantity(&spec.persistence.size) {
        return Err(InvalidSpec::new(
            "spec.persistence.size",
            format!("{:?} is not a size such as 1Gi", spec.persistence.size),
        ));
    }
    let pdb = &spec.pod_disruption_budget;
    if pdb.enabled && !(1..=100).contains(&pdb.max_unavailable) {
        return Err(InvalidSpec::new(
            "spec.podDisruptionBudget.maxUnavailable",
            format!("must be between 1 and 100, got {}", pdb.max_unavailable),
        ));
    }
    pod_template(spec)?;
    for (i, users) in spec.auth.users.iter().enumerate() {
        if !is_object_name(&users.secret_name) {
            return Err(InvalidSpec::new(
                format!("spec.auth.users[{i}].secretName"),
                format!("{:?} is not a Secret name", users.secret_name),
            ));
        }
        if users.key.is_empty() {
            return Err(InvalidSpec::new(
                format!("spec.auth.users[{i}].key"),
                "must not be empty",
            ));
        }
    }
    Ok(())
}

/// The pod template's additions and the image pull Secrets: well-formed,
/// and clear of what the operator sets itself.
fn pod_template(spec: &MqttClusterSpec) -> Result<(), InvalidSpec> {
    for (i, secret) in spec.image_pull_secrets.iter().enumerate() {
        if !is_object_name(&secret.name) {
            return Err(InvalidSpec::new(
                format!("spec.imagePullSecrets[{i}].name"),
                format!("{:?} is not a Secret name", secret.name),
            ));
        }
    }
    let template = &spec.pod_template;
    for (key, value) in &template.labels {
        let field = format!("spec.podTemplate.labels[{key:?}]");
        if OPERATOR_LABELS.contains(&key.as_str()) {
            return Err(InvalidSpec::new(field, "is set by the operator"));
        }
        if !is_qualified_name(key) {
            return Err(InvalidSpec::new(field, "is not a label key"));
        }
        if !is_label_value(value) {
            return Err(InvalidSpec::new(
                field,
                format!("{value:?} is not a label value (63 characters at most: letters, digits, '-', '_', '.', alphanumeric at both ends)"),
            ));
        }
    }
    for key in template.annotations.keys() {
        let field = format!("spec.podTemplate.annotations[{key:?}]");
        if key.starts_with("strait.dev/") {
            return Err(InvalidSpec::new(
                field,
                "strait.dev/ annotations are the operator's",
            ));
        }
        if !is_qualified_name(key) {
            return Err(InvalidSpec::new(field, "is not an annotation key"));
        }
    }
    let mut names = vec![ConfigPaths::POD_NAME_ENV];
    for (i, var) in template.env.iter().enumerate() {
        let field = format!("spec.podTemplate.env[{i}].name");
        if !is_env_name(&var.name) {
            return Err(InvalidSpec::new(
                field,
                format!("{:?} is not an environment variable name", var.name),
            ));
        }
        if names.contains(&var.name.as_str()) {
            let why = if var.name == ConfigPaths::POD_NAME_ENV {
                "is set by the operator (the node's name)"
            } else {
                "is set twice"
            };
            return Err(InvalidSpec::new(field, format!("{:?} {why}", var.name)));
        }
        names.push(&var.name);
    }
    if let Some(class) = &template.priority_class_name {
        if !is_object_name(class) {
            return Err(InvalidSpec::new(
                "spec.podTemplate.priorityClassName",
                format!("{class:?} is not a PriorityClass name"),
            ));
        }
    }
    Ok(())
}

/// Every enabled listener with the field path of its port, the link listener included.
pub fn enabled_ports(spec: &MqttClusterSpec) -> Vec<(&'static str, i32)> {
    let l = &spec.listeners;
    let mut ports = Vec::new();
    if l.mqtt.enabled {
        ports.push(("spec.listeners.mqtt.port", l.mqtt.port));
    }
    if l.mqtts.enabled {
        ports.push(("spec.listeners.mqtts.port", l.mqtts.port));
    }
    if l.websocket.enabled {
        ports.push(("spec.listeners.websocket.port", l.websocket.port));
    }
    ports.push(("spec.listeners.link.port", l.link.port));
    ports
}

fn listeners(spec: &MqttClusterSpec) -> Result<(), InvalidSpec> {
    let l = &spec.listeners;
    let mut seen: BTreeMap<i32, &str> = BTreeMap::new();
    seen.insert(ADMIN_PORT, "the admin endpoint");
    seen.insert(CLUSTER_PORT, "the cluster mesh");
    for (field, port) in enabled_ports(spec) {
        if !(1..=65535).contains(&port) {
            return Err(InvalidSpec::new(
                field,
                format!("must be between 1 and 65535, got {port}"),
            ));
        }
        if let Some(other) = seen.insert(port, field) {
            return Err(InvalidSpec::new(
                field,
                format!("port {port} is already used by {other}"),
            ));
        }
    }
    if !l.mqtt.enabled && !l.mqtts.enabled && !l.websocket.enabled {
        return Err(InvalidSpec::new(
            "spec.listeners",
            "at least one client listener (mqtt, mqtts or websocket) must be enabled",
        ));
    }
    if l.mqtts.enabled && l.mqtts.tls.is_none() {
        return Err(InvalidSpec::new(
            "spec.listeners.mqtts.tls",
            "required when the mqtts listener is enabled",
        ));
    }
    if l.websocket.enabled && !l.websocket.path.starts_with('/') {
        return Err(InvalidSpec::new(
            "spec.listeners.websocket.path",
            format!("{:?} must start with '/'", l.websocket.path),
        ));
    }
    let service = &l.link.service;
    if let Some(port) = service.node_port {
        if service.type_ == LinkServiceType::ClusterIP {
            return Err(InvalidSpec::new(
                "spec.listeners.link.service.nodePort",
                "only a NodePort or LoadBalancer Service has a node port",
            ));
        }
        if !(30000..=32767).contains(&port) {
            return Err(InvalidSpec::new(
                "spec.listeners.link.service.nodePort",
                format!("must be between 30000 and 32767, got {port}"),
            ));
        }
    }
    for range in &service.load_balancer_source_ranges {
        let valid = range.split_once('/').is_some_and(|(ip, bits)| {
            ip.parse::<std::net::IpAddr>().is_ok() && bits.parse::<u8>().is_ok_and(|b| b <= 128)
        });
        if !valid {
            return Err(InvalidSpec::new(
                "spec.listeners.link.service.loadBalancerSourceRanges",
                format!("{range:?} is not a CIDR such as 10.0.0.0/8"),
            ));
        }
    }
    for (field, tls) in tls_refs(spec) {
        if !is_object_name(&tls.certificate_secret) {
            return Err(InvalidSpec::new(
                format!("{field}.certificateSecret"),
                format!("{:?} is not a Secret name", tls.certificate_secret),
            ));
        }
    }
    Ok(())
}

/// The TLS settings of every enabled listener, with the field path of each.
pub fn tls_refs(spec: &MqttClusterSpec) -> Vec<(&'static str, &TlsSpec)> {
    let l = &spec.listeners;
    let mut refs = Vec::new();
    if l.mqtts.enabled {
        if let Some(tls) = &l.mqtts.tls {
            refs.push(("spec.listeners.mqtts.tls", tls));
        }
    }
    if l.websocket.enabled {
        if let Some(tls) = &l.websocket.tls {
            refs.push(("spec.listeners.websocket.tls", tls));
        }
    }
    if let Some(tls) = &l.link.tls {
        refs.push(("spec.listeners.link.tls", tls));
    }
    refs
}

fn limits(spec: &MqttClusterSpec) -> Result<(), InvalidSpec> {
    let l = &spec.limits;
    let checks: [(&str, Option<i64>, i64, i64); 7] = [
        ("maxConnections", l.max_connections, 1, 10_000_000),
        ("maxPacketSize", l.max_packet_size, 16, 268_435_455),
        ("maxInflight", l.max_inflight, 1, 65535),
        ("maxQueuedMessages", l.max_queued_messages, 1, 10_000_000),
        (
            "maxSessionExpirySecs",
            l.max_session_expiry_secs,
            0,
            4_294_967_295,
        ),
        ("maxKeepAliveSecs", l.max_keep_alive_secs, 1, 65535),
        (
            "backpressureMaxWaitMs",
            l.backpressure_max_wait_ms,
            1,
            3_600_000,
        ),
    ];
    for (name, value, min, max) in checks {
        if let Some(v) = value {
            if !(min..=max).contains(&v) {
                return Err(InvalidSpec::new(
                    format!("spec.limits.{name}"),
                    format!("must be between {min} and {max}, got {v}"),
                ));
            }
        }
    }
    Ok(())
}

/// Checks a TLS Secret read from the API: present, and holding the keys a listener needs.
pub fn tls_secret(field: &str, tls: &TlsSpec, keys: Option<&[String]>) -> Result<(), InvalidSpec> {
    let field = format!("{field}.certificateSecret");
    let Some(keys) = keys else {
        return Err(InvalidSpec::new(
            field,
            format!("Secret {:?} not found", tls.certificate_secret),
        ));
    };
    let mut needed = vec!["tls.crt", "tls.key"];
    if tls.require_client_cert {
        needed.push("ca.crt");
    }
    for key in needed {
        if !keys.iter().any(|k| k == key) {
            return Err(InvalidSpec::new(
                field,
                format!("Secret {:?} has no key {key:?}", tls.certificate_secret),
            ));
        }
    }
    Ok(())
}

/// Checks the lines of a users Secret and returns its users.
///
/// `content` is the Secret's value under the referenced key, or `None` when
/// the Secret or the key is missing. Each line is `username:password`, the
/// password either an Argon2 hash (as `strait-broker passwd` prints it) or
/// plain text, which the operator hashes. Blank lines and `#` comments are
/// dropped; a line is trimmed of surrounding whitespace.
pub fn users_secret(
    index: usize,
    secret_name: &str,
    key: &str,
    content: Option<&str>,
) -> Result<Vec<User>, InvalidSpec> {
    let field = format!("spec.auth.users[{index}]");
    let Some(content) = content else {
        return Err(InvalidSpec::new(
            field,
            format!("Secret {secret_name:?} with key {key:?} not found"),
        ));
    };
    let mut users: Vec<User> = Vec::new();
    for (n, line) in content.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = |what: &str| {
            // Never echo the line: it holds a password or its hash.
            InvalidSpec::new(
                field.clone(),
                format!(
                    "line {} of key {key:?} in Secret {secret_name:?} {what}",
                    n + 1
                ),
            )
        };
        let Some((name, password)) = line.split_once(':') else {
            return Err(at("is not `username:password`"));
        };
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(at("has no username, or one with whitespace"));
        }
        if password.is_empty() {
            return Err(at("has an empty password"));
        }
        if name == INTERNAL_USER {
            return Err(InvalidSpec::new(
                field,
                format!("Secret {secret_name:?} defines the reserved user {INTERNAL_USER:?}"),
            ));
        }
        if users.iter().any(|u| u.name == name) {
            return Err(at(&format!("defines user {name:?} again")));
        }
        let password = if password.starts_with("$argon2") {
            Password::Hash(password.to_owned())
        } else {
            Password::Plain(password.to_owned())
        };
        users.push(User {
            name: name.to_owned(),
            password,
        });
    }
    Ok(users)
}

/// Whether `s` is a container image reference, by the rules of [`crate::crd::IMAGE_PATTERN`].
pub fn is_image_reference(s: &str) -> bool {
    let (rest, digest) = match s.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (s, None),
    };
    if let Some(digest) = digest {
        let hex = digest.strip_prefix("sha256:").unwrap_or("");
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return false;
        }
    }
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(tag) = tag {
        let first_ok = tag
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
        let rest_ok = tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !first_ok || !rest_ok || tag.len() > 128 {
            return false;
        }
    }
    let mut components = name.split('/');
    let Some(first) = components.next() else {
        return false;
    };
    // The first component may carry a registry port.
    let first_ok = match first.split_once(':') {
        Some((host, port)) => {
            is_path_component(host) && !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())
        }
        None => is_path_component(first),
    };
    first_ok && components.all(is_path_component)
}

/// `[a-z0-9]+([._-][a-z0-9]+)*`
fn is_path_component(s: &str) -> bool {
    let mut prev_sep = true;
    for b in s.bytes() {
        let sep = matches!(b, b'.' | b'_' | b'-');
        if sep && prev_sep {
            return false;
        }
        if !(sep || b.is_ascii_lowercase() || b.is_ascii_digit()) {
            return false;
        }
        prev_sep = sep;
    }
    !s.is_empty() && !prev_sep
}

/// A DNS-1123 subdomain, the form of most Kubernetes object names.
pub fn is_object_name(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            let bytes = label.as_bytes();
            !bytes.is_empty()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
                && bytes.first() != Some(&b'-')
                && bytes.last() != Some(&b'-')
        })
}

/// A label or annotation key: an optional DNS subdomain prefix and `/`, then
/// a name of 63 characters at most.
fn is_qualified_name(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    prefix.is_none_or(is_object_name) && !name.is_empty() && is_label_value(name)
}

/// A label value: empty, or 63 characters at most of letters, digits, `-`,
/// `_` and `.`, beginning and ending with a letter or digit.
fn is_label_value(value: &str) -> bool {
    let bytes = value.as_bytes();
    bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && bytes.first().is_none_or(u8::is_ascii_alphanumeric)
        && bytes.last().is_none_or(u8::is_ascii_alphanumeric)
}

/// An environment variable name as Kubernetes accepts it.
fn is_env_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !bytes[0].is_ascii_digit()
}

/// A quantity as [`crate::crd::QUANTITY_PATTERN`] accepts it.
fn is_quantity(s: &str) -> bool {
    const SUFFIXES: [&str; 13] = [
        "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "k", "M", "G", "T", "P", "E", "",
    ];
    SUFFIXES.iter().any(|suffix| {
        s.strip_suffix(suffix).is_some_and(|number| {
            let (int, frac) = match number.split_once('.') {
                Some((i, f)) => (i, Some(f)),
                None => (number, None),
            };
            let digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
            digits(int) && frac.is_none_or(digits)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references() {
        for good in [
            "strait",
            "strait:1.0",
            "ghcr.io/strait/broker:v0.1.0",
            "localhost:5000/strait/broker",
            "registry.example.com/a/b/c:latest",
            "strait@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert!(is_image_reference(good), "{good}");
        }
        for bad in [
            "",
            "Strait",
            "strait:",
            "strait::1",
            "-strait",
            "strait/",
            "has space",
            "strait@sha256:abc",
            "strait:-tag",
        ] {
            assert!(!is_image_reference(bad), "{bad}");
        }
    }

    #[test]
    fn quantities_and_names() {
        assert!(is_quantity("1Gi"));
        assert!(is_quantity("1.5Gi"));
        assert!(is_quantity("500M"));
        assert!(!is_quantity("1 Gi"));
        assert!(!is_quantity("Gi"));
        assert!(!is_quantity("1.Gi"));
        assert!(is_object_name("tls-cert.v1"));
        assert!(!is_object_name("TLS"));
        assert!(!is_object_name("-a"));
        assert!(!is_object_name("a..b"));
    }

    #[test]
    fn label_keys_values_and_env_names() {
        assert!(is_qualified_name("team"));
        assert!(is_qualified_name("example.com/team"));
        assert!(!is_qualified_name("Example.com/team"));
        assert!(!is_qualified_name("example.com/"));
        assert!(!is_qualified_name("a/b/c"));
        assert!(is_label_value(""));
        assert!(is_label_value("fleet_1.eu-west"));
        assert!(!is_label_value("-fleet"));
        assert!(!is_label_value(&"x".repeat(64)));
        assert!(is_env_name("RUST_LOG"));
        assert!(is_env_name("http.proxy"));
        assert!(!is_env_name("1X"));
        assert!(!is_env_name("A B"));
    }

    #[test]
    fn user_lines_are_checked_without_echoing_them() {
        let ok = users_secret(
            0,
            "u",
            "passwd",
            Some("# c\nalice:$argon2id$v=19$x\n\n  bob:hunter2:too \n"),
        )
        .expect("valid");
        let user = |name: &str, password| User {
            name: name.to_owned(),
            password,
        };
        assert_eq!(
            ok,
            vec![
                user("alice", Password::Hash("$argon2id$v=19$x".into())),
                user("bob", Password::Plain("hunter2:too".into())),
            ]
        );
        for (bad, why) in [
            ("bob hunter2", "not `username:password`"),
            ("bob:", "empty password"),
            (":hunter2", "no username"),
            ("b ob:hunter2", "whitespace"),
            ("bob:hunter2\nbob:hunter3", "again"),
        ] {
            let err = users_secret(1, "u", "passwd", Some(bad)).expect_err(bad);
            assert_eq!(err.field, "spec.auth.users[1]");
            assert!(err.reason.contains(why), "{bad}: {err}");
            assert!(!err.reason.contains("hunter"), "{err}");
        }
        let reserved = users_secret(0, "u", "passwd", Some("strait-internal:x"));
        assert!(reserved.expect_err("reserved").reason.contains("reserved"));
        let missing = users_secret(0, "u", "passwd", None).expect_err("missing");
        assert!(missing.reason.contains("not found"), "{missing}");
    }
}
