//! `make bench-operator`: against the real API server, with the operator as
//! its own process (release build), 100 MqttClusters created at once, then
//! 100 clusters joined in 50 linked pairs.
//!
//! Reports the time until each cluster's children exist and until each
//! pair's links are Ready (p50/p99), API requests per reconcile, writes in
//! steady state (goal: zero) and the operator's peak RSS (goal: under 64
//! MiB). Benchmarks, not tests: they assert nothing about timings and are
//! `#[ignore]`d by default.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::api::{DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use strait_operator::conditions::{find, reasons, types};
use strait_operator::controller::ChildKinds;
use strait_operator::crd::{ClusterLink, MqttCluster};

const CLUSTERS: usize = 100;

struct OperatorProcess(Child);

impl OperatorProcess {
    /// The release build of the operator, watching `ns`, serving metrics on
    /// the port it returns once they answer.
    async fn start(ns: &str) -> (OperatorProcess, u16) {
        let plane = support::control_plane::shared();
        let http_port = free_port();
        let operator = OperatorProcess(
            Command::new(env!("CARGO_BIN_EXE_strait-operator"))
                .args(["run", "--no-leader-election", "--namespace", ns])
                .arg(format!("--http-bind=127.0.0.1:{http_port}"))
                .env("KUBECONFIG", &plane.kubeconfig)
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .spawn()
                .expect("start the operator"),
        );
        support::eventually(
            Duration::from_secs(30),
            "the operator serves metrics",
            || async { TcpStream::connect(("127.0.0.1", http_port)).is_ok() },
        )
        .await;
        (operator, http_port)
    }
}

/// Creates `count` clusters of one node, `c000`, `c001`, ..., all at once;
/// returns when each was created, from `started`.
async fn create_clusters(
    clusters: &Api<MqttCluster>,
    count: usize,
    started: Instant,
) -> BTreeMap<String, Duration> {
    let creates = (0..count).map(|i| {
        let clusters = clusters.clone();
        async move {
            let cluster: MqttCluster = serde_json::from_value(json!({
                "apiVersion": "strait.dev/v1alpha1",
                "kind": "MqttCluster",
                "metadata": {"name": format!("c{i:03}")},
                "spec": {"replicas": 1},
            }))
            .expect("cluster");
            clusters
                .create(&PostParams::default(), &cluster)
                .await
                .expect("create");
            (format!("c{i:03}"), started.elapsed())
        }
    });
    futures::future::join_all(creates)
        .await
        .into_iter()
        .collect()
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// The operator's counters, from its own `/metrics`.
fn scrape(port: u16) -> BTreeMap<String, f64> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to metrics");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .expect("request");
    let mut body = String::new();
    stream.read_to_string(&mut body).expect("response");
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
        .collect()
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// The operator's request counters, from its metrics.
#[derive(Debug, Clone, Copy)]
struct Counters {
    reconciles: f64,
    reads: f64,
    writes: f64,
}

impl Counters {
    fn scrape(port: u16) -> Counters {
        let m = scrape(port);
        let metric = |k: &str| m.get(k).copied().unwrap_or(0.0);
        Counters {
            reconciles: metric("strait_operator_reconciles_total"),
            reads: metric("strait_operator_api_reads_total"),
            writes: metric("strait_operator_api_writes_total"),
        }
    }

    /// What happened since `before`.
    fn since(self, before: Counters) -> Counters {
        Counters {
            reconciles: self.reconciles - before.reconciles,
            reads: self.reads - before.reads,
            writes: self.writes - before.writes,
        }
    }

    fn print_per_reconcile(self) {
        let per = |n: f64| n / self.reconciles.max(1.0);
        println!(
            "API requests per reconcile                 {:.2} ({:.2} reads + {:.2} writes)",
            per(self.reads + self.writes),
            per(self.reads),
            per(self.writes)
        );
    }
}

/// Prints p50, p99 and the maximum of `latencies` under `label`.
fn print_latencies(label: &str, mut latencies: Vec<Duration>) {
    latencies.sort();
    println!(
        "{label:<43}p50 {:.2?}  p99 {:.2?}  max {:.2?}",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1]
    );
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Names of the clusters (instance label) that have a child of one kind.
async fn owners<K>(api: &Api<K>) -> BTreeSet<String>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.list(&ListParams::default().labels("app.kubernetes.io/managed-by=strait-operator"))
        .await
        .expect("list")
        .items
        .iter()
        .filter_map(|o| o.labels().get("app.kubernetes.io/instance").cloned())
        .collect()
}

#[tokio::test]
#[ignore = "benchmark: run with `make bench-operator`"]
async fn bench_100_clusters() {
    let client: Client = support::client().await;
    let ns = support::namespace(&client, "bench").await;
    let (operator, http_port) = OperatorProcess::start(&ns).await;
    let pid = operator.0.id();

    let clusters: Api<MqttCluster> = Api::namespaced(client.clone(), &ns);
    let started = Instant::now();
    let created = create_clusters(&clusters, CLUSTERS, started).await;

    let kinds = ChildKinds::discover(&client).await.expect("discovery");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let pdbs: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &kinds.pdb);
    let mut complete: BTreeMap<String, Duration> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    while complete.len() < CLUSTERS {
        assert!(
            Instant::now() < deadline,
            "children of {} clusters never appeared",
            CLUSTERS - complete.len()
        );
        let sets = [
            owners(&cms).await,
            owners(&secrets).await,
            owners(&services).await,
            owners(&sts).await,
            owners(&pdbs).await,
        ];
        let now = started.elapsed();
        for name in created.keys() {
            if !complete.contains_key(name) && sets.iter().all(|s| s.contains(name)) {
                complete.insert(name.clone(), now.saturating_sub(created[name]));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all_children = started.elapsed();

    // Steady state: every status describes its generation and a finished
    // rollout (the StatefulSet controller has reported), so nothing is left
    // to write; then count writes over a window.
    support::eventually(
        Duration::from_secs(300),
        "every status is current and rolled out",
        || async {
            clusters.list(&ListParams::default()).await.is_ok_and(|l| {
                l.items.iter().all(|c| {
                    c.status.as_ref().is_some_and(|s| {
                        s.observed_generation == c.metadata.generation
                            && s.replicas == c.spec.replicas
                            && find(&s.conditions, types::PROGRESSING)
                                .is_some_and(|p| p.reason == reasons::ROLLED_OUT)
                    })
                })
            })
        },
    )
    .await;
    let settled = Counters::scrape(http_port);
    // A metadata-only change to every cluster makes each one reconcile with
    // nothing to do: those reconciles, and any others in the window, must not write.
    let pokes = created.keys().map(|name| {
        let clusters = clusters.clone();
        async move {
            let poke = json!({"metadata": {"annotations": {"bench.strait.dev/poke": "1"}}});
            clusters
                .patch(name, &PatchParams::default(), &Patch::Merge(&poke))
                .await
                .expect("poke");
        }
    });
    futures::future::join_all(pokes).await;
    let window = Duration::from_secs(20);
    tokio::time::sleep(window).await;
    let steady = Counters::scrape(http_port).since(settled);
    let rss_mib = peak_rss_kib(pid) as f64 / 1024.0;
    println!("\n== operator benchmark: {CLUSTERS} MqttClusters created at once (Kubernetes 1.20.2, loopback) ==");
    println!("all children of all clusters exist after   {all_children:.2?}");
    print_latencies(
        "time to all children, per cluster",
        complete.values().copied().collect(),
    );
    println!(
        "reconciles until settled                   {}",
        settled.reconciles
    );
    settled.print_per_reconcile();
    println!(
        "steady state over {window:?}, all poked   {} writes in {} reconciles (goal: 0 writes)",
        steady.writes, steady.reconciles
    );
    println!("operator peak RSS                          {rss_mib:.1} MiB (goal: < 64 MiB)");
}

const PAIRS: usize = 50;

/// `make bench-operator`, links: 100 clusters joined in 50 linked pairs,
/// each pair one cluster accepting (it issues the credential) and one
/// dialling with the issued Secret copied, as two regions would be. Brokers
/// run in this process for the pods, each on a loopback address of its own
/// as its pod IP; the operator runs as its own process and finds them as in
/// Kubernetes. Reports the time from a pair's first ClusterLink until both
/// are Ready (p50/p99), API requests per reconcile, writes in steady state
/// (goal: zero) and the operator's peak RSS (goal: under 64 MiB).
#[tokio::test]
#[ignore = "benchmark: run with `make bench-operator`"]
async fn bench_50_linked_pairs() {
    let client: Client = support::client().await;
    let ns = support::namespace(&client, "bench-links").await;
    let (operator, http_port) = OperatorProcess::start(&ns).await;
    let pid = operator.0.id();
    let nodes = support::nodes::Nodes::start_on_pod_ips(&client, &[&ns]);
    let clusters: Api<MqttCluster> = Api::namespaced(client.clone(), &ns);
    let links: Api<ClusterLink> = Api::namespaced(client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    create_clusters(&clusters, 2 * PAIRS, Instant::now()).await;

    let link = |name: String, spec: serde_json::Value| -> ClusterLink {
        serde_json::from_value(json!({
            "apiVersion": "strait.dev/v1alpha1",
            "kind": "ClusterLink",
            "metadata": {"name": name},
            "spec": spec,
        }))
        .expect("link")
    };
    let started = Instant::now();
    let mut first: BTreeMap<usize, Duration> = BTreeMap::new();
    for i in 0..PAIRS {
        let accepting = link(
            format!("a{i:02}"),
            json!({
                "cluster": format!("c{:03}", 2 * i),
                "peer": {"remote": {"clusterName": format!("c{:03}", 2 * i + 1), "accept": true}},
                "export": ["#"],
                "import": ["#"],
            }),
        );
        links
            .create(&PostParams::default(), &accepting)
            .await
            .expect("create the accepting link");
        first.insert(i, started.elapsed());
    }
    // Each issued Secret is copied as the dialling side's, and its link made.
    let mut dialling: BTreeSet<usize> = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    while dialling.len() < PAIRS {
        assert!(Instant::now() < deadline, "credentials were never issued");
        let waiting: Vec<usize> = (0..PAIRS).filter(|i| !dialling.contains(i)).collect();
        for i in waiting {
            let Some(issued) = secrets
                .get_opt(&format!("a{i:02}-link-secret"))
                .await
                .expect("get")
            else {
                continue;
            };
            let copy: Secret = serde_json::from_value(json!({
                "metadata": {"name": format!("copied-{i:02}")},
                "data": issued.data,
            }))
            .expect("secret");
            secrets
                .create(&PostParams::default(), &copy)
                .await
                .expect("copy");
            let endpoint = nodes.link(&ns, &format!("c{:03}-0", 2 * i)).to_string();
            let dial = link(
                format!("d{i:02}"),
                json!({
                    "cluster": format!("c{:03}", 2 * i + 1),
                    "peer": {"remote": {
                        "clusterName": format!("c{:03}", 2 * i),
                        "credentialsSecret": format!("copied-{i:02}"),
                        "endpoints": [endpoint],
                    }},
                    "export": ["#"],
                    "import": ["#"],
                }),
            );
            links
                .create(&PostParams::default(), &dial)
                .await
                .expect("create the dialling link");
            dialling.insert(i);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ready_of = |l: &ClusterLink| {
        l.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
    };
    let mut ready: BTreeMap<usize, Duration> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(900);
    while ready.len() < PAIRS {
        let list = links
            .list(&ListParams::default())
            .await
            .expect("list links");
        let now = started.elapsed();
        let is_ready = |name: String| {
            list.items
                .iter()
                .any(|l| l.name_any() == name && ready_of(l))
        };
        for i in 0..PAIRS {
            if !ready.contains_key(&i)
                && is_ready(format!("a{i:02}"))
                && is_ready(format!("d{i:02}"))
            {
                ready.insert(i, now.saturating_sub(first[&i]));
            }
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {PAIRS} pairs became Ready",
            ready.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let all_ready = started.elapsed();

    let settled = Counters::scrape(http_port);
    let window = Duration::from_secs(30);
    tokio::time::sleep(window).await;
    let steady = Counters::scrape(http_port).since(settled);
    let rss_mib = peak_rss_kib(pid) as f64 / 1024.0;
    nodes.stop().await;
    println!(
        "\n== operator benchmark, links: {} clusters in {PAIRS} linked pairs (one accepting, one dialling with the copied Secret; Kubernetes 1.20.2, loopback) ==",
        2 * PAIRS
    );
    println!("every pair Ready after                     {all_ready:.2?}");
    print_latencies("time to Ready, per pair", ready.values().copied().collect());
    println!(
        "reconciles until Ready (both kinds)        {}",
        settled.reconciles
    );
    settled.print_per_reconcile();
    println!(
        "steady state over {window:?}                {} writes, {} reads in {} reconciles (goal: 0 writes)",
        steady.writes, steady.reads, steady.reconciles
    );
    println!("operator peak RSS                          {rss_mib:.1} MiB (goal: < 64 MiB)");
}
