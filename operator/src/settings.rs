//! The operator's own configuration, from its command line or a test.

use std::sync::Arc;
use std::time::Duration;

use crate::links::{NodeAddresses, PodNetwork};

/// How the operator runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Broker image for clusters whose spec sets none.
    pub default_image: String,
    /// Only reconcile clusters in this namespace; all namespaces when unset.
    pub namespace: Option<String>,
    /// Clusters reconciled at once.
    pub concurrency: u16,
    /// This operator instance's name in Events and on the leader Lease (the pod name).
    pub instance: String,
    /// How often each link's health is read from its brokers.
    pub link_health_interval: Duration,
    /// How broker pods are reached.
    pub addresses: Arc<dyn NodeAddresses>,
}

impl Settings {
    /// Settings for `instance` with every other value at its default.
    pub fn new(instance: &str, default_image: &str) -> Settings {
        Settings {
            default_image: default_image.to_owned(),
            namespace: None,
            concurrency: 4,
            instance: instance.to_owned(),
            link_health_interval: Duration::from_secs(10),
            addresses: Arc::new(PodNetwork),
        }
    }
}

impl Settings {
    /// The field manager of every server-side apply.
    pub const FIELD_MANAGER: &'static str = "strait-operator";
    /// The controller name Events are reported under.
    pub const CONTROLLER: &'static str = "strait.dev/operator";
}
