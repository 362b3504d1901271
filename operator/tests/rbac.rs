//! The Helm chart's RBAC on a real API server: an operator holding exactly
//! those rights (and no others) reconciles a cluster, writes its status,
//! records Events and holds its Lease; and those rights stop short of what it
//! has no business doing.

mod support;

use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{ListParams, PostParams};
use kube::ResourceExt;
use kube::{Api, Client};
use serde_json::json;
use strait_operator::crd::{ClusterLink, MqttCluster};
use strait_operator::leader::LeaseTiming;
use strait_operator::operator::Election;
use support::control_plane::{self, OPERATOR_NAMESPACE};
use support::{eventually, namespace, RunningOperator};

const WAIT: Duration = Duration::from_secs(60);

/// The chart's documents for `values`, as `scripts/k8s-chart-render.sh` renders them.
fn render_chart(values: serde_json::Value) -> Vec<serde_yaml::Value> {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scripts/k8s-chart-render.sh"
    );
    let output = Command::new("bash")
        .arg(script)
        .arg(values.to_string())
        .output()
        .expect("run the chart renderer");
    assert!(
        output.status.success(),
        "rendering the chart failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("UTF-8 YAML");
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("a YAML document"))
        .filter(|doc: &serde_yaml::Value| !doc.is_null())
        .collect()
}

/// Creates the chart's RBAC objects as the admin.
async fn install_rbac(admin: &Client, docs: &[serde_yaml::Value]) -> usize {
    async fn create<K>(api: Api<K>, doc: &serde_yaml::Value)
    where
        K: kube::Resource
            + Clone
            + serde::de::DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
    {
        let object: K = serde_yaml::from_value(doc.clone()).expect("an RBAC object");
        match api.create(&PostParams::default(), &object).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(error) => panic!("create {doc:?}: {error}"),
        }
    }
    let mut installed = 0;
    for doc in docs {
        let namespace = doc["metadata"]["namespace"].as_str().unwrap_or_default();
        let namespaced = |client: &Client| (client.clone(), namespace.to_owned());
        match doc["kind"].as_str() {
            Some("Role") => {
                let (c, ns) = namespaced(admin);
                create::<Role>(Api::namespaced(c, &ns), doc).await;
            }
            Some("RoleBinding") => {
                let (c, ns) = namespaced(admin);
                create::<RoleBinding>(Api::namespaced(c, &ns), doc).await;
            }
            Some("ClusterRole") => create::<ClusterRole>(Api::all(admin.clone()), doc).await,
            Some("ClusterRoleBinding") => {
                create::<ClusterRoleBinding>(Api::all(admin.clone()), doc).await;
            }
            _ => continue,
        }
        installed += 1;
    }
    installed
}

/// Whether the operator's identity may `verb` `resource` in `namespace`.
async fn may(operator: &Client, verb: &str, group: &str, resource: &str, namespace: &str) -> bool {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                namespace: (!namespace.is_empty()).then(|| namespace.to_owned()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<SelfSubjectAccessReview> = Api::all(operator.clone());
    api.create(&PostParams::default(), &review)
        .await
        .expect("access review")
        .status
        .is_some_and(|s| s.allowed)
}

#[tokio::test]
async fn the_charts_rbac_is_enough_for_the_operator_and_no_more() {
    if control_plane::skipped() {
        eprintln!("STRAIT_SKIP_K8S=1: skipping the RBAC test");
        return;
    }
    let admin = support::client().await;
    let ns = namespace(&admin, "rbac").await;
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    let home: Namespace = serde_json::from_value(json!({"metadata": {"name": OPERATOR_NAMESPACE}}))
        .expect("namespace");
    match namespaces.create(&PostParams::default(), &home).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(error) => panic!("create {OPERATOR_NAMESPACE}: {error}"),
    }
    let operator = support::client_from(&control_plane::shared().operator_kubeconfig).await;
    assert!(
        !may(&operator, "list", "strait.dev", "mqttclusters", &ns).await,
        "the operator's identity starts with no rights"
    );

    // A namespaced install watching the test's namespace.
    let docs = render_chart(json!({"watchNamespace": ns}));
    assert_eq!(
        install_rbac(&admin, &docs).await,
        4,
        "Role, RoleBinding and the election pair"
    );

    let election = Election {
        namespace: OPERATOR_NAMESPACE.to_owned(),
        lease_name: format!("strait-rbac-{}", std::process::id()),
        timing: LeaseTiming {
            lease_duration: Duration::from_secs(4),
            retry_period: Duration::from_millis(500),
        },
    };
    let op = RunningOperator::start(&operator, &ns, "rbac", Some(election));
    let clusters: Api<MqttCluster> = Api::namespaced(admin.clone(), &ns);
    let cluster: MqttCluster = serde_json::from_value(json!({
        "apiVersion": "strait.dev/v1alpha1",
        "kind": "MqttCluster",
        "metadata": {"name": "guarded"},
        "spec": {"replicas": 1},
    }))
    .expect("cluster");
    clusters
        .create(&PostParams::default(), &cluster)
        .await
        .expect("create cluster");

    let statefulsets: Api<StatefulSet> = Api::namespaced(admin.clone(), &ns);
    eventually(WAIT, "the StatefulSet is applied", || async {
        statefulsets
            .get_opt("guarded")
            .await
            .ok()
            .flatten()
            .is_some()
    })
    .await;
    eventually(WAIT, "the status is written", || async {
        clusters
            .get("guarded")
            .await
            .ok()
            .and_then(|c| c.status)
            .is_some_and(|s| !s.conditions.is_empty())
    })
    .await;
    // A link to a cluster that does not exist: its finalizer, issued Secret
    // and status take the link rights.
    let links: Api<ClusterLink> = Api::namespaced(admin.clone(), &ns);
    let link: ClusterLink = serde_json::from_value(json!({
        "apiVersion": "strait.dev/v1alpha1",
        "kind": "ClusterLink",
        "metadata": {"name": "guarded-to-nowhere"},
        "spec": {"cluster": "guarded", "peer": {"clusterRef": {"name": "nowhere"}}, "export": ["#"]},
    }))
    .expect("link");
    links
        .create(&PostParams::default(), &link)
        .await
        .expect("create link");
    eventually(WAIT, "the link's status is written", || async {
        links.get("guarded-to-nowhere").await.ok().is_some_and(|l| {
            l.finalizers()
                .iter()
                .any(|f| f == strait_operator::links::FINALIZER)
                && l.status.is_some_and(|s| !s.conditions.is_empty())
        })
    })
    .await;
    let events: Api<Event> = Api::namespaced(admin.clone(), &ns);
    eventually(WAIT, "an Event is recorded", || async {
        events
            .list(&ListParams::default())
            .await
            .is_ok_and(|list| !list.items.is_empty())
    })
    .await;
    op.stop()
        .await
        .expect("the operator ran without an API error");

    // What the chart does not grant.
    for (verb, group, resource, namespace) in [
        ("delete", "", "secrets", ns.as_str()),
        ("delete", "", "pods", ns.as_str()),
        ("create", "", "pods", ns.as_str()),
        ("delete", "strait.dev", "clusterlinks", ns.as_str()),
        ("create", "strait.dev", "clusterlinks", ns.as_str()),
        ("list", "", "secrets", "kube-system"),
        ("list", "strait.dev", "mqttclusters", "kube-system"),
        ("delete", "apps", "statefulsets", ns.as_str()),
        ("create", "rbac.authorization.k8s.io", "roles", ns.as_str()),
        ("list", "", "nodes", ""),
    ] {
        assert!(
            !may(&operator, verb, group, resource, namespace).await,
            "the chart must not allow {verb} {group}/{resource} in {namespace:?}"
        );
    }
    assert!(may(&operator, "patch", "apps", "statefulsets", &ns).await);
}
