//! One pod's life on the node, as a kubelet leads it: a network namespace
//! and an address, the volumes, the container started from the binary its
//! image names, probes that set `Ready` and restart a container that stops
//! answering, restarts with back-off when it exits, and on deletion SIGTERM,
//! the grace period, SIGKILL, and the pod object removed.
//!
//! Everything the pod shows in its status is written here: phase, pod IP,
//! conditions, and the container's state, readiness and restart count.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, EnvVar, Pod, Secret, Service};
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use serde_json::json;
use tokio::process::Child;
use tokio::sync::watch;

use super::launch::{self, Launch};
use super::network::PodNet;
use super::probe::HttpProbe;
use super::volumes::{self, VolumeDirs};
use super::Shared;

/// The `PATH` a container gets when its image sets none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Longest wait between restarts of a crashing container (kubelet's).
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// What the container is doing, for the pod's status.
#[derive(Debug, Clone)]
enum State {
    Waiting { reason: String, message: String },
    Running { started_at: String },
}

/// How the container last ended.
#[derive(Debug, Clone)]
struct Ended {
    exit_code: i32,
    reason: String,
    started_at: String,
    finished_at: String,
}

/// The pod as this agent knows it.
#[derive(Debug)]
struct Runner {
    shared: Arc<Shared>,
    namespace: String,
    name: String,
    uid: String,
    /// The container's name and image, for its status.
    container: String,
    image: String,
    /// The pod's folder, and where claims' data is.
    dirs: VolumeDirs,
    net: Option<PodNet>,
    state: State,
    last: Option<Ended>,
    ready: bool,
    /// Readiness as last written, and since when: a condition's
    /// `lastTransitionTime` moves only when its status does.
    ready_written: Option<(bool, String)>,
    restarts: u32,
    started: String,
}

/// The time now, as the API writes timestamps.
pub(super) fn now() -> String {
    let now = k8s_openapi::jiff::Timestamp::now();
    now.round(k8s_openapi::jiff::Unit::Second)
        .unwrap_or(now)
        .to_string()
}

/// The repository part of an image reference: `ghcr.io/strait/broker:0.1.0`
/// is `ghcr.io/strait/broker`.
pub fn repository(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    match image.rfind(':') {
        Some(i) if !image[i..].contains('/') => &image[..i],
        _ => image,
    }
}

/// Runs the pod `pod` until it is deleted. `updates` carries each new
/// version of it, and `None` once it is gone from the API.
pub(super) async fn run(shared: Arc<Shared>, pod: Pod, mut updates: watch::Receiver<Option<Pod>>) {
    let uid = pod.uid().unwrap_or_default();
    let first = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .cloned();
    let mut runner = Runner {
        dirs: VolumeDirs {
            pod: shared.state_dir.join("pods").join(&uid),
            claims: shared.state_dir.join("claims"),
        },
        namespace: pod.namespace().unwrap_or_default(),
        name: pod.name_any(),
        uid,
        container: first.as_ref().map(|c| c.name.clone()).unwrap_or_default(),
        image: first.and_then(|c| c.image).unwrap_or_default(),
        shared,
        net: None,
        state: State::Waiting {
            reason: "ContainerCreating".into(),
            message: String::new(),
        },
        last: None,
        ready: false,
        ready_written: None,
        restarts: 0,
        started: now(),
    };
    runner.live(pod, &mut updates).await;
    runner.clean_up().await;
}

impl Runner {
    fn api(&self) -> Api<Pod> {
        Api::namespaced(self.shared.client.clone(), &self.namespace)
    }

    async fn live(&mut self, mut pod: Pod, updates: &mut watch::Receiver<Option<Pod>>) {
        match self.shared.network.attach(&self.uid, &self.namespace).await {
            Ok(net) => self.net = Some(net),
            Err(error) => {
                self.wait("NetworkNotReady", &format!("{error:#}")).await;
                tracing::warn!(pod = %self.name, %error, "no network for the pod");
                return;
            }
        }
        let mut backoff_restarts = 0u32;
        loop {
            if pod.metadata.deletion_timestamp.is_some() {
                return;
            }
            let child = match self.start(&pod).await {
                Ok(child) => child,
                Err((reason, message)) => {
                    self.wait(&reason, &message).await;
                    // Try again when the pod, its Secrets or ConfigMaps change.
                    let mut sources = self.shared.sources_changed.clone();
                    tokio::select! {
                        next = next_version(updates) => match next {
                            Some(p) => pod = p,
                            None => return,
                        },
                        _ = sources.changed() => {}
                    }
                    continue;
                }
            };
            let started = std::time::Instant::now();
            match self.supervise(&mut pod, child, updates).await {
                Exit::Deleted => return,
                Exit::Restart => {}
            }
            // Back-off as kubelet's: none the first time, then 10 s doubling,
            // forgotten after ten minutes of running.
            if started.elapsed() > Duration::from_secs(600) {
                backoff_restarts = 0;
            }
            let delay = match backoff_restarts {
                0 => Duration::ZERO,
                n => (Duration::from_secs(10) * 2u32.saturating_pow(n - 1)).min(MAX_BACKOFF),
            };
            backoff_restarts += 1;
            self.restarts += 1;
            if !delay.is_zero() {
                self.wait(
                    "CrashLoopBackOff",
                    &format!("back-off {delay:?} restarting the container"),
                )
                .await;
                let sleep = tokio::time::sleep(delay);
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        _ = &mut sleep => break,
                        next = next_version(updates) => match next {
                            Some(p) if p.metadata.deletion_timestamp.is_none() => pod = p,
                            _ => return,
                        },
                    }
                }
            }
        }
    }

    /// Makes the volumes and starts the container, or says why it cannot
    /// (`(reason, message)` as kubelet's waiting states).
    async fn start(&mut self, pod: &Pod) -> Result<Child, (String, String)> {
        let spec = pod
            .spec
            .as_ref()
            .ok_or(("InvalidPod".to_owned(), "no spec".to_owned()))?;
        let [container] = spec.containers.as_slice() else {
            return Err((
                "Unsupported".into(),
                "this node agent runs pods of exactly one container".into(),
            ));
        };
        let image = container.image.clone().unwrap_or_default();
        let entrypoint = self
            .shared
            .images
            .get(repository(&image))
            .cloned()
            .ok_or_else(|| {
                (
                    "ErrImagePull".to_owned(),
                    format!("the node agent has no binary for image {image}"),
                )
            })?;
        let security = container.security_context.as_ref();
        let pod_security = spec.security_context.as_ref();
        let uid = security
            .and_then(|s| s.run_as_user)
            .or(pod_security.and_then(|s| s.run_as_user))
            .unwrap_or(0);
        let gid = security
            .and_then(|s| s.run_as_group)
            .or(pod_security.and_then(|s| s.run_as_group))
            .unwrap_or(0);
        let fs_group = fs_group(pod);
        let folders = volumes::sync(pod, &self.dirs, &self.shared.sources, fs_group)
            .map_err(|e| ("ContainerCreating".to_owned(), format!("MountVolume: {e}")))?;
        let mut mounts = Vec::new();
        for mount in container.volume_mounts.as_deref().unwrap_or_default() {
            let Some(folder) = folders.get(&mount.name) else {
                return Err((
                    "CreateContainerConfigError".into(),
                    format!("volume mount {} names no volume", mount.name),
                ));
            };
            let source = match &mount.sub_path {
                Some(sub) if !sub.is_empty() => folder.join(sub),
                _ => folder.clone(),
            };
            mounts.push((
                source,
                mount.mount_path.clone(),
                mount.read_only == Some(true),
            ));
        }
        let net = self
            .net
            .clone()
            .ok_or(("NetworkNotReady".to_owned(), String::new()))?;
        let env = self
            .env(pod, container, &net)
            .map_err(|m| ("CreateContainerConfigError".to_owned(), m))?;
        let launch = Launch {
            netns: net.netns.clone(),
            hostname: spec.hostname.clone().unwrap_or_else(|| self.name.clone()),
            entrypoint,
            args: container
                .command
                .iter()
                .flatten()
                .skip(1)
                .chain(container.args.iter().flatten())
                .cloned()
                .collect(),
            env,
            uid: u32::try_from(uid).unwrap_or(0),
            gid: u32::try_from(gid).unwrap_or(0),
            fs_group,
            mounts,
            etc: self.etc(pod, &net, uid),
        };
        let child = launch
            .spawn(&self.dirs.pod)
            .map_err(|e| ("RunContainerError".to_owned(), format!("{e:#}")))?;
        if let Some(pid) = child.id() {
            self.shared
                .pids
                .lock()
                .expect("pids")
                .insert(self.key(), pid);
        }
        self.state = State::Running { started_at: now() };
        self.ready = false;
        self.write_status().await;
        Ok(child)
    }

    fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Watches the running container: its probes, its exit, the pod's
    /// deletion, and changes to its Secrets and ConfigMaps (written to the
    /// volumes as they change).
    async fn supervise(
        &mut self,
        pod: &mut Pod,
        mut child: Child,
        updates: &mut watch::Receiver<Option<Pod>>,
    ) -> Exit {
        let container = pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .cloned()
            .unwrap_or_default();
        let readiness = HttpProbe::of(&container, container.readiness_probe.as_ref());
        let liveness = HttpProbe::of(&container, container.liveness_probe.as_ref());
        let ip = IpAddr::V4(
            self.net
                .as_ref()
                .map(|n| n.ip)
                .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
        );
        let started_at = match &self.state {
            State::Running { started_at } => started_at.clone(),
            State::Waiting { .. } => now(),
        };
        // The first probes come shortly after the start, then every period.
        let first = tokio::time::Instant::now() + Duration::from_millis(500);
        let mut ready_tick = readiness
            .as_ref()
            .map(|p| tokio::time::interval_at(first, p.period));
        let mut live_tick = liveness
            .as_ref()
            .map(|p| tokio::time::interval_at(first + p.period, p.period));
        let mut live_failures = 0u32;
        let mut sources = self.shared.sources_changed.clone();
        if readiness.is_none() {
            self.ready = true;
            self.write_status().await;
        }
        loop {
            tokio::select! {
                status = child.wait() => {
                    let code = status.ok().and_then(|s| s.code()).unwrap_or(137);
                    self.ended(code, if code == 0 { "Completed" } else { "Error" }, &started_at);
                    self.write_status().await;
                    return Exit::Restart;
                }
                _ = tick(&mut ready_tick) => {
                    let Some(probe) = &readiness else { continue };
                    let ok = probe.check(ip).await;
                    if ok != self.ready {
                        self.ready = ok;
                        self.write_status().await;
                    }
                }
                _ = tick(&mut live_tick) => {
                    let Some(probe) = &liveness else { continue };
                    if probe.check(ip).await {
                        live_failures = 0;
                    } else {
                        live_failures += 1;
                        if live_failures >= probe.failure_threshold {
                            tracing::info!(pod = %self.key(), "liveness probe failed; restarting the container");
                            self.stop(&mut child, grace_period(pod)).await;
                            self.ended(137, "LivenessProbeFailed", &started_at);
                            self.write_status().await;
                            return Exit::Restart;
                        }
                    }
                }
                _ = sources.changed() => {
                    if let Err(error) = volumes::sync(pod, &self.dirs, &self.shared.sources, fs_group(pod)) {
                        tracing::warn!(pod = %self.key(), %error, "updating the pod's volumes");
                    }
                }
                next = next_version(updates) => {
                    match next {
                        Some(p) if p.metadata.deletion_timestamp.is_none() => *pod = p,
                        Some(p) => {
                            let grace = p.metadata.deletion_grace_period_seconds.and_then(|g| u64::try_from(g).ok()).map_or_else(|| grace_period(&p), Duration::from_secs);
                            self.stop(&mut child, grace).await;
                            return Exit::Deleted;
                        }
                        None => {
                            self.stop(&mut child, Duration::ZERO).await;
                            return Exit::Deleted;
                        }
                    }
                }
            }
        }
    }

    fn ended(&mut self, exit_code: i32, reason: &str, started_at: &str) {
        self.shared.pids.lock().expect("pids").remove(&self.key());
        self.ready = false;
        self.last = Some(Ended {
            exit_code,
            reason: reason.to_owned(),
            started_at: started_at.to_owned(),
            finished_at: now(),
        });
        self.state = State::Waiting {
            reason: "ContainerCreating".into(),
            message: String::new(),
        };
    }

    /// SIGTERM, then SIGKILL once `grace` has passed.
    async fn stop(&mut self, child: &mut Child, grace: Duration) {
        if let Some(pid) = child.id() {
            launch::signal(pid, if grace.is_zero() { "KILL" } else { "TERM" }).await;
        }
        if tokio::time::timeout(grace, child.wait()).await.is_err() {
            tracing::info!(pod = %self.key(), ?grace, "the container outlived its grace period; killing it");
        }
        let _ = child.kill().await;
        self.shared.pids.lock().expect("pids").remove(&self.key());
    }

    async fn wait(&mut self, reason: &str, message: &str) {
        self.state = State::Waiting {
            reason: reason.to_owned(),
            message: message.to_owned(),
        };
        self.ready = false;
        self.write_status().await;
    }

    /// The container's environment: its `env` resolved, the API server's
    /// Service as every pod sees it, and the defaults a runtime sets.
    fn env(
        &self,
        pod: &Pod,
        container: &Container,
        net: &PodNet,
    ) -> Result<BTreeMap<String, String>, String> {
        let mut env = BTreeMap::from([
            ("PATH".to_owned(), DEFAULT_PATH.to_owned()),
            ("HOSTNAME".to_owned(), self.name.clone()),
        ]);
        if let Some(api) = self
            .shared
            .services
            .get(&ObjectRef::<Service>::new("kubernetes").within("default"))
        {
            let spec = api.spec.clone().unwrap_or_default();
            if let (Some(ip), Some(port)) = (
                spec.cluster_ip,
                spec.ports.and_then(|p| p.first().map(|p| p.port)),
            ) {
                env.insert("KUBERNETES_SERVICE_HOST".into(), ip.clone());
                env.insert("KUBERNETES_SERVICE_PORT".into(), port.to_string());
                env.insert("KUBERNETES_PORT".into(), format!("tcp://{ip}:{port}"));
            }
        }
        for var in container.env.as_deref().unwrap_or_default() {
            env.insert(var.name.clone(), self.env_value(pod, var, net)?);
        }
        Ok(env)
    }

    fn env_value(&self, pod: &Pod, var: &EnvVar, net: &PodNet) -> Result<String, String> {
        if let Some(value) = &var.value {
            return Ok(value.clone());
        }
        let Some(from) = &var.value_from else {
            return Ok(String::new());
        };
        if let Some(field) = &from.field_ref {
            return match field.field_path.as_str() {
                "metadata.name" => Ok(self.name.clone()),
                "metadata.namespace" => Ok(self.namespace.clone()),
                "metadata.uid" => Ok(self.uid.clone()),
                "spec.nodeName" => Ok(self.shared.node.clone()),
                "spec.serviceAccountName" => Ok(pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.service_account_name.clone())
                    .unwrap_or_default()),
                "status.podIP" => Ok(net.ip.to_string()),
                "status.hostIP" => Ok(self.shared.network.gateway().to_string()),
                other => Err(format!("env {}: field {other} is not supported", var.name)),
            };
        }
        if let Some(key) = &from.secret_key_ref {
            let secret = self
                .shared
                .sources
                .secrets
                .get(&ObjectRef::<Secret>::new(&key.name).within(&self.namespace));
            let value = secret.and_then(|s| {
                s.data
                    .clone()?
                    .get(&key.key)
                    .map(|v| String::from_utf8_lossy(&v.0).into_owned())
            });
            return match value {
                Some(v) => Ok(v),
                None if key.optional == Some(true) => Ok(String::new()),
                None => Err(format!("secret \"{}\" has no key {}", key.name, key.key)),
            };
        }
        if let Some(key) = &from.config_map_key_ref {
            let map = self
                .shared
                .sources
                .config_maps
                .get(&ObjectRef::new(&key.name).within(&self.namespace));
            let value = map.and_then(|m| m.data.clone()?.get(&key.key).cloned());
            return match value {
                Some(v) => Ok(v),
                None if key.optional == Some(true) => Ok(String::new()),
                None => Err(format!("configmap \"{}\" has no key {}", key.name, key.key)),
            };
        }
        Err(format!(
            "env {}: this kind of valueFrom is not supported",
            var.name
        ))
    }

    /// The pod's `/etc`: its own hosts entry, the cluster's DNS with the
    /// namespace's search path, and the users it may run as.
    fn etc(&self, pod: &Pod, net: &PodNet, uid: i64) -> BTreeMap<String, String> {
        let spec = pod.spec.clone().unwrap_or_default();
        let hostname = spec.hostname.unwrap_or_else(|| self.name.clone());
        let ns = &self.namespace;
        let fqdn = match &spec.subdomain {
            Some(sub) => format!("{hostname}.{sub}.{ns}.svc.cluster.local "),
            None => String::new(),
        };
        BTreeMap::from([
            ("hostname".into(), format!("{hostname}\n")),
            ("hosts".into(), format!("127.0.0.1\tlocalhost\n::1\tlocalhost\n{}\t{fqdn}{hostname}\n", net.ip)),
            (
                "resolv.conf".into(),
                format!(
                    "search {ns}.svc.cluster.local svc.cluster.local cluster.local\nnameserver {}\noptions ndots:5\n",
                    self.shared.network.gateway()
                ),
            ),
            ("nsswitch.conf".into(), "hosts: files dns\npasswd: files\ngroup: files\n".into()),
            ("passwd".into(), format!("root:x:0:0:root:/root:/bin/sh\nuser:x:{uid}:{uid}::/nonexistent:/usr/sbin/nologin\n")),
            ("group".into(), format!("root:x:0:\nuser:x:{uid}:\n")),
        ])
    }

    async fn write_status(&mut self) {
        let running = matches!(self.state, State::Running { .. });
        let state = match &self.state {
            State::Running { started_at } => json!({"running": {"startedAt": started_at}}),
            State::Waiting { reason, message } => {
                json!({"waiting": {"reason": reason, "message": message}})
            }
        };
        let last = match &self.last {
            Some(e) => {
                json!({"terminated": {"exitCode": e.exit_code, "reason": e.reason, "startedAt": e.started_at, "finishedAt": e.finished_at}})
            }
            None => json!({}),
        };
        let ready = if self.ready { "True" } else { "False" };
        let ready_since = match &self.ready_written {
            Some((written, since)) if *written == self.ready => since.clone(),
            _ => {
                let since = now();
                self.ready_written = Some((self.ready, since.clone()));
                since
            }
        };
        let condition = |type_: &str, status: &str, since: &str| json!({"type": type_, "status": status, "lastTransitionTime": since});
        let pod_ip = self.net.as_ref().map(|n| n.ip.to_string());
        let mut status = json!({
            "phase": if running || self.last.is_some() { "Running" } else { "Pending" },
            "hostIP": self.shared.network.gateway().to_string(),
            "startTime": self.started,
            "conditions": [
                condition("PodScheduled", "True", &self.started),
                condition("Initialized", "True", &self.started),
                condition("ContainersReady", ready, &ready_since),
                condition("Ready", ready, &ready_since),
            ],
            "containerStatuses": [{
                "name": self.container,
                "ready": self.ready,
                "started": running,
                "restartCount": self.restarts,
                "image": self.image,
                "imageID": "",
                "state": state,
                "lastState": last,
            }],
        });
        if let Some(ip) = pod_ip {
            status["podIP"] = json!(ip);
            status["podIPs"] = json!([{"ip": ip}]);
        }
        // The uid makes the patch fail on a newer pod of the same name.
        let patch = json!({"metadata": {"uid": self.uid}, "status": status});
        if let Err(error) = self
            .api()
            .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            tracing::debug!(pod = %self.key(), %error, "writing the pod's status");
        }
    }

    /// Frees the pod's address and folder and removes the pod object, as
    /// kubelet does once the containers are gone.
    async fn clean_up(&mut self) {
        if let Some(net) = self.net.take() {
            self.shared.network.detach(&net).await;
        }
        let api = self.api();
        remove_object(&api, &self.name, &self.uid).await;
        let _ = std::fs::remove_dir_all(&self.dirs.pod);
    }
}

/// How supervising a container ended.
#[derive(Debug)]
enum Exit {
    /// The container ended or was restarted by its liveness probe.
    Restart,
    /// The pod was deleted and its container stopped.
    Deleted,
}

/// Removes a pod object whose containers are gone (grace period 0), as
/// kubelet does once it has stopped them.
pub(super) async fn remove(client: &kube::Client, pod: &Pod) {
    let api = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    remove_object(&api, &pod.name_any(), &pod.uid().unwrap_or_default()).await;
}

/// Deletes `name` now, if it is still the pod `uid` (not a newer one of the
/// same name).
async fn remove_object(api: &Api<Pod>, name: &str, uid: &str) {
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(uid.to_owned()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    if let Err(error) = api.delete(name, &params).await {
        tracing::debug!(pod = %name, %error, "removing the pod object");
    }
}

/// The pod's next version once it changes; `None` once it is gone.
async fn next_version(updates: &mut watch::Receiver<Option<Pod>>) -> Option<Pod> {
    updates.changed().await.ok()?;
    updates.borrow_and_update().clone()
}

/// The group the pod's volumes belong to (`fsGroup`).
fn fs_group(pod: &Pod) -> Option<u32> {
    pod.spec
        .as_ref()?
        .security_context
        .as_ref()?
        .fs_group
        .and_then(|g| u32::try_from(g).ok())
}

/// How long a container may take to stop (`terminationGracePeriodSeconds`,
/// 30 s by default).
fn grace_period(pod: &Pod) -> Duration {
    let secs = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .and_then(|g| u64::try_from(g).ok())
        .unwrap_or(30);
    Duration::from_secs(secs)
}

async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::repository;

    #[test]
    fn an_image_reference_names_its_repository() {
        assert_eq!(
            repository("ghcr.io/strait/broker:0.1.0"),
            "ghcr.io/strait/broker"
        );
        assert_eq!(repository("localhost:5000/broker"), "localhost:5000/broker");
        assert_eq!(repository("broker@sha256:abc"), "broker");
        assert_eq!(
            repository("localhost:5000/broker:1"),
            "localhost:5000/broker"
        );
    }
}
