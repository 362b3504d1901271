//! ClusterLinks on a real API server, with real brokers standing in for the
//! pods (see `support::nodes`): both ends wired from one resource, two
//! regions joined by a copied Secret, an edge that dials, and what happens
//! when pods, peers, Secrets and specs change.

mod support;

use std::time::Duration;

use kube::api::{DeleteParams, Patch, PatchParams};
use kube::ResourceExt;
use serde_json::json;
use strait_operator::links::health::{reasons, types};
use support::eventually;
use support::world::{World, WAIT};

/// A link between two clusters of one namespace carries messages both ways,
/// by its filters, once its conditions say Ready.
#[tokio::test]
async fn a_same_kubernetes_link_wires_both_ends_and_messages_cross() {
    let Some(world) = World::start("same-k8s").await else {
        return;
    };
    world.cluster("east", 1).await;
    world.cluster("west", 1).await;
    world
        .link(
            "east-west",
            json!({
                "cluster": "east",
                "peer": {"clusterRef": {"name": "west"}},
                "export": ["cars/#"],
                "import": ["cmd/#"],
            }),
        )
        .await;
    let ready = world.wait_for("east-west", types::READY, "True").await;
    assert_eq!(ready.reason, reasons::LINK_READY, "{ready:?}");

    // The issued credential: once, owned by the link, of the documented shape.
    let issued = world
        .secrets()
        .get("east-west-link-secret")
        .await
        .expect("the issued Secret");
    let data = issued.data.clone().expect("data");
    assert_eq!(data["username"].0, b"east", "the dialling cluster");
    assert_eq!(data["password"].0.len(), 64);
    assert_eq!(
        issued.owner_references()[0].kind,
        "ClusterLink",
        "it goes with the link"
    );
    // The accepting end holds only a hash of it.
    let west_links = world.secrets().get("west-links").await.expect("west-links");
    let credentials =
        String::from_utf8(west_links.data.expect("data")["credentials"].0.clone()).expect("utf-8");
    assert!(
        credentials.starts_with("east:strait-link-v1$"),
        "{credentials}"
    );
    assert!(!credentials.contains(std::str::from_utf8(&data["password"].0).expect("hex")));

    let link = world.get_link("east-west").await.expect("link");
    let status = link.status.expect("status");
    assert_eq!(status.peer.as_deref(), Some("west"));
    assert_eq!(
        status.credentials_secret.as_deref(),
        Some("east-west-link-secret")
    );
    let mut states: Vec<_> = status
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n.state.as_str()))
        .collect();
    states.sort();
    assert_eq!(
        states,
        [
            (format!("{}/east-0", world.ns).as_str(), "connected"),
            (format!("{}/west-0", world.ns).as_str(), "connected"),
        ]
    );

    // Messages cross by the filters, both ways.
    let mut west_sub = world.mqtt("west-0", "west-sub").await;
    west_sub.subscribe("#").await;
    world.wait_routes("east", "east-0", "west", 1).await;
    let mut east_sub = world.mqtt("east-0", "east-sub").await;
    east_sub.subscribe("#").await;
    world.wait_routes("west", "west-0", "east", 1).await;
    let mut east_pub = world.mqtt("east-0", "east-pub").await;
    east_pub.publish("other/1", b"stays in east").await;
    east_pub.publish("cars/1", b"from east").await;
    assert_eq!(
        west_sub.next().await,
        ("cars/1".to_owned(), b"from east".to_vec())
    );
    let mut west_pub = world.mqtt("west-0", "west-pub").await;
    west_pub.publish("cmd/1", b"from west").await;
    // east's own subscriber sees its own two publishes, then west's.
    let mut seen = Vec::new();
    while seen.len() < 3 {
        seen.push(east_sub.next().await.0);
    }
    assert_eq!(seen, ["other/1", "cars/1", "cmd/1"]);
    assert_eq!(
        west_sub.next().await.0,
        "cmd/1",
        "west's subscriber sees west's own publish next: other/1 is not exported"
    );
    assert!(west_sub.drain().is_empty());
    world.stop().await;
}

/// Steady state writes nothing: once Ready, health reads go on (reconciles
/// happen) without a single API write.
#[tokio::test]
async fn a_ready_link_reconciles_with_zero_writes() {
    let Some(world) = World::start("steady").await else {
        return;
    };
    world.east_west("steady").await;
    // Let the queue depth and any settling write land first.
    let metrics = world.op.handle.metrics.clone();
    let settled = metrics.counts().reconciles;
    eventually(WAIT, "a few health reads", || async {
        metrics.counts().reconciles >= settled + 6
    })
    .await;
    let before = metrics.counts();
    eventually(WAIT, "ten more health reads", || async {
        metrics.counts().reconciles >= before.reconciles + 10
    })
    .await;
    assert_eq!(
        metrics.counts().writes,
        before.writes,
        "steady state writes nothing"
    );
    world.stop().await;
}

/// Deleting a link takes it off the brokers of both ends, then its issued
/// Secret goes with it.
#[tokio::test]
async fn deleting_a_link_removes_it_from_both_ends() {
    let Some(world) = World::start("delete").await else {
        return;
    };
    world.east_west("gone").await;
    world
        .links()
        .delete("gone", &DeleteParams::default())
        .await
        .expect("delete");
    eventually(WAIT, "the link is gone", || async {
        world.get_link("gone").await.is_none()
    })
    .await;
    for (cluster, pod, remote) in [("east", "east-0", "west"), ("west", "west-0", "east")] {
        let links = world
            .node_links(cluster, pod)
            .await
            .expect("the node answers");
        assert!(
            links.link(remote).is_none(),
            "{pod} still runs {remote}: {links:?}"
        );
    }
    eventually(WAIT, "the issued Secret is garbage-collected", || async {
        world
            .secrets()
            .get_opt("gone-link-secret")
            .await
            .is_ok_and(|s| s.is_none())
    })
    .await;
    world.stop().await;
}

/// A link whose peer cluster is already gone is deleted without waiting.
#[tokio::test]
async fn deleting_a_link_whose_peer_is_gone_finishes() {
    let Some(world) = World::start("delete-alone").await else {
        return;
    };
    world.cluster("east", 1).await;
    world
        .link(
            "lonely",
            json!({"cluster": "east", "peer": {"clusterRef": {"name": "nowhere"}}, "export": ["#"]}),
        )
        .await;
    let configured = world
        .wait_reason("lonely", types::CONFIGURED, reasons::CLUSTER_NOT_FOUND)
        .await;
    assert!(configured.message.contains("nowhere"), "{configured:?}");
    world
        .links()
        .delete("lonely", &DeleteParams::default())
        .await
        .expect("delete");
    eventually(Duration::from_secs(30), "the link is gone", || async {
        world.get_link("lonely").await.is_none()
    })
    .await;
    world.stop().await;
}

/// Pausing takes the link off both ends and keeps its credential; resuming
/// puts it back.
#[tokio::test]
async fn pausing_takes_the_link_off_and_resuming_puts_it_back() {
    let Some(world) = World::start("pause").await else {
        return;
    };
    world.east_west("paused").await;
    let password = world
        .secrets()
        .get("paused-link-secret")
        .await
        .expect("secret")
        .data;
    let pause = |paused: bool| json!({"spec": {"paused": paused}});
    world
        .links()
        .patch(
            "paused",
            &PatchParams::default(),
            &Patch::Merge(pause(true)),
        )
        .await
        .expect("pause");
    world
        .wait_reason("paused", types::READY, reasons::PAUSED)
        .await;
    world.wait_for("paused", types::CONFIGURED, "True").await;
    let links = world
        .node_links("east", "east-0")
        .await
        .expect("east-0 answers");
    assert!(links.link("west").is_none(), "{links:?}");
    world
        .links()
        .patch(
            "paused",
            &PatchParams::default(),
            &Patch::Merge(pause(false)),
        )
        .await
        .expect("resume");
    world.wait_for("paused", types::READY, "True").await;
    assert_eq!(
        world
            .secrets()
            .get("paused-link-secret")
            .await
            .expect("secret")
            .data,
        password,
        "the credential is kept"
    );
    world.stop().await;
}

/// Peers come and go: the peer scaling out re-pushes the dialling end's
/// endpoints, a restarted pod comes up linked from its links Secret, and a
/// rotated credential reaches both ends (the next connection proves it).
#[tokio::test]
async fn scaling_restarts_and_rotation_keep_the_link() {
    let Some(world) = World::start("churn").await else {
        return;
    };
    world.east_west("churn").await;
    let revision = |status: &strait_operator::crd::ClusterLinkStatus| status.revision.clone();
    let first = revision(
        &world
            .get_link("churn")
            .await
            .expect("link")
            .status
            .expect("status"),
    );

    // The peer scales: east's set gains west-1's endpoint.
    world
        .clusters()
        .patch(
            "west",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 2}})),
        )
        .await
        .expect("scale west");
    eventually(
        WAIT,
        "east runs a set that dials both west nodes",
        || async {
            let links = world.node_links("east", "east-0").await;
            links.is_some_and(|l| {
                l.revision != first && l.link("west").is_some_and(|w| w.state == "connected")
            })
        },
    )
    .await;
    let set = world.secrets().get("east-links").await.expect("east-links");
    let yaml = String::from_utf8(set.data.expect("data")["links.yaml"].0.clone()).expect("utf-8");
    let west_1 = world.nodes.link(&world.ns, "west-1").to_string();
    assert!(yaml.contains(&west_1), "{yaml}");
    eventually(WAIT, "both west nodes are configured", || async {
        world
            .condition("churn", types::CONFIGURED)
            .await
            .is_some_and(|c| c.status == "True" && c.message.contains("west: 2/2 nodes"))
    })
    .await;
    world.wait_for("churn", types::READY, "True").await;

    // A restarted pod reads its links from the Secret and needs no push.
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(world.client.clone(), &world.ns);
    let old = pods.get("east-0").await.expect("east-0").uid();
    pods.delete("east-0", &DeleteParams::default())
        .await
        .expect("delete east-0");
    eventually(WAIT, "east-0 comes back linked", || async {
        let new = pods
            .get_opt("east-0")
            .await
            .ok()
            .flatten()
            .and_then(|p| p.uid());
        new.is_some()
            && new != old
            && world
                .node_links("east", "east-0")
                .await
                .is_some_and(|l| l.link("west").is_some_and(|w| w.state == "connected"))
    })
    .await;

    // Rotation: a new password in the issued Secret reaches both ends.
    let rotated = "rotated-password-of-at-least-16-bytes";
    world
        .secrets()
        .patch(
            "churn-link-secret",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"password": rotated}})),
        )
        .await
        .expect("rotate");
    let before = revision(
        &world
            .get_link("churn")
            .await
            .expect("link")
            .status
            .expect("status"),
    );
    eventually(WAIT, "both ends run the rotated set", || async {
        let status = world.get_link("churn").await.and_then(|l| l.status);
        status.is_some_and(|s| s.revision != before && s.nodes.iter().all(|n| n.revision.is_some()))
    })
    .await;
    world.wait_for("churn", types::CONFIGURED, "True").await;
    let east_links = world.secrets().get("east-links").await.expect("east-links");
    assert_eq!(
        east_links.data.expect("data")["west.secret"].0,
        rotated.as_bytes()
    );
    // The next connection uses it: restart the dialling end.
    let old = pods.get("east-0").await.expect("east-0").uid();
    pods.delete("east-0", &DeleteParams::default())
        .await
        .expect("delete east-0");
    eventually(
        WAIT,
        "east-0 reconnects with the rotated credential",
        || async {
            let new = pods
                .get_opt("east-0")
                .await
                .ok()
                .flatten()
                .and_then(|p| p.uid());
            new.is_some()
                && new != old
                && world
                    .node_links("east", "east-0")
                    .await
                    .is_some_and(|l| l.link("west").is_some_and(|w| w.state == "connected"))
        },
    )
    .await;
    world.wait_for("churn", types::READY, "True").await;
    world.stop().await;
}

/// Two regions, two API servers: the cloud accepts an edge it cannot reach
/// (`remote.accept`) and issues the credential; the Secret is copied to the
/// edge's region, as a user or External Secrets would; the edge dials with
/// it. Only the edge dials, and messages flow both ways.
#[tokio::test]
async fn an_edge_in_another_region_dials_the_cloud_with_the_copied_secret() {
    if support::control_plane::skipped() {
        return;
    }
    let cloud = World::start("cloud").await.expect("the cloud region");
    let edge_plane = support::control_plane::another();
    let edge = World::on(support::client_of(&edge_plane).await, "edge").await;
    cloud.cluster("cloud", 1).await;
    edge.cluster("edge-1", 1).await;
    cloud
        .link(
            "edge-1",
            json!({
                "cluster": "cloud",
                "peer": {"remote": {"clusterName": "edge-1", "accept": true}},
                "export": ["cmd/edge-1/#"],
                "import": ["telemetry/#"],
            }),
        )
        .await;
    let credentials = cloud
        .wait_for("edge-1", types::CREDENTIALS_READY, "True")
        .await;
    assert_eq!(credentials.reason, reasons::ISSUED);
    let issued = cloud
        .secrets()
        .get("edge-1-link-secret")
        .await
        .expect("issued");
    let mut data = issued.data.expect("data");
    assert_eq!(
        data["username"].0, b"edge-1",
        "issued for the edge, which dials"
    );
    let connected = cloud.wait_for("edge-1", types::CONNECTED, "False").await;
    assert_eq!(
        connected.reason,
        reasons::NOT_CONNECTED,
        "until the edge dials"
    );

    // The copy in the edge's region; the cloud's public endpoint would be
    // its LoadBalancer's: here, the loopback address of its node.
    data.remove("endpoints");
    let copy: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": {"name": "cloud-credentials"},
        "data": data,
    }))
    .expect("secret");
    edge.secrets()
        .create(&Default::default(), &copy)
        .await
        .expect("copy the Secret");
    let cloud_endpoint = cloud.nodes.link(&cloud.ns, "cloud-0").to_string();
    edge.link(
        "to-cloud",
        json!({
            "cluster": "edge-1",
            "peer": {"remote": {
                "clusterName": "cloud",
                "credentialsSecret": "cloud-credentials",
                "endpoints": [cloud_endpoint],
            }},
            "export": ["telemetry/#"],
            "import": ["cmd/edge-1/#"],
        }),
    )
    .await;
    edge.wait_for("to-cloud", types::READY, "True").await;
    cloud.wait_for("edge-1", types::READY, "True").await;
    let edge_status = edge
        .get_link("to-cloud")
        .await
        .expect("link")
        .status
        .expect("status");
    assert_eq!(
        edge_status.credentials_secret.as_deref(),
        Some("cloud-credentials")
    );

    let mut at_cloud = cloud.mqtt("cloud-0", "cloud-sub").await;
    at_cloud.subscribe("telemetry/#").await;
    edge.wait_routes("edge-1", "edge-1-0", "cloud", 1).await;
    let mut at_edge = edge.mqtt("edge-1-0", "edge-sub").await;
    at_edge.subscribe("cmd/#").await;
    cloud.wait_routes("cloud", "cloud-0", "edge-1", 1).await;
    let mut vehicle = edge.mqtt("edge-1-0", "vehicle").await;
    vehicle.publish("telemetry/speed", b"88").await;
    assert_eq!(
        at_cloud.next().await,
        ("telemetry/speed".to_owned(), b"88".to_vec())
    );
    let mut control = cloud.mqtt("cloud-0", "control").await;
    control.publish("cmd/edge-1/stop", b"now").await;
    assert_eq!(
        at_edge.next().await,
        ("cmd/edge-1/stop".to_owned(), b"now".to_vec())
    );
    let cloud_links = cloud.node_links("cloud", "cloud-0").await.expect("cloud-0");
    assert_eq!(
        cloud_links.link("edge-1").map(|l| l.state.as_str()),
        Some("connected")
    );
    edge.stop().await;
    cloud.stop().await;
}

/// What the schema lets through and the operator refuses: a filter that is
/// no MQTT filter, a link to itself, a port out of range. Each is a
/// condition naming the field and one Warning Event, not a retry loop.
#[tokio::test]
async fn invalid_specs_are_reported_once_naming_the_field() {
    let Some(world) = World::start("invalid").await else {
        return;
    };
    world.cluster("east", 1).await;
    world
        .link(
            "bad-filter",
            json!({"cluster": "east", "peer": {"clusterRef": {"name": "west"}}, "export": ["cars/#/x"]}),
        )
        .await;
    world
        .link(
            "to-itself",
            json!({"cluster": "east", "peer": {"clusterRef": {"name": "east"}}, "export": ["#"]}),
        )
        .await;
    world
        .link(
            "bad-port",
            json!({
                "cluster": "east",
                "peer": {"remote": {"clusterName": "far", "credentialsSecret": "far", "endpoints": ["far.example.com:99999"]}},
                "export": ["#"],
            }),
        )
        .await;
    for (link, field) in [
        ("bad-filter", "spec.export[0]"),
        ("to-itself", "spec.peer.clusterRef"),
        ("bad-port", "spec.peer.remote.endpoints[0]"),
    ] {
        let ready = world
            .wait_reason(link, types::READY, reasons::INVALID_SPEC)
            .await;
        assert!(ready.message.starts_with(field), "{link}: {ready:?}");
        eventually(WAIT, "one Warning Event", || async {
            world.warnings(link, reasons::INVALID_SPEC).await == 1
        })
        .await;
    }
    // A change that leaves the spec as bad says nothing new.
    let touch = json!({"metadata": {"annotations": {"touched": "yes"}}});
    let metrics = world.op.handle.metrics.clone();
    let before = metrics.counts().reconciles;
    world
        .links()
        .patch("bad-filter", &PatchParams::default(), &Patch::Merge(touch))
        .await
        .expect("touch");
    eventually(WAIT, "the touch is reconciled", || async {
        metrics.counts().reconciles > before
    })
    .await;
    assert_eq!(world.warnings("bad-filter", reasons::INVALID_SPEC).await, 1);
    assert!(
        !metrics.failures().contains_key("LinkReconcileError"),
        "invalid input is no failure to retry: {:?}",
        metrics.failures()
    );
    world.stop().await;
}

/// A link may be created before what it refers to: a missing cluster, a
/// Secret not copied yet. Each is reported with its reason and picked up
/// when it appears.
#[tokio::test]
async fn missing_clusters_and_secrets_are_picked_up_when_they_appear() {
    let Some(world) = World::start("missing").await else {
        return;
    };
    world
        .link(
            "early",
            json!({"cluster": "east", "peer": {"clusterRef": {"name": "west"}}, "export": ["#"]}),
        )
        .await;
    let configured = world
        .wait_reason("early", types::CONFIGURED, reasons::CLUSTER_NOT_FOUND)
        .await;
    assert!(configured.message.contains("east"), "{configured:?}");
    world.cluster("east", 1).await;
    world
        .wait_reason("early", types::CONFIGURED, reasons::CLUSTER_NOT_FOUND)
        .await;
    world.cluster("west", 1).await;
    world.wait_for("early", types::READY, "True").await;

    world
        .link(
            "not-copied",
            json!({
                "cluster": "east",
                "peer": {"remote": {"clusterName": "far", "credentialsSecret": "far-credentials", "endpoints": ["127.0.0.1:9"]}},
                "export": ["#"],
            }),
        )
        .await;
    let credentials = world
        .wait_reason("not-copied", types::CREDENTIALS_READY, "SecretNotFound")
        .await;
    assert!(
        credentials.message.contains("far-credentials"),
        "{credentials:?}"
    );
    let copied: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": {"name": "far-credentials"},
        "stringData": {"username": "someone-else", "password": "a-password-of-at-least-16-bytes"},
    }))
    .expect("secret");
    world
        .secrets()
        .create(&Default::default(), &copied)
        .await
        .expect("create");
    let wrong = world
        .wait_reason(
            "not-copied",
            types::CREDENTIALS_READY,
            "CredentialsForAnotherCluster",
        )
        .await;
    assert!(wrong.message.contains("someone-else"), "{wrong:?}");
    world
        .secrets()
        .patch(
            "far-credentials",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"username": "east"}})),
        )
        .await
        .expect("fix");
    world
        .wait_reason("not-copied", types::CREDENTIALS_READY, reasons::IMPORTED)
        .await;
    // Nothing answers at far's endpoint: configured, not connected.
    world
        .wait_for("not-copied", types::CONFIGURED, "True")
        .await;
    world
        .wait_reason("not-copied", types::CONNECTED, reasons::NOT_CONNECTED)
        .await;
    world.stop().await;
}

/// A second link between the same two clusters is refused (the first keeps
/// working), and a node that stops answering is reported by name.
#[tokio::test]
async fn a_duplicate_link_and_an_unreachable_broker_are_reported() {
    let Some(world) = World::start("dup").await else {
        return;
    };
    world.east_west("first").await;
    world
        .link(
            "second",
            json!({"cluster": "west", "peer": {"clusterRef": {"name": "east"}}, "export": ["#"]}),
        )
        .await;
    let duplicate = world
        .wait_reason("second", types::CONFIGURED, reasons::DUPLICATE_LINK)
        .await;
    assert!(duplicate.message.contains("first"), "{duplicate:?}");
    assert_eq!(
        world
            .condition("first", types::READY)
            .await
            .map(|c| c.status),
        Some("True".to_owned())
    );

    world.nodes.hang(&world.ns, "west-0");
    let unreachable = world
        .wait_reason("first", types::CONFIGURED, reasons::BROKER_UNREACHABLE)
        .await;
    assert!(unreachable.message.contains("west-0"), "{unreachable:?}");
    assert_eq!(
        world
            .condition("first", types::READY)
            .await
            .map(|c| c.reason),
        Some(reasons::BROKER_UNREACHABLE.to_owned())
    );
    world.stop().await;
}
