//! The operator on a real API server (etcd + kube-apiserver +
//! kube-controller-manager, no kubelet): one shared control plane for this
//! binary, one namespace and one in-process operator per test.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::ByteString;
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use strait_broker::config::Config;
use strait_operator::conditions::{find, reasons, types};
use strait_operator::controller::ChildKinds;
use strait_operator::crd::MqttCluster;
use strait_operator::leader::LeaseTiming;
use strait_operator::operator::Election;
use strait_operator::resources::{DEFAULT_USERNAME, RETIRED_ANNOTATION};
use support::{eventually, namespace, RunningOperator};

const WAIT: Duration = Duration::from_secs(60);

/// How long a test watches for reconciles that must not happen: longer than
/// the first two retries of the error policy's backoff (1 s, then 2 s).
const RETRY_WINDOW: Duration = Duration::from_secs(5);

/// Starts a test: `None` when STRAIT_SKIP_K8S=1 asks to skip.
async fn setup(test: &str) -> Option<(Client, String)> {
    if support::control_plane::skipped() {
        eprintln!("STRAIT_SKIP_K8S=1: skipping {test}");
        return None;
    }
    let client = support::client().await;
    let ns = namespace(&client, test).await;
    Some((client, ns))
}

async fn create_cluster(
    client: &Client,
    ns: &str,
    name: &str,
    spec: serde_json::Value,
) -> MqttCluster {
    let api: Api<MqttCluster> = Api::namespaced(client.clone(), ns);
    let cluster: MqttCluster = serde_json::from_value(json!({
        "apiVersion": "strait.dev/v1alpha1",
        "kind": "MqttCluster",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .expect("cluster");
    api.create(&PostParams::default(), &cluster)
        .await
        .expect("create cluster")
}

async fn get<K>(client: &Client, ns: &str, name: &str) -> Option<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    Api::<K>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .expect("get")
}

async fn wait_for_children(client: &Client, ns: &str, name: &str) {
    eventually(WAIT, "every child exists", || async {
        get::<ConfigMap>(client, ns, &format!("{name}-config"))
            .await
            .is_some()
            && get::<Secret>(client, ns, &format!("{name}-credentials"))
                .await
                .is_some()
            && get::<Service>(client, ns, &format!("{name}-headless"))
                .await
                .is_some()
            && get::<Service>(client, ns, name).await.is_some()
            && get::<Service>(client, ns, &format!("{name}-link"))
                .await
                .is_some()
            && get::<StatefulSet>(client, ns, name).await.is_some()
            && pdb_exists(client, ns, name).await
    })
    .await;
}

/// Whether the PodDisruptionBudget exists, in whichever version the server serves.
async fn pdb_exists(client: &Client, ns: &str, name: &str) -> bool {
    let kinds = ChildKinds::discover(client).await.expect("discovery");
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &kinds.pdb);
    api.get_opt(name).await.expect("get pdb").is_some()
}

async fn condition(
    client: &Client,
    ns: &str,
    name: &str,
    type_: &str,
) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    let cluster = get::<MqttCluster>(client, ns, name).await?;
    let status = cluster.status?;
    find(&status.conditions, type_).cloned()
}

async fn sts_replicas(client: &Client, ns: &str, name: &str) -> Option<i32> {
    get::<StatefulSet>(client, ns, name)
        .await
        .and_then(|s| s.spec)
        .and_then(|s| s.replicas)
}

/// Waits until the cluster's status describes its current generation and
/// its StatefulSet has settled, so that nothing is left to reconcile.
async fn wait_settled(client: &Client, ns: &str, name: &str, replicas: i32) {
    eventually(WAIT, "the cluster settles", || async {
        let Some(cluster) = get::<MqttCluster>(client, ns, name).await else {
            return false;
        };
        let Some(sts) = get::<StatefulSet>(client, ns, name).await else {
            return false;
        };
        let sts_status = sts.status.unwrap_or_default();
        let status = cluster.status.unwrap_or_default();
        let rolled_out = find(&status.conditions, types::PROGRESSING)
            .is_some_and(|c| c.reason == reasons::ROLLED_OUT);
        status.observed_generation == cluster.metadata.generation
            && sts_status.observed_generation == sts.metadata.generation
            && sts_status.replicas == replicas
            && status.replicas == replicas
            && rolled_out
    })
    .await;
}

#[tokio::test]
async fn children_are_built_with_the_right_content() {
    let Some((client, ns)) = setup("children").await else {
        return;
    };
    let op = RunningOperator::start(&client, &ns, "op", None);
    let cluster = create_cluster(
        &client,
        &ns,
        "alpha",
        json!({
            "replicas": 3,
            "limits": {"maxInflight": 16},
            "imagePullSecrets": [{"name": "registry-creds"}],
            "podTemplate": {
                "labels": {"team": "fleet"},
                "annotations": {"example.com/owner": "fleet-team"},
                "env": [{"name": "RUST_LOG", "value": "debug"}],
                "priorityClassName": "mqtt-critical",
            },
        }),
    )
    .await;
    wait_for_children(&client, &ns, "alpha").await;

    let cm: ConfigMap = get(&client, &ns, "alpha-config").await.expect("config map");
    let config: Config =
        serde_yaml::from_str(&cm.data.expect("data")["strait.yaml"]).expect("broker config");
    config.validate().expect("valid broker config");
    assert_eq!(config.node.cluster, "alpha");
    assert_eq!(config.limits.max_inflight, 16);
    assert_eq!(
        config.cluster.bind.map(|b| b.port()),
        Some(7946),
        "the nodes form a mesh"
    );
    let dns = config.cluster.dns.as_ref().expect("peers found by DNS");
    assert_eq!(
        (dns.name.as_str(), dns.port),
        (format!("alpha-headless.{ns}.svc").as_str(), 7946)
    );
    assert_eq!(
        config.cluster.secret_file.as_deref(),
        Some(std::path::Path::new(
            "/etc/strait/credentials/cluster-secret"
        ))
    );
    assert_eq!(
        config.auth.allow_anonymous,
        Some(false),
        "anonymous stays off unless asked for"
    );

    let sts: StatefulSet = get(&client, &ns, "alpha").await.expect("sts");
    let owner = &sts.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("MqttCluster", cluster.uid().expect("uid").as_str())
    );
    assert_eq!(owner.controller, Some(true));
    let spec = sts.spec.expect("spec");
    assert_eq!(spec.replicas, Some(3));
    assert_eq!(spec.service_name.as_deref(), Some("alpha-headless"));
    let template = spec.template;
    let meta = template.metadata.expect("meta");
    let annotations = meta.annotations.expect("ann");
    assert!(annotations.contains_key("strait.dev/config-hash"));
    assert_eq!(annotations["example.com/owner"], "fleet-team");
    let labels = meta.labels.expect("labels");
    assert_eq!(labels["team"], "fleet");
    assert_eq!(labels["app.kubernetes.io/instance"], "alpha");
    let pod = template.spec.expect("pod");
    assert_eq!(pod.priority_class_name.as_deref(), Some("mqtt-critical"));
    assert_eq!(
        pod.image_pull_secrets.as_ref().map(|s| s[0].name.as_str()),
        Some("registry-creds")
    );
    let container = &pod.containers[0];
    let env: Vec<(&str, Option<&str>)> = container
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.as_str(), e.value.as_deref()))
        .collect();
    assert_eq!(env, [("POD_NAME", None), ("RUST_LOG", Some("debug"))]);
    assert_eq!(
        container.image.as_deref(),
        Some("ghcr.io/strait/broker:test")
    );
    assert!(container.ports.as_ref().is_some_and(|ports| ports
        .iter()
        .any(|p| p.name.as_deref() == Some("cluster") && p.container_port == 7946)));
    let probe_path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        p.as_ref()
            .and_then(|p| p.http_get.as_ref())
            .and_then(|h| h.path.clone())
    };
    assert_eq!(
        probe_path(&container.liveness_probe).as_deref(),
        Some("/healthz")
    );
    assert_eq!(
        probe_path(&container.readiness_probe).as_deref(),
        Some("/readyz")
    );
    let security = container
        .security_context
        .as_ref()
        .expect("security context");
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.run_as_non_root, Some(true));
    assert!(pod
        .topology_spread_constraints
        .is_some_and(|t| t[0].topology_key == "topology.kubernetes.io/zone"));

    let headless: Service = get(&client, &ns, "alpha-headless").await.expect("headless");
    let headless = headless.spec.expect("spec");
    assert_eq!(headless.cluster_ip.as_deref(), Some("None"));
    assert_eq!(headless.publish_not_ready_addresses, Some(true));
    assert!(headless.ports.is_some_and(|ports| ports
        .iter()
        .any(|p| p.name.as_deref() == Some("cluster") && p.port == 7946)));
    let secret: Secret = get(&client, &ns, "alpha-credentials")
        .await
        .expect("secret");
    let data = secret.data.expect("data");
    assert!(String::from_utf8_lossy(&data["passwd"].0).starts_with("strait-internal:$argon2id$"));
    let mesh_secret = &data["cluster-secret"].0;
    assert!(
        mesh_secret.len() == 64 && mesh_secret.iter().all(u8::is_ascii_hexdigit),
        "a 256-bit cluster secret, hex-encoded"
    );

    eventually(WAIT, "the status reports endpoints", || async {
        get::<MqttCluster>(&client, &ns, "alpha")
            .await
            .and_then(|c| c.status)
            .is_some_and(|s| {
                s.client_endpoint.as_deref() == Some(&format!("alpha.{ns}.svc:1883"))
                    && s.link_endpoint.as_deref() == Some(&format!("alpha-link.{ns}.svc:7883"))
            })
    })
    .await;
    op.stop().await.expect("clean stop");
}

/// Pokes the cluster `name` with a metadata-only change, which triggers a
/// reconcile without changing the spec, and waits until a reconcile that
/// began after the poke has finished (one already in flight may finish
/// first); the operator's counts from before the poke.
async fn poke_and_reconcile(
    client: &Client,
    ns: &str,
    name: &str,
    op: &RunningOperator,
) -> strait_operator::telemetry::Counts {
    let before = op.handle.metrics.counts();
    let api: Api<MqttCluster> = Api::namespaced(client.clone(), ns);
    let patch =
        json!({"metadata": {"annotations": {"test.strait.dev/poke": before.started.to_string()}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("poke");
    eventually(WAIT, "a reconcile to begin after the poke", || async {
        op.handle.metrics.counts().started > before.started
    })
    .await;
    let begun = op.handle.metrics.counts().started;
    eventually(WAIT, "the poke is reconciled", || async {
        op.handle.metrics.counts().reconciles >= begun
    })
    .await;
    before
}

#[tokio::test]
async fn an_unchanged_cluster_reconciles_with_zero_writes() {
    let Some((client, ns)) = setup("steady").await else {
        return;
    };
    let op = RunningOperator::start(&client, &ns, "op", None);
    create_cluster(&client, &ns, "steady", json!({"replicas": 2})).await;
    wait_for_children(&client, &ns, "steady").await;
    wait_settled(&client, &ns, "steady", 2).await;
    let secret_before: Secret = get(&client, &ns, "steady-credentials")
        .await
        .expect("secret");
    let sts_before: StatefulSet = get(&client, &ns, "steady").await.expect("sts");
    let before = poke_and_reconcile(&client, &ns, "steady", &op).await;
    let after = op.handle.metrics.counts();
    assert_eq!(
        after.writes, before.writes,
        "a second reconcile must write nothing"
    );
    assert!(after.reads > before.reads, "it did read the children");
    let secret_after: Secret = get(&client, &ns, "steady-credentials")
        .await
        .expect("secret");
    assert_eq!(
        secret_after.data, secret_before.data,
        "credentials are never regenerated"
    );
    let sts_after: StatefulSet = get(&client, &ns, "steady").await.expect("sts");
    assert_eq!(
        sts_after.metadata.generation,
        sts_before.metadata.generation
    );
    op.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_credentials_secret_without_a_cluster_secret_gains_one_and_keeps_the_rest() {
    let Some((client, ns)) = setup("mesh-secret").await else {
        return;
    };
    let op = RunningOperator::start(&client, &ns, "op", None);
    create_cluster(&client, &ns, "mesh", json!({"replicas": 1})).await;
    wait_for_children(&client, &ns, "mesh").await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let data = |s: Secret| s.data.expect("data");
    let before = data(secrets.get("mesh-credentials").await.expect("secret"));

    // A Secret written before the mesh existed: the same, minus the key.
    secrets
        .patch(
            "mesh-credentials",
            &PatchParams::default(),
            &Patch::Merge(&json!({"data": {"cluster-secret": null}})),
        )
        .await
        .expect("remove the key");
    eventually(WAIT, "the cluster secret is added back", || async {
        secrets
            .get("mesh-credentials")
            .await
            .is_ok_and(|s| s.data.is_some_and(|d| d.contains_key("cluster-secret")))
    })
    .await;
    let after = data(secrets.get("mesh-credentials").await.expect("secret"));
    assert_ne!(
        after["cluster-secret"], before["cluster-secret"],
        "a fresh secret was drawn"
    );
    for (key, value) in &before {
        if key != "cluster-secret" {
            assert_eq!(after.get(key), Some(value), "{key} is left alone");
        }
    }
    op.stop().await.expect("clean stop");
}

#[tokio::test]
async fn scaling_the_cluster_scales_the_stateful_set() {
    let Some((client, ns)) = setup("scale").await else {
        return;
    };
    let op = RunningOperator::start(&client, &ns, "op", None);
    create_cluster(&client, &ns, "scale", json!({"replicas": 1})).await;
    wait_for_children(&client, &ns, "scale").await;
    let config_before: ConfigMap = get(&client, &ns, "scale-config").await.expect("cm");

    let api: Api<MqttCluster> = Api::namespaced(client.clone(), &ns);
    api.patch(
        "scale",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"replicas": 4}})),
    )
    .await
    .expect("scale");
    eventually(WAIT, "the StatefulSet has 4 replicas", || async {
        sts_replicas(&client, &ns, "scale").await == Some(4)
    })
    .await;
    let config_after: ConfigMap = get(&client, &ns, "scale-config").await.expect("cm");
    assert_eq!(
        config_after.metadata.resource_version, config_before.metadata.resource_version,
        "scaling leaves the config alone"
    );
    op.stop().await.expect("clean stop");
}

#[tokio::test]
async fn drift_in_children_is_repaired() {
    let Some((client, ns)) = setup("drift").await else {
        return;
    };
    let op = RunningOperator::start(&client, &ns, "op", None);
    create_cluster(&client, &ns, "drift", json!({"replicas": 2})).await;
    wait_for_children(&client, &ns, "drift").await;

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let original = cms.get("drift-config").await.expect("cm").data;
    cms.patch(
        "drift-config",
        &PatchParams::default(),
        &Patch::Merge(&json!({"data": {"strait.yaml": "tampered: true"}})),
    )
    .await
    .expect("tamper");
    eventually(WAIT, "the ConfigMap is restored", || async {
        cms.get("drift-config")
            .await
            .ok()
            .is_some_and(|cm| cm.data == original)
    })
    .await;

    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    sts.patch(
        "drift",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"replicas": 7}})),
    )
    .await
    .expect("scale behind the operator's back");
    eventually(WAIT, "the StatefulSet is scaled back", || async {
        sts_replicas(&client, &ns, "drift").await == Some(2)
    })
    .await;

    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    services
        .delete("drift-link", &DeleteParams::default())
        .await
        .expect("delete");
    eventually(WAIT, "the link Service is recreated", || async {
        services
            .get_opt("drift-link")
            .await
            .ok()
            .flatten()
            .is_some_and(|s| s.metadata.deletion_timestamp.is_none())
    })
    .await;
    op.stop().await.expect("clean stop");
}

#[tokio::test]
async fn deleting_the_cluster_garbage_collects_its_children() {
    let Some((client, ns)) = setup("gc").await else {
        return;
    };
    let op = RunningOperator::start(&client, &ns, "op", None);
    create_cluster(&client, &ns, "gone", json!({"replicas": 1})).await;
    wait_for_children(&client, &ns, "gone").await;
    let api: Api<MqttCluster> = Api::namespaced(client.clone(), &ns);
    api.delete("gone", &DeleteParams::default())
        .await
        .expect("delete");
    eventually(WAIT, "every child is collected", || async {
        get::<ConfigMap>(&client, &ns, "gone-config")
            .await
            .is_none()
            && get::<Secret>(&client, &ns, "gone-credentials")
                .await
                .is_none()
            && get::<Service>(&client, &ns, "gone-link").await.is_none()
            && get::<Service>(&client, &ns, "gone-headless")
                .await
                .is_none()
            && get::<StatefulSet>(&client, &ns, "gone").await.is_none()
            && !pdb_exists(&client, &ns, "gone").await
    })
    .await;
    op.stop().await.expect("clean stop");
}

async fn warning_events(client: &Client, ns: &str, name: &str, reason: &str) -> usize {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    events
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .iter()
        .filter(|e| {
            e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                && e.type_.as_deref() == Some("Warning")
                && e.reason.as_deref() == Some(reason)
        })
        .count()
}

#[tokio::test]
async fn an_invalid_spec_is_reported_once_without_a_retry_loop() {
    let Some((client, ns)) = setup("invalid").await else {
        return;
    };
    let op = RunningOperator::start(&client, &ns, "op", None);
    // The schema cannot see a clash between two listeners; the operator can.
    create_cluster(
        &client,
        &ns,
        "clash",
        json!({"listeners": {"mqtt": {"port": 7883}}}),
    )
    .await;
    eventually(WAIT, "Ready=False InvalidSpec", || async {
        condition(&client, &ns, "clash", types::READY)
            .await
            .is_some_and(|c| {
                c.status == "False"
                    && c.reason == reasons::INVALID_SPEC
                    && c.message.contains("spec.listeners.link.port")
            })
    })
    .await;
    eventually(WAIT, "a Warning Event", || async {
        warning_events(&client, &ns, "clash", reasons::INVALID_SPEC).await == 1
    })
    .await;
    assert!(
        get::<StatefulSet>(&client, &ns, "clash").await.is_none(),
        "nothing is built from an invalid spec"
    );

    // No hot loop. The first reconcile wrote the status, and that write's
    // watch event brings exactly one more reconcile (the echo), which finds
    // nothing to change. Wait for both to have finished (the Event above may
    // be visible before the first one has counted itself), then watch for
    // retries over a window that a backoff loop (1 s, 2 s, 4 s) would hit twice.
    let failures = |op: &RunningOperator| {
        op.handle
            .metrics
            .failures()
            .get(reasons::INVALID_SPEC)
            .copied()
            .unwrap_or(0)
    };
    eventually(WAIT, "the status echo is reconciled", || async {
        let counts = op.handle.metrics.counts();
        failures(&op) >= 2 && counts.started == counts.reconciles
    })
    .await;
    let before = failures(&op);
    assert_eq!(before, 2, "one reconcile, and one for its status write");
    tokio::time::sleep(RETRY_WINDOW).await;
    let retries = failures(&op) - before;
    assert_eq!(
        retries, 0,
        "an invalid spec waits for a change, yet it was retried {retries} times"
    );

    // A valid neighbour is not blocked by the invalid one.
    create_cluster(&client, &ns, "fine", json!({"replicas": 1})).await;
    wait_for_children(&client, &ns, "fine").await;

    // Fixing the spec recovers.
    let api: Api<MqttCluster> = Api::namespaced(client.clone(), &ns);
    api.patch(
        "clash",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"listeners": {"mqtt": {"port": 1883}}}})),
    )
    .await
    .expect("fix");
    wait_for_children(&client, &ns, "clash").await;
    eventually(WAIT, "Ready reflects the nodes again", || async {
        condition(&client, &ns, "clash", types::READY)
            .await
            .is_some_and(|c| c.reason == reasons::NODES_NOT_READY)
    })
    .await;
    op.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_volume_size_change_is_reported_while_the_rest_still_applies() {
    let Some((client, ns)) = setup("volumes").await else {
        return;
    };
    let op = RunningOperator::start(&client, &ns, "op", None);
    create_cluster(
        &client,
        &ns,
        "vol",
        json!({"replicas": 1, "persistence": {"enabled": true, "size": "1Gi"}}),
    )
    .await;
    wait_for_children(&client, &ns, "vol").await;

    // The size cannot change on the live StatefulSet; replicas and limits can.
    let api: Api<MqttCluster> = Api::namespaced(client.clone(), &ns);
    let cluster = api
        .patch(
            "vol",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {
                "replicas": 2,
                "persistence": {"size": "2Gi"},
                "limits": {"maxInflight": 7},
            }})),
        )
        .await
        .expect("change the size");
    let generation = cluster.metadata.generation;
    eventually(WAIT, "Degraded=True VolumeChangeNotApplied", || async {
        condition(&client, &ns, "vol", types::DEGRADED)
            .await
            .is_some_and(|c| {
                c.status == "True"
                    && c.reason == reasons::VOLUME_CHANGE_NOT_APPLIED
                    && c.observed_generation == generation
                    && c.message.contains("2Gi")
                    && c.message.contains("--cascade=orphan")
            })
    })
    .await;
    assert_eq!(sts_replicas(&client, &ns, "vol").await, Some(2), "scaled");
    let cm: ConfigMap = get(&client, &ns, "vol-config").await.expect("config map");
    let config: Config =
        serde_yaml::from_str(&cm.data.expect("data")["strait.yaml"]).expect("broker config");
    assert_eq!(config.limits.max_inflight, 7, "the configuration follows");
    let sts: StatefulSet = get(&client, &ns, "vol").await.expect("sts");
    let claims = sts
        .spec
        .expect("spec")
        .volume_claim_templates
        .expect("claims");
    let size = claims[0]
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .map(|r| r["storage"].0.clone());
    assert_eq!(size.as_deref(), Some("1Gi"), "the live template is kept");
    assert!(
        !op.handle
            .metrics
            .failures()
            .contains_key(reasons::RECONCILE_ERROR),
        "no failed reconcile"
    );
    eventually(WAIT, "a Warning Event", || async {
        warning_events(&client, &ns, "vol", reasons::VOLUME_CHANGE_NOT_APPLIED).await == 1
    })
    .await;
    op.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_missing_secret_is_picked_up_when_it_appears() {
    let Some((client, ns)) = setup("secret").await else {
        return;
    };
    let op = RunningOperator::start(&client, &ns, "op", None);
    create_cluster(
        &client,
        &ns,
        "tls",
        json!({
            "replicas": 1,
            "listeners": {"mqtts": {"enabled": true, "tls": {"certificateSecret": "tls-cert"}}},
        }),
    )
    .await;
    eventually(WAIT, "the missing Secret is reported", || async {
        condition(&client, &ns, "tls", types::READY)
            .await
            .is_some_and(|c| {
                c.reason == reasons::INVALID_SPEC
                    && c.message
                        .contains("spec.listeners.mqtts.tls.certificateSecret")
                    && c.message.contains("not found")
            })
    })
    .await;

    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("tls-cert".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([
            ("tls.crt".to_owned(), ByteString(b"cert".to_vec())),
            ("tls.key".to_owned(), ByteString(b"key".to_vec())),
        ])),
        ..Default::default()
    };
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("create secret");
    wait_for_children(&client, &ns, "tls").await;
    let sts: StatefulSet = get(&client, &ns, "tls").await.expect("sts");
    let volumes = sts
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|p| p.volumes)
        .expect("volumes");
    assert!(volumes
        .iter()
        .any(|v| v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) == Some("tls-cert")));
    op.stop().await.expect("clean stop");
}

/// The credentials file the pods get, as `user -> hash`.
async fn credentials_file(client: &Client, ns: &str, cluster: &str) -> BTreeMap<String, String> {
    let secret: Secret = get(client, ns, &format!("{cluster}-credentials"))
        .await
        .expect("credentials");
    let passwd = secret.data.expect("data")["passwd"].0.clone();
    String::from_utf8(passwd)
        .expect("utf-8")
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(user, hash)| (user.to_owned(), hash.to_owned()))
        .collect()
}

#[tokio::test]
async fn a_cluster_without_users_gets_one_and_plain_passwords_are_hashed() {
    let Some((client, ns)) = setup("users").await else {
        return;
    };
    let op = RunningOperator::start(&client, &ns, "op", None);
    create_cluster(&client, &ns, "users", json!({"replicas": 1})).await;
    wait_for_children(&client, &ns, "users").await;

    // No users Secret named: a generated user, its Secret in the status.
    let status_names = |secret: Option<&'static str>| {
        let (client, ns) = (client.clone(), ns.clone());
        move || {
            let (client, ns) = (client.clone(), ns.clone());
            async move {
                get::<MqttCluster>(&client, &ns, "users")
                    .await
                    .and_then(|c| c.status)
                    .is_some_and(|s| s.default_user_secret.as_deref() == secret)
            }
        }
    };
    eventually(
        WAIT,
        "the status names the default user's Secret",
        status_names(Some("users-default-user")),
    )
    .await;
    let default_user: Secret = get(&client, &ns, "users-default-user")
        .await
        .expect("default user");
    assert_eq!(
        default_user.type_.as_deref(),
        Some("kubernetes.io/basic-auth")
    );
    let data = default_user.data.expect("data");
    assert_eq!(data["username"].0, DEFAULT_USERNAME.as_bytes());
    let password = data["password"].0.clone();
    let file = credentials_file(&client, &ns, "users").await;
    assert!(strait_broker::auth::verify(
        &password,
        &file[DEFAULT_USERNAME]
    ));

    // A users Secret with a plain password and a hashed one replaces it.
    let hashed = strait_broker::auth::hash_password("looking-glass").expect("hash");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let users = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("people".into()),
            ..Default::default()
        },
        string_data: Some(BTreeMap::from([(
            "passwd".to_owned(),
            format!("alice:wonderland\nbob:{hashed}\n"),
        )])),
        ..Default::default()
    };
    secrets
        .create(&PostParams::default(), &users)
        .await
        .expect("create users");
    let api: Api<MqttCluster> = Api::namespaced(client.clone(), &ns);
    let patch = json!({"spec": {"auth": {"users": [{"secretName": "people"}]}}});
    api.patch("users", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("name the users Secret");
    eventually(
        WAIT,
        "the status no longer names a default user",
        status_names(None),
    )
    .await;
    // Retired, not deleted: the operator has no right to delete Secrets.
    eventually(WAIT, "the default user's Secret is retired", || async {
        get::<Secret>(&client, &ns, "users-default-user")
            .await
            .is_some_and(|s| {
                s.data.as_ref().is_some_and(|d| !d.contains_key("password"))
                    && s.annotations().contains_key(RETIRED_ANNOTATION)
            })
    })
    .await;
    let file = credentials_file(&client, &ns, "users").await;
    assert!(
        !file.contains_key(DEFAULT_USERNAME),
        "the generated user is gone"
    );
    assert!(strait_broker::auth::verify(b"wonderland", &file["alice"]));
    assert_eq!(file["bob"], hashed, "a hash is used as it is");

    // Another reconcile keeps alice's hash: the pods' file does not churn.
    poke_and_reconcile(&client, &ns, "users", &op).await;
    assert_eq!(credentials_file(&client, &ns, "users").await, file);
    op.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_paused_cluster_is_left_alone() {
    let Some((client, ns)) = setup("paused").await else {
        return;
    };
    let op = RunningOperator::start(&client, &ns, "op", None);
    create_cluster(&client, &ns, "paused", json!({"replicas": 1})).await;
    wait_for_children(&client, &ns, "paused").await;

    let api: Api<MqttCluster> = Api::namespaced(client.clone(), &ns);
    let cluster = api
        .patch(
            "paused",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"paused": true, "replicas": 3}})),
        )
        .await
        .expect("pause");
    let generation = cluster.metadata.generation;
    eventually(
        WAIT,
        "the pause is acknowledged for this generation",
        || async {
            condition(&client, &ns, "paused", types::PAUSED)
                .await
                .is_some_and(|c| c.status == "True" && c.observed_generation == generation)
        },
    )
    .await;
    assert_eq!(
        sts_replicas(&client, &ns, "paused").await,
        Some(1),
        "a paused cluster is not scaled"
    );

    api.patch(
        "paused",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"paused": false}})),
    )
    .await
    .expect("resume");
    eventually(WAIT, "resumed and scaled", || async {
        sts_replicas(&client, &ns, "paused").await == Some(3)
            && condition(&client, &ns, "paused", types::PAUSED)
                .await
                .is_none()
    })
    .await;
    op.stop().await.expect("clean stop");
}

/// Plays the kubelet: marks every pod of the cluster running and ready.
async fn make_pods_ready(client: &Client, ns: &str, name: &str) -> usize {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let list = pods
        .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={name}")))
        .await
        .expect("pods");
    for pod in &list.items {
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let status = json!({"status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}],
        }});
        pods.patch_status(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await
        .expect("pod status");
    }
    list.items.len()
}

#[tokio::test]
async fn status_follows_the_nodes_readiness() {
    let Some((client, ns)) = setup("ready").await else {
        return;
    };
    let op = RunningOperator::start(&client, &ns, "op", None);
    create_cluster(&client, &ns, "ready", json!({"replicas": 2})).await;
    wait_for_children(&client, &ns, "ready").await;
    eventually(WAIT, "0/2 nodes ready", || async {
        condition(&client, &ns, "ready", types::READY)
            .await
            .is_some_and(|c| {
                c.status == "False"
                    && c.reason == reasons::NODES_NOT_READY
                    && c.message == "0/2 nodes ready"
            })
    })
    .await;
    eventually(WAIT, "the StatefulSet created both pods", || async {
        Api::<Pod>::namespaced(client.clone(), &ns)
            .list(&ListParams::default().labels("app.kubernetes.io/instance=ready"))
            .await
            .is_ok_and(|l| l.items.len() == 2)
    })
    .await;
    assert_eq!(make_pods_ready(&client, &ns, "ready").await, 2);
    eventually(WAIT, "Ready=True AllNodesReady", || async {
        condition(&client, &ns, "ready", types::READY)
            .await
            .is_some_and(|c| {
                c.status == "True"
                    && c.reason == reasons::ALL_NODES_READY
                    && c.message == "2/2 nodes ready"
            })
    })
    .await;
    let cluster: MqttCluster = get(&client, &ns, "ready").await.expect("cluster");
    let status = cluster.status.expect("status");
    assert_eq!((status.replicas, status.ready_replicas), (2, 2));
    assert_eq!(status.observed_generation, cluster.metadata.generation);
    for type_ in [types::AVAILABLE, types::PROGRESSING, types::DEGRADED] {
        assert!(
            find(&status.conditions, type_).is_some(),
            "{type_} is reported"
        );
    }
    op.stop().await.expect("clean stop");
}

#[tokio::test]
async fn two_operators_elect_one_leader() {
    let Some((client, ns)) = setup("leader").await else {
        return;
    };
    let election = Election {
        namespace: ns.clone(),
        lease_name: "strait-operator".to_owned(),
        timing: LeaseTiming {
            lease_duration: Duration::from_secs(4),
            retry_period: Duration::from_millis(500),
        },
    };
    let first = RunningOperator::start(&client, &ns, "first", Some(election.clone()));
    let second = RunningOperator::start(&client, &ns, "second", Some(election));
    let leading =
        |op: &RunningOperator| op.handle.leading.load(std::sync::atomic::Ordering::Relaxed);
    eventually(WAIT, "one operator leads", || async {
        leading(&first) || leading(&second)
    })
    .await;
    assert!(!(leading(&first) && leading(&second)), "only one leads");

    create_cluster(&client, &ns, "led", json!({"replicas": 1})).await;
    wait_for_children(&client, &ns, "led").await;
    let (leader, standby) = if leading(&first) {
        (first, second)
    } else {
        (second, first)
    };
    assert_eq!(
        standby.handle.metrics.counts().reconciles,
        0,
        "the standby does not reconcile"
    );

    // The leader steps down; the standby takes over and reconciles.
    leader.stop().await.expect("leader stops cleanly");
    eventually(WAIT, "the standby leads", || async { leading(&standby) }).await;
    let api: Api<MqttCluster> = Api::namespaced(client.clone(), &ns);
    api.patch(
        "led",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"replicas": 2}})),
    )
    .await
    .expect("scale");
    eventually(WAIT, "the new leader scales", || async {
        sts_replicas(&client, &ns, "led").await == Some(2)
    })
    .await;
    standby.stop().await.expect("clean stop");
}
