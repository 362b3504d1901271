//! Volume claim templates are the one part of a live StatefulSet the API
//! server refuses to change. A changed `spec.persistence` is therefore held
//! back: the live templates stay in what is applied, so every other change
//! (replicas, pod template, configuration) still goes through, and the
//! cluster reports what it could not do and how to do it by hand.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{EmptyDirVolumeSource, PersistentVolumeClaim, Volume};
use serde_json::Value;

/// The pod volume that holds the broker's data: a claim template of that
/// name with persistence, an emptyDir without.
const DATA_VOLUME: &str = "data";

/// What a claim template amounts to for a user: name, size and storage class.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ClaimShape {
    name: String,
    size: Option<String>,
    storage_class: Option<String>,
}

impl ClaimShape {
    fn of(claim: &PersistentVolumeClaim) -> ClaimShape {
        let spec = claim.spec.as_ref();
        ClaimShape {
            name: claim.metadata.name.clone().unwrap_or_default(),
            size: spec
                .and_then(|s| s.resources.as_ref())
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get("storage"))
                .map(|q| q.0.clone()),
            storage_class: spec.and_then(|s| s.storage_class_name.clone()),
        }
    }
}

fn shapes(sts: &StatefulSet) -> Vec<ClaimShape> {
    sts.spec
        .as_ref()
        .and_then(|s| s.volume_claim_templates.as_ref())
        .map(|claims| claims.iter().map(ClaimShape::of).collect())
        .unwrap_or_default()
}

fn describe(shapes: &[ClaimShape]) -> String {
    let Some(data) = shapes.iter().find(|s| s.name == DATA_VOLUME) else {
        return "no persistent volume".to_owned();
    };
    let size = data.size.as_deref().unwrap_or("unsized");
    match &data.storage_class {
        Some(class) => format!("{size} volumes of storage class {class}"),
        None => format!("{size} volumes of the default storage class"),
    }
}

/// Keeps the live StatefulSet's volume claim templates in `desired` when
/// the spec asks for different ones, and returns a message saying what was
/// held back and what to do; `None` when there is nothing to hold back.
pub fn hold_back_volume_change(desired: &mut StatefulSet, live: Option<&Value>) -> Option<String> {
    let live: StatefulSet = serde_json::from_value(live?.clone()).ok()?;
    let (wanted, kept) = (shapes(desired), shapes(&live));
    if wanted == kept {
        return None;
    }
    let name = desired.metadata.name.clone().unwrap_or_default();
    let claims: Option<Vec<PersistentVolumeClaim>> = live
        .spec
        .and_then(|s| s.volume_claim_templates)
        .map(|claims| {
            claims
                .into_iter()
                .map(|claim| PersistentVolumeClaim {
                    status: None,
                    ..claim
                })
                .collect()
        });
    let keeps_claim = kept.iter().any(|s| s.name == DATA_VOLUME);
    if let Some(spec) = desired.spec.as_mut() {
        spec.volume_claim_templates = claims;
        // The data volume follows the kept templates: a claim, or an emptyDir.
        if let Some(volumes) = spec.template.spec.as_mut().map(|p| &mut p.volumes) {
            let list = volumes.get_or_insert_with(Vec::new);
            list.retain(|v| v.name != DATA_VOLUME);
            if !keeps_claim {
                list.push(Volume {
                    name: DATA_VOLUME.to_owned(),
                    empty_dir: Some(EmptyDirVolumeSource::default()),
                    ..Volume::default()
                });
            }
        }
    }
    Some(format!(
        "spec.persistence asks for {}, but the StatefulSet keeps {}: a StatefulSet's volume \
         claim templates cannot change. To apply it, resize (or replace) each \
         PersistentVolumeClaim data-{name}-N yourself, then run `kubectl delete statefulset \
         {name} --cascade=orphan`: the operator recreates the StatefulSet with the new \
         template and the pods keep running meanwhile",
        describe(&wanted),
        describe(&kept),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sts(claims: Value, volumes: Value) -> StatefulSet {
        serde_json::from_value(json!({
            "metadata": {"name": "alpha"},
            "spec": {
                "selector": {},
                "serviceName": "alpha-headless",
                "template": {"spec": {"containers": [], "volumes": volumes}},
                "volumeClaimTemplates": claims,
            },
        }))
        .expect("statefulset")
    }

    fn claim(size: &str) -> Value {
        json!([{
            "metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}},
            "status": {"phase": "Pending"},
        }])
    }

    fn live(s: &StatefulSet) -> Value {
        serde_json::to_value(s).expect("value")
    }

    #[test]
    fn an_unchanged_template_is_left_alone() {
        let mut desired = sts(claim("1Gi"), json!([]));
        let before = desired.clone();
        let current = live(&sts(claim("1Gi"), json!([])));
        assert_eq!(hold_back_volume_change(&mut desired, Some(&current)), None);
        assert_eq!(desired, before);
        assert_eq!(hold_back_volume_change(&mut desired, None), None, "new");
    }

    #[test]
    fn a_new_size_is_held_back_with_what_to_do() {
        let mut desired = sts(claim("2Gi"), json!([]));
        let current = live(&sts(claim("1Gi"), json!([])));
        let message = hold_back_volume_change(&mut desired, Some(&current)).expect("held back");
        assert!(
            message.contains("2Gi") && message.contains("1Gi"),
            "{message}"
        );
        assert!(message.contains("--cascade=orphan"), "{message}");
        assert!(message.contains("data-alpha-N"), "{message}");
        let kept = &desired
            .spec
            .expect("spec")
            .volume_claim_templates
            .expect("kept")[0];
        assert_eq!(ClaimShape::of(kept).size.as_deref(), Some("1Gi"));
        assert!(kept.status.is_none(), "status is the server's");
    }

    #[test]
    fn turning_persistence_on_or_off_keeps_the_data_volume_consistent() {
        let empty_dir = json!([{"name": "data", "emptyDir": {}}]);
        let mut enabling = sts(claim("1Gi"), json!([]));
        let without = live(&sts(json!(null), empty_dir.clone()));
        let message = hold_back_volume_change(&mut enabling, Some(&without)).expect("held");
        assert!(message.contains("no persistent volume"), "{message}");
        let spec = enabling.spec.expect("spec");
        assert!(spec.volume_claim_templates.is_none());
        let volumes = spec.template.spec.expect("pod").volumes.expect("volumes");
        assert!(volumes
            .iter()
            .any(|v| v.name == "data" && v.empty_dir.is_some()));

        let mut disabling = sts(json!(null), empty_dir);
        let with = live(&sts(claim("1Gi"), json!([])));
        hold_back_volume_change(&mut disabling, Some(&with)).expect("held");
        let spec = disabling.spec.expect("spec");
        assert_eq!(spec.volume_claim_templates.map(|c| c.len()), Some(1));
        let volumes = spec.template.spec.expect("pod").volumes.expect("volumes");
        assert!(
            volumes.iter().all(|v| v.name != "data"),
            "the claim is the data volume"
        );
    }
}
