//! The StatefulSet that runs the broker nodes.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, HTTPGetAction, ObjectFieldSelector, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile,
    SecretVolumeSource, SecurityContext, TopologySpreadConstraint, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::broker_config::ConfigPaths;
use super::config_map::CONFIG_KEY;
use super::meta::{selector_labels, ChildMeta};
use super::services::client_ports;
use super::{ADMIN_PORT, CLUSTER_PORT, CONFIG_HASH_ANNOTATION};
use crate::crd::MqttCluster;
use crate::validate::tls_refs;

/// The unprivileged user the broker runs as.
const BROKER_UID: i64 = 65532;

pub(super) fn build(
    meta: &ChildMeta,
    cluster: &MqttCluster,
    default_image: &str,
    config_hash: &str,
) -> StatefulSet {
    let spec = &cluster.spec;
    let selector = selector_labels(&meta.name);
    let template = &spec.pod_template;
    // The spec's own labels and annotations first: validation refuses the
    // operator's keys, and the operator's win regardless.
    let mut pod_labels = template.labels.clone();
    pod_labels.extend(meta.labels());
    let mut pod_annotations = template.annotations.clone();
    pod_annotations.insert(CONFIG_HASH_ANNOTATION.to_owned(), config_hash.to_owned());
    let persistence = &spec.persistence;

    let mut volumes = vec![
        Volume {
            name: "config".to_owned(),
            config_map: Some(ConfigMapVolumeSource {
                name: meta.names.config_map.clone(),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        secret_volume("credentials", &meta.names.credentials),
        // Optional: a pod starts before the operator has written any link.
        Volume {
            name: "links".to_owned(),
            secret: Some(SecretVolumeSource {
                optional: Some(true),
                ..secret_source(&meta.names.links)
            }),
            ..Volume::default()
        },
        empty_dir("tmp"),
    ];
    let mut mounts = vec![
        mount("config", ConfigPaths::CONFIG_DIR),
        mount("credentials", ConfigPaths::CREDENTIALS_DIR),
        mount("links", ConfigPaths::LINKS_DIR),
        mount("tmp", "/tmp"),
        mount("data", ConfigPaths::DATA_DIR),
    ];
    // One volume per distinct TLS Secret, at the folder the config refers to.
    let tls_secrets: BTreeSet<&str> = tls_refs(spec)
        .into_iter()
        .map(|(_, tls)| tls.certificate_secret.as_str())
        .collect();
    for (i, secret) in tls_secrets.into_iter().enumerate() {
        let name = format!("tls-{i}");
        let dir = ConfigPaths::tls_dir(secret);
        mounts.push(mount(&name, &dir.to_string_lossy()));
        volumes.push(secret_volume(&name, secret));
    }
    if !persistence.enabled {
        volumes.push(empty_dir("data"));
    }

    let mut ports: Vec<ContainerPort> = client_ports(cluster)
        .into_iter()
        .chain([
            ("link", spec.listeners.link.port),
            ("admin", ADMIN_PORT),
            ("cluster", CLUSTER_PORT),
        ])
        .map(|(name, port)| ContainerPort {
            name: Some(name.to_owned()),
            container_port: port,
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        })
        .collect();
    ports.sort_by_key(|p| p.container_port);

    let container = Container {
        name: "broker".to_owned(),
        image: Some(
            spec.image
                .clone()
                .unwrap_or_else(|| default_image.to_owned()),
        ),
        image_pull_policy: spec.image_pull_policy.map(|p| p.as_str().to_owned()),
        args: Some(vec![
            "--config".to_owned(),
            format!("{}/{CONFIG_KEY}", ConfigPaths::CONFIG_DIR),
        ]),
        env: Some(
            [EnvVar {
                name: ConfigPaths::POD_NAME_ENV.to_owned(),
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        field_path: "metadata.name".to_owned(),
                        ..ObjectFieldSelector::default()
                    }),
                    ..EnvVarSource::default()
                }),
                ..EnvVar::default()
            }]
            .into_iter()
            .chain(template.env.iter().cloned())
            .collect(),
        ),
        ports: Some(ports),
        liveness_probe: Some(http_probe("/healthz", 10, 3)),
        readiness_probe: Some(http_probe("/readyz", 5, 2)),
        resources: spec.resources.clone(),
        volume_mounts: Some(mounts),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(BROKER_UID),
            run_as_group: Some(BROKER_UID),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    };

    let scheduling = &spec.scheduling;
    let spread = match &scheduling.topology_spread_constraints {
        Some(list) if list.is_empty() => None,
        Some(list) => Some(list.clone()),
        None => Some(vec![zone_spread(&selector)]),
    };
    let pod = PodSpec {
        containers: vec![container],
        volumes: Some(volumes),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            fs_group: Some(BROKER_UID),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        automount_service_account_token: Some(false),
        termination_grace_period_seconds: Some(30),
        node_selector: (!scheduling.node_selector.is_empty())
            .then(|| scheduling.node_selector.clone()),
        tolerations: (!scheduling.tolerations.is_empty()).then(|| scheduling.tolerations.clone()),
        affinity: scheduling.affinity.clone(),
        topology_spread_constraints: spread,
        priority_class_name: template.priority_class_name.clone(),
        image_pull_secrets: (!spec.image_pull_secrets.is_empty())
            .then(|| spec.image_pull_secrets.clone()),
        ..PodSpec::default()
    };

    let claims = persistence.enabled.then(|| {
        vec![PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some("data".to_owned()),
                labels: Some(selector.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
                storage_class_name: persistence.storage_class_name.clone(),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([(
                        "storage".to_owned(),
                        Quantity(persistence.size.clone()),
                    )])),
                    ..VolumeResourceRequirements::default()
                }),
                ..PersistentVolumeClaimSpec::default()
            }),
            ..PersistentVolumeClaim::default()
        }]
    });

    StatefulSet {
        metadata: meta.object(&meta.names.stateful_set),
        spec: Some(StatefulSetSpec {
            replicas: Some(spec.replicas),
            service_name: Some(meta.names.headless_service.clone()),
            pod_management_policy: Some("Parallel".to_owned()),
            selector: LabelSelector {
                match_labels: Some(selector),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(pod_annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            volume_claim_templates: claims,
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}

/// Spread the nodes over zones when the nodes have zones, without blocking scheduling.
fn zone_spread(selector: &BTreeMap<String, String>) -> TopologySpreadConstraint {
    TopologySpreadConstraint {
        max_skew: 1,
        topology_key: "topology.kubernetes.io/zone".to_owned(),
        when_unsatisfiable: "ScheduleAnyway".to_owned(),
        label_selector: Some(LabelSelector {
            match_labels: Some(selector.clone()),
            ..LabelSelector::default()
        }),
        ..TopologySpreadConstraint::default()
    }
}

fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("admin".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: (name != "data" && name != "tmp").then_some(true),
        ..VolumeMount::default()
    }
}

fn secret_volume(name: &str, secret: &str) -> Volume {
    Volume {
        name: name.to_owned(),
        secret: Some(secret_source(secret)),
        ..Volume::default()
    }
}

fn secret_source(secret: &str) -> SecretVolumeSource {
    SecretVolumeSource {
        secret_name: Some(secret.to_owned()),
        ..SecretVolumeSource::default()
    }
}

fn empty_dir(name: &str) -> Volume {
    Volume {
        name: name.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }
}
