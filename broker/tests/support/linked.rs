//! Single-node clusters on loopback joined by links: each link is dialled by
//! one side only (the other just accepts), as an edge behind NAT would dial
//! the cloud, and both directions flow over it.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use strait_broker::config::{Config, LinkConfig, LinkListenerConfig};
use strait_broker::link::{LinkSecret, LinkStatus};
use strait_broker::server::Server;

use super::cluster::eventually;
use super::free_port;

/// One link of a test topology: `dialer` dials `acceptor`.
#[derive(Debug, Clone)]
pub struct Edge {
    pub dialer: &'static str,
    pub acceptor: &'static str,
    /// Through this address instead of the acceptor's listener (a fault proxy).
    pub via: Option<SocketAddr>,
}

pub fn edge(dialer: &'static str, acceptor: &'static str) -> Edge {
    Edge {
        dialer,
        acceptor,
        via: None,
    }
}

/// Linked single-node clusters.
pub struct Linked {
    pub dir: tempfile::TempDir,
    pub configs: BTreeMap<String, Config>,
    pub servers: BTreeMap<String, Server>,
}

/// The secret of the link `dialer` → `acceptor`.
fn secret(dialer: &str, acceptor: &str) -> String {
    format!("link-secret-{dialer}-to-{acceptor}-0123456789")
}

impl Linked {
    /// The configurations of clusters joined by `edges`, every link letting
    /// everything through (`#` both ways); `adjust` may narrow them.
    pub fn configure(edges: &[Edge], adjust: impl Fn(&str, &mut LinkConfig)) -> Linked {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut configs: BTreeMap<String, Config> = BTreeMap::new();
        let mut listeners: BTreeMap<String, SocketAddr> = BTreeMap::new();
        let mut credentials: BTreeMap<String, String> = BTreeMap::new();
        let names = edges.iter().flat_map(|e| [e.dialer, e.acceptor]);
        for name in names {
            configs.entry(name.to_owned()).or_insert_with(|| {
                let mut config = Config::default();
                config.node.cluster = name.to_owned();
                config.node.name = format!("{name}-0");
                config.listeners[0].bind = "127.0.0.1:0".parse().expect("addr");
                config.admin.bind = "127.0.0.1:0".parse().expect("addr");
                config.sys.interval_secs = 0;
                config
            });
        }
        for e in edges {
            let listen = *listeners
                .entry(e.acceptor.to_owned())
                .or_insert_with(|| SocketAddr::from(([127, 0, 0, 1], free_port())));
            let secret = secret(e.dialer, e.acceptor);
            let secret_file = dir
                .path()
                .join(format!("{}-to-{}.secret", e.dialer, e.acceptor));
            std::fs::write(&secret_file, format!("{secret}\n")).expect("write secret");
            let hashed = LinkSecret::new(secret.as_bytes())
                .expect("long enough")
                .hash()
                .expect("hash");
            credentials
                .entry(e.acceptor.to_owned())
                .or_default()
                .push_str(&format!("{}:{}\n", e.dialer, hashed.encode()));
            let target = e.via.unwrap_or(listen);
            let mut dialling = link(e.acceptor);
            dialling.endpoints = vec![target.to_string()];
            dialling.secret_file = Some(secret_file);
            adjust(e.dialer, &mut dialling);
            configs
                .get_mut(e.dialer)
                .expect("dialer")
                .links
                .push(dialling);
            let mut accepting = link(e.dialer);
            adjust(e.acceptor, &mut accepting);
            configs
                .get_mut(e.acceptor)
                .expect("acceptor")
                .links
                .push(accepting);
        }
        for (name, listen) in listeners {
            let file = dir.path().join(format!("{name}.credentials"));
            std::fs::write(&file, &credentials[&name]).expect("write credentials");
            configs.get_mut(&name).expect("acceptor").link_listener = Some(LinkListenerConfig {
                bind: listen,
                credentials_file: file,
                tls: None,
            });
        }
        Linked {
            dir,
            configs,
            servers: BTreeMap::new(),
        }
    }

    /// Where `cluster` accepts links.
    pub fn link_listener(&self, cluster: &str) -> SocketAddr {
        self.configs[cluster]
            .link_listener
            .as_ref()
            .expect("a link listener")
            .bind
    }

    /// Puts a fault proxy between `dialer` and `acceptor`'s link listener:
    /// the dialler's endpoint becomes the proxy.
    pub async fn through_proxy(
        &mut self,
        dialer: &str,
        acceptor: &str,
    ) -> super::proxy::FaultProxy {
        let proxy = super::proxy::FaultProxy::start(self.link_listener(acceptor)).await;
        let link = self
            .configs
            .get_mut(dialer)
            .expect("dialer")
            .links
            .iter_mut()
            .find(|l| l.name == acceptor);
        link.expect("the dialler's link").endpoints = vec![proxy.addr().to_string()];
        proxy
    }

    /// Starts every cluster and waits until every link is connected.
    pub async fn start(self) -> Linked {
        let linked = self.launch().await;
        linked.wait_connected().await;
        linked
    }

    /// Starts every cluster.
    pub async fn launch(mut self) -> Linked {
        for (name, config) in &self.configs {
            let server = Server::start(config.clone()).await.expect("cluster starts");
            self.servers.insert(name.clone(), server);
        }
        self
    }

    pub async fn wait_connected(&self) {
        for (name, server) in &self.servers {
            for link in &self.configs[name].links {
                let links = server.broker().links().clone();
                eventually(
                    &format!("{name}'s link to {} to connect", link.name),
                    || links.get(&link.name).is_some_and(|l| l.is_connected()),
                )
                .await;
            }
        }
    }

    pub fn server(&self, name: &str) -> &Server {
        &self.servers[name]
    }

    pub fn mqtt(&self, name: &str) -> SocketAddr {
        self.servers[name].mqtt_addrs()[0]
    }

    /// What `cluster` shows of its link to `remote`.
    pub fn status(&self, cluster: &str, remote: &str) -> LinkStatus {
        self.servers[cluster]
            .broker()
            .links()
            .status()
            .into_iter()
            .find(|s| s.name == remote)
            .expect("the link exists")
    }

    /// Waits until `cluster` has learned `routes` advertisements from `remote`.
    pub async fn wait_routes(&self, cluster: &str, remote: &str, routes: usize) {
        let links = self.servers[cluster].broker().links().clone();
        eventually(
            &format!("{cluster} to learn {routes} routes from {remote}"),
            || {
                links
                    .status()
                    .iter()
                    .any(|s| s.name == remote && s.routes_received == routes)
            },
        )
        .await;
    }

    /// A subscriber to `filter` in `cluster`, once `remote` has learned its
    /// interest (the first one it learns from `cluster`).
    pub async fn subscriber(&self, cluster: &str, filter: &str, remote: &str) -> super::v4::Client {
        let mut client = super::v4::connect(super::v4::options(
            self.mqtt(cluster),
            &format!("{cluster}-sub"),
        ))
        .await;
        client.subscribe(filter, super::v4::QoS::AtLeastOnce).await;
        self.wait_routes(remote, cluster, 1).await;
        client
    }

    /// Cuts `proxy` and waits until `cluster` sees its link to `remote` down.
    pub async fn cut(&self, proxy: &super::proxy::FaultProxy, cluster: &str, remote: &str) {
        proxy.cut().await;
        let links = self.servers[cluster].broker().links().clone();
        eventually(&format!("{cluster} to see the cut"), || {
            !links.get(remote).expect("link").is_connected()
        })
        .await;
    }

    /// Publishes `numbers` on `topic` in `cluster`, each acknowledged (QoS 1),
    /// and returns the publisher.
    pub async fn publish_numbers(
        &self,
        cluster: &str,
        topic: &str,
        numbers: std::ops::Range<u32>,
    ) -> super::v4::Client {
        let mut publisher = super::v4::connect(super::v4::options(
            self.mqtt(cluster),
            &format!("{cluster}-pub"),
        ))
        .await;
        for i in numbers {
            publisher
                .publish_acked(topic, false, &i.to_be_bytes())
                .await;
        }
        publisher
    }

    pub async fn shutdown(self) {
        for (_, server) in self.servers {
            server.shutdown().await;
        }
    }
}

/// A link to `name` letting everything through, accepting only.
pub fn link(name: &str) -> LinkConfig {
    let mut config: LinkConfig = serde_yaml::from_str(&format!("{{name: {name}}}")).expect("parse");
    config.export = vec!["#".into()];
    config.import = vec!["#".into()];
    config
}

/// The number a stream message carries (4 bytes, big-endian).
pub async fn next_number(client: &mut super::v4::Client) -> u32 {
    let payload = client.publish_received().await.payload;
    u32::from_be_bytes(payload[..4].try_into().expect("4 bytes"))
}
