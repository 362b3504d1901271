//! A real Kubernetes control plane on loopback: etcd, kube-apiserver and
//! kube-controller-manager (the StatefulSet, Endpoints and ServiceAccount
//! controllers, the garbage collector). The operator's integration tests
//! share one per test binary; the end-to-end system starts its own, with a
//! service range of its own and the ServiceAccount admission plugin, so that
//! pods are given their account's token as in any cluster.
//!
//! The binaries come from `STRAIT_K8S_BIN` (`make deps-k8s` builds and caches
//! them). Each process runs under a small shell watchdog that ends it when
//! this process exits, and a janitor removes the plane's folder (etcd's
//! write-ahead log alone is over 100 MB) after it: the shared plane is a
//! static, which is never dropped. Dropping any other plane stops it and
//! removes its folder at once. `STRAIT_KEEP_CONTROL_PLANE=1` keeps the
//! folders, logs included, for a post-mortem.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A running control plane: where to reach it.
#[derive(Debug)]
pub struct ControlPlane {
    /// A kubeconfig for the cluster admin.
    pub kubeconfig: PathBuf,
    /// The API server's port on 127.0.0.1.
    pub api_port: u16,
    /// The range Services' cluster IPs come from.
    pub service_cidr: String,
    /// A kubeconfig for the operator's ServiceAccount as the Helm chart names
    /// it (`system:serviceaccount:strait-system:strait`): it holds no rights
    /// but those a test grants it, such as the chart's RBAC.
    pub operator_kubeconfig: PathBuf,
    /// The processes' state and logs (`etcd.log`, `kube-apiserver.log`, ...).
    pub dir: PathBuf,
    /// The watchdogs of etcd, kube-apiserver and kube-controller-manager.
    watchdogs: Vec<Child>,
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // A watchdog told to stop kills its process and waits for it, so
        // that nothing writes to the folder once it is removed.
        for watchdog in &mut self.watchdogs {
            let _ = Command::new("kill")
                .args(["-TERM", &watchdog.id().to_string()])
                .status();
            let _ = watchdog.wait();
        }
        if !keep_folders() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn keep_folders() -> bool {
    std::env::var("STRAIT_KEEP_CONTROL_PLANE").is_ok_and(|v| v == "1")
}

/// How to start a control plane.
#[derive(Debug, Clone)]
pub struct Options {
    /// The range of Services' cluster IPs (`--service-cluster-ip-range`).
    pub service_cidr: String,
    /// Whether pods get their ServiceAccount's token mounted (the
    /// ServiceAccount admission plugin). Off for the operator's tests, whose
    /// pods never run and whose fresh namespaces need not wait for a
    /// `default` account.
    pub service_account_admission: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            service_cidr: "10.96.0.0/16".to_owned(),
            service_account_admission: false,
        }
    }
}

/// Where the Helm chart puts the operator (its release namespace) ...
pub const OPERATOR_NAMESPACE: &str = "strait-system";
/// ... and the name of its ServiceAccount (the release name).
pub const OPERATOR_ACCOUNT: &str = "strait";

static PLANE: OnceLock<Result<ControlPlane, String>> = OnceLock::new();

/// Whether the integration tests were explicitly turned off.
pub fn skipped() -> bool {
    std::env::var("STRAIT_SKIP_K8S").is_ok_and(|v| v == "1")
}

/// The shared control plane, started on first use. Panics with a clear
/// message when the binaries are missing.
pub fn shared() -> &'static ControlPlane {
    let plane = PLANE.get_or_init(|| start(&Options::default()).map_err(|e| format!("{e:#}")));
    match plane {
        Ok(plane) => plane,
        Err(e) => panic!("cannot start the Kubernetes control plane: {e}"),
    }
}

/// Another control plane, for tests of two regions: each region of a
/// link has its own API server. Dropping it stops it.
pub fn another() -> ControlPlane {
    start(&Options::default())
        .unwrap_or_else(|e| panic!("cannot start another control plane: {e:#}"))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn bin_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::var_os("STRAIT_K8S_BIN").map(PathBuf::from).ok_or_else(|| {
        anyhow::anyhow!(
            "STRAIT_K8S_BIN is not set: run `make deps-k8s` (or `make test`), or point it at a \
             folder with etcd, kube-apiserver and kube-controller-manager; STRAIT_SKIP_K8S=1 skips these tests"
        )
    })?;
    for bin in ["etcd", "kube-apiserver", "kube-controller-manager"] {
        anyhow::ensure!(
            dir.join(bin).is_file(),
            "{} has no {bin}: run `make deps-k8s` (STRAIT_SKIP_K8S=1 skips these tests)",
            dir.display()
        );
    }
    Ok(dir)
}

/// Starts `program` under a watchdog that kills it once this process is
/// gone, or when the watchdog itself is sent SIGTERM.
fn spawn(dir: &Path, name: &str, program: &Path, args: &[String]) -> anyhow::Result<Child> {
    let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
    let script = r#"prog="$1"; shift; "$prog" "$@" & child=$!
trap 'kill -9 "$child" 2>/dev/null; wait "$child"; exit 0' TERM
while kill -0 "$WATCH_PID" 2>/dev/null && kill -0 "$child" 2>/dev/null; do sleep 1 & wait $!; done
kill -9 "$child" 2>/dev/null; wait "$child""#;
    Ok(Command::new("bash")
        .arg("-c")
        .arg(script)
        .arg("watchdog")
        .arg(program)
        .args(args)
        .env("WATCH_PID", std::process::id().to_string())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?)
}

/// Removes `dir` once this process is gone (and its watchdogs with it), in a
/// process group of its own so that a Ctrl-C of the test run spares it.
fn remove_after_exit(dir: &Path) -> anyhow::Result<()> {
    if keep_folders() {
        return Ok(());
    }
    let script = r#"while kill -0 "$WATCH_PID" 2>/dev/null; do sleep 1; done
sleep 2; rm -rf -- "$1""#;
    Command::new("bash")
        .arg("-c")
        .arg(script)
        .arg("janitor")
        .arg(dir)
        .env("WATCH_PID", std::process::id().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()?;
    Ok(())
}

fn wait_until(
    what: &str,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !ready() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{what} did not come up within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.stdout(Stdio::null()).stderr(Stdio::null()).status()?;
    anyhow::ensure!(status.success(), "{cmd:?} failed: {status}");
    Ok(())
}

/// Starts a control plane that runs until it is dropped or this process exits.
pub fn start(options: &Options) -> anyhow::Result<ControlPlane> {
    let bin = bin_dir()?;
    let dir = tempfile::Builder::new()
        .prefix("strait-k8s-")
        .tempdir()?
        .keep();
    remove_after_exit(&dir)?;
    let d = dir.as_path();
    let s = |p: &Path| p.to_string_lossy().into_owned();

    // Service-account signing keys and the admin token.
    run(Command::new("openssl")
        .args(["genrsa", "-out"])
        .arg(d.join("sa.key"))
        .arg("2048"))?;
    run(Command::new("openssl")
        .args(["rsa", "-pubout", "-in"])
        .arg(d.join("sa.key"))
        .arg("-out")
        .arg(d.join("sa.pub")))?;
    let token = format!("strait-test-{}", std::process::id());
    let operator_token = format!("{token}-operator");
    std::fs::write(
        d.join("tokens.csv"),
        format!(
            "{token},admin,admin,system:masters\n\
             {operator_token},system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_ACCOUNT},operator,system:serviceaccounts\n"
        ),
    )?;

    let etcd_port = free_port()?;
    let etcd_peer = free_port()?;
    let mut watchdogs = Vec::with_capacity(3);
    watchdogs.push(spawn(
        d,
        "etcd",
        &bin.join("etcd"),
        &[
            "--data-dir".into(),
            s(&d.join("etcd")),
            "--listen-client-urls".into(),
            format!("http://127.0.0.1:{etcd_port}"),
            "--advertise-client-urls".into(),
            format!("http://127.0.0.1:{etcd_port}"),
            "--listen-peer-urls".into(),
            format!("http://127.0.0.1:{etcd_peer}"),
            "--initial-advertise-peer-urls".into(),
            format!("http://127.0.0.1:{etcd_peer}"),
            "--initial-cluster".into(),
            format!("default=http://127.0.0.1:{etcd_peer}"),
        ],
    )?);
    wait_until("etcd", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", etcd_port)).is_ok()
    })?;

    let api_port = free_port()?;
    watchdogs.push(spawn(
        d,
        "kube-apiserver",
        &bin.join("kube-apiserver"),
        &[
            format!("--etcd-servers=http://127.0.0.1:{etcd_port}"),
            format!("--secure-port={api_port}"),
            "--bind-address=127.0.0.1".into(),
            format!("--cert-dir={}", s(&d.join("certs"))),
            format!("--token-auth-file={}", s(&d.join("tokens.csv"))),
            "--authorization-mode=RBAC".into(),
            "--service-account-issuer=https://kubernetes.default.svc".into(),
            format!("--service-account-key-file={}", s(&d.join("sa.pub"))),
            format!(
                "--service-account-signing-key-file={}",
                s(&d.join("sa.key"))
            ),
            format!("--service-cluster-ip-range={}", options.service_cidr),
            "--insecure-port=0".into(),
            if options.service_account_admission {
                "--enable-admission-plugins=ServiceAccount".into()
            } else {
                "--disable-admission-plugins=ServiceAccount".into()
            },
        ],
    )?);

    // The API server's self-signed certificate (written at its start) is
    // the clients' trust anchor: no client skips verification.
    let ca = s(&d.join("certs/apiserver.crt"));
    let kubeconfig_for = |file: &str, user_token: &str| -> std::io::Result<PathBuf> {
        let path = d.join(file);
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: https://127.0.0.1:{api_port}\n    certificate-authority: {ca}\nusers:\n- name: user\n  user:\n    token: {user_token}\ncontexts:\n- name: test\n  context: {{cluster: test, user: user, namespace: default}}\ncurrent-context: test\n"
            ),
        )?;
        Ok(path)
    };
    let kubeconfig = kubeconfig_for("kubeconfig", &token)?;
    let operator_kubeconfig = kubeconfig_for("operator-kubeconfig", &operator_token)?;
    wait_until("kube-apiserver", Duration::from_secs(90), || {
        Command::new("curl")
            .args(["-skf", "-o", "/dev/null", "-H"])
            .arg(format!("Authorization: Bearer {token}"))
            .arg(format!("https://127.0.0.1:{api_port}/readyz"))
            .status()
            .is_ok_and(|s| s.success())
    })?;

    watchdogs.push(spawn(
        d,
        "kube-controller-manager",
        &bin.join("kube-controller-manager"),
        &[
            format!("--kubeconfig={}", s(&kubeconfig)),
            format!("--authentication-kubeconfig={}", s(&kubeconfig)),
            format!("--authorization-kubeconfig={}", s(&kubeconfig)),
            "--leader-elect=false".into(),
            format!(
                "--service-account-private-key-file={}",
                s(&d.join("sa.key"))
            ),
            format!("--root-ca-file={}", s(&d.join("certs/apiserver.crt"))),
            "--controllers=*,-nodeipam".into(),
            "--secure-port=0".into(),
            // No insecure port either (10252 by default): a second control
            // plane's manager could not bind it.
            "--port=0".into(),
        ],
    )?);

    Ok(ControlPlane {
        kubeconfig,
        api_port,
        service_cidr: options.service_cidr.clone(),
        operator_kubeconfig,
        dir,
        watchdogs,
    })
}

/// The `kubectl` built with the control plane (of the same version).
pub fn kubectl() -> anyhow::Result<PathBuf> {
    let path = bin_dir()?.join("kubectl");
    anyhow::ensure!(
        path.is_file(),
        "{} is missing: run `make deps-k8s`, which builds kubectl with the control plane",
        path.display()
    );
    Ok(path)
}
