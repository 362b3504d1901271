//! What every reconcile shares: the client, settings, metrics, and the
//! resolved API versions of the children.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::api::ApiResource;
use kube::runtime::events::{Recorder, Reporter};
use kube::Client;

use crate::resources::KnownHashes;
use crate::settings::Settings;
use crate::telemetry::Metrics;

/// The kinds of child an `MqttCluster` has, with their API resources.
#[derive(Debug, Clone)]
pub struct ChildKinds {
    pub config_map: ApiResource,
    pub secret: ApiResource,
    pub service: ApiResource,
    pub stateful_set: ApiResource,
    /// `policy/v1`, or `policy/v1beta1` on servers older than 1.21.
    pub pdb: ApiResource,
}

impl ChildKinds {
    /// The children's resources, with the PodDisruptionBudget version the server serves.
    pub async fn discover(client: &Client) -> Result<ChildKinds, kube::Error> {
        let policy_v1 = match client.list_api_group_resources("policy/v1").await {
            Ok(list) => list
                .resources
                .iter()
                .any(|r| r.name == "poddisruptionbudgets"),
            // Only a server without the group version says so; other errors are real.
            Err(kube::Error::Api(status)) if status.is_not_found() => false,
            Err(error) => return Err(error),
        };
        let version = if policy_v1 { "v1" } else { "v1beta1" };
        Ok(ChildKinds {
            config_map: ApiResource::erase::<ConfigMap>(&()),
            secret: ApiResource::erase::<Secret>(&()),
            service: ApiResource::erase::<Service>(&()),
            stateful_set: ApiResource::erase::<StatefulSet>(&()),
            pdb: ApiResource {
                group: "policy".into(),
                version: version.into(),
                api_version: format!("policy/{version}"),
                kind: "PodDisruptionBudget".into(),
                plural: "poddisruptionbudgets".into(),
            },
        })
    }
}

/// Shared state of the controller.
#[derive(Clone)]
pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub kinds: ChildKinds,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    /// Consecutive failures per cluster (`namespace/name`), for backoff.
    pub failures: Arc<Mutex<HashMap<String, u32>>>,
    /// Which password hashes are known to match, so that a reconcile need
    /// not check them again.
    pub known_hashes: Arc<KnownHashes>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("settings", &self.settings)
            .field("kinds", &self.kinds)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// A context for `client`, discovering the children's API versions.
    pub async fn new(
        client: Client,
        settings: Settings,
        metrics: Arc<Metrics>,
    ) -> Result<Context, kube::Error> {
        let kinds = ChildKinds::discover(&client).await?;
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: Settings::CONTROLLER.to_owned(),
                instance: Some(settings.instance.clone()),
            },
        );
        Ok(Context {
            client,
            settings,
            kinds,
            metrics,
            recorder,
            failures: Arc::default(),
            known_hashes: Arc::default(),
        })
    }
}
