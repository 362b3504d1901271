//! The byte stream under a peer connection: plain TCP, or mutual TLS when
//! the cluster is configured for it.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rustls::pki_types::ServerName;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::wire::{Frame, MAX_FRAME, MAX_HANDSHAKE_FRAME};
use crate::config::PeerTlsConfig;
use crate::peering::io;
use crate::transport::TransportError;

pub use crate::peering::{PeerError, PeerIo, Reader, Writer};

/// Mutual TLS for both directions of every peer connection.
#[derive(Clone)]
pub struct PeerTls {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
    server_name: ServerName<'static>,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl PeerTls {
    /// Loads the node's certificate and the cluster CA.
    pub async fn load(config: &PeerTlsConfig) -> Result<PeerTls, TransportError> {
        let (server, client) = crate::transport::peer_configs(config).await?;
        let server_name = ServerName::try_from(config.server_name.clone()).map_err(|e| {
            TransportError::TlsConfig(format!(
                "cluster.tls.serverName {:?}: {e}",
                config.server_name
            ))
        })?;
        Ok(PeerTls {
            acceptor: TlsAcceptor::from(server),
            connector: TlsConnector::from(client),
            server_name,
        })
    }
}

/// The dialling side of a connection, TLS-wrapped if configured.
pub(super) async fn dialled(
    tcp: TcpStream,
    tls: Option<&Arc<PeerTls>>,
) -> std::io::Result<(Reader, Writer)> {
    tcp.set_nodelay(true)?;
    let stream: Box<dyn PeerIo> = match tls {
        Some(tls) => Box::new(tls.connector.connect(tls.server_name.clone(), tcp).await?),
        None => Box::new(tcp),
    };
    Ok(tokio::io::split(stream))
}

/// The accepting side of a connection, TLS-wrapped if configured.
pub(super) async fn accepted(
    tcp: TcpStream,
    tls: Option<&Arc<PeerTls>>,
) -> std::io::Result<(Reader, Writer)> {
    tcp.set_nodelay(true)?;
    let stream: Box<dyn PeerIo> = match tls {
        Some(tls) => Box::new(tls.acceptor.accept(tcp).await?),
        None => Box::new(tcp),
    };
    Ok(tokio::io::split(stream))
}

/// Reads one frame of an established connection, waiting at most `deadline`.
pub(super) async fn read_frame(
    reader: &mut (impl AsyncReadExt + Unpin),
    buf: &mut BytesMut,
    deadline: Duration,
) -> Result<Frame, PeerError> {
    io::read_frame(reader, buf, deadline, MAX_FRAME).await
}

/// Reads one handshake frame: the other end is not authenticated yet, so
/// frames are small and little is reserved for them.
pub(super) async fn read_handshake_frame(
    reader: &mut (impl AsyncReadExt + Unpin),
    buf: &mut BytesMut,
    deadline: Duration,
) -> Result<Frame, PeerError> {
    io::read_frame(reader, buf, deadline, MAX_HANDSHAKE_FRAME).await
}
