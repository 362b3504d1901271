//! The container images `make images` builds (in `STRAIT_IMAGES_DIR`), run
//! as a container runtime runs them: unpacked by umoci, as the image's user
//! with its entrypoint, on a read-only root with the pod's volumes mounted
//! over it, and nothing of this machine's files but what a kubelet mounts.
//! The broker serves MQTT and persists to its data volume; the operator
//! prints its CRDs and reconciles a cluster on a real API server.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use strait_e2e::control_plane::{self, Options};
use strait_e2e::wait::eventually;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};

/// The user the images run as: unprivileged, as the pods' securityContext says.
const NONROOT: &str = "65532:65532";
const VERSION: &str = env!("CARGO_PKG_VERSION");
const WAIT: Duration = Duration::from_secs(60);

/// An image unpacked into a runtime bundle.
struct Unpacked {
    _dir: tempfile::TempDir,
    root: PathBuf,
    /// `uid:gid` of the image's configured user.
    user: String,
    /// The entrypoint and its default arguments.
    args: Vec<String>,
}

fn unpack(name: &str) -> Unpacked {
    let images = std::env::var_os("STRAIT_IMAGES_DIR")
        .map(PathBuf::from)
        .expect("STRAIT_IMAGES_DIR names the images `make images` built (make e2e sets it)");
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = dir.path().join("bundle");
    let image = format!("{}:{VERSION}", images.join(name).display());
    let status = std::process::Command::new("umoci")
        .args(["unpack", "--image", &image])
        .arg(&bundle)
        .stdout(Stdio::null())
        .status()
        .expect("umoci (make images installs it)");
    assert!(status.success(), "umoci unpack {image}");
    // umoci turns the image's configuration into the runtime's.
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).expect("config.json"))
            .expect("runtime config");
    let process = &config["process"];
    Unpacked {
        root: bundle.join("rootfs"),
        user: format!("{}:{}", process["user"]["uid"], process["user"]["gid"]),
        args: serde_json::from_value(process["args"].clone()).expect("args"),
        _dir: dir,
    }
}

/// A bind mount of `source` at `target` in the container.
struct Mount<'a> {
    source: &'a Path,
    target: &'a str,
    read_only: bool,
}

/// Starts `args` in `image`'s root as its user, in a mount namespace of its
/// own: a tmpfs at /tmp, /proc and the basic devices (as any container
/// runtime gives), `mounts` bound over the root, then the root made
/// read-only, and an environment of `env` alone. Its output goes to `stdout`.
fn run(
    image: &Unpacked,
    mounts: &[Mount<'_>],
    env: &[(&str, &str)],
    args: &[&str],
    stdout: Stdio,
) -> Child {
    let script = r#"set -e
root=$1; shift
mount --bind "$root" "$root"
mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
# What every container runtime gives a container: /proc and the basic devices.
mkdir -p "$root/proc" "$root/dev"
mount -t proc proc "$root/proc"
mount -t tmpfs -o mode=755 tmpfs "$root/dev"
for dev in null zero random urandom; do
  touch "$root/dev/$dev"; mount --bind "/dev/$dev" "$root/dev/$dev"
done
while IFS='|' read -r source target mode; do
  [ -n "$source" ] || continue
  if [ -d "$source" ]; then mkdir -p "$root$target"
  else mkdir -p "$(dirname "$root$target")"; touch "$root$target"; fi
  mount --bind "$source" "$root$target"
  [ "$mode" = rw ] || mount -o remount,bind,ro "$root$target"
done <<EOF
$MOUNTS
EOF
mount -o remount,bind,ro "$root"
exec "$@""#;
    let mounts: String = mounts
        .iter()
        .map(|m| {
            let mode = if m.read_only { "ro" } else { "rw" };
            format!("{}|{}|{mode}\n", m.source.display(), m.target)
        })
        .collect();
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        script,
    ])
    .arg("run-image")
    .arg(&image.root)
    .arg("/usr/bin/env")
    .arg("-i")
    .args(env.iter().map(|(k, v)| format!("{k}={v}")))
    .arg("/usr/sbin/chroot")
    .arg(format!("--userspec={}", image.user))
    .arg(&image.root)
    .args(&image.args)
    .args(args)
    .env("MOUNTS", mounts)
    .stdout(stdout)
    .stderr(Stdio::inherit())
    .kill_on_drop(true);
    cmd.spawn().expect("unshare")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `kubectl create -f -` of `manifest`; panics if it fails.
async fn kubectl_create(kubectl: &Path, kubeconfig: &Path, manifest: &[u8]) {
    let mut create = Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["create", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("kubectl");
    let mut stdin = create.stdin.take().expect("stdin");
    stdin.write_all(manifest).await.expect("write the manifest");
    drop(stdin);
    assert!(
        create.wait().await.expect("kubectl").success(),
        "kubectl create"
    );
}

async fn http_ok(url: &str) -> bool {
    Command::new("curl")
        .args(["-sf", "-o", "/dev/null", url])
        .status()
        .await
        .is_ok_and(|s| s.success())
}

#[tokio::test]
async fn the_broker_image_serves_mqtt_and_persists_on_a_read_only_root_as_nonroot() {
    let image = unpack("broker");
    assert_eq!(image.user, NONROOT);
    assert_eq!(image.args, ["/usr/local/bin/strait-broker"]);

    // The volumes the StatefulSet mounts: the configuration (read-only) and
    // the data directory (writable by the pod's fsGroup).
    let volumes = tempfile::tempdir().expect("tempdir");
    let config = volumes.path().join("config");
    let data = volumes.path().join("data");
    std::fs::create_dir_all(&config).expect("config dir");
    std::fs::create_dir_all(&data).expect("data dir");
    std::os::unix::fs::chown(&data, Some(65532), Some(65532)).expect("chown data");
    let (mqtt, admin) = (free_port(), free_port());
    std::fs::write(
        config.join("strait.yaml"),
        format!(
            "node: {{cluster: image, name: node-0}}\n\
             listeners: [{{bind: \"127.0.0.1:{mqtt}\"}}]\n\
             admin: {{bind: \"127.0.0.1:{admin}\"}}\n\
             auth: {{allowAnonymous: true}}\n\
             persistence: {{dataDir: /var/lib/strait, flushIntervalMs: 100}}\n"
        ),
    )
    .expect("config");
    let mounts = [
        Mount {
            source: &config,
            target: "/etc/strait/config",
            read_only: true,
        },
        Mount {
            source: &data,
            target: "/var/lib/strait",
            read_only: false,
        },
    ];
    let mut broker = run(
        &image,
        &mounts,
        &[("RUST_LOG", "info")],
        &["--config", "/etc/strait/config/strait.yaml"],
        Stdio::inherit(),
    );
    let ready = format!("http://127.0.0.1:{admin}/readyz");
    eventually(WAIT, "the broker from the image is ready", || {
        http_ok(&ready)
    })
    .await;

    let port = mqtt.to_string();
    let topic = ["-h", "127.0.0.1", "-p", &port, "-t", "image/check"];
    let retained = Command::new("mosquitto_pub")
        .args(topic)
        .args(["-m", "from-the-image", "-q", "1", "-r"])
        .status()
        .await
        .expect("mosquitto_pub");
    assert!(retained.success());
    let received = Command::new("mosquitto_sub")
        .args(topic)
        .args(["-C", "1", "-W", "10"])
        .output()
        .await
        .expect("mosquitto_sub");
    assert_eq!(
        String::from_utf8_lossy(&received.stdout).trim(),
        "from-the-image"
    );

    // The retained message reached the data volume, written as the image's user.
    eventually(WAIT, "the store is written to the data volume", || async {
        std::fs::read_dir(&data).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.metadata().is_ok_and(|m| m.uid() == 65532 && m.len() > 0))
        })
    })
    .await;
    broker.kill().await.expect("stop the broker");
}

#[tokio::test]
async fn the_operator_image_prints_its_crds_and_reconciles_on_a_real_api_server() {
    let image = unpack("operator");
    assert_eq!(image.user, NONROOT);
    assert_eq!(image.args, ["/usr/local/bin/strait-operator"]);
    if control_plane::skipped() {
        eprintln!("STRAIT_SKIP_K8S=1: skipping the operator image's run");
        return;
    }
    let plane = control_plane::start(&Options::default()).expect("control plane");
    let kubectl = control_plane::kubectl().expect("kubectl");

    // The CRDs, as the image prints them, are what the API server serves.
    let crds = run(&image, &[], &[], &["crd"], Stdio::piped())
        .wait_with_output()
        .await
        .expect("strait-operator crd");
    assert!(crds.status.success());
    kubectl_create(&kubectl, &plane.kubeconfig, &crds.stdout).await;
    eventually(WAIT, "the CRDs are served", || async {
        Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(&plane.kubeconfig)
            .args(["get", "mqc"])
            .output()
            .await
            .is_ok_and(|o| o.status.success())
    })
    .await;

    // The operator from the image, with the kubeconfig (and the API server's
    // certificate it names) mounted where a pod would have its account's.
    let http = free_port();
    let http_bind = format!("127.0.0.1:{http}");
    let kubeconfig = plane.kubeconfig.to_string_lossy().into_owned();
    let plane_dir = plane.dir.to_string_lossy().into_owned();
    let mut operator = run(
        &image,
        &[Mount {
            source: &plane.dir,
            target: &plane_dir,
            read_only: true,
        }],
        &[("KUBECONFIG", &kubeconfig), ("RUST_LOG", "info")],
        &[
            "run",
            "--no-leader-election",
            "--namespace",
            "default",
            "--http-bind",
            &http_bind,
        ],
        Stdio::inherit(),
    );
    let ready = format!("http://{http_bind}/readyz");
    eventually(WAIT, "the operator from the image is ready", || {
        http_ok(&ready)
    })
    .await;
    let cluster = b"apiVersion: strait.dev/v1alpha1\nkind: MqttCluster\nmetadata: {name: from-image, namespace: default}\nspec: {replicas: 1}\n";
    kubectl_create(&kubectl, &plane.kubeconfig, cluster).await;

    // Its StatefulSet runs the broker image of the same version by default.
    let expected = format!("ghcr.io/strait/broker:{VERSION}");
    eventually(WAIT, "the operator applies the StatefulSet", || async {
        Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(&plane.kubeconfig)
            .args(["get", "sts", "from-image", "-o"])
            .arg("jsonpath={.spec.template.spec.containers[0].image}")
            .output()
            .await
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout) == expected)
    })
    .await;
    operator.kill().await.expect("stop the operator");
}
