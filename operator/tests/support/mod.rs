//! Helpers shared by the tests that run on a real API server.

#![allow(dead_code)] // each test binary uses a different subset

pub use strait_e2e::control_plane;
pub use strait_e2e::wait::eventually;
pub mod nodes;
pub mod world;

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::PostParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use strait_operator::operator::{self, Election, Handle};
use strait_operator::settings::Settings;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A client of the shared control plane, with the CRDs installed from `crds/`.
pub async fn client() -> Client {
    // RUST_LOG=strait_operator=debug shows the operator's logs in failing tests.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    client_of(control_plane::shared()).await
}

/// A client of `plane`, with the CRDs installed from `crds/`.
pub async fn client_of(plane: &control_plane::ControlPlane) -> Client {
    let client = client_from(&plane.kubeconfig).await;
    install_crds(&client).await;
    client
}

/// A client authenticated as the kubeconfig at `path` says.
pub async fn client_from(path: &std::path::Path) -> Client {
    let kubeconfig = Kubeconfig::read_from(path).expect("kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("client config");
    Client::try_from(config).expect("client")
}

/// Installs the committed CRDs (the files users apply) and waits until they are served.
async fn install_crds(client: &Client) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds");
    let mut text = String::new();
    for file in [
        "strait.dev_mqttclusters.yaml",
        "strait.dev_clusterlinks.yaml",
    ] {
        let path = std::path::Path::new(dir).join(file);
        text.push_str(&std::fs::read_to_string(path).expect("read crds/"));
    }
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let crd: CustomResourceDefinition =
            serde::Deserialize::deserialize(doc).expect("a CRD document");
        let name = crd.metadata.name.clone().expect("name");
        // Created, not server-side applied: 1.20 applies a CRD through its
        // v1beta1 defaults (preserveUnknownFields) and refuses the result.
        match crds.create(&PostParams::default(), &crd).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(error) => panic!("install CRD: {error}"),
        }
        eventually(
            Duration::from_secs(30),
            "the CRD is established",
            || async {
                crds.get(&name)
                    .await
                    .ok()
                    .and_then(|c| c.status)
                    .and_then(|s| s.conditions)
                    .is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c.type_ == "Established" && c.status == "True")
                    })
            },
        )
        .await;
    }
}

/// Creates a fresh namespace named after the test.
pub async fn namespace(client: &Client, test: &str) -> String {
    let name = format!("{test}-{}", std::process::id() % 100_000);
    let api: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: kube::api::ObjectMeta {
            name: Some(name.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    api.create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
    name
}

/// An operator running in this process, watching one namespace.
pub struct RunningOperator {
    pub handle: Handle,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), operator::RunError>>,
}

impl RunningOperator {
    /// Starts an operator for `namespace`, with leader election when `election` is set.
    pub fn start(
        client: &Client,
        namespace: &str,
        instance: &str,
        election: Option<Election>,
    ) -> Self {
        Self::start_with(
            client,
            Settings {
                namespace: Some(namespace.to_owned()),
                ..Settings::new(instance, "ghcr.io/strait/broker:test")
            },
            election,
        )
    }

    /// Starts an operator with `settings`.
    pub fn start_with(client: &Client, settings: Settings, election: Option<Election>) -> Self {
        let handle = Handle::default();
        let (stop, shutdown) = watch::channel(false);
        let task = tokio::spawn(operator::run(
            client.clone(),
            settings,
            election,
            handle.clone(),
            shutdown,
        ));
        RunningOperator { handle, stop, task }
    }

    /// Asks for a graceful shutdown and waits for it.
    pub async fn stop(self) -> Result<(), operator::RunError> {
        let _ = self.stop.send(true);
        self.task.await.expect("operator task")
    }
}
