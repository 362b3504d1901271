//! What every link reconcile shares: the operator's context, the caches of
//! the objects links depend on, the admin API client, and remembered hashes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::runtime::reflector::{ObjectRef, Store};
use parking_lot::Mutex;
use tokio::sync::watch;

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
    /// Health reads of each link since it was last Ready, to read a
    /// settling link again sooner than the steady interval.
    pub settling: Mutex<HashMap<String, u32>>,
    /// Turns `true` once every cache has listed its objects.
    ready: watch::Receiver<bool>,
}

impl LinkContext {
    pub fn new(
        base: Arc<Context>,
        links: Store<ClusterLink>,
        clusters: Store<MqttCluster>,
        pods: Store<Pod>,
        secrets: Store<Secret>,
    ) -> LinkContext {
        // One task waits for the caches the links depend on: a store wakes
        // only the last of several tasks waiting on it, so reconciles wait on
        // this flag instead. (The links' own store is the controller's,
        // which waits on it before any reconcile.)
        let (ready_tx, ready) = watch::channel(false);
        let stores = (clusters.clone(), pods.clone(), secrets.clone());
        tokio::spawn(async move {
            let _ = futures::join!(
                stores.0.wait_until_ready(),
                stores.1.wait_until_ready(),
                stores.2.wait_until_ready(),
            );
            let _ = ready_tx.send(true);
        });
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
            settling: Mutex::default(),
            ready,
        }
    }

    /// Waits until every cache has listed its objects once, so that a
    /// reconcile never mistakes a cache still filling for a missing object.
    pub async fn caches_ready(&self) {
        let mut ready = self.ready.clone();
        let _ = ready.wait_for(|ready| *ready).await;
    }

    pub fn cluster(&self, namespace: &str, name: &str) -> Option<Arc<MqttCluster>> {
        self.clusters.get(&ObjectRef::new(name).within(namespace))
    }

    /// One of the operator's own Secrets, as cached.
    pub fn own_secret(&self, namespace: &str, name: &str) -> Option<Arc<Secret>> {
        self.secrets.get(&ObjectRef::new(name).within(namespace))
    }
}
