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

use crate::store::{SessionOwner, StoredSession};

/// Bumped on any incompatible change to [`Frame`]; a peer speaking another
/// version is refused at the handshake with a logged reason.
pub const PROTOCOL_VERSION: u16 = 2;

/// Largest frame accepted from an authenticated peer; a session transfer is
/// the biggest legitimate one.
pub const MAX_FRAME: usize = 64 * 1024 * 1024;

/// Largest frame accepted before the handshake completes: a stranger must not
/// make a node reserve more than this.
pub const MAX_HANDSHAKE_FRAME: usize = 4096;

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
    /// `clock` is the dialer's Lamport clock, which the acceptor moves past.
    TakeSession {
        request: u64,
        client_id: String,
        clean_start: bool,
        clock: u64,
        /// Who the connecting client authenticated as: a session owned by
        /// another identity is not given up.
        owner: SessionOwner,
    },
    /// Acceptor: the session it held (if any, and unless clean start was
    /// asked), and its own clock, which the dialer's claim moves past.
    SessionTaken {
        request: u64,
        session: Option<StoredSession>,
        clock: u64,
        /// The session belongs to another identity: it was kept, and the
        /// connecting client must be refused.
        refused: bool,
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
    /// The sender's retained message for a topic, or its clearing (an empty
    /// payload), as of `version`: sent on first contact, so a new node learns
    /// them; the receiver keeps whichever version of a topic is newer.
    Retained {
        message: WireMessage,
        version: RetainedVersion,
    },
    /// The sender holds this client's session (see `directory.rs`).
    Claim { client_id: String, stamp: u64 },
    /// The sender's claim with this stamp has ended (the session is gone).
    Release { client_id: String, stamp: u64 },
}

/// When a retained message was set or cleared: a Lamport stamp of the cluster
/// clock and the node that did it. The newest wins on every node, so a topic
/// cleared on one side of a partition stays cleared when it heals.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RetainedVersion {
    pub stamp: u64,
    pub node: String,
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
    /// For a retained message, the version the sender stored it (or cleared
    /// it) with; the receiver stores it only if that is newer than its own.
    pub retained: Option<RetainedVersion>,
    /// Which publisher it came from, as far as ordering goes: the receiver
    /// may deliver messages of different lanes in parallel, and keeps each
    /// lane's order (per-publisher order, as MQTT asks).
    pub lane: u64,
}

/// A message as it crosses between nodes. Expiry travels as remaining
/// lifetime, so the nodes' clocks need not agree.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    #[error("a frame of {size} bytes exceeds the {limit}-byte limit")]
    TooLarge { size: usize, limit: usize },
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
        return Err(WireError::TooLarge {
            size: len,
            limit: MAX_FRAME,
        });
    }
    // The length was checked against MAX_FRAME, which fits in a u32.
    out[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// An op encoded on its own, before it is numbered, so that the costly part
/// of queueing it happens outside the queue's lock.
#[derive(Debug, Clone)]
pub struct EncodedOp {
    body: Bytes,
    /// A forwarded message (which a full queue may refuse), not a route change.
    pub is_message: bool,
}

/// Postcard's variant index of [`Frame::Op`] (its position in the enum).
const OP_VARIANT: u64 = 4;

/// Encodes `op` for [`op_frame`].
pub fn encode_op(op: &Op) -> Result<EncodedOp, WireError> {
    let estimate = match op {
        Op::Publish(forward) => 64 + forward.message.topic.len() + forward.message.payload.len(),
        Op::Retained { message, version } => {
            64 + message.topic.len() + message.payload.len() + version.node.len()
        }
        Op::RouteAdd(filter) | Op::RouteRemove(filter) => 8 + filter.len(),
        Op::Claim { client_id, .. } | Op::Release { client_id, .. } => 16 + client_id.len(),
        Op::Reset => 8,
    };
    let body = postcard::to_extend(op, Vec::with_capacity(estimate))?;
    Ok(EncodedOp {
        body: Bytes::from(body),
        is_message: matches!(op, Op::Publish(_)),
    })
}

/// The length-prefixed `Frame::Op { seq, op }` for an op encoded by
/// [`encode_op`]: byte for byte what [`encode`] gives (postcard writes an
/// enum as its variant index, then its fields, integers as LEB128 varints).
pub fn op_frame(seq: u64, op: &EncodedOp) -> Result<Bytes, WireError> {
    let mut head = [0u8; 20];
    let mut used = put_varint(&mut head, 0, OP_VARIANT);
    used = put_varint(&mut head, used, seq);
    let len = used + op.body.len();
    if len > MAX_FRAME {
        return Err(WireError::TooLarge {
            size: len,
            limit: MAX_FRAME,
        });
    }
    let mut out = BytesMut::with_capacity(4 + len);
    // Checked against MAX_FRAME, which fits in a u32.
    out.put_u32(len as u32);
    out.put_slice(&head[..used]);
    out.put_slice(&op.body);
    Ok(out.freeze())
}

/// Writes `value` as an unsigned LEB128 varint at `at`; returns the end.
fn put_varint(out: &mut [u8; 20], mut at: usize, mut value: u64) -> usize {
    loop {
        let low = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out[at] = low;
            return at + 1;
        }
        out[at] = low | 0x80;
        at += 1;
    }
}

/// One frame as its own buffer, for queues that keep frames until acknowledged.
pub fn encode_to_bytes(frame: &Frame) -> Result<Bytes, WireError> {
    let mut out = BytesMut::new();
    encode(frame, &mut out)?;
    Ok(out.freeze())
}

/// Takes the next whole frame off the front of `buf`, or `None` when more
/// bytes are needed. A frame longer than `limit` is refused as soon as its
/// length is read, before anything is reserved for it.
pub fn decode(buf: &mut BytesMut, limit: usize) -> Result<Option<Frame>, WireError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > limit {
        return Err(WireError::TooLarge { size: len, limit });
    }
    if buf.len() < 4 + len {
        // Nothing is reserved for the announced length: the buffer grows as
        // bytes arrive, so a bare prefix (from anyone, before the handshake)
        // cannot make the node allocate up to MAX_FRAME.
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
                    retained: None,
                    lane: 0,
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
        while let Some(frame) = decode(&mut buf, MAX_FRAME).expect("decode") {
            decoded.push(frame);
        }
        buf.unsplit(rest.split());
        while let Some(frame) = decode(&mut buf, MAX_FRAME).expect("decode") {
            decoded.push(frame);
        }
        assert_eq!(decoded, frames);
        assert!(buf.is_empty());
    }

    #[test]
    fn an_announced_length_alone_allocates_nothing() {
        let mut buf = BytesMut::from(&(MAX_FRAME as u32).to_be_bytes()[..]);
        assert!(decode(&mut buf, MAX_FRAME)
            .expect("a valid prefix")
            .is_none());
        assert!(buf.capacity() < 64 * 1024, "{} bytes", buf.capacity());
    }

    #[test]
    fn an_op_numbered_after_encoding_is_the_frame_postcard_writes() {
        let ops = [
            Op::Reset,
            Op::RouteAdd("a/+/#".into()),
            Op::Publish(Forward {
                message: message(),
                plain: false,
                groups: vec!["$share/g/a".into()],
                retained: None,
                lane: 0,
            }),
        ];
        for op in ops {
            let encoded = encode_op(&op).expect("encode op");
            for seq in [0, 1, 127, 128, 300, 1 << 35, u64::MAX] {
                let whole = encode_to_bytes(&Frame::Op {
                    seq,
                    op: op.clone(),
                })
                .expect("encode frame");
                assert_eq!(op_frame(seq, &encoded).expect("frame"), whole, "seq {seq}");
            }
        }
    }

    #[test]
    fn oversized_and_malformed_frames_are_errors() {
        let mut huge = BytesMut::from(&((MAX_FRAME as u32) + 1).to_be_bytes()[..]);
        assert!(matches!(
            decode(&mut huge, MAX_FRAME),
            Err(WireError::TooLarge { .. })
        ));
        let mut stranger = BytesMut::from(&5000u32.to_be_bytes()[..]);
        assert!(matches!(
            decode(&mut stranger, MAX_HANDSHAKE_FRAME),
            Err(WireError::TooLarge { size: 5000, .. })
        ));
        assert!(stranger.capacity() < 5000, "nothing reserved for it");
        let mut junk = BytesMut::from(&[0, 0, 0, 2, 0xff, 0xff][..]);
        assert!(matches!(
            decode(&mut junk, MAX_FRAME),
            Err(WireError::Malformed(_))
        ));
    }
}
