//! The peer protocol's frames and their encoding: a 4-byte big-endian length,
//! then the postcard encoding of one [`Frame`].
//!
//! One connection carries one direction of the mesh: the node that dialled
//! sends its sequenced [`Op`]s (routes, messages) and requests, the node that
//! accepted answers with acknowledgements and replies. Every pair of nodes has
//! two such connections, one dialled by each side, so neither side needs to
//! decide who dials whom.

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::peering::frame;
use crate::store::{SessionOwner, StoredSession};

/// Bumped on any incompatible change to [`Frame`]; a peer speaking another
/// version is refused at the handshake with a logged reason.
pub const PROTOCOL_VERSION: u16 = 3;

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
    /// An op of the link layer, opaque to the mesh: interest the node holding
    /// `link` learned from the remote cluster (every node keeps a copy), or a
    /// message for the node that holds `link` to send over it.
    Link { link: String, op: Bytes },
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
pub use crate::peering::FrameError as WireError;

/// Appends `frame`, length-prefixed, to `out`.
pub fn encode(frame: &Frame, out: &mut BytesMut) -> Result<(), WireError> {
    frame::encode(frame, out, MAX_FRAME)
}

/// An op encoded on its own, before it is numbered, so that the costly part
/// of queueing it happens outside the queue's lock; the queue frames it
/// (see `peering::outbox`).
#[derive(Debug, Clone)]
pub struct EncodedOp {
    pub body: Bytes,
    /// A forwarded message (which a full queue may refuse), not a route change.
    pub is_message: bool,
}

/// Postcard's variant index of [`Frame::Op`] (its position in the enum):
/// the queue writes `{OP_VARIANT}{seq}{op}`, byte for byte what postcard
/// writes for `Frame::Op { seq, op }`.
pub const OP_VARIANT: u64 = 4;

/// Encodes `op` for the queue.
pub fn encode_op(op: &Op) -> Result<EncodedOp, WireError> {
    let estimate = match op {
        Op::Publish(forward) => 64 + forward.message.topic.len() + forward.message.payload.len(),
        Op::Retained { message, version } => {
            64 + message.topic.len() + message.payload.len() + version.node.len()
        }
        Op::RouteAdd(filter) | Op::RouteRemove(filter) => 8 + filter.len(),
        Op::Claim { client_id, .. } | Op::Release { client_id, .. } => 16 + client_id.len(),
        Op::Reset => 8,
        Op::Link { link, op } => 8 + link.len() + op.len(),
    };
    let body = postcard::to_extend(op, Vec::with_capacity(estimate))?;
    Ok(EncodedOp {
        body: Bytes::from(body),
        is_message: matches!(op, Op::Publish(_) | Op::Link { .. }),
    })
}

/// One frame as its own buffer.
pub fn encode_to_bytes(frame: &Frame) -> Result<Bytes, WireError> {
    frame::encode_to_bytes(frame, MAX_FRAME)
}

/// Takes the next whole frame off the front of `buf`, or `None` when more
/// bytes are needed; a frame longer than `limit` is refused unread.
pub fn decode(buf: &mut BytesMut, limit: usize) -> Result<Option<Frame>, WireError> {
    frame::decode(buf, limit)
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
    fn an_op_the_queue_numbers_is_the_frame_postcard_writes() {
        use crate::peering::outbox::{Bounds, Forgotten, Kind, Outbox};
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
            for seq in [1u64, 127, 128, 300] {
                let bounds = Bounds {
                    messages: 1,
                    bytes: usize::MAX,
                };
                let mut outbox =
                    Outbox::new(bounds, Forgotten::KeepMessages, OP_VARIANT, MAX_FRAME);
                outbox.resume(None);
                for _ in 1..seq {
                    outbox
                        .push(Bytes::new(), Kind::Control, None)
                        .expect("filler");
                }
                outbox.ack(seq - 1);
                outbox
                    .push(encoded.body.clone(), Kind::Control, None)
                    .expect("push");
                let mut out = Vec::new();
                outbox.write_unsent(std::time::Instant::now(), &mut out);
                let whole = encode_to_bytes(&Frame::Op {
                    seq,
                    op: op.clone(),
                })
                .expect("encode frame");
                assert_eq!(&out[..], &whole[..], "seq {seq}");
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
