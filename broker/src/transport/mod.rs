//! Listeners: plain TCP, TLS (rustls) and WebSocket, all yielding one byte-stream
//! type so the connection code does not care which one a client came in on.

use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::config::ListenerConfig;

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

/// A bound listener of one of the configured kinds.
#[derive(Debug)]
pub struct Listener {}

impl Listener {
    /// Binds the socket and loads TLS material, failing early on bad config.
    pub async fn bind(config: &ListenerConfig) -> Result<Listener, TransportError> {
        let _ = config;
        todo!("transport")
    }

    pub fn local_addr(&self) -> SocketAddr {
        todo!("transport")
    }

    /// Accepts the next TCP connection (no handshake yet, so a slow client
    /// cannot hold up the accept loop).
    pub async fn accept(&self) -> std::io::Result<(TcpStream, SocketAddr)> {
        todo!("transport")
    }

    /// Runs the TLS and/or WebSocket handshake this listener needs.
    pub async fn handshake(&self, tcp: TcpStream) -> Result<Accepted, TransportError> {
        let _ = tcp;
        todo!("transport")
    }
}
