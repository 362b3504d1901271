//! The peer protocol's frames and their encoding: a 4-byte big-endian length,
//! then the postcard encoding of one [`Frame`].
//!
//! One connection carries one direction of the mesh: the node that dialled
//! sends its sequenced [`Op`]s (routes, messages) and requests, the node that
//! accepted answers with acknowledgements and replies. Every pair of nodes has
//! two such connections, one dialled by each side, so neither side needs to
//! decide who dials whom.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::store::StoredSession;

/// Bumped on any incompatible change to [`Frame`]; a peer speaking another
/// version is refused at the handshake with a logged reason.
pub const PROTOCOL_VERSION: u16 = 1;

/// Largest frame accepted; a session transfer is the biggest legitimate one.
pub const MAX_FRAME: usize = 64 * 1024 * 1024;

/// Bytes of a handshake challenge and of its proof.
pub const NONCE_LEN: usize = 32;

/// Everything that crosses a peer connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// Acceptor, first: the challenge the dialer must answer.
    Challenge {
        version: u16,
        nonce: [u8; NONCE_LEN],
    },
    /// Dialer: who it is, and a keyed hash of the challenge proving it holds
    /// the cluster secret.
    Hello {
        version: u16,
        cluster: String,
        node: String,
        incarnation: u64,
        proof: [u8; NONCE_LEN],
    },
    /// Acceptor: accepted. `resume_after` is the last op it applied from this
    /// incarnation of the dialer; `None` asks for a full resync.
    Welcome {
        node: String,
        incarnation: u64,
        resume_after: Option<u64>,
    },
    /// Acceptor: refused, and why (also logged on both ends).
    Refused { reason: String },
    /// Dialer: the next op of its stream, numbered from 1 per incarnation.
    Op { seq: u64, op: Op },
    /// Acceptor: every op up to `seq` is applied.
    Ack { seq: u64 },
    /// Dialer: a heartbeat on an idle connection.
    Ping,
    /// Acceptor: the heartbeat's answer.
    Pong,
    /// Dialer: a client is connecting to the dialer; hand its session over.
    TakeSession {
        request: u64,
        client_id: String,
        clean_start: bool,
    },
    /// Acceptor: the session it held (if any, and unless clean start was asked).
    SessionTaken {
        request: u64,
        session: Option<StoredSession>,
    },
}

/// One entry of a node's op stream. Ops apply in order; a resync starts with
/// [`Op::Reset`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Forget every route of the sender: a full snapshot follows.
    Reset,
    /// The sender has local subscribers for this filter (`$share/...` included).
    RouteAdd(String),
    /// The sender's last local subscriber for this filter is gone.
    RouteRemove(String),
    /// A message published on the sender, for the receiver's local subscribers.
    Publish(Forward),
    /// A retained message the receiver should store unless it has one for
    /// the topic (sent on first contact, so a new node learns them).
    Retained(WireMessage),
}

/// A message forwarded to one node, with which of its subscribers get it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forward {
    pub message: WireMessage,
    /// Deliver to the receiver's ordinary (non-shared) subscribers.
    pub plain: bool,
    /// Shared groups (`$share/<group>/<filter>`) the sender chose this node
    /// for: one local member of each gets the message.
    pub groups: Vec<String>,
}

/// A message as it crosses between nodes. Expiry travels as remaining
/// lifetime, so the nodes' clocks need not agree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireMessage {
    pub topic: String,
    pub payload: Bytes,
    pub qos: u8,
    pub retain: bool,
    pub expiry_ms: Option<u64>,
    pub payload_format_indicator: Option<u8>,
    pub content_type: Option<String>,
    pub response_topic: Option<String>,
    pub correlation_data: Option<Bytes>,
    pub user_properties: Vec<(String, String)>,
}

/// Why bytes from a peer could not be read as a frame.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    #[error("malformed frame: {0}")]
    Malformed(#[from] postcard::Error),
}

/// Appends `frame`, length-prefixed, to `out`.
pub fn encode(frame: &Frame, out: &mut BytesMut) -> Result<(), WireError> {
    let start = out.len();
    out.put_u32(0);
    postcard::to_io(frame, out.writer())?;
    let len = out.len() - start - 4;
    if len > MAX_FRAME {
        out.truncate(start);
        return Err(WireError::TooLarge(len));
    }
    // The length was checked against MAX_FRAME, which fits in a u32.
    out[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// One frame as its own buffer, for queues that keep frames until acknowledged.
pub fn encode_to_bytes(frame: &Frame) -> Result<Bytes, WireError> {
    let mut out = BytesMut::new();
    encode(frame, &mut out)?;
    Ok(out.freeze())
}

/// Takes the next whole frame off the front of `buf`, or `None` when more
/// bytes are needed.
pub fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, WireError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > MAX_FRAME {
        return Err(WireError::TooLarge(len));
    }
    if buf.len() < 4 + len {
        buf.reserve(4 + len - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    let body = buf.split_to(len);
    Ok(Some(postcard::from_bytes(&body)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> WireMessage {
        WireMessage {
            topic: "a/b".into(),
            payload: Bytes::from_static(b"payload"),
            qos: 1,
            retain: true,
            expiry_ms: Some(1500),
            payload_format_indicator: Some(1),
            content_type: Some("text/plain".into()),
            response_topic: Some("r".into()),
            correlation_data: Some(Bytes::from_static(b"c")),
            user_properties: vec![("k".into(), "v".into())],
        }
    }

    #[test]
    fn frames_round_trip_one_after_another() {
        let frames = vec![
            Frame::Ping,
            Frame::Op {
                seq: 7,
                op: Op::Publish(Forward {
                    message: message(),
                    plain: true,
                    groups: vec!["$share/g/a/+".into()],
                }),
            },
            Frame::Op {
                seq: 8,
                op: Op::RouteAdd("a/#".into()),
            },
            Frame::Ack { seq: 8 },
        ];
        let mut buf = BytesMut::new();
        for frame in &frames {
            encode(frame, &mut buf).expect("encode");
        }
        // Arrives in two pieces: the first frame is whole, the second is not.
        let mut rest = buf.split_off(7);
        let mut decoded = Vec::new();
        while let Some(frame) = decode(&mut buf).expect("decode") {
            decoded.push(frame);
        }
        buf.unsplit(rest.split());
        while let Some(frame) = decode(&mut buf).expect("decode") {
            decoded.push(frame);
        }
        assert_eq!(decoded, frames);
        assert!(buf.is_empty());
    }

    #[test]
    fn oversized_and_malformed_frames_are_errors() {
        let mut huge = BytesMut::from(&((MAX_FRAME as u32) + 1).to_be_bytes()[..]);
        assert!(matches!(decode(&mut huge), Err(WireError::TooLarge(_))));
        let mut junk = BytesMut::from(&[0, 0, 0, 2, 0xff, 0xff][..]);
        assert!(matches!(decode(&mut junk), Err(WireError::Malformed(_))));
    }
}
