//! Pure builders of an `MqttCluster`'s children.
//!
//! Everything here is a function from the cluster (plus what the controller
//! read or generated for it) to Kubernetes objects: no I/O, so each builder is
//! tested from YAML fixtures. The controller applies what [`build`] returns.

mod broker_config;
mod config_map;
mod credentials;
mod hash;
pub mod links;
mod meta;
mod pdb;
mod services;
mod stateful_set;
mod users;

pub use broker_config::{broker_config, ConfigPaths};
pub use config_map::CONFIG_KEY;
pub use credentials::{
    credentials_file, random_token, Credentials, HashError, ADMIN_TOKEN, CLUSTER_SECRET,
    CREDENTIALS_KEYS, INTERNAL_USER,
};
pub use hash::{content_hash, APPLIED_HASH_ANNOTATION, CONFIG_HASH_ANNOTATION};
pub use meta::{names, selector_labels, Names, OPERATOR_LABELS};
pub use services::{client_endpoint, link_endpoint};
pub use users::{
    credentials_lines, known_lines, DefaultUser, DefaultUserSecret, KnownHashes, Password, User,
    DEFAULT_USERNAME, RETIRED_ANNOTATION,
};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;

use crate::crd::MqttCluster;

/// Port of the broker's admin endpoint (probes, metrics) in every pod.
pub const ADMIN_PORT: i32 = 8080;

/// Port of the mesh between the nodes of one cluster in every pod.
pub const CLUSTER_PORT: i32 = 7946;

/// Why children could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The cluster has not been stored by the API server yet (no uid or name).
    #[error("the MqttCluster has no {0} yet")]
    MissingMetadata(&'static str),
    /// The rendered broker configuration did not serialise.
    #[error("rendering the broker configuration: {0}")]
    Render(#[from] serde_yaml::Error),
    /// The broker refused the rendered configuration: a gap in validation.
    #[error("the broker refuses the rendered configuration: {0}")]
    Refused(#[from] strait_broker::config::ConfigError),
}

/// Everything a build needs besides the cluster itself.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    /// The broker image when the spec sets none.
    pub default_image: &'a str,
    /// The cluster's generated credentials (read back or freshly generated).
    pub credentials: &'a Credentials,
    /// Credentials-file lines of every user (hashed), in spec order.
    pub user_lines: &'a [String],
    /// The generated first user, when the spec names no users Secret.
    pub default_user: Option<&'a DefaultUser>,
}

/// The children of one `MqttCluster`, ready to apply.
#[derive(Debug, Clone)]
pub struct Children {
    pub config_map: ConfigMap,
    pub credentials: Secret,
    /// The generated user's Secret, active or retired.
    pub default_user: DefaultUserSecret,
    pub headless_service: Service,
    pub client_service: Service,
    pub link_service: Service,
    pub stateful_set: StatefulSet,
    /// Absent when the spec turns the budget off.
    pub pdb: Option<PodDisruptionBudget>,
}

/// Builds every child of `cluster`.
pub fn build(cluster: &MqttCluster, inputs: &Inputs<'_>) -> Result<Children, BuildError> {
    let meta = meta::ChildMeta::of(cluster)?;
    let config_map = config_map::build(&meta, cluster)?;
    let config_hash = config_map::hash(&config_map);
    Ok(Children {
        credentials: credentials::build(&meta, inputs.credentials, inputs.user_lines),
        default_user: users::build_default_user(&meta, inputs.default_user),
        headless_service: services::headless(&meta, cluster),
        client_service: services::client(&meta, cluster),
        link_service: services::link(&meta, cluster),
        stateful_set: stateful_set::build(&meta, cluster, inputs.default_image, &config_hash),
        pdb: pdb::build(&meta, cluster),
        config_map,
    })
}
