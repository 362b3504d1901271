//! The whole system as a user meets it: the operator installed by its Helm
//! chart (running as a pod), two regions applied from `manifests/`, broker
//! pods running as real processes that mesh and link, and the public
//! mosquitto clients on the Services' addresses. Each scenario has a
//! Kubernetes of its own. Nothing sleeps to synchronise: every wait is for
//! a condition, a message or a process.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use support::{counter, pod_ip, publish, service_ip, two_regions, Publisher, Subscriber};

const EAST_PODS: [&str; 3] = ["east-0", "east-1", "east-2"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_installs_the_operator_and_both_regions_become_ready() {
    let system = support::system().await;
    two_regions(&system);

    // The operator runs as the chart's Deployment, in pods of the node.
    system
        .kubectl(&[
            "wait",
            "--for=condition=Available",
            "deploy/strait",
            "-n",
            "strait-system",
            support::READY,
        ])
        .expect("the operator's Deployment is available");

    // `kubectl get` tells the truth: printer columns of both kinds.
    let clusters = system
        .kubectl(&["get", "mqc", "-A", "--no-headers"])
        .expect("get mqc");
    for line in clusters.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        // NAMESPACE NAME READY REPLICAS READY-REPLICAS AGE
        assert_eq!(cols[2..5], ["True", "3", "3"], "{line}");
    }
    assert_eq!(clusters.lines().count(), 2, "{clusters}");
    let links = system
        .kubectl(&["get", "clink", "-A", "--no-headers"])
        .expect("get clink");
    let cols: Vec<&str> = links.split_whitespace().collect();
    // NAMESPACE NAME CLUSTER PEER CONNECTED READY AGE
    assert_eq!(
        cols[1..6],
        ["east-west", "east", "west", "True", "True"],
        "{links}"
    );

    // Every broker pod has an address of its own, and the nodes of each
    // region found each other through the headless Service's DNS name.
    let ips: BTreeSet<String> = EAST_PODS
        .iter()
        .map(|p| pod_ip(&system, "east", p))
        .collect();
    assert_eq!(ips.len(), 3, "{ips:?}");
    for pod in EAST_PODS {
        // Each meshes with the two others.
        support::counter_becomes(&system, "east", pod, "strait_cluster_peers ", 2.0).await;
    }
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_cross_both_ways_at_every_qos_and_only_where_subscribed() {
    let system = support::system().await;
    two_regions(&system);
    let east = service_ip(&system, "east", "east");
    let west = service_ip(&system, "west", "west");

    let mut in_west = Subscriber::start(&west, "fleet/a/#", 2, None);
    in_west.await_route(&east, "fleet/a/probe").await;
    let mut in_east = Subscriber::start(&east, "fleet/w/#", 2, None);
    in_east.await_route(&west, "fleet/w/probe").await;

    // Nothing crosses without a subscriber: fleet/b has none in west.
    let forwarded = |system| {
        counter(
            system,
            "east",
            &EAST_PODS,
            "strait_link_messages_forwarded_total",
        )
    };
    let before = forwarded(&system).await;
    for qos in 0..=2u8 {
        publish(&east, "fleet/b/unwanted", "nobody wants this", qos).await;
    }
    for qos in 0..=2u8 {
        publish(
            &east,
            &format!("fleet/a/qos{qos}"),
            &format!("east at qos {qos}"),
            qos,
        )
        .await;
        publish(
            &west,
            &format!("fleet/w/qos{qos}"),
            &format!("west at qos {qos}"),
            qos,
        )
        .await;
    }
    let mut got_west = BTreeSet::new();
    while got_west.len() < 3 {
        let line = in_west
            .next(Duration::from_secs(30))
            .await
            .expect("a message in west");
        assert!(!line.contains("unwanted"), "{line}");
        got_west.insert(line);
    }
    let mut got_east = BTreeSet::new();
    while got_east.len() < 3 {
        got_east.insert(
            in_east
                .next(Duration::from_secs(30))
                .await
                .expect("a message in east"),
        );
    }
    assert_eq!(
        got_west,
        (0..=2)
            .map(|q| format!("fleet/a/qos{q} east at qos {q}"))
            .collect()
    );
    assert_eq!(
        got_east,
        (0..=2)
            .map(|q| format!("fleet/w/qos{q} west at qos {q}"))
            .collect()
    );
    // The three fleet/a messages crossed, the three fleet/b ones did not.
    assert_eq!(forwarded(&system).await - before, 3.0);
    in_west.stop().await;
    in_east.stop().await;
    system.shutdown().await;
}

/// Publishes `count` numbered QoS 1 messages on `east_host` while `during`
/// runs, and checks that every one reached the persistent subscriber on
/// `west_host`; returns how many arrived twice.
async fn stream_across<F: std::future::Future<Output = ()>>(
    east_host: &str,
    west_host: &str,
    count: usize,
    during: impl FnOnce() -> F,
) -> usize {
    let mut sub = Subscriber::start(west_host, "fleet/stream/#", 1, Some("e2e-stream-sub"));
    sub.await_route(east_host, "fleet/stream/probe").await;
    let mut publisher = Publisher::start(east_host, "fleet/stream/seq", 1, "e2e-stream-pub");
    let half = count / 2;
    for i in 0..half {
        publisher.send(&i.to_string()).await;
    }
    during().await;
    for i in half..count {
        publisher.send(&i.to_string()).await;
    }
    publisher.finish().await;
    let mut seen = BTreeSet::new();
    let mut duplicates = 0;
    while seen.len() < count {
        let line = sub
            .next(Duration::from_secs(90))
            .await
            .unwrap_or_else(|| panic!("lost messages: {} of {count} arrived", seen.len()));
        let Some(n) = line.strip_prefix("fleet/stream/seq ") else {
            continue; // a late probe
        };
        let n: usize = n.parse().expect("a number");
        if !seen.insert(n) {
            duplicates += 1;
        }
    }
    sub.stop().await;
    duplicates
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_pod_and_a_recreated_one_lose_nothing_of_a_qos1_stream() {
    let system = support::system().await;
    two_regions(&system);
    // The clients stay on nodes that are not killed.
    let east = pod_ip(&system, "east", "east-0");
    let west = pod_ip(&system, "west", "west-0");
    let restarts = |pod: &str| {
        system
            .kubectl(&[
                "get",
                "pod",
                "-n",
                "east",
                pod,
                "-o",
                "jsonpath={.status.containerStatuses[0].restartCount}",
            ])
            .expect("pod")
    };
    let old_uid = system
        .kubectl(&[
            "get",
            "pod",
            "-n",
            "west",
            "west-1",
            "-o",
            "jsonpath={.metadata.uid}",
        ])
        .expect("pod");
    let _ = stream_across(&east, &west, 400, || async {
        // kill -9 of a broker process: its container restarts in place ...
        system
            .agent
            .kill("east", "east-1")
            .await
            .expect("kill -9 east-1");
        // ... and a deleted pod is made again by its StatefulSet.
        system
            .kubectl(&["delete", "pod", "-n", "west", "west-1", "--wait=false"])
            .expect("delete west-1");
    })
    .await;
    assert_eq!(restarts("east-1"), "1", "east-1's container was restarted");
    support::wait_ready(&system, "mqc,clink");
    let new_uid = system
        .kubectl(&[
            "get",
            "pod",
            "-n",
            "west",
            "west-1",
            "-o",
            "jsonpath={.metadata.uid}",
        ])
        .expect("pod");
    assert_ne!(old_uid, new_uid, "west-1 was made again");
    system.shutdown().await;
}

/// `kubectl wait` for the link's condition `condition` to be `status`.
fn wait_link(system: &strait_e2e::system::System, condition: &str, status: &str, timeout: &str) {
    system
        .kubectl(&[
            "wait",
            &format!("--for=condition={condition}={status}"),
            "clink/east-west",
            "-n",
            "east",
            &format!("--timeout={timeout}"),
        ])
        .unwrap_or_else(|e| panic!("{condition} did not become {status}: {e:#}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minute_long_partition_loses_and_duplicates_nothing() {
    let system = support::system().await;
    two_regions(&system);
    let east = pod_ip(&system, "east", "east-0");
    let west = pod_ip(&system, "west", "west-0");
    let mut sub = Subscriber::start(&west, "fleet/stream/#", 1, Some("e2e-partition-sub"));
    sub.await_route(&east, "fleet/stream/probe").await;
    let mut publisher = Publisher::start(&east, "fleet/stream/seq", 1, "e2e-partition-pub");
    for i in 0..200 {
        publisher.send(&i.to_string()).await;
    }
    // The route between the regions' pods is cut for a minute: the link
    // stalls, the operator reports it, and messages published meanwhile wait
    // in the link's queue.
    let cut_at = tokio::time::Instant::now();
    system
        .agent
        .partition("east", "west", true)
        .await
        .expect("cut");
    wait_link(&system, "Connected", "False", "60s");
    for i in 200..400 {
        publisher.send(&i.to_string()).await;
    }
    // The partition's length is the scenario itself, not a wait for something.
    tokio::time::sleep_until(cut_at + Duration::from_secs(60)).await;
    system
        .agent
        .partition("east", "west", false)
        .await
        .expect("heal");
    wait_link(&system, "Connected", "True", "120s");
    publisher.finish().await;
    let mut seen = BTreeSet::new();
    while seen.len() < 400 {
        let line = sub
            .next(Duration::from_secs(90))
            .await
            .unwrap_or_else(|| panic!("lost messages: {} of 400 arrived", seen.len()));
        let Some(n) = line.strip_prefix("fleet/stream/seq ") else {
            continue;
        };
        assert!(seen.insert(n.to_owned()), "{n} arrived twice");
    }
    // Nothing more comes: no late duplicate either.
    if let Some(line) = sub.next(Duration::from_secs(2)).await {
        assert!(
            !line.starts_with("fleet/stream/seq "),
            "late duplicate: {line}"
        );
    }
    sub.stop().await;
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_a_linked_cluster_up_and_down_under_traffic_keeps_mesh_and_link() {
    let system = support::system().await;
    two_regions(&system);
    let east = pod_ip(&system, "east", "east-0");
    let west = pod_ip(&system, "west", "west-0");
    let scale = |n: u32| {
        system
            .kubectl(&[
                "patch",
                "mqc",
                "east",
                "-n",
                "east",
                "--type",
                "merge",
                "-p",
                &format!("{{\"spec\":{{\"replicas\":{n}}}}}"),
            ])
            .expect("scale");
    };
    let ready_replicas = || {
        system
            .kubectl(&[
                "get",
                "mqc",
                "east",
                "-n",
                "east",
                "-o",
                "jsonpath={.status.readyReplicas}",
            ])
            .expect("get mqc")
    };
    let duplicates = stream_across(&east, &west, 400, || async {
        scale(5);
        system
            .kubectl(&[
                "wait",
                "--for=condition=Ready",
                "pod/east-4",
                "-n",
                "east",
                support::READY,
            ])
            .expect("east-4 runs");
    })
    .await;
    assert_eq!(duplicates, 0);
    support::wait_ready(&system, "mqc,clink");
    assert_eq!(ready_replicas(), "5");
    // The new nodes meshed with the others, and the link's status counts them.
    // east-4 meshes with the four others.
    support::counter_becomes(&system, "east", "east-4", "strait_cluster_peers ", 4.0).await;
    let message = system
        .kubectl(&[
            "get",
            "clink",
            "east-west",
            "-n",
            "east",
            "-o",
            "jsonpath={.status.nodes[*].name}",
        ])
        .expect("link status");
    assert!(
        message.contains("east-4"),
        "the link's status lists east-4: {message}"
    );

    // And back to three, under traffic too.
    let _ = stream_across(&east, &west, 200, || async {
        scale(3);
    })
    .await;
    support::wait_ready(&system, "mqc,clink");
    assert_eq!(ready_replicas(), "3");
    // east-0 forgot the removed nodes.
    support::counter_becomes(&system, "east", "east-0", "strait_cluster_peers ", 2.0).await;
    system.shutdown().await;
}
