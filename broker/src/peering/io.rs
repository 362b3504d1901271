//! Reading frames off a peer's byte stream, with a deadline and a size limit.

use std::time::Duration;

use bytes::BytesMut;
use futures::FutureExt;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadHalf, WriteHalf};
use tokio::time::timeout;

use super::frame::{self, FrameError};

/// Anything a peer connection can run over (TCP, TLS).
pub trait PeerIo: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> PeerIo for T {}

pub type Reader = ReadHalf<Box<dyn PeerIo>>;
pub type Writer = WriteHalf<Box<dyn PeerIo>>;

/// Why a peer connection ended.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("the peer did not answer within the timeout")]
    Timeout,
    #[error("the peer closed the connection")]
    Closed,
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("the peer refused us: {0}")]
    Refused(String),
    #[error("unexpected frame from the peer: {0}")]
    Unexpected(&'static str),
    #[error("the peer speaks protocol version {theirs}, this node {ours}")]
    Version { theirs: u16, ours: u16 },
    #[error("the peer failed authentication: {0}")]
    Unauthenticated(&'static str),
    /// This side's own secret is missing or unusable (a configuration
    /// problem here, not the peer's fault).
    #[error("this side's link secret: {0}")]
    Secret(String),
}

impl PeerError {
    /// A peer breaking the protocol (worth a warning), as opposed to the
    /// network's weather: timeouts, closed or reset connections.
    pub fn is_protocol_fault(&self) -> bool {
        matches!(
            self,
            PeerError::Frame(_)
                | PeerError::Unexpected(_)
                | PeerError::Version { .. }
                | PeerError::Unauthenticated(_)
        )
    }
}

/// Reads one frame, waiting at most `deadline` for each read, refusing
/// frames longer than `limit`.
pub async fn read_frame<T: DeserializeOwned>(
    reader: &mut (impl AsyncReadExt + Unpin),
    buf: &mut BytesMut,
    deadline: Duration,
    limit: usize,
) -> Result<T, PeerError> {
    loop {
        if let Some(frame) = frame::decode(buf, limit)? {
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

/// Takes whatever has already arrived, without waiting; false when nothing had.
pub fn read_available(
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
