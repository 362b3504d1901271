//! The CRDs committed under `crds/` (and the Helm chart's copy, which its
//! templates render) are exactly what the types generate, one file per CRD.

use std::path::Path;

#[test]
fn committed_crds_match_the_types() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for crd in strait_operator::crd::crds() {
        let generated = strait_operator::crd::crd_yaml(&crd).expect("render the CRD");
        let name = strait_operator::crd::crd_file_name(&crd);
        for dir in ["crds", "charts/strait-operator/files/crds"] {
            let path = root.join(dir).join(&name);
            let committed = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}; run `make crds`", path.display()));
            assert!(
                committed == generated,
                "{dir}/{name} is out of date with operator/src/crd; run `make crds` and commit the result"
            );
        }
    }
}
