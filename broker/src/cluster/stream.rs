//! The byte stream under a peer connection: plain TCP, or mutual TLS when
//! the cluster is configured for it.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures::FutureExt;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::wire::{self, Frame, MAX_FRAME, MAX_HANDSHAKE_FRAME, PROTOCOL_VERSION};
use crate::config::PeerTlsConfig;
use crate::transport::TransportError;

/// Anything a peer connection can run over.
pub trait PeerIo: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> PeerIo for T {}

pub(super) type Reader = ReadHalf<Box<dyn PeerIo>>;
pub(super) type Writer = WriteHalf<Box<dyn PeerIo>>;

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

/// Why a peer connection ended.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("the peer did not answer within the peer timeout")]
    Timeout,
    #[error("the peer closed the connection")]
    Closed,
    #[error(transparent)]
    Wire(#[from] wire::WireError),
    #[error("the peer refused us: {0}")]
    Refused(String),
    #[error("unexpected frame from the peer: {0}")]
    Unexpected(&'static str),
    #[error("the peer speaks protocol version {0}, this node {PROTOCOL_VERSION}")]
    Version(u16),
}

impl PeerError {
    /// A peer breaking the protocol (worth a warning), as opposed to the
    /// network's weather: timeouts, closed or reset connections.
    pub fn is_protocol_fault(&self) -> bool {
        matches!(
            self,
            PeerError::Wire(_) | PeerError::Unexpected(_) | PeerError::Version(_)
        )
    }
}

/// Reads one frame of an established connection, waiting at most `deadline`.
pub(super) async fn read_frame(
    reader: &mut (impl AsyncReadExt + Unpin),
    buf: &mut BytesMut,
    deadline: Duration,
) -> Result<Frame, PeerError> {
    read_limited(reader, buf, deadline, MAX_FRAME).await
}

/// Takes whatever has already arrived, without waiting; false when nothing had.
pub(super) fn read_available(
    reader: &mut (impl AsyncReadExt + Unpin),
    buf: &mut BytesMut,
) -> Result<bool, PeerError> {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(64 * 1024);
    }
    // A read that is not ready is dropped unpolled-again: tokio's reads are
    // cancel-safe, so nothing is lost.
    match reader.read_buf(buf).now_or_never() {
        None => Ok(false),
        Some(Ok(0)) => Err(PeerError::Closed),
        Some(Ok(_)) => Ok(true),
        Some(Err(err)) => Err(err.into()),
    }
}

/// Reads one handshake frame: the other end is not authenticated yet, so
/// frames are small and little is reserved for them.
pub(super) async fn read_handshake_frame(
    reader: &mut (impl AsyncReadExt + Unpin),
    buf: &mut BytesMut,
    deadline: Duration,
) -> Result<Frame, PeerError> {
    read_limited(reader, buf, deadline, MAX_HANDSHAKE_FRAME).await
}

async fn read_limited(
    reader: &mut (impl AsyncReadExt + Unpin),
    buf: &mut BytesMut,
    deadline: Duration,
    limit: usize,
) -> Result<Frame, PeerError> {
    loop {
        if let Some(frame) = wire::decode(buf, limit)? {
            return Ok(frame);
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(limit.min(64 * 1024));
        }
        let read = timeout(deadline, reader.read_buf(buf))
            .await
            .map_err(|_| PeerError::Timeout)??;
        if read == 0 {
            return Err(PeerError::Closed);
        }
    }
}
