//! Cluster DNS for the pods: Debian's dnsmasq on the node's gateway address,
//! answering for `cluster.local` from a hosts file written from Services and
//! Endpoints, as CoreDNS's kubernetes plugin answers:
//!
//! - `<service>.<namespace>.svc.cluster.local`: the Service's cluster IP, or
//!   for a headless Service the addresses of its endpoints;
//! - `<hostname>.<service>.<namespace>.svc.cluster.local`: one endpoint of a
//!   headless Service, the per-pod names of a StatefulSet.
//!
//! Nothing else is answered and nothing is forwarded.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::Context;
use k8s_openapi::api::core::v1::{Endpoints, Service};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::ResourceExt;
use tokio::process::{Child, Command};

/// The running DNS server.
#[derive(Debug)]
pub struct Dns {
    child: Child,
    dir: PathBuf,
    address: Ipv4Addr,
}

impl Dns {
    /// Starts dnsmasq on `address`:53, its files and log in `dir`.
    pub async fn start(address: Ipv4Addr, dir: &Path) -> anyhow::Result<Dns> {
        std::fs::create_dir_all(dir.join("hosts.d"))?;
        Ok(Dns {
            child: spawn(address, dir)?,
            dir: dir.to_owned(),
            address,
        })
    }

    /// Writes the records of every Service. dnsmasq reads a changed file of
    /// its hosts folder by itself (inotify), without a signal that could
    /// arrive before it is ready for one.
    pub async fn update(&mut self, services: &Store<Service>, endpoints: &Store<Endpoints>) {
        if let Ok(Some(status)) = self.child.try_wait() {
            tracing::warn!(%status, "dnsmasq exited; starting it again");
            match spawn(self.address, &self.dir) {
                Ok(child) => self.child = child,
                Err(error) => tracing::warn!(%error, "restarting dnsmasq"),
            }
        }
        let text = records(services, endpoints);
        let path = self.dir.join("hosts.d").join("cluster");
        if std::fs::read_to_string(&path).is_ok_and(|old| old == text) {
            return;
        }
        let temp = self.dir.join("cluster.tmp");
        if let Err(error) =
            std::fs::write(&temp, &text).and_then(|()| std::fs::rename(&temp, &path))
        {
            tracing::warn!(%error, "writing the DNS records");
        }
    }

    /// Stops dnsmasq.
    pub async fn stop(&mut self) {
        let _ = self.child.kill().await;
    }
}

fn spawn(address: Ipv4Addr, dir: &Path) -> anyhow::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("dnsmasq.log"))?;
    Command::new("dnsmasq")
        .arg("--keep-in-foreground")
        .arg("--conf-file=/dev/null")
        .arg("--no-resolv")
        .arg("--no-hosts")
        .arg("--bind-interfaces")
        .arg(format!("--listen-address={address}"))
        .arg("--local=/cluster.local/")
        .arg("--local-ttl=1")
        .arg("--user=root")
        .arg(format!("--hostsdir={}", dir.join("hosts.d").display()))
        .arg(format!("--pid-file={}", dir.join("dnsmasq.pid").display()))
        .arg("--log-facility=-")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("start dnsmasq (Debian's dnsmasq-base)")
}

/// The hosts file: one `address name` line per record, sorted.
fn records(services: &Store<Service>, endpoints: &Store<Endpoints>) -> String {
    let mut lines = BTreeSet::new();
    for service in services.state() {
        let ns = service.namespace().unwrap_or_default();
        let name = format!("{}.{ns}.svc.cluster.local", service.name_any());
        let spec = service.spec.clone().unwrap_or_default();
        let headless = spec.cluster_ip.as_deref() == Some("None");
        if let Some(ip) = spec.cluster_ip.as_deref().filter(|_| !headless) {
            lines.insert(format!("{ip} {name}"));
            continue;
        }
        let Some(eps) = endpoints.get(&ObjectRef::new(&service.name_any()).within(&ns)) else {
            continue;
        };
        for subset in eps.subsets.iter().flatten() {
            let all = subset.addresses.iter().flatten().chain(
                subset
                    .not_ready_addresses
                    .iter()
                    .flatten()
                    .filter(|_| spec.publish_not_ready_addresses == Some(true)),
            );
            for address in all {
                lines.insert(format!("{} {name}", address.ip));
                if let Some(host) = &address.hostname {
                    lines.insert(format!("{} {host}.{name}", address.ip));
                }
            }
        }
    }
    lines.into_iter().map(|l| l + "\n").collect()
}
