//! The ConfigMap holding the broker configuration.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;

use super::broker_config::broker_config;
use super::meta::ChildMeta;
use super::{content_hash, BuildError};
use crate::crd::MqttCluster;

/// The ConfigMap key (and file name in the pod) of the broker configuration.
pub const CONFIG_KEY: &str = "strait.yaml";

pub(super) fn build(meta: &ChildMeta, cluster: &MqttCluster) -> Result<ConfigMap, BuildError> {
    let config = broker_config(&meta.name, &meta.namespace, &cluster.spec);
    // A rendering the broker would refuse is a bug here or in validation:
    // better a clear error than a crash-looping StatefulSet.
    config.validate()?;
    let yaml = serde_yaml::to_string(&config)?;
    Ok(ConfigMap {
        metadata: meta.object(&meta.names.config_map),
        data: Some(BTreeMap::from([(CONFIG_KEY.to_owned(), yaml)])),
        ..ConfigMap::default()
    })
}

/// Hash of the static configuration the pods run.
pub(super) fn hash(config_map: &ConfigMap) -> String {
    let yaml = config_map
        .data
        .as_ref()
        .and_then(|d| d.get(CONFIG_KEY))
        .map_or("", String::as_str);
    content_hash(yaml.as_bytes())
}
