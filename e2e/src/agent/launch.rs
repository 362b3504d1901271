//! Starts a pod's container as a process, as a container runtime would: in
//! the pod's network namespace, with a hostname and mounts of its own, in a
//! root of its own (the host's `/usr` read-only, a private `/etc` with the
//! pod's DNS settings, the volumes at the paths the pod spec names), as the
//! user the security context names, with the container's args and env as
//! rendered.
//!
//! The steps are a short shell script run by `ip netns exec`, which already
//! gives the process a mount namespace of its own; each step `exec`s the
//! next, so the process the agent holds is the container's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::Context;
use tokio::process::{Child, Command};

/// What to run for one container.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The pod's network namespace.
    pub netns: String,
    /// The pod's hostname (its name).
    pub hostname: String,
    /// The binary that is the image's entrypoint.
    pub entrypoint: PathBuf,
    /// The container's command after the entrypoint (its `args`).
    pub args: Vec<String>,
    /// The container's environment.
    pub env: BTreeMap<String, String>,
    /// User and group the process runs as.
    pub uid: u32,
    /// Primary group.
    pub gid: u32,
    /// Supplementary group (the pod's `fsGroup`).
    pub fs_group: Option<u32>,
    /// `(host folder, path in the container, read-only)` for each volume mount.
    pub mounts: Vec<(PathBuf, String, bool)>,
    /// The pod's `/etc` files: `hosts`, `resolv.conf`, `passwd`, ...
    pub etc: BTreeMap<String, String>,
}

/// Quotes `s` for the shell.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl Launch {
    /// The launcher script for a pod whose folder is `pod_dir`.
    fn script(&self, pod_dir: &Path) -> String {
        let root = pod_dir.join("root");
        let etc = pod_dir.join("etc");
        let mut s = String::from("set -eu\n");
        let q = |p: &Path| quote(&p.to_string_lossy());
        s += &format!("root={}\n", q(&root));
        // The root is a tmpfs of this mount namespace: mount points made in
        // it never touch the host's disk, and it goes with the process.
        s += "mkdir -p \"$root\"\nmount -t tmpfs -o mode=755 strait-root \"$root\"\n";
        s += "mkdir -p \"$root/usr\" \"$root/dev\" \"$root/proc\" \"$root/etc\" \"$root/strait\"\n";
        s += "mount --rbind /usr \"$root/usr\"\nmount -o remount,bind,ro \"$root/usr\"\n";
        for dir in ["bin", "sbin", "lib", "lib64"] {
            s += &format!("ln -s usr/{dir} \"$root/{dir}\"\n");
        }
        s += "mount --rbind /dev \"$root/dev\"\nmount -t proc proc \"$root/proc\"\n";
        s += &format!("cp -a {}/. \"$root/etc/\"\n", q(&etc));
        s += "touch \"$root/strait/entrypoint\"\n";
        s += &format!(
            "mount --bind {} \"$root/strait/entrypoint\"\n",
            q(&self.entrypoint)
        );
        for (source, path, read_only) in &self.mounts {
            let target = format!("\"$root\"{}", quote(path));
            s += &format!("mkdir -p {target}\nmount --bind {} {target}\n", q(source));
            if *read_only {
                s += &format!("mount -o remount,bind,ro {target}\n");
            }
        }
        s += &format!("hostname {}\n", quote(&self.hostname));
        let groups = self
            .fs_group
            .map(|g| format!(" --groups={g}"))
            .unwrap_or_default();
        s += &format!(
            "exec chroot --userspec={}:{}{groups} \"$root\" /strait/entrypoint",
            self.uid, self.gid
        );
        for arg in &self.args {
            s += " ";
            s += &quote(arg);
        }
        s += "\n";
        s
    }

    /// Writes the pod's `/etc` and launcher into `pod_dir` and starts the
    /// container, its output appended to `pod_dir/container.log`.
    pub fn spawn(&self, pod_dir: &Path) -> anyhow::Result<Child> {
        let etc = pod_dir.join("etc");
        std::fs::create_dir_all(&etc)?;
        for (name, content) in &self.etc {
            std::fs::write(etc.join(name), content)?;
        }
        let script = pod_dir.join("launch.sh");
        std::fs::write(&script, self.script(pod_dir))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(pod_dir.join("container.log"))?;
        Command::new("ip")
            .args(["netns", "exec", &self.netns, "unshare", "--uts", "--"])
            .arg("/bin/sh")
            .arg(&script)
            .env_clear()
            .envs(&self.env)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("start the container")
    }
}

/// Sends `signal` (`TERM`, `KILL`) to process `pid`.
pub async fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_mounts_volumes_and_runs_the_entrypoint_as_the_user() {
        let launch = Launch {
            netns: "strait0-abc".into(),
            hostname: "east-0".into(),
            entrypoint: "/bin/strait-broker".into(),
            args: vec!["--config".into(), "/etc/strait/config/it's.yaml".into()],
            env: BTreeMap::new(),
            uid: 65532,
            gid: 65532,
            fs_group: Some(65532),
            mounts: vec![("/v/config".into(), "/etc/strait/config".into(), true)],
            etc: BTreeMap::new(),
        };
        let script = launch.script(Path::new("/pods/p1"));
        assert!(script.contains("mount --bind '/v/config' \"$root\"'/etc/strait/config'"));
        assert!(script.contains("mount -o remount,bind,ro \"$root\"'/etc/strait/config'"));
        assert!(script.ends_with(
            "exec chroot --userspec=65532:65532 --groups=65532 \"$root\" /strait/entrypoint '--config' '/etc/strait/config/it'\\''s.yaml'\n"
        ));
    }
}
