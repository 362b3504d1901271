//! Decides whether a child needs writing, so that an unchanged cluster
//! reconciles with zero writes while drift is still repaired.
//!
//! A child needs a write when it is missing, when what the operator would
//! apply differs from what it applied last (the applied-hash annotation: this
//! catches fields the operator stopped setting), or when a field the operator
//! sets has been changed by someone else (the subset check: this is drift).

use serde_json::Value;

use crate::resources::{content_hash, APPLIED_HASH_ANNOTATION};

/// Stamps `desired` with the hash of its own content and returns the hash.
pub fn stamp(desired: &mut Value) -> String {
    let hash = content_hash(desired.to_string().as_bytes());
    if let Some(meta) = desired.get_mut("metadata").and_then(Value::as_object_mut) {
        let annotations = meta
            .entry("annotations")
            .or_insert_with(|| Value::Object(serde_json::Map::new()));
        if let Some(map) = annotations.as_object_mut() {
            map.insert(
                APPLIED_HASH_ANNOTATION.to_owned(),
                Value::String(hash.clone()),
            );
        }
    }
    hash
}

/// Whether applying the stamped `desired` over `live` would change anything the operator owns.
pub fn needs_apply(desired: &Value, live: Option<&Value>) -> bool {
    let Some(live) = live else { return true };
    let pointer = format!(
        "/metadata/annotations/{}",
        APPLIED_HASH_ANNOTATION
            .replace('~', "~0")
            .replace('/', "~1")
    );
    desired.pointer(&pointer) != live.pointer(&pointer) || !is_subset(desired, live)
}

/// Whether every field set in `desired` has the same value in `live`.
///
/// Objects may carry extra fields in `live` (server defaults, other managers);
/// lists must match element by element. An empty or null desired value
/// matches an absent one, since the server drops those.
pub fn is_subset(desired: &Value, live: &Value) -> bool {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => d.iter().all(|(k, v)| match l.get(k) {
            Some(lv) => is_subset(v, lv),
            None => is_empty(v),
        }),
        (Value::Array(d), Value::Array(l)) => {
            d.len() == l.len() && d.iter().zip(l).all(|(a, b)| is_subset(a, b))
        }
        (d, Value::Null) => is_empty(d),
        (d, l) => d == l,
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn server_defaults_are_not_drift_but_edits_are() {
        let desired = json!({"spec": {"replicas": 3, "ports": [{"port": 1883}]}, "data": {}});
        let live =
            json!({"spec": {"replicas": 3, "ports": [{"port": 1883, "protocol": "TCP"}], "x": 1}});
        assert!(is_subset(&desired, &live));
        let edited = json!({"spec": {"replicas": 5, "ports": [{"port": 1883}]}});
        assert!(!is_subset(&desired, &edited));
        let extra_port = json!({"spec": {"replicas": 3, "ports": [{"port": 1883}, {"port": 1}]}});
        assert!(!is_subset(&desired, &extra_port));
    }

    #[test]
    fn the_applied_hash_catches_dropped_fields() {
        let mut old = json!({"metadata": {"name": "a"}, "spec": {"nodeSelector": {"a": "b"}}});
        let mut new = json!({"metadata": {"name": "a"}, "spec": {}});
        assert!(is_subset(&new, &old), "a dropped field is still a subset");
        stamp(&mut old);
        stamp(&mut new);
        assert!(needs_apply(&new, Some(&old)), "but the hash differs");
        assert!(!needs_apply(&old, Some(&old)));
        assert!(needs_apply(&old, None));
    }
}
