//! Listeners: plain TCP, TLS (rustls) and WebSocket, all yielding one byte-stream
//! type so the connection code does not care which one a client came in on.
//!
//! Accepting and handshaking are separate steps: the accept loop only takes TCP
//! connections, and each connection's TLS/WebSocket handshake runs in that
//! connection's own task under a deadline, so a slow or silent client holds up
//! nobody but itself.

mod tls;
pub(crate) use tls::{link_client_config, peer_configs, server_config};
mod websocket;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::config::{ListenerConfig, ListenerProtocol};

/// A client byte stream, whatever the transport.
pub trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> ClientStream for T {}

/// A stream after its TLS or WebSocket handshake.
pub struct Accepted {
    pub stream: Box<dyn ClientStream>,
    /// Common name of a verified client certificate, when the listener asks for one.
    pub cert_common_name: Option<String>,
}

impl std::fmt::Debug for Accepted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accepted")
            .field("cert_common_name", &self.cert_common_name)
            .finish_non_exhaustive()
    }
}

/// Why a listener could not start or a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS configuration: {0}")]
    TlsConfig(String),
    #[error("handshake failed: {0}")]
    Handshake(String),
}

/// The longest a client may take over its TLS and WebSocket handshakes.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A bound listener of one of the configured kinds.
pub struct Listener {
    name: String,
    tcp: TcpListener,
    local_addr: SocketAddr,
    tls: Option<TlsSettings>,
    /// The upgrade path, for WebSocket listeners only.
    websocket_path: Option<String>,
}

/// What a TLS listener needs per handshake.
struct TlsSettings {
    acceptor: TlsAcceptor,
    cert_cn_as_username: bool,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("name", &self.name)
            .field("local_addr", &self.local_addr)
            .field("tls", &self.tls.is_some())
            .field("websocket_path", &self.websocket_path)
            .finish()
    }
}

impl Listener {
    /// Binds the socket and loads TLS material, failing early on bad config.
    pub async fn bind(config: &ListenerConfig) -> Result<Listener, TransportError> {
        // TLS first: a bad certificate should fail before the port is taken.
        let tls = match &config.tls {
            Some(tls) => Some(TlsSettings {
                acceptor: TlsAcceptor::from(tls::server_config(tls).await?),
                cert_cn_as_username: tls.use_cert_cn_as_username,
            }),
            None => None,
        };
        let tcp = TcpListener::bind(config.bind)
            .await
            .map_err(|source| TransportError::Bind {
                addr: config.bind,
                source,
            })?;
        let local_addr = tcp.local_addr().map_err(|source| TransportError::Bind {
            addr: config.bind,
            source,
        })?;
        let websocket_path =
            (config.protocol == ListenerProtocol::Websocket).then(|| config.path.clone());
        Ok(Listener {
            name: config.name.clone(),
            tcp,
            local_addr,
            tls,
            websocket_path,
        })
    }

    /// The bound address (with the real port when the configuration asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Accepts the next TCP connection (no handshake yet, so a slow client
    /// cannot hold up the accept loop).
    pub async fn accept(&self) -> std::io::Result<(TcpStream, SocketAddr)> {
        let (stream, peer) = self.tcp.accept().await?;
        // MQTT packets are small and latency matters more than packing them.
        // Failing to set it (the peer may already be gone) is no reason to
        // fail the accept: the connection works either way.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(listener = %self.name, %peer, "cannot set TCP_NODELAY: {e}");
        }
        Ok((stream, peer))
    }

    /// Runs the TLS and/or WebSocket handshake this listener needs, within
    /// `HANDSHAKE_TIMEOUT`.
    pub async fn handshake(&self, tcp: TcpStream) -> Result<Accepted, TransportError> {
        self.handshake_within(HANDSHAKE_TIMEOUT, tcp).await
    }

    async fn handshake_within(
        &self,
        limit: Duration,
        tcp: TcpStream,
    ) -> Result<Accepted, TransportError> {
        tokio::time::timeout(limit, self.handshake_untimed(tcp))
            .await
            .map_err(|_| {
                TransportError::Handshake(format!(
                    "listener {:?}: no handshake within {:?}",
                    self.name, limit
                ))
            })?
    }

    async fn handshake_untimed(&self, tcp: TcpStream) -> Result<Accepted, TransportError> {
        let Some(tls) = &self.tls else {
            let stream = self.maybe_websocket(tcp).await?;
            return Ok(Accepted {
                stream,
                cert_common_name: None,
            });
        };
        let stream = tls.acceptor.accept(tcp).await.map_err(|e| {
            TransportError::Handshake(format!("listener {:?}: TLS: {e}", self.name))
        })?;
        let cert_common_name = if tls.cert_cn_as_username {
            let (_, session) = stream.get_ref();
            session
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(tls::common_name)
        } else {
            None
        };
        let stream = self.maybe_websocket(stream).await?;
        Ok(Accepted {
            stream,
            cert_common_name,
        })
    }

    /// Upgrades `stream` to WebSocket on WebSocket listeners; passes it through otherwise.
    async fn maybe_websocket<S: ClientStream>(
        &self,
        stream: S,
    ) -> Result<Box<dyn ClientStream>, TransportError> {
        match &self.websocket_path {
            Some(path) => {
                let ws = websocket::upgrade(stream, path).await.map_err(|e| {
                    TransportError::Handshake(format!(
                        "listener {:?}: WebSocket upgrade: {e}",
                        self.name
                    ))
                })?;
                Ok(Box::new(ws))
            }
            None => Ok(Box::new(stream)),
        }
    }
}

#[cfg(test)]
mod tests;
