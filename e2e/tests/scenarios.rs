//! The whole system as a user meets it: the operator installed by its Helm
//! chart (running as a pod), two regions applied from `manifests/`, broker
//! pods running as real processes that mesh and link, and the public
//! mosquitto clients on the Services' addresses. Each scenario has a
//! Kubernetes of its own. Nothing sleeps to synchronise: every wait is for
//! a condition, a message or a process.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use strait_e2e::wait::eventually;
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
    the_minimal_example_works_as_it_is(&system).await;
    system.shutdown().await;
}

/// `kubectl apply -f manifests/mqttcluster-minimal.yaml` alone gives a
/// cluster a client can use, with the user the operator generated.
async fn the_minimal_example_works_as_it_is(system: &support::System) {
    let example = support::manifest("mqttcluster-minimal.yaml");
    system
        .kubectl(&["create", "namespace", "demo"])
        .expect("namespace");
    system
        .kubectl(&["apply", "-n", "demo", "-f", &example])
        .expect("apply the minimal example");
    system
        .kubectl(&[
            "wait",
            "--for=condition=Ready",
            "mqc/demo",
            "-n",
            "demo",
            support::READY,
        ])
        .expect("the minimal example becomes Ready");
    let login = support::generated_login(system, "demo", "demo").await;
    let host = service_ip(system, "demo", "demo");
    let mut subscriber = Subscriber::start_as(&login, &host, "hello/#", 1, None);
    subscriber
        .await_route_as(&login, &host, "hello/world")
        .await;
    let wrong = support::Login {
        password: "not-the-password".to_owned(),
        ..login.clone()
    };
    assert!(
        !support::publish_as(&wrong, &host, "hello/world", "x", 1).await,
        "a wrong password is refused"
    );
    subscriber.stop().await;
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

/// Publishes `count` numbered QoS 1 messages on `east_host`: the first
/// half, then `during` runs, then the second half, then `after` runs. Checks
/// that every one reached the persistent subscriber on `west_host`, and
/// returns how many arrived twice (counting any that come in two seconds
/// more).
async fn stream_across<D, A>(
    east_host: &str,
    west_host: &str,
    count: usize,
    during: impl FnOnce() -> D,
    after: impl FnOnce() -> A,
) -> usize
where
    D: std::future::Future<Output = ()>,
    A: std::future::Future<Output = ()>,
{
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
    after().await;
    publisher.finish().await;
    let mut seen = BTreeSet::new();
    let mut duplicates = 0;
    let sequence = |line: String| -> Option<usize> {
        // Anything else is a late probe.
        Some(
            line.strip_prefix("fleet/stream/seq ")?
                .parse()
                .expect("a number"),
        )
    };
    while seen.len() < count {
        let line = sub
            .next(Duration::from_secs(90))
            .await
            .unwrap_or_else(|| panic!("lost messages: {} of {count} arrived", seen.len()));
        if let Some(n) = sequence(line) {
            duplicates += usize::from(!seen.insert(n));
        }
    }
    while let Some(line) = sub.next(Duration::from_secs(2)).await {
        duplicates += usize::from(sequence(line).is_some());
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
    let west_1_uid = || {
        system
            .kubectl(&[
                "get",
                "pod",
                "-n",
                "west",
                "west-1",
                "-o",
                "jsonpath={.metadata.uid}",
            ])
            .expect("pod")
    };
    let old_uid = west_1_uid();
    let configured = support::Watch::start(
        &system,
        "east",
        "clink/east-west",
        r#"{.status.conditions[?(@.type=="Configured")].message}"#,
    );
    let _ = stream_across(
        &east,
        &west,
        400,
        || async {
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
        },
        || async {},
    )
    .await;
    assert_eq!(restarts("east-1"), "1", "east-1's container was restarted");
    support::wait_ready(&system, "mqc,clink");
    let new_uid = west_1_uid();
    assert_ne!(old_uid, new_uid, "west-1 was made again");
    // The link's conditions show the recovery (all six nodes back at their
    // link set's revision) and, as a user watching them saw, the dip
    // (west-1 gone from the ready nodes).
    eventually(
        Duration::from_secs(60),
        "Configured counts all six nodes again",
        || async {
            let message = system
                .kubectl(&[
                    "get",
                    "clink/east-west",
                    "-n",
                    "east",
                    "-o",
                    r#"jsonpath={.status.conditions[?(@.type=="Configured")].message}"#,
                ])
                .unwrap_or_default();
            message.contains("east: 3/3") && message.contains("west: 3/3")
        },
    )
    .await;
    let seen = configured.stop().await;
    assert!(
        seen.iter().any(|m| m.contains("west: 2/2")),
        "no dip in Configured: {seen:#?}"
    );
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
    // The route between the regions' pods is cut for a minute: the link
    // stalls, the operator reports it, and messages published meanwhile wait
    // in the link's queue.
    let cut_at = std::cell::Cell::new(None);
    let duplicates = stream_across(
        &east,
        &west,
        400,
        || async {
            cut_at.set(Some(tokio::time::Instant::now()));
            system
                .agent
                .partition("east", "west", true)
                .await
                .expect("cut");
            wait_link(&system, "Connected", "False", "60s");
        },
        || async {
            // The partition's length is the scenario itself, not a wait for something.
            let cut_at = cut_at.get().expect("the cut came first");
            tokio::time::sleep_until(cut_at + Duration::from_secs(60)).await;
            system
                .agent
                .partition("east", "west", false)
                .await
                .expect("heal");
            wait_link(&system, "Connected", "True", "120s");
        },
    )
    .await;
    assert_eq!(duplicates, 0, "messages arrived twice");
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
    let duplicates = stream_across(
        &east,
        &west,
        400,
        || async {
            scale(5);
            support::wait_pod_ready(&system, "east", "east-4").await;
        },
        || async {},
    )
    .await;
    assert_eq!(duplicates, 0);
    support::wait_ready(&system, "mqc,clink");
    assert_eq!(ready_replicas(), "5");
    // The new node meshed with the four others, and the link's status lists it.
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
    let _ = stream_across(
        &east,
        &west,
        200,
        || async {
            scale(3);
        },
        || async {},
    )
    .await;
    support::wait_ready(&system, "mqc,clink");
    assert_eq!(ready_replicas(), "3");
    // east-0 forgot the removed nodes.
    support::counter_becomes(&system, "east", "east-0", "strait_cluster_peers ", 2.0).await;
    system.shutdown().await;
}

/// A key of a Secret, decoded.
fn secret_key(
    system: &strait_e2e::system::System,
    ns: &str,
    secret: &str,
    key: &str,
) -> Option<String> {
    let jsonpath = format!("jsonpath={{.data.{}}}", key.replace('.', "\\."));
    let encoded = system
        .kubectl(&["get", "secret", "-n", ns, secret, "-o", &jsonpath])
        .ok()?;
    let output = std::process::Command::new("base64")
        .arg("-d")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(encoded.as_bytes())?;
            child.wait_with_output()
        })
        .ok()?;
    Some(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The links a node runs, as its admin API lists them.
async fn node_links(
    system: &strait_e2e::system::System,
    ns: &str,
    cluster: &str,
    pod: &str,
) -> String {
    let token = secret_key(system, ns, &format!("{cluster}-credentials"), "admin-token")
        .expect("admin token");
    let ip = pod_ip(system, ns, pod);
    let output = tokio::process::Command::new("curl")
        .args([
            "-sf",
            "-m",
            "5",
            "-H",
            &format!("Authorization: Bearer {token}"),
            &format!("http://{ip}:8080/api/v1/links"),
        ])
        .output()
        .await
        .expect("curl");
    assert!(output.status.success(), "GET /api/v1/links on {pod}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_then_deleting_the_link_and_a_cluster_leaves_nothing_behind() {
    let system = support::system().await;
    two_regions(&system);
    let east = service_ip(&system, "east", "east");
    let west = service_ip(&system, "west", "west");

    // Rotation: a new password in the issued Secret reaches both ends (the
    // dialling side's secret, the accepting side's hash), and the link
    // carries messages again.
    let links_before =
        secret_key(&system, "west", "west-links", "links.yaml").expect("west's links");
    system
        .kubectl(&[
            "patch",
            "secret",
            "east-west-link-secret",
            "-n",
            "east",
            "--type",
            "merge",
            "-p",
            "{\"stringData\":{\"password\":\"a-rotated-password-of-enough-length-0123456789\"}}",
        ])
        .expect("rotate");
    eventually(
        Duration::from_secs(60),
        "the rotation reaches west's links Secret",
        || async {
            secret_key(&system, "west", "west-links", "links.yaml").as_deref()
                != Some(links_before.as_str())
        },
    )
    .await;
    system
        .kubectl(&["delete", "pod", "-n", "west", "west-0", "west-1", "west-2"])
        .expect("restart west");
    support::wait_ready(&system, "mqc,clink");
    let mut sub = Subscriber::start(&west, "fleet/rotated/#", 1, None);
    sub.await_route(&east, "fleet/rotated/probe").await;
    sub.stop().await;

    // Deleting the link takes it off both ends and garbage-collects its Secret.
    system
        .kubectl(&[
            "delete",
            "clink",
            "east-west",
            "-n",
            "east",
            "--timeout=120s",
        ])
        .expect("delete the link");
    for (ns, pod) in [("east", "east-0"), ("west", "west-2")] {
        let links: serde_json::Value =
            serde_json::from_str(&node_links(&system, ns, ns, pod).await).expect("JSON");
        let running = links["links"].as_array().map_or(0, Vec::len);
        assert_eq!(running, 0, "{pod} still runs a link: {links}");
    }
    eventually(
        Duration::from_secs(60),
        "the issued Secret is garbage-collected with its link",
        || async {
            system
                .kubectl(&["get", "secret", "-n", "east", "east-west-link-secret"])
                .is_err()
        },
    )
    .await;

    // Deleting a cluster garbage-collects everything the operator made for it.
    system
        .kubectl(&["delete", "mqc", "west", "-n", "west", "--timeout=120s"])
        .expect("delete west");
    eventually(
        Duration::from_secs(120),
        "nothing labelled with west is left after deleting it",
        || async {
            system
                .kubectl(&[
                    "get",
                    "sts,svc,cm,secret,pdb,pods",
                    "-n",
                    "west",
                    "-l",
                    "app.kubernetes.io/instance=west",
                    "-o",
                    "name",
                ])
                .expect("list")
                .trim()
                .is_empty()
        },
    )
    .await;
    system.shutdown().await;
}

/// Two regions as two Kubernetes, each with its own API server, operator
/// and node, their networks peered: `manifests/two-regions/` applied as its
/// comments say, the accepting side's issued Secret copied to the dialing
/// side by hand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_api_servers_link_through_a_copied_secret() {
    let us_east = support::system().await;
    let eu_west = support::system().await;
    // eu-west's brokers dial us-east's link Service (a LoadBalancer, whose
    // address is its cluster IP) over the peering.
    eu_west
        .agent
        .route_to(&us_east.plane.service_cidr)
        .await
        .expect("peer the networks");

    us_east
        .kubectl(&[
            "apply",
            "-f",
            &support::manifest("two-regions/us-east.yaml"),
        ])
        .expect("apply us-east");
    us_east
        .kubectl(&[
            "wait",
            "--for=condition=CredentialsReady",
            "clink/eu-west",
            support::READY,
        ])
        .expect("us-east issues eu-west's credential");
    let link_ip = service_ip(&us_east, "default", "us-east-link");
    eventually(
        Duration::from_secs(60),
        "the issued Secret names us-east's load balancer",
        || async {
            support::secret_value(&us_east, "default", "eu-west-link-secret", "endpoints").await
                == format!("{link_ip}:7883")
        },
    )
    .await;

    // Copied as a user would: the same data under the name eu-west expects.
    let issued = us_east
        .kubectl(&["get", "secret", "eu-west-link-secret", "-o", "json"])
        .expect("get the issued Secret");
    let issued: serde_json::Value = serde_json::from_str(&issued).expect("JSON");
    let copy = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "us-east-link-credentials", "namespace": "default"},
        "type": issued["type"],
        "data": issued["data"],
    });
    let copy_file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(copy_file.path(), copy.to_string()).expect("write the copy");
    eu_west
        .kubectl(&["apply", "-f", &copy_file.path().to_string_lossy()])
        .expect("apply the copied Secret");
    eu_west
        .kubectl(&[
            "apply",
            "-f",
            &support::manifest("two-regions/eu-west.yaml"),
        ])
        .expect("apply eu-west");
    support::wait_ready(&eu_west, "mqc,clink");
    support::wait_ready(&us_east, "mqc,clink");
    let links = us_east
        .kubectl(&["get", "clink", "eu-west", "--no-headers"])
        .expect("get clink");
    let cols: Vec<&str> = links.split_whitespace().collect();
    // NAME CLUSTER PEER CONNECTED READY AGE
    assert_eq!(
        cols[1..5],
        ["us-east", "eu-west", "True", "True"],
        "{links}"
    );

    // Telemetry crosses to eu-west, commands to us-east, each only as its
    // side exports: what us-east does not export stays there.
    let (east_login, west_login) = (
        support::generated_login(&us_east, "default", "us-east").await,
        support::generated_login(&eu_west, "default", "eu-west").await,
    );
    let east = service_ip(&us_east, "default", "us-east");
    let west = service_ip(&eu_west, "default", "eu-west");
    let mut telemetry = Subscriber::start_as(&west_login, &west, "fleet/#", 1, None);
    telemetry
        .await_route_as(&east_login, &east, "fleet/car-1/telemetry/speed")
        .await;
    for (topic, payload) in [
        ("fleet/car-1/status", "not exported"),
        ("fleet/car-1/telemetry/speed", "88"),
    ] {
        assert!(support::publish_as(&east_login, &east, topic, payload, 1).await);
    }
    assert_eq!(
        telemetry.next(Duration::from_secs(10)).await.as_deref(),
        Some("fleet/car-1/telemetry/speed 88"),
        "only what us-east exports crosses, in order"
    );
    let mut commands = Subscriber::start_as(&east_login, &east, "fleet/+/commands/#", 1, None);
    commands
        .await_route_as(&west_login, &west, "fleet/car-1/commands/stop")
        .await;
    telemetry.stop().await;
    commands.stop().await;
    us_east.shutdown().await;
    eu_west.shutdown().await;
}
