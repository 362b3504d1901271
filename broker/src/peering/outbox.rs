//! The ops one broker owes a peer, numbered and kept until acknowledged.
//!
//! Every op gets the next sequence number of this stream and stays queued
//! until the peer acknowledges it. After a cut the peer says which op it
//! applied last: if everything after it is still here, the stream simply
//! continues (nothing the peer already has is sent again, nothing is lost).
//! Otherwise (the peer forgot this stream, or ops it needs were discarded)
//! the stream starts over and the owner sends a fresh snapshot of its state;
//! what happens to queued messages then is the [`Forgotten`] policy: the mesh
//! counts them lost (its peer restarted and its subscribers with it), a link
//! keeps them (the other cluster still wants them).
//!
//! Ops are stored encoded once, without their number, and framed as they are
//! written, so a restarted stream can renumber what it keeps.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::{BufMut, Bytes};

use super::frame::put_varint;

/// What kind of op an entry is: control ops (routes, interest) always fit,
/// messages are bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Control,
    Message,
}

/// What a stream the peer forgot does with the messages it still holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forgotten {
    /// Drop them, counted as lost.
    DropMessages,
    /// Keep them, renumbered, to be sent on the new stream.
    KeepMessages,
}

/// How many messages, and how many bytes of them, a queue holds at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub messages: usize,
    pub bytes: usize,
}

/// Why an op was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    #[error("the peer's queue is full")]
    Full,
    #[error("the op is larger than a frame may be")]
    TooLarge,
}

/// What the stream does after a (re)connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Resume {
    /// The peer has everything up to where the queue starts: carry on.
    Continue,
    /// The stream started over: the owner must send a full snapshot;
    /// `lost` messages were dropped by the [`Forgotten`] policy.
    Resync { lost: u64 },
}

/// One queued op.
#[derive(Debug)]
struct Entry {
    seq: u64,
    body: Bytes,
    kind: Kind,
    /// When a message stops being worth sending (its TTL on the queue).
    expires: Option<Instant>,
    /// Found expired when due to be written: skipped from then on.
    expired: bool,
    /// What the owner counts the op as when it is dropped (a link: its
    /// message's payload bytes).
    weight: usize,
}

/// What writing the unsent ops did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub ops: usize,
    /// Messages skipped because their time on the queue ran out, and their weight.
    pub expired: u64,
    pub expired_weight: usize,
}

/// The sequenced, bounded queue of one stream to one peer.
#[derive(Debug)]
pub struct Outbox {
    next_seq: u64,
    entries: VecDeque<Entry>,
    /// `entries[..sent]` went out on the current connection.
    sent: usize,
    bounds: Bounds,
    messages: usize,
    message_bytes: usize,
    /// Ops were discarded, so the peer cannot resume without a resync.
    broken: bool,
    forgotten: Forgotten,
    /// The postcard variant index of the frame that carries an op, which is
    /// `{variant}{seq}{op}` on the wire.
    op_variant: u64,
    /// Queued messages beyond which the peer counts as falling behind.
    backlog: usize,
    max_frame: usize,
}

impl Outbox {
    /// An empty stream; the first connection resyncs.
    pub fn new(bounds: Bounds, forgotten: Forgotten, op_variant: u64, max_frame: usize) -> Outbox {
        Outbox {
            next_seq: 1,
            entries: VecDeque::new(),
            sent: 0,
            bounds,
            messages: 0,
            message_bytes: 0,
            broken: true,
            forgotten,
            op_variant,
            backlog: bounds.messages,
            max_frame,
        }
    }

    /// Counts the peer as falling behind from `messages` queued messages on.
    pub fn with_backlog_mark(mut self, messages: usize) -> Outbox {
        self.backlog = messages.min(self.bounds.messages);
        self
    }

    /// Queues an encoded op and returns its sequence number. A message is
    /// refused when the queue is full; control ops always fit.
    pub fn push(
        &mut self,
        body: Bytes,
        kind: Kind,
        expires: Option<Instant>,
    ) -> Result<u64, PushError> {
        self.push_weighted(body, kind, expires, 0)
    }

    /// [`Outbox::push`], with the weight the op counts as when it is
    /// dropped (expired, or to make room).
    pub fn push_weighted(
        &mut self,
        body: Bytes,
        kind: Kind,
        expires: Option<Instant>,
        weight: usize,
    ) -> Result<u64, PushError> {
        if body.len() + 12 > self.max_frame {
            return Err(PushError::TooLarge);
        }
        if kind == Kind::Message {
            if self.messages >= self.bounds.messages
                || self.message_bytes + body.len() > self.bounds.bytes
            {
                return Err(PushError::Full);
            }
            self.messages += 1;
            self.message_bytes += body.len();
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.entries.push_back(Entry {
            seq,
            body,
            kind,
            expires,
            expired: false,
            weight,
        });
        Ok(seq)
    }

    /// Removes the oldest message not yet written, to make room for a newer
    /// one (a drop-oldest policy), and returns its weight; `None` when every
    /// message is in flight. A hole in the numbering is fine: the peer
    /// applies any later op.
    pub fn drop_oldest_unsent(&mut self) -> Option<usize> {
        let at =
            (self.sent..self.entries.len()).find(|&i| self.entries[i].kind == Kind::Message)?;
        let entry = self.entries.remove(at)?;
        self.forget(&entry);
        Some(entry.weight)
    }

    /// Appends every op not yet written on this connection to `out`, framed,
    /// and marks them written. Messages past their expiry are skipped.
    pub fn write_unsent(&mut self, now: Instant, out: &mut Vec<u8>) -> Written {
        let mut written = Written::default();
        for entry in self.entries.iter_mut().skip(self.sent) {
            if entry.expired || entry.expires.is_some_and(|at| at <= now) {
                if !entry.expired {
                    entry.expired = true;
                    written.expired += 1;
                    written.expired_weight += entry.weight;
                }
                continue;
            }
            let mut head = [0u8; 20];
            let mut used = put_varint(&mut head, 0, self.op_variant);
            used = put_varint(&mut head, used, entry.seq);
            // Bounded by `max_frame` at push, which fits in a u32.
            out.put_u32((used + entry.body.len()) as u32);
            out.extend_from_slice(&head[..used]);
            out.extend_from_slice(&entry.body);
            written.ops += 1;
        }
        self.sent = self.entries.len();
        written
    }

    /// The peer applied every op up to `seq`.
    pub fn ack(&mut self, seq: u64) {
        while self.entries.front().is_some_and(|e| e.seq <= seq) {
            if let Some(entry) = self.entries.pop_front() {
                self.forget(&entry);
            }
            self.sent = self.sent.saturating_sub(1);
        }
    }

    fn forget(&mut self, entry: &Entry) {
        if entry.kind == Kind::Message {
            self.messages -= 1;
            self.message_bytes -= entry.body.len();
        }
    }

    /// Ops sent but not acknowledged yet, plus those not sent.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Messages queued, and their bytes.
    pub fn messages(&self) -> (usize, usize) {
        (self.messages, self.message_bytes)
    }

    /// Whether the peer is falling behind: more is queued than a healthy
    /// link holds in flight, so publishers should slow down from here on,
    /// well before the queue is full and messages are dropped.
    pub fn is_backlogged(&self) -> bool {
        self.messages >= self.backlog
    }

    /// The connection ended: whatever was unacknowledged goes out again on the next.
    pub fn disconnected(&mut self) {
        self.sent = 0;
    }

    /// A connection was accepted by a peer that last applied `resume_after`
    /// of this stream (`None`: nothing, or it forgot this stream).
    pub fn resume(&mut self, resume_after: Option<u64>) -> Resume {
        self.sent = 0;
        let first_needed = resume_after.map(|seq| seq + 1);
        let first_held = self.entries.front().map_or(self.next_seq, |e| e.seq);
        match first_needed {
            Some(needed) if !self.broken && needed >= first_held && needed <= self.next_seq => {
                self.ack(needed - 1);
                Resume::Continue
            }
            _ => {
                self.broken = false;
                Resume::Resync {
                    lost: self.restart(),
                }
            }
        }
    }

    /// Starts the stream over: control ops go (a snapshot replaces them),
    /// messages go or stay by the policy; what stays is numbered afresh,
    /// after everything numbered before, so a peer that still remembers how
    /// far it applied the stream never takes a new op for one it already
    /// has. Returns the messages dropped.
    fn restart(&mut self) -> u64 {
        self.sent = 0;
        match self.forgotten {
            Forgotten::DropMessages => {
                let lost = self.messages as u64;
                self.entries.clear();
                self.messages = 0;
                self.message_bytes = 0;
                lost
            }
            Forgotten::KeepMessages => {
                self.entries.retain(|e| e.kind == Kind::Message);
                for entry in &mut self.entries {
                    entry.seq = self.next_seq;
                    self.next_seq += 1;
                }
                0
            }
        }
    }

    /// Every queued message still worth sending, in order (for the store).
    pub fn message_bodies(&self) -> Vec<Bytes> {
        self.entries
            .iter()
            .filter(|e| e.kind == Kind::Message && !e.expired)
            .map(|e| e.body.clone())
            .collect()
    }

    /// Hands every queued message over (to be sent by another way), in
    /// order, and forgets the rest: the next connection resyncs.
    pub fn take_messages(&mut self) -> Vec<Bytes> {
        let messages = self
            .entries
            .drain(..)
            .filter(|e| e.kind == Kind::Message && !e.expired)
            .map(|e| e.body)
            .collect();
        self.messages = 0;
        self.message_bytes = 0;
        self.sent = 0;
        self.broken = true;
        messages
    }

    /// The peer is gone for good: drop everything queued and resync if it
    /// comes back. Returns the messages lost.
    pub fn abandon(&mut self) -> u64 {
        let lost = self.messages as u64;
        self.entries.clear();
        self.messages = 0;
        self.message_bytes = 0;
        self.sent = 0;
        self.broken = true;
        lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNBOUNDED: usize = usize::MAX;

    fn outbox(messages: usize, forgotten: Forgotten) -> Outbox {
        let bounds = Bounds {
            messages,
            bytes: UNBOUNDED,
        };
        Outbox::new(bounds, forgotten, 4, 1 << 20)
    }

    fn body(text: &str) -> Bytes {
        Bytes::copy_from_slice(text.as_bytes())
    }

    /// The (seq, body) of each framed op in `out`.
    fn frames(mut out: &[u8]) -> Vec<(u64, Vec<u8>)> {
        let mut found = Vec::new();
        while !out.is_empty() {
            let len = u32::from_be_bytes([out[0], out[1], out[2], out[3]]) as usize;
            let frame = &out[4..4 + len];
            assert_eq!(frame[0], 4, "the op variant");
            // Small sequence numbers are one byte.
            found.push((u64::from(frame[1]), frame[2..].to_vec()));
            out = &out[4 + len..];
        }
        found
    }

    fn unsent(outbox: &mut Outbox) -> Vec<(u64, Vec<u8>)> {
        let mut out = Vec::new();
        outbox.write_unsent(Instant::now(), &mut out);
        frames(&out)
    }

    #[test]
    fn a_first_contact_resyncs_then_the_stream_continues_after_a_cut() {
        let mut outbox = outbox(10, Forgotten::DropMessages);
        assert_eq!(outbox.resume(None), Resume::Resync { lost: 0 });
        for filter in ["a", "b", "c"] {
            outbox
                .push(body(filter), Kind::Control, None)
                .expect("push");
        }
        assert_eq!(unsent(&mut outbox).len(), 3);
        outbox.ack(1);
        outbox.disconnected();
        // The peer applied op 2 before the cut; only op 3 goes out again.
        assert_eq!(outbox.resume(Some(2)), Resume::Continue);
        assert_eq!(unsent(&mut outbox), vec![(3, b"c".to_vec())]);
    }

    #[test]
    fn a_peer_that_forgot_us_resyncs_and_the_policy_says_what_messages_do() {
        let mut dropping = outbox(10, Forgotten::DropMessages);
        dropping.resume(None);
        dropping
            .push(body("route"), Kind::Control, None)
            .expect("push");
        dropping
            .push(body("m1"), Kind::Message, None)
            .expect("push");
        dropping
            .push(body("m2"), Kind::Message, None)
            .expect("push");
        assert_eq!(dropping.resume(None), Resume::Resync { lost: 2 });
        assert!(dropping.is_empty());

        let mut keeping = outbox(10, Forgotten::KeepMessages);
        keeping.resume(None);
        keeping
            .push(body("interest"), Kind::Control, None)
            .expect("push");
        keeping.push(body("m1"), Kind::Message, None).expect("push");
        keeping.push(body("m2"), Kind::Message, None).expect("push");
        assert_eq!(keeping.resume(None), Resume::Resync { lost: 0 });
        assert_eq!(
            unsent(&mut keeping),
            vec![(4, b"m1".to_vec()), (5, b"m2".to_vec())],
            "kept in order, numbered after everything before"
        );
        assert_eq!(keeping.push(body("snapshot"), Kind::Control, None), Ok(6));
    }

    #[test]
    fn a_restarted_stream_never_reuses_a_number_the_peer_applied() {
        let mut outbox = outbox(3, Forgotten::KeepMessages);
        outbox.resume(None);
        for m in ["m1", "m2", "m3"] {
            outbox.push(body(m), Kind::Message, None).expect("push");
        }
        outbox.ack(1);
        // m2 is dropped to make room: the peer, having applied 1, would miss it.
        assert!(outbox.drop_oldest_unsent().is_some());
        outbox.push(body("m4"), Kind::Message, None).expect("push");
        assert_eq!(outbox.resume(Some(1)), Resume::Resync { lost: 0 });
        let resent = unsent(&mut outbox);
        assert!(resent.iter().all(|(seq, _)| *seq > 1), "{resent:?}");
        assert_eq!(
            resent.iter().map(|(_, b)| b.clone()).collect::<Vec<_>>(),
            vec![b"m3".to_vec(), b"m4".to_vec()]
        );
    }

    #[test]
    fn a_resume_point_older_than_the_queue_forces_a_resync() {
        let mut outbox = outbox(10, Forgotten::DropMessages);
        outbox.resume(None);
        for _ in 0..4 {
            outbox.push(body("m"), Kind::Message, None).expect("push");
        }
        outbox.ack(2);
        // The peer claims only op 1: op 2 is gone from here.
        assert_eq!(outbox.resume(Some(1)), Resume::Resync { lost: 2 });
    }

    #[test]
    fn messages_beyond_the_bounds_are_refused_but_control_ops_always_fit() {
        let mut outbox = Outbox::new(
            Bounds {
                messages: 2,
                bytes: 5,
            },
            Forgotten::KeepMessages,
            4,
            1 << 20,
        );
        outbox.resume(None);
        outbox.push(body("ab"), Kind::Message, None).expect("push");
        assert_eq!(
            outbox.push(body("cdef"), Kind::Message, None),
            Err(PushError::Full),
            "bytes"
        );
        outbox.push(body("cd"), Kind::Message, None).expect("push");
        assert_eq!(
            outbox.push(body("e"), Kind::Message, None),
            Err(PushError::Full),
            "count"
        );
        outbox
            .push(body("route"), Kind::Control, None)
            .expect("a control op is never refused");
        assert_eq!(outbox.messages(), (2, 4));
        assert_eq!(outbox.drop_oldest_unsent(), Some(0));
        outbox
            .push(body("e"), Kind::Message, None)
            .expect("room made");
        let sent: Vec<_> = unsent(&mut outbox).into_iter().map(|(_, b)| b).collect();
        assert_eq!(sent, vec![b"cd".to_vec(), b"route".to_vec(), b"e".to_vec()]);
        assert_eq!(outbox.drop_oldest_unsent(), None, "everything is in flight");
    }

    #[test]
    fn expired_messages_are_skipped_and_counted_once() {
        let mut outbox = outbox(10, Forgotten::KeepMessages);
        outbox.resume(None);
        let past = Instant::now();
        outbox
            .push_weighted(body("old"), Kind::Message, Some(past), 3)
            .expect("push");
        outbox.push(body("new"), Kind::Message, None).expect("push");
        let mut out = Vec::new();
        let written = outbox.write_unsent(Instant::now(), &mut out);
        assert_eq!(
            written,
            Written {
                ops: 1,
                expired: 1,
                expired_weight: 3
            }
        );
        outbox.disconnected();
        let again = outbox.write_unsent(Instant::now(), &mut Vec::new());
        assert_eq!(
            again,
            Written {
                ops: 1,
                expired: 0,
                expired_weight: 0
            }
        );
    }

    #[test]
    fn a_peer_is_backlogged_from_the_mark() {
        let mut outbox = outbox(3, Forgotten::DropMessages).with_backlog_mark(2);
        outbox.resume(None);
        outbox.push(body("m"), Kind::Message, None).expect("push");
        assert!(!outbox.is_backlogged());
        outbox.push(body("m"), Kind::Message, None).expect("push");
        assert!(outbox.is_backlogged());
        outbox.ack(2);
        assert!(!outbox.is_backlogged());
    }

    #[test]
    fn messages_handed_over_leave_in_order_and_the_stream_resyncs() {
        let mut outbox = outbox(10, Forgotten::KeepMessages);
        outbox.resume(None);
        outbox.push(body("m1"), Kind::Message, None).expect("push");
        outbox
            .push(body("interest"), Kind::Control, None)
            .expect("push");
        outbox.push(body("m2"), Kind::Message, None).expect("push");
        assert_eq!(outbox.take_messages(), vec![body("m1"), body("m2")]);
        assert_eq!(outbox.messages(), (0, 0));
        assert_eq!(outbox.resume(Some(3)), Resume::Resync { lost: 0 });
    }

    #[test]
    fn an_abandoned_peer_resyncs_whatever_it_claims() {
        let mut outbox = outbox(10, Forgotten::DropMessages);
        outbox.resume(None);
        outbox.push(body("m"), Kind::Message, None).expect("push");
        assert_eq!(outbox.abandon(), 1);
        assert_eq!(outbox.resume(Some(1)), Resume::Resync { lost: 0 });
    }
}
