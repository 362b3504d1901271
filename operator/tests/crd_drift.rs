//! The CRDs committed under `crds/` are exactly what the types generate.

use std::path::Path;

#[test]
fn committed_crds_match_the_types() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/strait.dev_mqttclusters.yaml");
    let committed = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run `make crds`", path.display()));
    let generated = strait_operator::crd::crds_yaml().expect("render CRDs");
    assert!(
        committed == generated,
        "{} is out of date with operator/src/crd; run `make crds` and commit the result",
        path.display()
    );
}
