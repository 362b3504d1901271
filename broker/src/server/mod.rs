//! The broker proper: accepts connections and ties codec, sessions, router,
//! store and metrics together.
//!
//! [`Server::start`] binds every listener and the admin endpoint and returns at
//! once; [`Server::shutdown`] stops accepting, tells v5 clients the server is
//! shutting down (0x8B), flushes the store and returns within a bounded time.

mod broker;
mod connection;
mod message;
mod persist;
mod registry;
mod retained;
mod sys;
mod target;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::shutdown::Trigger;
use tokio::task::JoinHandle;

pub use broker::Broker;
pub use message::{Message, Outgoing};

use crate::admin::{AdminSource, ApiAccess};
use crate::auth::password::AuthError;
use crate::cluster::Discover;
use crate::config::Config;
use crate::store::StoreError;
use crate::transport::{Listener, TransportError};

/// How long shutdown waits for connections to close before giving up on them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    ClusterSecret(#[from] crate::cluster::SecretError),
    #[error("cannot bind the link listener {addr}: {source}")]
    LinkBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot bind the cluster endpoint {addr}: {source}")]
    ClusterBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot read the admin token file {path}: {source}")]
    AdminToken {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot bind the admin endpoint {addr}: {source}")]
    AdminBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Reads the admin token, if one is configured.
fn api_access(config: &Config) -> Result<ApiAccess, ServerError> {
    let Some(path) = &config.admin.token_file else {
        return Ok(ApiAccess::LoopbackOnly);
    };
    let text = std::fs::read_to_string(path).map_err(|source| ServerError::AdminToken {
        path: path.clone(),
        source,
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(ServerError::AdminToken {
            path: path.clone(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "the file is empty"),
        });
    }
    Ok(ApiAccess::Token(token.into()))
}

/// A running broker node.
#[derive(Debug)]
pub struct Server {
    broker: Arc<Broker>,
    mqtt_addrs: Vec<SocketAddr>,
    admin_addr: SocketAddr,
    cluster_addr: Option<SocketAddr>,
    link_addr: Option<SocketAddr>,
    shutdown: Trigger,
    tasks: Vec<JoinHandle<()>>,
}

impl Server {
    /// Validates `config`, loads the store, binds every listener and starts serving.
    pub async fn start(config: Config) -> Result<Server, ServerError> {
        Self::start_with_discovery(config, None).await
    }

    /// [`Server::start`], with the cluster's peers found by `discover`
    /// instead of the configured static list and DNS name (tests use it to
    /// add and remove peers as a headless Service would).
    pub async fn start_with_discovery(
        config: Config,
        discover: Option<Arc<dyn Discover>>,
    ) -> Result<Server, ServerError> {
        config.validate()?;
        let (shutdown, shutdown_rx) = crate::shutdown::channel();
        let broker = Arc::new(Broker::new(config, shutdown_rx.clone())?);
        broker.restore_from_store()?;

        let mut listeners = Vec::new();
        for listener_config in &broker.config().listeners {
            listeners.push(Arc::new(Listener::bind(listener_config).await?));
        }
        let admin_bind = broker.config().admin.bind;
        let admin_listener = tokio::net::TcpListener::bind(admin_bind)
            .await
            .map_err(|source| ServerError::AdminBind {
                addr: admin_bind,
                source,
            })?;
        let admin_addr = admin_listener
            .local_addr()
            .map_err(|source| ServerError::AdminBind {
                addr: admin_bind,
                source,
            })?;

        let mut tasks = Vec::new();
        let cluster_addr = match (broker.config().cluster.bind, broker.shared_cluster()) {
            (Some(bind), Some(mesh)) => {
                let bind_error = |source| ServerError::ClusterBind { addr: bind, source };
                let listener = tokio::net::TcpListener::bind(bind)
                    .await
                    .map_err(bind_error)?;
                let addr = listener.local_addr().map_err(bind_error)?;
                let tls = match &broker.config().cluster.tls {
                    Some(tls) => Some(crate::cluster::PeerTls::load(tls).await?),
                    None => None,
                };
                tracing::info!(%addr, node = %broker.config().node.name, tls = tls.is_some(), "listening for cluster peers");
                tasks.extend(crate::cluster::spawn(
                    broker.clone(),
                    mesh,
                    listener,
                    discover,
                    tls,
                ));
                Some(addr)
            }
            _ => None,
        };
        let link_addr = match &broker.config().link_listener {
            Some(config) => {
                let bind_error = |source| ServerError::LinkBind {
                    addr: config.bind,
                    source,
                };
                let listener = tokio::net::TcpListener::bind(config.bind)
                    .await
                    .map_err(bind_error)?;
                let addr = listener.local_addr().map_err(bind_error)?;
                let tls = match &config.tls {
                    Some(tls) => Some(Arc::new(tokio_rustls::TlsAcceptor::from(
                        crate::transport::server_config(tls).await?,
                    ))),
                    None => None,
                };
                tracing::info!(%addr, cluster = %broker.config().node.cluster, tls = tls.is_some(), "listening for links from other clusters");
                tasks.extend(crate::link::spawn(
                    broker.clone(),
                    broker.links().clone(),
                    Some((listener, tls)),
                ));
                Some(addr)
            }
            None => {
                tasks.extend(crate::link::spawn(
                    broker.clone(),
                    broker.links().clone(),
                    None,
                ));
                None
            }
        };
        let mut mqtt_addrs = Vec::new();
        for (listener, listener_config) in
            listeners.into_iter().zip(broker.config().listeners.clone())
        {
            mqtt_addrs.push(listener.local_addr());
            tracing::info!(listener = %listener_config.name, addr = %listener.local_addr(), "listening for MQTT");
            tasks.push(tokio::spawn(connection::accept_loop(
                broker.clone(),
                listener,
                Arc::new(listener_config),
                shutdown_rx.clone(),
            )));
        }
        let admin_source: Arc<dyn AdminSource> = broker.clone();
        let access = api_access(broker.config())?;
        let mut admin_shutdown = shutdown_rx.clone();
        tasks.push(tokio::spawn(async move {
            let stop = async move { admin_shutdown.recv().await };
            if let Err(err) = crate::admin::serve(admin_listener, admin_source, access, stop).await
            {
                tracing::error!(error = %err, "admin endpoint failed");
            }
        }));
        tracing::info!(addr = %admin_addr, "admin endpoint (/healthz /readyz /metrics)");
        tasks.push(tokio::spawn(sys::publish_loop(
            broker.clone(),
            shutdown_rx.clone(),
        )));
        tasks.push(tokio::spawn(persist::flush_loop(
            broker.clone(),
            shutdown_rx,
        )));
        broker.set_ready();
        Ok(Server {
            broker,
            mqtt_addrs,
            admin_addr,
            cluster_addr,
            link_addr,
            shutdown,
            tasks,
        })
    }

    /// The bound address of each MQTT listener, in configuration order.
    pub fn mqtt_addrs(&self) -> &[SocketAddr] {
        &self.mqtt_addrs
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Where this node accepts cluster peers, when it is part of a cluster.
    pub fn cluster_addr(&self) -> Option<SocketAddr> {
        self.cluster_addr
    }

    /// Where this node accepts other clusters' links, when configured.
    pub fn link_addr(&self) -> Option<SocketAddr> {
        self.link_addr
    }

    /// The shared broker state (metrics, sessions), for tests and embedding.
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// Stops accepting, disconnects clients (v5: reason 0x8B), flushes the store.
    pub async fn shutdown(self) {
        tracing::info!("shutting down");
        self.shutdown.fire();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.broker.connections_closed())
            .await
            .is_err()
        {
            tracing::warn!(
                open = self.broker.metrics().connections_current(),
                "connections still open after the shutdown grace period"
            );
        }
        for task in self.tasks {
            if tokio::time::timeout(SHUTDOWN_GRACE, task).await.is_err() {
                tracing::warn!("a background task did not stop in time");
            }
        }
        self.broker.final_flush().await;
        tracing::info!("stopped");
    }
}
