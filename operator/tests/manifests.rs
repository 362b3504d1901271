//! The example manifests under `manifests/` apply on a real API server (its
//! CRD schemas take them) and pass the operator's own checks; the
//! same-Kubernetes example becomes Ready with brokers running its pods.

mod support;

use std::path::{Path, PathBuf};

use kube::api::PostParams;
use kube::{Api, Client};
use strait_operator::crd::{ClusterLink, MqttCluster};
use strait_operator::links::health::types;
use support::world::World;

fn manifests() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("manifests/").flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests"),
        &mut out,
    );
    out.sort();
    out
}

/// Creates every document of `path` in `ns`, clusters changed by `adjust`
/// first; returns how many.
async fn apply(client: &Client, ns: &str, path: &Path, adjust: impl Fn(&mut MqttCluster)) -> usize {
    let text = std::fs::read_to_string(path).expect("read a manifest");
    let mut created = 0;
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let value: serde_yaml::Value = serde::Deserialize::deserialize(doc).expect("YAML");
        let kind = value["kind"].as_str().unwrap_or_default().to_owned();
        // A document that names its namespace goes there, as kubectl would put it.
        let ns = match value["metadata"]["namespace"].as_str() {
            Some(own) => {
                ensure_namespace(client, own).await;
                own.to_owned()
            }
            None => ns.to_owned(),
        };
        let ns = ns.as_str();
        let name = format!("{}: {kind}", path.display());
        match kind.as_str() {
            "MqttCluster" => {
                let mut cluster: MqttCluster = serde_yaml::from_value(value).expect(&name);
                strait_operator::validate::spec(&cluster.spec).expect(&name);
                adjust(&mut cluster);
                create(Api::namespaced(client.clone(), ns), &cluster, &name).await;
            }
            "ClusterLink" => {
                let link: ClusterLink = serde_yaml::from_value(value).expect(&name);
                strait_operator::links::validate::spec(&link.spec, ns).expect(&name);
                create(
                    Api::<ClusterLink>::namespaced(client.clone(), ns),
                    &link,
                    &name,
                )
                .await;
            }
            "Namespace" => {
                let own = value["metadata"]["name"].as_str().expect(&name);
                ensure_namespace(client, own).await;
            }
            other => panic!("{}: an example of kind {other:?}", path.display()),
        }
        created += 1;
    }
    created
}

async fn ensure_namespace(client: &Client, name: &str) {
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).expect("namespace");
    match api.create(&PostParams::default(), &namespace).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(error) => panic!("create namespace {name}: {error}"),
    }
}

async fn create<K>(api: Api<K>, object: &K, name: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    if let Err(error) = api.create(&PostParams::default(), object).await {
        panic!("{name}: the API server refuses it: {error}");
    }
}

#[tokio::test]
async fn every_example_applies_and_passes_the_operators_checks() {
    let files = manifests();
    assert!(files.len() >= 7, "{files:?}");
    if support::control_plane::skipped() {
        return;
    }
    let client = support::client().await;
    for (i, path) in files.iter().enumerate() {
        let ns = support::namespace(&client, &format!("example-{i}")).await;
        assert!(
            apply(&client, &ns, path, |_| {}).await > 0,
            "{}",
            path.display()
        );
    }
}

#[tokio::test]
async fn the_one_way_export_example_becomes_ready() {
    let Some(world) = World::start("one-way").await else {
        return;
    };
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/link-one-way-export.yaml");
    // The test's MQTT clients come without credentials.
    let anonymous = |c: &mut MqttCluster| c.spec.auth.allow_anonymous = true;
    assert_eq!(apply(&world.client, &world.ns, &path, anonymous).await, 3);
    world
        .wait_for("factory-to-analytics", types::READY, "True")
        .await;
    let mut analytics = world.mqtt("analytics-1", "dashboard").await;
    analytics.subscribe("plant/#").await;
    world
        .wait_routes("factory", "factory-0", "analytics", 1)
        .await;
    let mut machine = world.mqtt("factory-2", "press-4").await;
    machine
        .publish("plant/3/machines/press-4/telemetry", b"41C")
        .await;
    assert_eq!(
        analytics.next().await,
        (
            "plant/3/machines/press-4/telemetry".to_owned(),
            b"41C".to_vec()
        )
    );
    world.stop().await;
}
