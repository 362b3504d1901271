//! What every link reconcile shares: the operator's context, the caches of
//! the objects links depend on, the admin API client, and remembered hashes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::runtime::reflector::{ObjectRef, Store};
use parking_lot::Mutex;

use super::admin::AdminClient;
use super::credentials::CredentialHashes;
use crate::controller::Context;
use crate::crd::{ClusterLink, MqttCluster};

/// Shared state of the link controller.
#[derive(Debug)]
pub struct LinkContext {
    pub base: Arc<Context>,
    pub links: Store<ClusterLink>,
    pub clusters: Store<MqttCluster>,
    /// The broker pods (the operator's label).
    pub pods: Store<Pod>,
    /// The operator's own Secrets (its label): cluster credentials, links
    /// Secrets, issued link credentials.
    pub secrets: Store<Secret>,
    pub admin: AdminClient,
    pub hashes: CredentialHashes,
    /// Consecutive failures per link (`namespace/name`), for backoff.
    pub failures: Mutex<HashMap<String, u32>>,
    /// When each link's queue depth was last written to its status: it is
    /// written at most once a minute, since it changes all the time.
    pub queue_written: Mutex<HashMap<String, Instant>>,
}

impl LinkContext {
    pub fn new(
        base: Arc<Context>,
        links: Store<ClusterLink>,
        clusters: Store<MqttCluster>,
        pods: Store<Pod>,
        secrets: Store<Secret>,
    ) -> LinkContext {
        LinkContext {
            base,
            links,
            clusters,
            pods,
            secrets,
            admin: AdminClient::default(),
            hashes: CredentialHashes::default(),
            failures: Mutex::default(),
            queue_written: Mutex::default(),
        }
    }

    /// Waits until every cache has listed its objects once, so that a
    /// reconcile never mistakes a cache still filling for a missing object.
    pub async fn caches_ready(&self) {
        let _ = futures::join!(
            self.links.wait_until_ready(),
            self.clusters.wait_until_ready(),
            self.pods.wait_until_ready(),
            self.secrets.wait_until_ready(),
        );
    }

    pub fn cluster(&self, namespace: &str, name: &str) -> Option<Arc<MqttCluster>> {
        self.clusters.get(&ObjectRef::new(name).within(namespace))
    }

    /// One of the operator's own Secrets, as cached.
    pub fn own_secret(&self, namespace: &str, name: &str) -> Option<Arc<Secret>> {
        self.secrets.get(&ObjectRef::new(name).within(namespace))
    }
}
