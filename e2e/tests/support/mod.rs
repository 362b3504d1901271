//! What the scenarios share: a Kubernetes of their own with the two linked
//! regions of `manifests/local/two-regions.yaml`, and MQTT through the
//! public mosquitto clients, as a user would drive them.

#![allow(dead_code)] // each scenario uses a different subset

use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use strait_e2e::system::Progress;
pub use strait_e2e::system::System;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// How long a region may take to become Ready.
pub const READY: &str = "--timeout=240s";

/// Systems started so far by this test binary.
static STARTED: AtomicU8 = AtomicU8::new(0);

/// A Kubernetes of its own (its node's network and service range too),
/// with the operator installed by the Helm chart. Fails, saying why, where
/// the node agent cannot run (it needs root).
///
/// Nodes are numbered from `STRAIT_E2E_FIRST_NODE` (1 by default; `make
/// run` is node 0), so that two runs on one machine can keep apart.
pub async fn system() -> System {
    let first: u8 = std::env::var("STRAIT_E2E_FIRST_NODE")
        .ok()
        .map(|v| v.parse().expect("STRAIT_E2E_FIRST_NODE is a number"))
        .unwrap_or(1);
    let index = first + STARTED.fetch_add(1, Ordering::SeqCst);
    System::start(index, &[], &Progress::new(false))
        .await
        .expect("start Kubernetes with the operator")
}

/// A user and its password.
#[derive(Debug, Clone)]
pub struct Login {
    pub user: String,
    pub password: String,
}

/// The password of the `demo` user the regions are given.
pub const PASSWORD: &str = "e2e-demo-password";

impl Login {
    /// A mosquitto client (`mosquitto_sub`, `mosquitto_pub`) for `host`,
    /// logging in as this user.
    pub fn client(&self, program: &str, host: &str) -> Command {
        let mut command = Command::new(program);
        command.args(["-h", host, "-u", &self.user, "-P", &self.password]);
        command
    }
}

/// The `demo` user of both regions.
pub fn demo() -> Login {
    Login {
        user: "demo".to_owned(),
        password: PASSWORD.to_owned(),
    }
}

/// The path of `manifests/<name>`.
pub fn manifest(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../manifests")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// Applies the two linked regions and waits until they are Ready.
pub fn two_regions(system: &System) {
    for ns in ["east", "west"] {
        system
            .create_users_secret(ns, "demo-users", "demo", PASSWORD)
            .expect("users Secret");
    }
    system
        .kubectl(&["apply", "-f", &manifest("local/two-regions.yaml")])
        .expect("apply the two regions");
    wait_ready(system, "mqc,clink");
}

/// The value of `key` in the Secret `name`.
pub async fn secret_value(system: &System, namespace: &str, name: &str, key: &str) -> String {
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(system.client.clone(), namespace);
    let secret = secrets.get(name).await.expect("the Secret");
    let value = secret
        .data
        .and_then(|mut data| data.remove(key))
        .unwrap_or_else(|| panic!("Secret {name} has no {key}"));
    String::from_utf8(value.0).expect("utf-8")
}

/// The user the operator generated for `cluster` (its spec names no users
/// Secret), from the Secret its status names.
pub async fn generated_login(system: &System, namespace: &str, cluster: &str) -> Login {
    let secret = system
        .kubectl(&[
            "get",
            "mqc",
            cluster,
            "-n",
            namespace,
            "-o",
            "jsonpath={.status.defaultUserSecret}",
        ])
        .expect("the cluster's status");
    assert_eq!(secret, format!("{cluster}-default-user"));
    Login {
        user: secret_value(system, namespace, &secret, "username").await,
        password: secret_value(system, namespace, &secret, "password").await,
    }
}

/// `kubectl wait --for=condition=Ready` on every `kinds` in every namespace.
pub fn wait_ready(system: &System, kinds: &str) {
    system
        .kubectl(&["wait", "--for=condition=Ready", kinds, "--all", "-A", READY])
        .unwrap_or_else(|e| {
            let state = system
                .kubectl(&["get", "mqc,clink,pods", "-A", "-o", "wide"])
                .unwrap_or_default();
            panic!("not Ready: {e:#}\n{state}")
        });
}

/// Waits until the pod `pod` exists (its StatefulSet makes it) and is
/// Ready: `kubectl wait` alone fails at once on a pod not made yet.
pub async fn wait_pod_ready(system: &System, namespace: &str, pod: &str) {
    let what = format!("{namespace}/{pod} exists");
    strait_e2e::wait::eventually(Duration::from_secs(60), &what, || async {
        system
            .kubectl(&["get", "pod", "-n", namespace, pod])
            .is_ok()
    })
    .await;
    let target = format!("pod/{pod}");
    system
        .kubectl(&[
            "wait",
            "--for=condition=Ready",
            &target,
            "-n",
            namespace,
            READY,
        ])
        .unwrap_or_else(|e| panic!("{target} is not Ready: {e:#}"));
}

/// A Service's cluster IP.
pub fn service_ip(system: &System, namespace: &str, service: &str) -> String {
    system
        .kubectl(&[
            "get",
            "svc",
            "-n",
            namespace,
            service,
            "-o",
            "jsonpath={.spec.clusterIP}",
        ])
        .expect("the Service")
}

/// A pod's IP.
pub fn pod_ip(system: &System, namespace: &str, pod: &str) -> String {
    system
        .kubectl(&[
            "get",
            "pod",
            "-n",
            namespace,
            pod,
            "-o",
            "jsonpath={.status.podIP}",
        ])
        .expect("the pod")
}

/// A `mosquitto_sub` printing `topic payload` lines.
pub struct Subscriber {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Subscriber {
    /// Subscribes to `filter` at `qos` on `host`; `id` makes the session
    /// persistent (clean session off), so QoS 1 and 2 messages survive a
    /// reconnection.
    pub fn start(host: &str, filter: &str, qos: u8, id: Option<&str>) -> Subscriber {
        Subscriber::start_as(&demo(), host, filter, qos, id)
    }

    /// [`Subscriber::start`] as the user of `login`.
    pub fn start_as(
        login: &Login,
        host: &str,
        filter: &str,
        qos: u8,
        id: Option<&str>,
    ) -> Subscriber {
        let mut cmd = login.client("mosquitto_sub", host);
        cmd.args(["-t", filter, "-q", &qos.to_string(), "-v"]);
        if let Some(id) = id {
            cmd.args(["-i", id, "-c"]);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("mosquitto_sub (apt-get install mosquitto-clients)");
        let stdout = child.stdout.take().expect("stdout");
        Subscriber {
            child,
            lines: BufReader::new(stdout).lines(),
        }
    }

    /// The next `topic payload` line, or `None` if none comes within `wait`.
    pub async fn next(&mut self, wait: Duration) -> Option<String> {
        tokio::time::timeout(wait, self.lines.next_line())
            .await
            .ok()
            .and_then(|l| l.ok().flatten())
    }

    /// Publishes `probe` on `publish_host` until this subscriber sees it:
    /// the subscription has then reached the other region.
    pub async fn await_route(&mut self, publish_host: &str, topic: &str) {
        self.await_route_as(&demo(), publish_host, topic).await;
    }

    /// [`Subscriber::await_route`], publishing as the user of `login`.
    pub async fn await_route_as(&mut self, login: &Login, publish_host: &str, topic: &str) {
        for attempt in 0..120 {
            let payload = format!("probe-{attempt}");
            assert!(
                publish_as(login, publish_host, topic, &payload, 0).await,
                "mosquitto_pub to {publish_host} failed"
            );
            while let Some(line) = self.next(Duration::from_millis(500)).await {
                if line.ends_with(&payload) {
                    return;
                }
            }
        }
        panic!("no probe on {topic} reached the subscriber within a minute");
    }

    /// Stops the client.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// One message with `mosquitto_pub` as `demo`; panics if it fails.
pub async fn publish(host: &str, topic: &str, payload: &str, qos: u8) {
    assert!(
        publish_as(&demo(), host, topic, payload, qos).await,
        "mosquitto_pub to {host} failed"
    );
}

/// One message with `mosquitto_pub` as the user of `login`; whether the
/// broker took it.
pub async fn publish_as(login: &Login, host: &str, topic: &str, payload: &str, qos: u8) -> bool {
    login
        .client("mosquitto_pub", host)
        .args(["-t", topic, "-m", payload, "-q", &qos.to_string()])
        .stderr(Stdio::null())
        .status()
        .await
        .expect("mosquitto_pub")
        .success()
}

/// A `mosquitto_pub -l` publishing each line written to it.
pub struct Publisher {
    child: Child,
}

impl Publisher {
    /// Publishes lines to `topic` at `qos` on `host`, as client `id`.
    pub fn start(host: &str, topic: &str, qos: u8, id: &str) -> Publisher {
        let child = demo()
            .client("mosquitto_pub", host)
            .args(["-t", topic, "-q", &qos.to_string(), "-i", id, "-l"])
            .stdin(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("mosquitto_pub");
        Publisher { child }
    }

    /// Publishes `line`.
    pub async fn send(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("write to mosquitto_pub");
    }

    /// Closes its input and waits until it has published everything.
    pub async fn finish(mut self) {
        drop(self.child.stdin.take());
        let status = tokio::time::timeout(Duration::from_secs(120), self.child.wait())
            .await
            .expect("mosquitto_pub finishes")
            .expect("mosquitto_pub");
        assert!(status.success(), "mosquitto_pub failed: {status}");
    }
}

/// The sum of a counter over the pods of `namespace`, read from each pod's
/// `/metrics`.
pub async fn counter(system: &System, namespace: &str, pods: &[&str], metric: &str) -> f64 {
    let mut sum = 0.0;
    for pod in pods {
        let ip = pod_ip(system, namespace, pod);
        let output = Command::new("curl")
            .args(["-sf", "-m", "5", &format!("http://{ip}:8080/metrics")])
            .output()
            .await
            .expect("curl");
        let text = String::from_utf8_lossy(&output.stdout);
        sum += text
            .lines()
            .filter(|l| l.starts_with(metric))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
    }
    sum
}

/// Waits (a minute at most) until [`counter`] of one pod equals `want`.
pub async fn counter_becomes(system: &System, namespace: &str, pod: &str, metric: &str, want: f64) {
    let what = format!("{namespace}/{pod} {metric} is {want}");
    strait_e2e::wait::eventually(Duration::from_secs(60), &what, || async {
        counter(system, namespace, &[pod], metric).await == want
    })
    .await;
}

/// `kubectl get --watch` printing one JSONPath line per change of an
/// object, collected until stopped: what a user watching it sees.
pub struct Watch {
    child: Child,
    lines: tokio::task::JoinHandle<Vec<String>>,
}

impl Watch {
    /// Watches `kind/name` in `namespace`, printing `jsonpath` at each change.
    pub fn start(system: &System, namespace: &str, object: &str, jsonpath: &str) -> Watch {
        let mut child = Command::new(system.kubectl_path())
            .arg("--kubeconfig")
            .arg(system.kubeconfig())
            .args(["get", object, "-n", namespace, "--watch", "-o"])
            .arg(format!("jsonpath={jsonpath}{{\"\\n\"}}"))
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("kubectl get --watch");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let lines = tokio::spawn(async move {
            let mut seen = Vec::new();
            while let Ok(Some(line)) = lines.next_line().await {
                seen.push(line);
            }
            seen
        });
        Watch { child, lines }
    }

    /// Stops watching; every line printed.
    pub async fn stop(mut self) -> Vec<String> {
        let _ = self.child.kill().await;
        self.lines.await.expect("the watch's reader")
    }
}
