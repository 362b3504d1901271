//! The CRDs committed under `crds/` (and the Helm chart's copy) are exactly
//! what the types generate.

use std::path::Path;

#[test]
fn committed_crds_match_the_types() {
    let generated = strait_operator::crd::crds_yaml().expect("render CRDs");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for file in [
        "crds/strait.dev_mqttclusters.yaml",
        "charts/strait-operator/crds/strait.dev_mqttclusters.yaml",
    ] {
        let path = root.join(file);
        let committed = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; run `make crds`", path.display()));
        assert!(
            committed == generated,
            "{file} is out of date with operator/src/crd; run `make crds` and commit the result"
        );
    }
}
