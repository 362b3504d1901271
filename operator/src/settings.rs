//! The operator's own configuration, from its command line or a test.

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
}

impl Settings {
    /// The field manager of every server-side apply.
    pub const FIELD_MANAGER: &'static str = "strait-operator";
    /// The controller name Events are reported under.
    pub const CONTROLLER: &'static str = "strait.dev/operator";
}
