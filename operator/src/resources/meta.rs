//! Names, labels and owner references shared by every child.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use super::BuildError;
use crate::crd::MqttCluster;

/// The names of a cluster's children, derived from the cluster's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub config_map: String,
    pub credentials: String,
    /// The Secret of the user generated when the spec names none.
    pub default_user: String,
    pub headless_service: String,
    pub client_service: String,
    pub link_service: String,
    /// The Secret holding the cluster's link set and link credentials.
    pub links: String,
    pub stateful_set: String,
    pub pdb: String,
}

/// Children's names for the cluster called `name`.
pub fn names(name: &str) -> Names {
    Names {
        config_map: format!("{name}-config"),
        credentials: format!("{name}-credentials"),
        default_user: format!("{name}-default-user"),
        headless_service: format!("{name}-headless"),
        client_service: name.to_owned(),
        link_service: format!("{name}-link"),
        links: format!("{name}-links"),
        stateful_set: name.to_owned(),
        pdb: name.to_owned(),
    }
}

/// Keys of the labels the operator puts on every child and pod; a spec's
/// own pod labels may not set them.
pub const OPERATOR_LABELS: [&str; 4] = [
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/component",
];

/// Labels that select the pods of the cluster called `name`.
pub fn selector_labels(name: &str) -> BTreeMap<String, String> {
    let [app, instance, ..] = OPERATOR_LABELS;
    BTreeMap::from([
        (app.to_owned(), "strait".to_owned()),
        (instance.to_owned(), name.to_owned()),
    ])
}

/// What every child of one cluster has in common.
#[derive(Debug, Clone)]
pub(super) struct ChildMeta {
    pub name: String,
    pub namespace: String,
    pub names: Names,
    owner: OwnerReference,
}

impl ChildMeta {
    pub fn of(cluster: &MqttCluster) -> Result<Self, BuildError> {
        let name = cluster.name_any();
        let namespace = cluster
            .namespace()
            .ok_or(BuildError::MissingMetadata("namespace"))?;
        let owner = cluster
            .controller_owner_ref(&())
            .ok_or(BuildError::MissingMetadata("uid"))?;
        Ok(ChildMeta {
            names: names(&name),
            name,
            namespace,
            owner,
        })
    }

    /// Labels of every child: the selector labels plus who manages them.
    pub fn labels(&self) -> BTreeMap<String, String> {
        let [name, instance, managed_by, component] = OPERATOR_LABELS;
        BTreeMap::from([
            (name.to_owned(), "strait".to_owned()),
            (instance.to_owned(), self.name.clone()),
            (managed_by.to_owned(), "strait-operator".to_owned()),
            (component.to_owned(), "broker".to_owned()),
        ])
    }

    /// Metadata of the child called `name`, owned by the cluster.
    pub fn object(&self, name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(self.namespace.clone()),
            labels: Some(self.labels()),
            owner_references: Some(vec![self.owner.clone()]),
            ..ObjectMeta::default()
        }
    }
}
