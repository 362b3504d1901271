//! The ops one node owes one peer, numbered and kept until acknowledged.
//!
//! Every op (route change, forwarded message) gets the next sequence number of
//! this node's stream to the peer and stays queued until the peer acknowledges
//! it. After a cut the peer says which op it applied last: if everything after
//! it is still here, the stream simply continues (nothing the peer already has
//! is sent again, nothing is lost); otherwise the peer gets a full route
//! resync and the forwarded messages it missed are counted as lost.

use std::collections::VecDeque;

use bytes::Bytes;

use super::wire::{self, EncodedOp, WireError};

/// Queued ops beyond which a peer counts as falling behind.
const BACKLOG: usize = 4096;

/// One queued op, encoded once.
#[derive(Debug)]
struct Pending {
    seq: u64,
    frame: Bytes,
    /// A forwarded message (may be dropped when full), not a route change.
    is_message: bool,
}

/// Why an op was not queued.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("the peer's queue is full")]
    Full,
    #[error(transparent)]
    Encode(#[from] WireError),
}

/// What the stream does after a (re)connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Resume {
    /// The peer has everything up to where the queue starts: carry on.
    Continue,
    /// The peer must be sent a full route snapshot; `lost` forwarded
    /// messages can no longer reach it.
    Resync { lost: u64 },
}

/// The sequenced, bounded queue of one peer.
#[derive(Debug)]
pub struct Outbox {
    next_seq: u64,
    frames: VecDeque<Pending>,
    /// `frames[..sent]` went out on the current connection.
    sent: usize,
    /// Most forwarded messages queued; route changes are never refused.
    limit: usize,
    /// Ops were discarded, so the peer cannot resume without a resync.
    broken: bool,
}

impl Outbox {
    pub fn new(limit: usize) -> Outbox {
        Outbox {
            next_seq: 1,
            frames: VecDeque::new(),
            sent: 0,
            limit,
            broken: true,
        }
    }

    /// Queues `op` and returns its sequence number. A forwarded message is
    /// refused when the queue is full; route changes always fit.
    pub fn push(&mut self, op: &EncodedOp) -> Result<u64, PushError> {
        if op.is_message && self.frames.len() >= self.limit {
            return Err(PushError::Full);
        }
        let seq = self.next_seq;
        let frame = wire::op_frame(seq, op)?;
        self.next_seq += 1;
        self.frames.push_back(Pending {
            seq,
            frame,
            is_message: op.is_message,
        });
        Ok(seq)
    }

    /// Frames not yet written on the current connection, now marked written.
    pub fn take_unsent(&mut self, out: &mut Vec<Bytes>) {
        out.extend(self.frames.iter().skip(self.sent).map(|p| p.frame.clone()));
        self.sent = self.frames.len();
    }

    /// The peer applied every op up to `seq`.
    pub fn ack(&mut self, seq: u64) {
        while self.frames.front().is_some_and(|p| p.seq <= seq) {
            self.frames.pop_front();
            self.sent = self.sent.saturating_sub(1);
        }
    }

    /// Ops sent but not acknowledged yet, plus those not sent.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether the peer is falling behind: more is queued than a healthy
    /// link holds in flight. Publishers are asked to slow down from here on,
    /// well before the queue is full and messages are dropped.
    pub fn is_backlogged(&self) -> bool {
        self.frames.len() >= BACKLOG.min(self.limit)
    }

    /// The connection ended: whatever was unacknowledged goes out again on the next.
    pub fn disconnected(&mut self) {
        self.sent = 0;
    }

    /// A connection was accepted by a peer that last applied `resume_after`
    /// of this stream (`None`: nothing, or it forgot this node).
    pub fn resume(&mut self, resume_after: Option<u64>) -> Resume {
        self.sent = 0;
        let first_needed = resume_after.map(|seq| seq + 1);
        let first_held = self.frames.front().map_or(self.next_seq, |p| p.seq);
        match first_needed {
            Some(needed) if !self.broken && needed >= first_held && needed <= self.next_seq => {
                self.ack(needed - 1);
                Resume::Continue
            }
            _ => {
                let lost = self.frames.iter().filter(|p| p.is_message).count() as u64;
                self.frames.clear();
                self.broken = false;
                Resume::Resync { lost }
            }
        }
    }

    /// The peer is gone for good (declared dead): drop everything queued and
    /// resync if it comes back. Returns the forwarded messages lost.
    pub fn abandon(&mut self) -> u64 {
        let lost = self.frames.iter().filter(|p| p.is_message).count() as u64;
        self.frames.clear();
        self.sent = 0;
        self.broken = true;
        lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::wire::{Forward, Frame, Op, WireMessage};

    fn message() -> EncodedOp {
        wire::encode_op(&Op::Publish(Forward {
            message: WireMessage {
                topic: "t".into(),
                payload: Bytes::from_static(b"x"),
                qos: 1,
                ..WireMessage::default()
            },
            plain: true,
            groups: Vec::new(),
            retained: None,
            lane: 0,
        }))
        .expect("encode")
    }

    fn route(filter: &str) -> EncodedOp {
        wire::encode_op(&Op::RouteAdd(filter.into())).expect("encode")
    }

    #[test]
    fn a_first_contact_resyncs_then_the_stream_continues_after_a_cut() {
        let mut outbox = Outbox::new(10);
        assert_eq!(outbox.resume(None), Resume::Resync { lost: 0 });
        for filter in ["a", "b", "c"] {
            outbox.push(&route(filter)).expect("push");
        }
        let mut out = Vec::new();
        outbox.take_unsent(&mut out);
        assert_eq!(out.len(), 3);
        outbox.ack(1);
        outbox.disconnected();
        // The peer applied op 2 before the cut; only op 3 goes out again.
        assert_eq!(outbox.resume(Some(2)), Resume::Continue);
        out.clear();
        outbox.take_unsent(&mut out);
        assert_eq!(out.len(), 1);
        let frame = wire::decode(&mut bytes::BytesMut::from(&out[0][..]), wire::MAX_FRAME)
            .expect("decode")
            .expect("whole");
        assert!(matches!(frame, Frame::Op { seq: 3, .. }));
    }

    #[test]
    fn a_peer_that_forgot_us_gets_a_resync_and_lost_messages_are_counted() {
        let mut outbox = Outbox::new(10);
        outbox.resume(None);
        outbox.push(&route("a")).expect("push");
        outbox.push(&message()).expect("push");
        outbox.push(&message()).expect("push");
        assert_eq!(outbox.resume(None), Resume::Resync { lost: 2 });
        assert_eq!(outbox.len(), 0);
    }

    #[test]
    fn a_resume_point_older_than_the_queue_forces_a_resync() {
        let mut outbox = Outbox::new(10);
        outbox.resume(None);
        for _ in 0..4 {
            outbox.push(&message()).expect("push");
        }
        outbox.ack(2);
        // The peer claims only op 1: ops 2 is gone from here.
        assert_eq!(outbox.resume(Some(1)), Resume::Resync { lost: 2 });
    }

    #[test]
    fn messages_beyond_the_limit_are_refused_but_routes_always_fit() {
        let mut outbox = Outbox::new(2);
        outbox.resume(None);
        outbox.push(&message()).expect("push");
        outbox.push(&message()).expect("push");
        assert!(matches!(outbox.push(&message()), Err(PushError::Full)));
        outbox
            .push(&route("a"))
            .expect("a route change is never refused");
        assert_eq!(outbox.len(), 3);
    }

    #[test]
    fn a_peer_is_backlogged_before_its_queue_is_full() {
        let mut outbox = Outbox::new(3);
        outbox.resume(None);
        outbox.push(&message()).expect("push");
        outbox.push(&message()).expect("push");
        assert!(!outbox.is_backlogged());
        outbox.push(&message()).expect("push");
        assert!(
            outbox.is_backlogged(),
            "the mark is the limit when that is lower"
        );
        outbox.ack(3);
        assert!(!outbox.is_backlogged());
    }

    #[test]
    fn an_abandoned_peer_resyncs_whatever_it_claims() {
        let mut outbox = Outbox::new(10);
        outbox.resume(None);
        outbox.push(&message()).expect("push");
        assert_eq!(outbox.abandon(), 1);
        assert_eq!(outbox.resume(Some(1)), Resume::Resync { lost: 0 });
    }
}
