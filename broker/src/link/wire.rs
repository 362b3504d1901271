//! The link protocol's frames (documented for other implementers in
//! `docs/link-protocol.md`): a 4-byte big-endian length, then the postcard
//! encoding of one [`LinkFrame`].
//!
//! One connection carries both directions of a link, whichever side dialled:
//! after the handshake each side sends its own numbered stream of
//! [`LinkOp`]s (interest and messages) and acknowledges the other's.

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::cluster::wire::WireMessage;
use crate::peering::frame;
use crate::peering::proof::LEN;
pub use crate::peering::FrameError;

use super::credential::SALT_LEN;

/// Bumped on any incompatible change; a peer speaking another version is
/// refused at the handshake with a reason.
pub const PROTOCOL_VERSION: u16 = 1;

/// Largest frame accepted from an authenticated peer.
pub const MAX_FRAME: usize = 16 * 1024 * 1024;

/// Largest frame accepted before the handshake completes.
pub const MAX_HANDSHAKE_FRAME: usize = 1024;

/// Everything that crosses a link connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LinkFrame {
    /// Dialer, first: who it is, which cluster it means to reach, the
    /// incarnation of its stream, and its nonce.
    Hello {
        version: u16,
        cluster: String,
        to: String,
        incarnation: u64,
        nonce: [u8; LEN],
    },
    /// Acceptor: the salt of the dialer's credential and its own nonce.
    Challenge {
        salt: [u8; SALT_LEN],
        nonce: [u8; LEN],
    },
    /// Dialer: its proof, and where the acceptor's stream resumes: the
    /// acceptor incarnation it applied ops of, and the last op it applied.
    Proof {
        proof: [u8; LEN],
        resume: Option<(u64, u64)>,
    },
    /// Acceptor: accepted. Its signature proves it holds the credential;
    /// `incarnation` is its stream's, and `resume_after` the last op of the
    /// dialer's stream it applied (`None`: start over).
    Welcome {
        signature: [u8; LEN],
        incarnation: u64,
        resume_after: Option<u64>,
    },
    /// Either side, instead of going on: why (also logged on both ends).
    Refused {
        reason: String,
    },
    /// The next op of the sender's stream, numbered from 1 per incarnation
    /// (gaps allowed: an op may have been dropped from the queue).
    Op {
        seq: u64,
        op: LinkOp,
    },
    /// Every op of the receiver's stream up to `seq` is applied.
    Ack {
        seq: u64,
    },
    /// A heartbeat on an idle connection, and its answer.
    Ping,
    Pong,
}

/// Postcard's variant index of [`LinkFrame::Op`], for the queue's framing.
pub const OP_VARIANT: u64 = 5;

/// One entry of a side's stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LinkOp {
    /// Forget every advertisement of the sender: a full snapshot follows.
    Reset,
    /// Subscribers in cluster `origin` want `filter`; the advertisement
    /// crossed `path` (origin first, the sender last). Replaces an earlier
    /// advertisement of the same origin and filter.
    Interest {
        origin: String,
        filter: String,
        path: Vec<String>,
    },
    /// The advertisement of `origin`'s `filter` is withdrawn.
    InterestGone { origin: String, filter: String },
    /// A message for the clusters in `to`.
    Publish(LinkMessage),
    /// Between the nodes of one cluster only (a link refuses it): the node
    /// holding the link applied the remote's stream `incarnation` up to
    /// `applied`, so whichever node takes the link over next resumes there.
    Position { incarnation: u64, applied: u64 },
}

/// A message crossing a link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkMessage {
    /// Drawn at random where the message is first queued for the link, and
    /// kept when it is handed to another node or resent: the receiver drops
    /// a message whose id it has just seen (a resend after the sending node
    /// changed), so none is delivered twice.
    pub id: u64,
    pub message: WireMessage,
    /// The clusters it has been published or delivered in, origin first.
    pub path: Vec<String>,
    /// The clusters it is addressed to (whose advertised interest matched):
    /// each reaches one of them once, by the route its sender chose.
    pub to: Vec<String>,
    /// A retained message sent because the receiver just advertised interest
    /// in its topic: delivered with the retain flag, as at subscribe time.
    pub replay: bool,
}

/// Appends `frame`, length-prefixed, to `out`.
pub fn encode(frame: &LinkFrame, out: &mut BytesMut) -> Result<(), FrameError> {
    frame::encode(frame, out, MAX_FRAME)
}

/// One frame as its own buffer.
pub fn encode_to_bytes(frame: &LinkFrame) -> Result<Bytes, FrameError> {
    frame::encode_to_bytes(frame, MAX_FRAME)
}

/// Encodes an op for the queue, which numbers and frames it.
pub fn encode_op(op: &LinkOp) -> Result<Bytes, FrameError> {
    Ok(Bytes::from(postcard::to_allocvec(op)?))
}

/// Takes the next whole frame off the front of `buf`, or `None` when more
/// bytes are needed; a frame longer than `limit` is refused unread.
pub fn decode(buf: &mut BytesMut, limit: usize) -> Result<Option<LinkFrame>, FrameError> {
    frame::decode(buf, limit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peering::outbox::{Bounds, Forgotten, Kind, Outbox};

    #[test]
    fn an_op_the_queue_frames_decodes_as_the_op_frame() {
        let op = LinkOp::Publish(LinkMessage {
            id: 7,
            message: WireMessage {
                topic: "fleet/7/gps".into(),
                payload: Bytes::from_static(b"52.1"),
                qos: 1,
                user_properties: vec![("k".into(), "v".into())],
                ..WireMessage::default()
            },
            path: vec!["east".into()],
            to: vec!["west".into()],
            replay: false,
        });
        let bounds = Bounds {
            messages: 10,
            bytes: 1 << 20,
        };
        let mut outbox = Outbox::new(bounds, Forgotten::KeepMessages, OP_VARIANT, MAX_FRAME);
        outbox.resume(None);
        outbox
            .push(
                encode_op(&LinkOp::Reset).expect("encode"),
                Kind::Control,
                None,
            )
            .expect("push");
        outbox
            .push(encode_op(&op).expect("encode"), Kind::Message, None)
            .expect("push");
        let mut out = Vec::new();
        outbox.write_unsent(std::time::Instant::now(), &mut out);
        let mut buf = BytesMut::from(&out[..]);
        assert_eq!(
            decode(&mut buf, MAX_FRAME).expect("decode"),
            Some(LinkFrame::Op {
                seq: 1,
                op: LinkOp::Reset
            })
        );
        assert_eq!(
            decode(&mut buf, MAX_FRAME).expect("decode"),
            Some(LinkFrame::Op { seq: 2, op })
        );
    }

    #[test]
    fn a_stranger_cannot_send_a_large_frame_before_the_handshake() {
        let mut buf = BytesMut::from(&2000u32.to_be_bytes()[..]);
        assert!(matches!(
            decode(&mut buf, MAX_HANDSHAKE_FRAME),
            Err(FrameError::TooLarge { size: 2000, .. })
        ));
    }
}
