//! A minimal async MQTT 3.1.1 client built on the broker's own codec.
//!
//! The load generator must not be the bottleneck of what it measures, so this
//! client has none of a general-purpose client's machinery (no event loop, no
//! retries, no per-message allocation): callers queue many packets and flush
//! them with one write, and a read takes every whole packet the socket holds.
//! Every broker is driven over MQTT 3.1.1 so that all are compared on the same
//! protocol.

use std::net::SocketAddr;

use bytes::BytesMut;
use strait_broker::protocol::{
    decode, encode, Connect, ConnectProperties, DecodeError, EncodeError, Packet, ProtocolVersion,
    QoS, ReasonCode, Subscribe, SubscribeFilter, SubscribeProperties, SubscriptionOptions,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// The protocol level every benchmark connection speaks.
pub const VERSION: ProtocolVersion = ProtocolVersion::V311;

/// Largest packet accepted from a broker; far above any benchmark payload.
const MAX_PACKET_SIZE: u32 = 16 * 1024 * 1024;

/// Packet identifier of the (single) SUBSCRIBE a client sends.
const SUBSCRIBE_PACKET_ID: u16 = 1;

/// Why a benchmark connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot encode a packet: {0}")]
    Encode(#[from] EncodeError),
    #[error("the broker sent an undecodable packet: {0}")]
    Decode(#[from] DecodeError),
    #[error("the broker closed the connection")]
    Closed,
    #[error("the broker refused the connection: {0:?}")]
    Refused(ReasonCode),
    #[error("the broker refused the subscription to {filter:?}: {reason:?}")]
    SubscriptionRefused { filter: String, reason: ReasonCode },
    #[error("expected {expected}, got {got}")]
    Unexpected {
        expected: &'static str,
        got: &'static str,
    },
}

/// How a client introduces itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectOptions {
    pub client_id: String,
    /// Seconds; the benchmark never runs long enough to need PINGREQ.
    pub keep_alive_secs: u16,
    /// Free space kept in the read buffer: large for busy subscribers (fewer
    /// reads), small for the thousands of idle connections of the memory test.
    pub read_buffer_bytes: usize,
}

impl ConnectOptions {
    /// Options for a busy connection: 60 s keepalive and a 256 KiB read buffer.
    pub fn new(client_id: impl Into<String>) -> ConnectOptions {
        ConnectOptions {
            client_id: client_id.into(),
            keep_alive_secs: 60,
            read_buffer_bytes: 256 * 1024,
        }
    }
}

/// The receiving half of a connection: decodes packets from a large buffer.
#[derive(Debug)]
pub struct PacketReader {
    half: OwnedReadHalf,
    buf: BytesMut,
    chunk: usize,
}

impl PacketReader {
    /// Waits for the next whole packet.
    pub async fn next(&mut self) -> Result<Packet, ClientError> {
        loop {
            if let Some(packet) = decode(&mut self.buf, Some(VERSION), MAX_PACKET_SIZE)? {
                return Ok(packet);
            }
            self.buf.reserve(self.chunk);
            if self.half.read_buf(&mut self.buf).await? == 0 {
                return Err(ClientError::Closed);
            }
        }
    }

    /// Waits for at least one whole packet, then appends it and every other
    /// whole packet already buffered to `out`, so the caller can answer them
    /// all with one write. Cancel-safe: nothing is lost if the future is dropped.
    pub async fn read_batch(&mut self, out: &mut Vec<Packet>) -> Result<(), ClientError> {
        let first = self.next().await?;
        out.push(first);
        while let Some(packet) = decode(&mut self.buf, Some(VERSION), MAX_PACKET_SIZE)? {
            out.push(packet);
        }
        Ok(())
    }
}

/// The sending half of a connection: packets are queued, then flushed at once.
#[derive(Debug)]
pub struct PacketWriter {
    half: OwnedWriteHalf,
    buf: BytesMut,
}

impl PacketWriter {
    /// Encodes `packet` at the end of the send buffer.
    pub fn queue(&mut self, packet: &Packet) -> Result<(), ClientError> {
        encode(packet, VERSION, &mut self.buf)?;
        Ok(())
    }

    /// Queues a PUBLISH and hands back its payload as it sits in the send
    /// buffer, so the caller can stamp each copy without re-encoding (the
    /// payload is always the tail of a PUBLISH).
    pub fn queue_publish(&mut self, packet: &Packet) -> Result<&mut [u8], ClientError> {
        let payload_len = match packet {
            Packet::Publish(publish) => publish.payload.len(),
            other => {
                return Err(ClientError::Unexpected {
                    expected: "PUBLISH",
                    got: other.name(),
                })
            }
        };
        self.queue(packet)?;
        let end = self.buf.len();
        Ok(&mut self.buf[end - payload_len..end])
    }

    /// Bytes queued and not yet written.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Writes everything queued with as few syscalls as the socket allows.
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        if !self.buf.is_empty() {
            self.half.write_all(&self.buf).await?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Queues `packet` and flushes.
    pub async fn send(&mut self, packet: &Packet) -> Result<(), ClientError> {
        self.queue(packet)?;
        self.flush().await
    }
}

/// A connected MQTT 3.1.1 session (clean session, no will, no credentials).
#[derive(Debug)]
pub struct Client {
    reader: PacketReader,
    writer: PacketWriter,
}

impl Client {
    /// Opens a TCP connection and completes the CONNECT / CONNACK handshake.
    pub async fn connect(
        addr: SocketAddr,
        options: &ConnectOptions,
    ) -> Result<Client, ClientError> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|source| ClientError::Connect { addr, source })?;
        // Writes are batched by the caller; Nagle would only add latency.
        stream.set_nodelay(true)?;
        let (read_half, write_half) = stream.into_split();
        let mut client = Client {
            reader: PacketReader {
                half: read_half,
                buf: BytesMut::new(),
                chunk: options.read_buffer_bytes.max(64),
            },
            writer: PacketWriter {
                half: write_half,
                buf: BytesMut::new(),
            },
        };
        let connect = Connect {
            protocol: VERSION,
            clean_start: true,
            keep_alive: options.keep_alive_secs,
            client_id: options.client_id.clone(),
            will: None,
            username: None,
            password: None,
            properties: ConnectProperties::default(),
        };
        client
            .writer
            .send(&Packet::Connect(Box::new(connect)))
            .await?;
        match client.reader.next().await? {
            Packet::ConnAck(ack) if ack.code.is_error() => Err(ClientError::Refused(ack.code)),
            Packet::ConnAck(_) => Ok(client),
            other => Err(ClientError::Unexpected {
                expected: "CONNACK",
                got: other.name(),
            }),
        }
    }

    /// Subscribes to one filter and waits for the SUBACK; returns the granted QoS.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> Result<QoS, ClientError> {
        let subscribe = Subscribe {
            packet_id: SUBSCRIBE_PACKET_ID,
            filters: vec![SubscribeFilter {
                filter: filter.to_owned(),
                options: SubscriptionOptions {
                    qos,
                    ..SubscriptionOptions::default()
                },
            }],
            properties: SubscribeProperties::default(),
        };
        self.writer.send(&Packet::Subscribe(subscribe)).await?;
        match self.reader.next().await? {
            Packet::SubAck(ack) if ack.packet_id == SUBSCRIBE_PACKET_ID => {
                let reason = ack
                    .reasons
                    .first()
                    .copied()
                    .unwrap_or(ReasonCode::UnspecifiedError);
                match QoS::from_bits(reason.as_u8()) {
                    Some(granted) if !reason.is_error() => Ok(granted),
                    _ => Err(ClientError::SubscriptionRefused {
                        filter: filter.to_owned(),
                        reason,
                    }),
                }
            }
            other => Err(ClientError::Unexpected {
                expected: "SUBACK",
                got: other.name(),
            }),
        }
    }

    /// Writes one packet at once (for the rare packets outside a run's batches).
    pub async fn send(&mut self, packet: &Packet) -> Result<(), ClientError> {
        self.writer.send(packet).await
    }

    /// Waits for the next packet from the broker. Cancel-safe: nothing read is
    /// lost if the future is dropped.
    pub async fn receive(&mut self) -> Result<Packet, ClientError> {
        self.reader.next().await
    }

    /// Sends PINGREQ and waits for PINGRESP: a round trip through the broker's
    /// event loop, used to know that it has caught up with earlier work.
    pub async fn ping(&mut self) -> Result<(), ClientError> {
        self.writer.send(&Packet::PingReq).await?;
        match self.reader.next().await? {
            Packet::PingResp => Ok(()),
            other => Err(ClientError::Unexpected {
                expected: "PINGRESP",
                got: other.name(),
            }),
        }
    }

    /// Separates the halves so one task can read while another writes.
    pub fn split(self) -> (PacketReader, PacketWriter) {
        (self.reader, self.writer)
    }
}
