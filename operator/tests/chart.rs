//! The Helm chart's life on a real API server, with Helm's own SDK
//! (`scripts/helm.sh`): installed as an older chart, upgraded to this one,
//! uninstalled. This binary's control plane starts without CRDs: the chart
//! brings them.

mod support;

use std::path::Path;
use std::process::Command;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::json;
use strait_operator::crd::MqttCluster;
use support::control_plane::{self, OPERATOR_NAMESPACE};

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/strait-operator");
const CLUSTER_CRD: &str = "strait.dev_mqttclusters.yaml";

/// Runs `scripts/helm.sh verb` against the shared control plane, with the
/// chart at `chart` (this repository's when `None`).
fn helm(verb: &str, chart: Option<&Path>) {
    let plane = control_plane::shared();
    let mut cmd = Command::new("bash");
    cmd.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/helm.sh"))
        .arg(verb)
        .arg(&plane.kubeconfig)
        .arg(OPERATOR_NAMESPACE);
    if let Some(chart) = chart {
        cmd.env("STRAIT_CHART", chart);
    }
    let output = cmd.output().expect("run scripts/helm.sh");
    assert!(
        output.status.success(),
        "helm {verb}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The properties of `spec` in the served MqttCluster schema; `None` when
/// the CRD does not exist.
async fn served_spec_fields(client: &Client) -> Option<Vec<String>> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = crds
        .get_opt("mqttclusters.strait.dev")
        .await
        .expect("get CRD")?;
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .and_then(|s| s.properties.as_ref())
        .and_then(|p| p.get("spec"))
        .and_then(|s| s.properties.as_ref())
        .expect("spec properties");
    Some(schema.keys().cloned().collect())
}

/// A copy of the chart as an older release had it: its MqttCluster CRD
/// without `spec.podTemplate`.
fn older_chart(dir: &Path) -> std::path::PathBuf {
    let status = Command::new("cp")
        .args(["-r", CHART])
        .arg(dir)
        .status()
        .expect("cp");
    assert!(status.success());
    let chart = dir.join("strait-operator");
    let crd_path = chart.join("files/crds").join(CLUSTER_CRD);
    let mut crd: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&crd_path).expect("read CRD"))
            .expect("CRD YAML");
    let spec_fields = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        ["properties"]
        .as_mapping_mut()
        .expect("spec properties");
    assert!(spec_fields.remove("podTemplate").is_some());
    std::fs::write(&crd_path, serde_yaml::to_string(&crd).expect("YAML")).expect("write CRD");
    chart
}

#[tokio::test]
async fn helm_upgrade_updates_the_crds_and_uninstall_keeps_them_and_the_clusters() {
    if control_plane::skipped() {
        eprintln!("STRAIT_SKIP_K8S=1: skipping the chart test");
        return;
    }
    let client = support::client_from(&control_plane::shared().kubeconfig).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let older = older_chart(dir.path());

    helm("install", Some(&older));
    let fields = served_spec_fields(&client).await.expect("installed CRD");
    assert!(fields.contains(&"replicas".to_owned()), "{fields:?}");
    assert!(!fields.contains(&"podTemplate".to_owned()), "the older CRD");

    helm("upgrade", None);
    let fields = served_spec_fields(&client).await.expect("upgraded CRD");
    assert!(
        fields.contains(&"podTemplate".to_owned()),
        "helm upgrade brought the new schema: {fields:?}"
    );

    // What the CRDs hold outlives the release.
    let clusters: Api<MqttCluster> = Api::namespaced(client.clone(), "default");
    let cluster: MqttCluster = serde_json::from_value(json!({
        "apiVersion": "strait.dev/v1alpha1",
        "kind": "MqttCluster",
        "metadata": {"name": "outlives-the-release"},
        "spec": {"podTemplate": {"labels": {"team": "fleet"}}},
    }))
    .expect("cluster");
    clusters
        .create(&PostParams::default(), &cluster)
        .await
        .expect("create a cluster with the new field");
    helm("uninstall", None);
    assert!(
        served_spec_fields(&client).await.is_some(),
        "helm uninstall keeps the CRDs"
    );
    let kept = clusters
        .get_opt("outlives-the-release")
        .await
        .expect("get cluster")
        .expect("the cluster is still there");
    assert_eq!(
        kept.spec
            .pod_template
            .labels
            .get("team")
            .map(String::as_str),
        Some("fleet"),
        "and its fields with it"
    );
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(client.clone(), OPERATOR_NAMESPACE);
    assert!(
        deployments
            .get_opt("strait")
            .await
            .expect("get deployment")
            .is_none(),
        "the operator itself is uninstalled"
    );
}
