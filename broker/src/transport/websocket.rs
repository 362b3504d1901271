//! MQTT over WebSocket: the HTTP upgrade (path and `mqtt` subprotocol checks)
//! and an adapter that turns binary WebSocket messages back into a byte stream.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use futures::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::handshake::server::{
    Callback, ErrorResponse, Request, Response,
};
use tokio_tungstenite::tungstenite::http::{header, HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

/// The WebSocket subprotocol MQTT clients must offer and servers must select.
const SUBPROTOCOL: &str = "mqtt";

/// Buffered output is sent as a message once it reaches this size, even before a
/// flush, so a writer that never flushes cannot grow the buffer without bound.
const MAX_MESSAGE: usize = 64 * 1024;

/// Runs the HTTP upgrade on `stream`, accepting only requests for `path` that
/// offer the `mqtt` subprotocol, and returns the connection as a byte stream.
pub(super) async fn upgrade<S>(stream: S, path: &str) -> Result<WsStream<S>, WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let ws = tokio_tungstenite::accept_hdr_async(stream, UpgradeCheck { path }).await?;
    Ok(WsStream::new(ws))
}

/// Vets an upgrade request: it must target `path` and offer `mqtt`, which the
/// response then selects.
struct UpgradeCheck<'a> {
    path: &'a str,
}

impl Callback for UpgradeCheck<'_> {
    fn on_request(
        self,
        request: &Request,
        mut response: Response,
    ) -> Result<Response, ErrorResponse> {
        if request.uri().path() != self.path {
            return Err(refusal(StatusCode::NOT_FOUND, "unknown WebSocket path"));
        }
        let offers_mqtt = request
            .headers()
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|list| list.split(','))
            .any(|offered| offered.trim() == SUBPROTOCOL);
        if !offers_mqtt {
            return Err(refusal(
                StatusCode::BAD_REQUEST,
                "the WebSocket subprotocol `mqtt` is required",
            ));
        }
        response.headers_mut().insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(SUBPROTOCOL),
        );
        Ok(response)
    }
}

fn refusal(status: StatusCode, reason: &str) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(reason.to_owned()));
    *response.status_mut() = status;
    response
}

/// A WebSocket connection seen as a byte stream.
///
/// Reads concatenate the payloads of binary messages (an MQTT packet may span
/// messages, or a message hold several packets). Writes are buffered and sent
/// as one binary message per flush. Pings are answered by tungstenite; a close
/// frame reads as end of stream. A text message is a protocol error, as MQTT
/// over WebSocket allows only binary data frames.
pub struct WsStream<S> {
    inner: WebSocketStream<S>,
    /// The unread rest of the last binary message received.
    incoming: Bytes,
    /// Whether the peer closed (or the connection ended): reads return EOF.
    read_closed: bool,
    /// Written bytes not yet handed to the WebSocket as a message.
    outgoing: Vec<u8>,
}

impl<S> std::fmt::Debug for WsStream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsStream")
            .field("buffered_in", &self.incoming.len())
            .field("buffered_out", &self.outgoing.len())
            .field("read_closed", &self.read_closed)
            .finish_non_exhaustive()
    }
}

impl<S> WsStream<S> {
    fn new(inner: WebSocketStream<S>) -> Self {
        WsStream {
            inner,
            incoming: Bytes::new(),
            read_closed: false,
            outgoing: Vec::new(),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsStream<S> {
    /// Hands the buffered output to the WebSocket as one binary message.
    fn poll_send_buffered(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.outgoing.is_empty() {
            return Poll::Ready(Ok(()));
        }
        ready!(Pin::new(&mut self.inner).poll_ready(cx)).map_err(into_io)?;
        let message = Message::binary(std::mem::take(&mut self.outgoing));
        Pin::new(&mut self.inner)
            .start_send(message)
            .map_err(into_io)?;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.incoming.is_empty() {
                let n = this.incoming.len().min(buf.remaining());
                buf.put_slice(&this.incoming[..n]);
                this.incoming.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.read_closed {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut this.inner).poll_next(cx)) {
                Some(Ok(Message::Binary(payload))) => this.incoming = payload,
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(_))) | None => this.read_closed = true,
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "text WebSocket message on an MQTT connection",
                    )))
                }
                Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => {
                    this.read_closed = true
                }
                Some(Err(e)) => return Poll::Ready(Err(into_io(e))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.outgoing.len() >= MAX_MESSAGE {
            ready!(this.poll_send_buffered(cx))?;
        }
        let n = buf.len().min(MAX_MESSAGE - this.outgoing.len());
        this.outgoing.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_buffered(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx).map_err(into_io)
    }

    /// Sends what is buffered, then a close frame.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_buffered(cx))?;
        match ready!(Pin::new(&mut this.inner).poll_close(cx)) {
            Ok(()) | Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(into_io(e))),
        }
    }
}

/// Keeps I/O errors as they are, so callers see resets and broken pipes as such.
fn into_io(error: WsError) -> io::Error {
    match error {
        WsError::Io(e) => e,
        WsError::ConnectionClosed | WsError::AlreadyClosed => {
            io::Error::new(io::ErrorKind::BrokenPipe, "WebSocket closed")
        }
        other => io::Error::other(other),
    }
}
