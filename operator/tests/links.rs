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
    let states: Vec<_> = status
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n.state.as_str()))
        .collect();
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
    world.cluster("east", 1).await;
    world.cluster("west", 1).await;
    world
        .link(
            "steady",
            json!({"cluster": "east", "peer": {"clusterRef": {"name": "west"}}, "export": ["#"]}),
        )
        .await;
    world.wait_for("steady", types::READY, "True").await;
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
    world.cluster("east", 1).await;
    world.cluster("west", 1).await;
    world
        .link(
            "gone",
            json!({"cluster": "east", "peer": {"clusterRef": {"name": "west"}}, "export": ["#"]}),
        )
        .await;
    world.wait_for("gone", types::READY, "True").await;
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
    world.cluster("east", 1).await;
    world.cluster("west", 1).await;
    world
        .link(
            "paused",
            json!({"cluster": "east", "peer": {"clusterRef": {"name": "west"}}, "export": ["#"]}),
        )
        .await;
    world.wait_for("paused", types::READY, "True").await;
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
