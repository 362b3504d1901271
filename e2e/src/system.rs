//! One node of Kubernetes on this machine, driven as a user drives a
//! cluster: a control plane, the node agent running its pods, the operator
//! installed with its Helm chart (so it runs as a pod, with the chart's RBAC
//! and its ServiceAccount's token), and `kubectl`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::Context;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::agent::{Agent, AgentConfig};
use crate::control_plane::{self, ControlPlane, Options};

/// The image repositories the chart and the operator name by default, and
/// the binary each stands for.
pub const BROKER_IMAGE: &str = "ghcr.io/strait/broker";
/// See [`BROKER_IMAGE`].
pub const OPERATOR_IMAGE: &str = "ghcr.io/strait/operator";
/// The namespace the operator is installed in.
pub const OPERATOR_NAMESPACE: &str = "strait-system";

/// Where the project's binaries are: `STRAIT_BIN_DIR`, or beside the
/// running executable (`target/release` for `make run`, `target/debug` for
/// the tests).
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    let dir = match std::env::var_os("STRAIT_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let exe = std::env::current_exe()?;
            let dir = exe.parent().context("the executable's folder")?;
            if dir.ends_with("deps") {
                dir.parent().context("the target folder")?.to_owned()
            } else {
                dir.to_owned()
            }
        }
    };
    for bin in ["strait-broker", "strait-operator"] {
        anyhow::ensure!(
            dir.join(bin).is_file(),
            "{} has no {bin}: build it first (`cargo build -p strait-broker -p strait-operator`), \
             or point STRAIT_BIN_DIR at a folder that has it",
            dir.display()
        );
    }
    Ok(dir)
}

/// Prints a step of a long bring-up, with the time since the start.
#[derive(Debug)]
pub struct Progress {
    start: Instant,
    quiet: bool,
}

impl Progress {
    /// Steps are printed to stderr unless `quiet`.
    pub fn new(quiet: bool) -> Progress {
        Progress {
            start: Instant::now(),
            quiet,
        }
    }

    /// Says what happens next.
    pub fn step(&self, what: &str) {
        if !self.quiet {
            eprintln!("[{:>5.1}s] {what}", self.start.elapsed().as_secs_f64());
        }
    }
}

/// One Kubernetes on this machine, with its node running pods.
pub struct System {
    /// The control plane.
    pub plane: ControlPlane,
    /// The node.
    pub agent: Agent,
    /// An admin client.
    pub client: Client,
    kubectl: PathBuf,
    state: tempfile::TempDir,
}

impl std::fmt::Debug for System {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("System")
            .field("plane", &self.plane)
            .finish_non_exhaustive()
    }
}

impl System {
    /// Starts Kubernetes number `index` (its node's network and service
    /// range are its own, so several run side by side) and installs the
    /// operator with the chart and `values` files.
    pub async fn start(index: u8, values: &[&Path], progress: &Progress) -> anyhow::Result<System> {
        crate::agent::check_privileges()?;
        let bins = bin_dir()?;
        let kubectl = control_plane::kubectl()?;
        progress.step("starting the control plane (etcd, kube-apiserver, kube-controller-manager)");
        let options = Options {
            service_cidr: format!("10.{}.0.0/16", 150 + u16::from(index)),
            service_account_admission: true,
        };
        let plane = tokio::task::spawn_blocking(move || control_plane::start(&options)).await??;
        let client = client_from(&plane.kubeconfig).await?;
        progress.step("starting the node agent (pods as processes, cluster DNS, service proxy)");
        let state = tempfile::Builder::new().prefix("strait-node-").tempdir()?;
        let agent = Agent::start(
            client.clone(),
            AgentConfig {
                index,
                service_cidr: plane.service_cidr.clone(),
                api_server: ([127, 0, 0, 1], plane.api_port).into(),
                state_dir: state.path().to_owned(),
                images: BTreeMap::from([
                    (BROKER_IMAGE.to_owned(), bins.join("strait-broker")),
                    (OPERATOR_IMAGE.to_owned(), bins.join("strait-operator")),
                ]),
            },
        )
        .await?;
        let system = System {
            plane,
            agent,
            client,
            kubectl,
            state,
        };
        progress.step("installing the operator with its Helm chart");
        system.helm("install", values)?;
        Ok(system)
    }

    /// The admin kubeconfig, for `kubectl --kubeconfig`.
    pub fn kubeconfig(&self) -> &Path {
        &self.plane.kubeconfig
    }

    /// The `kubectl` of the control plane's version.
    pub fn kubectl_path(&self) -> &Path {
        &self.kubectl
    }

    /// Runs `kubectl` as the admin; its output, or an error with its stderr.
    pub fn kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut command = Command::new(&self.kubectl);
        command
            .arg("--kubeconfig")
            .arg(&self.plane.kubeconfig)
            .args(args);
        let output = off_the_runtime(|| command.output()).context("run kubectl")?;
        anyhow::ensure!(
            output.status.success(),
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Creates (or replaces) the users Secret `secret` in `namespace` with
    /// one user and its plain password, which the operator hashes.
    pub fn create_users_secret(
        &self,
        namespace: &str,
        secret: &str,
        user: &str,
        password: &str,
    ) -> anyhow::Result<()> {
        let _ = self.kubectl(&["create", "namespace", namespace]);
        let _ = self.kubectl(&[
            "delete",
            "secret",
            "-n",
            namespace,
            secret,
            "--ignore-not-found",
        ]);
        self.kubectl(&[
            "create",
            "secret",
            "generic",
            "-n",
            namespace,
            secret,
            &format!("--from-literal=passwd={user}:{password}"),
        ])?;
        Ok(())
    }

    /// `helm install` or `helm upgrade` of the operator's chart with `values` files.
    pub fn helm(&self, verb: &str, values: &[&Path]) -> anyhow::Result<()> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/helm.sh");
        let mut command = Command::new("bash");
        command
            .arg(script)
            .arg(verb)
            .arg(&self.plane.kubeconfig)
            .arg(OPERATOR_NAMESPACE)
            .args(values);
        let output = off_the_runtime(|| command.output()).context("run scripts/helm.sh")?;
        anyhow::ensure!(
            output.status.success(),
            "helm {verb}: {}{}",
            String::from_utf8_lossy(&output.stdout).trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Ok(())
    }

    /// Where the node keeps pods' folders (each pod's `container.log`).
    pub fn state_dir(&self) -> &Path {
        self.state.path()
    }

    /// Stops every pod and removes the node's network; the control plane
    /// stops with this process.
    pub async fn shutdown(self) {
        self.agent.shutdown().await;
    }
}

/// A client authenticated as the kubeconfig at `path` says.
pub async fn client_from(path: &Path) -> anyhow::Result<Client> {
    let kubeconfig = Kubeconfig::read_from(path)?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

/// A fresh random password of 24 letters and digits.
pub fn random_password() -> String {
    use rand::distributions::{Alphanumeric, DistString};
    Alphanumeric.sample_string(&mut rand::thread_rng(), 24)
}

/// Runs `blocking` (a child process waited for, `kubectl wait` for
/// minutes) without starving the tasks of the runtime it is called on: the
/// node agent's probes, pods and proxy share it, and a probe that cannot run
/// for a second fails, which restarts a healthy pod.
fn off_the_runtime<T>(blocking: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(blocking)
        }
        _ => blocking(),
    }
}
