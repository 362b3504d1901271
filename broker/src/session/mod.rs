//! Per-client session state: the queue of messages waiting to be sent, the
//! inflight window of QoS 1/2 messages awaiting acknowledgement, packet
//! identifiers, and the QoS 2 packet ids the client has sent but not released.
//!
//! Pure: no sockets and no clock of its own. The server feeds it events
//! (a message to deliver, an acknowledgement, a reconnect) and acts on what it
//! returns, so every QoS flow is tested here without a network.

use std::collections::{HashSet, VecDeque};
use std::time::Instant;

use crate::protocol::QoS;

/// What the session needs to know about a queued message.
pub trait Queued: Clone {
    /// The QoS it will be delivered with.
    fn qos(&self) -> QoS;
    /// Whether its message expiry interval has run out.
    fn is_expired(&self, now: Instant) -> bool;
}

/// An acknowledgement the session cannot apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    /// No message with this packet id is in flight.
    #[error("packet identifier {0} is not in flight")]
    Unknown(u16),
    /// The id is in flight in another QoS flow: a PUBREC for a QoS 1 message,
    /// a PUBACK for a QoS 2 one, a PUBCOMP before the PUBREC. A protocol
    /// error: the connection must close.
    #[error("packet identifier {0} is in flight in another QoS flow")]
    WrongFlow(u16),
}

/// The next thing to write for this session, from [`Session::next_to_send`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next<M> {
    /// Send this message; `packet_id` is set for QoS 1 and 2.
    Send { packet_id: Option<u16>, message: M },
    /// This message expired while queued: drop it (and count it).
    Expired(M),
}

/// Something to resend after a reconnect, in the original order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resend<'a, M> {
    /// PUBLISH again with DUP set.
    Publish { packet_id: u16, message: &'a M },
    /// PUBREL again: PUBREC was received, PUBCOMP was not.
    PubRel { packet_id: u16 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum InflightState<M> {
    /// Sent; waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    Published(M),
    /// PUBREC received and PUBREL sent; waiting for PUBCOMP.
    Released,
}

/// The state of one client session that outlives its connections.
#[derive(Debug, Clone)]
pub struct Session<M> {
    queue: VecDeque<M>,
    /// In send order; the window is small, so a linear search beats a map.
    inflight: VecDeque<(u16, InflightState<M>)>,
    incoming_qos2: HashSet<u16>,
    next_packet_id: u16,
    max_queued: usize,
    window: usize,
}

impl<M: Queued> Session<M> {
    /// A session holding at most `max_queued` waiting messages and `window`
    /// unacknowledged ones.
    pub fn new(max_queued: usize, window: u16) -> Self {
        Session {
            queue: VecDeque::new(),
            inflight: VecDeque::new(),
            incoming_qos2: HashSet::new(),
            next_packet_id: 1,
            max_queued,
            window: usize::from(window.max(1)),
        }
    }

    /// Changes the inflight window, on a new connection (the client's receive
    /// maximum may differ).
    pub fn set_window(&mut self, window: u16) {
        self.window = usize::from(window.max(1));
    }

    /// Queues a message; gives it back when the queue is full.
    pub fn enqueue(&mut self, message: M) -> Result<(), M> {
        if self.queue.len() >= self.max_queued {
            return Err(message);
        }
        self.queue.push_back(message);
        Ok(())
    }

    /// Queues a message past the bound. For back-pressure: the caller holds
    /// the message's publisher until the queue drains, so the queue exceeds its
    /// bound by at most one message per publisher held.
    pub fn enqueue_beyond_bound(&mut self, message: M) {
        self.queue.push_back(message);
    }

    /// Whether the queue is at (or, under back-pressure, beyond) its bound.
    pub fn is_full(&self) -> bool {
        self.queue.len() >= self.max_queued
    }

    /// Whether the queue has drained to half its bound or less: a stalled
    /// receiver that gets here is draining again.
    pub fn is_half_empty(&self) -> bool {
        self.queue.len() <= self.max_queued / 2
    }

    /// Messages waiting to be sent.
    pub fn queued_len(&self) -> usize {
        self.queue.len()
    }

    /// QoS 1/2 messages sent and not yet fully acknowledged.
    pub fn inflight_len(&self) -> usize {
        self.inflight.len()
    }

    /// Whether [`Session::next_to_send`] could return something now.
    pub fn has_sendable(&self) -> bool {
        match self.queue.front() {
            None => false,
            Some(m) => m.qos() == QoS::AtMostOnce || self.inflight.len() < self.window,
        }
    }

    /// Takes the next message to send, if the inflight window allows it.
    /// QoS 0 messages are not limited by the window; a QoS 1/2 message at the
    /// head of the queue holds the ones behind it, so order is kept.
    pub fn next_to_send(&mut self, now: Instant) -> Option<Next<M>> {
        let head = self.queue.front()?;
        if head.is_expired(now) {
            return self.queue.pop_front().map(Next::Expired);
        }
        if head.qos() == QoS::AtMostOnce {
            return self.queue.pop_front().map(|message| Next::Send {
                packet_id: None,
                message,
            });
        }
        if self.inflight.len() >= self.window {
            return None;
        }
        let message = self.queue.pop_front()?;
        let packet_id = self.allocate_packet_id();
        self.inflight
            .push_back((packet_id, InflightState::Published(message.clone())));
        Some(Next::Send {
            packet_id: Some(packet_id),
            message,
        })
    }

    fn allocate_packet_id(&mut self) -> u16 {
        // The window is at most 65535 entries, so a free id always exists.
        loop {
            let id = self.next_packet_id;
            self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
            if !self.inflight.iter().any(|(pid, _)| *pid == id) {
                return id;
            }
        }
    }

    fn position(&self, packet_id: u16) -> Result<usize, AckError> {
        self.inflight
            .iter()
            .position(|(pid, _)| *pid == packet_id)
            .ok_or(AckError::Unknown(packet_id))
    }

    /// PUBACK for a QoS 1 message: the flow is complete.
    pub fn on_puback(&mut self, packet_id: u16) -> Result<M, AckError> {
        let at = self.position(packet_id)?;
        match self.inflight.get(at) {
            Some((_, InflightState::Published(m))) if m.qos() == QoS::AtLeastOnce => {
                match self.inflight.remove(at) {
                    Some((_, InflightState::Published(m))) => Ok(m),
                    _ => Err(AckError::Unknown(packet_id)),
                }
            }
            _ => Err(AckError::WrongFlow(packet_id)),
        }
    }

    /// PUBREC for a QoS 2 message. Returns true when PUBREL must be sent: the
    /// first time, and again for a retransmitted PUBREC while PUBCOMP is
    /// pending. A failure reason code from the client ends the flow instead.
    pub fn on_pubrec(&mut self, packet_id: u16, failed: bool) -> Result<bool, AckError> {
        let at = self.position(packet_id)?;
        match self.inflight.get(at) {
            Some((_, InflightState::Published(m))) if m.qos() == QoS::ExactlyOnce => {}
            Some((_, InflightState::Released)) => return Ok(true),
            _ => return Err(AckError::WrongFlow(packet_id)),
        }
        if failed {
            self.inflight.remove(at);
            return Ok(false);
        }
        if let Some(entry) = self.inflight.get_mut(at) {
            entry.1 = InflightState::Released;
        }
        Ok(true)
    }

    /// PUBCOMP: the QoS 2 flow is complete.
    pub fn on_pubcomp(&mut self, packet_id: u16) -> Result<(), AckError> {
        let at = self.position(packet_id)?;
        match self.inflight.get(at) {
            Some((_, InflightState::Released)) => {
                self.inflight.remove(at);
                Ok(())
            }
            _ => Err(AckError::WrongFlow(packet_id)),
        }
    }

    /// What to resend on a new connection of this session, in the original order.
    pub fn resend(&self) -> impl Iterator<Item = Resend<'_, M>> {
        self.inflight.iter().map(|(packet_id, state)| match state {
            InflightState::Published(message) => Resend::Publish {
                packet_id: *packet_id,
                message,
            },
            InflightState::Released => Resend::PubRel {
                packet_id: *packet_id,
            },
        })
    }

    /// A QoS 2 PUBLISH from the client arrived. Returns false when it is a
    /// duplicate of one not yet released (it must be acknowledged, not routed again).
    pub fn begin_incoming_qos2(&mut self, packet_id: u16) -> bool {
        self.incoming_qos2.insert(packet_id)
    }

    /// PUBREL from the client. Returns false when the id was unknown (v5 answers
    /// PUBCOMP with 0x92 then).
    pub fn release_incoming_qos2(&mut self, packet_id: u16) -> bool {
        self.incoming_qos2.remove(&packet_id)
    }

    /// QoS 2 messages received and not yet released by the client.
    pub fn incoming_qos2_len(&self) -> usize {
        self.incoming_qos2.len()
    }

    /// Every message not yet fully delivered (inflight first, then queued), to
    /// persist the session. Released QoS 2 messages have reached the client and
    /// are left out.
    pub fn pending_messages(&self) -> impl Iterator<Item = &M> {
        self.inflight
            .iter()
            .filter_map(|(_, state)| match state {
                InflightState::Published(m) => Some(m),
                InflightState::Released => None,
            })
            .chain(self.queue.iter())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Msg {
        name: &'static str,
        qos: QoS,
        expires: Option<Instant>,
    }

    impl Queued for Msg {
        fn qos(&self) -> QoS {
            self.qos
        }
        fn is_expired(&self, now: Instant) -> bool {
            self.expires.is_some_and(|at| at <= now)
        }
    }

    fn msg(name: &'static str, qos: QoS) -> Msg {
        Msg {
            name,
            qos,
            expires: None,
        }
    }

    fn sent(next: Option<Next<Msg>>) -> (Option<u16>, &'static str) {
        match next {
            Some(Next::Send { packet_id, message }) => (packet_id, message.name),
            other => panic!("expected a send, got {other:?}"),
        }
    }

    #[test]
    fn queue_is_bounded_and_gives_the_message_back() {
        let mut s = Session::new(2, 10);
        assert!(s.enqueue(msg("a", QoS::AtLeastOnce)).is_ok());
        assert!(s.enqueue(msg("b", QoS::AtLeastOnce)).is_ok());
        let refused = s.enqueue(msg("c", QoS::AtLeastOnce));
        assert_eq!(refused.map_err(|m| m.name), Err("c"));
        assert_eq!(s.queued_len(), 2);
    }

    #[test]
    fn window_limits_qos1_in_flight_and_acks_open_it() {
        let now = Instant::now();
        let mut s = Session::new(10, 2);
        for name in ["a", "b", "c"] {
            s.enqueue(msg(name, QoS::AtLeastOnce)).expect("room");
        }
        assert_eq!(sent(s.next_to_send(now)), (Some(1), "a"));
        assert_eq!(sent(s.next_to_send(now)), (Some(2), "b"));
        assert!(s.next_to_send(now).is_none(), "window of 2 is full");
        assert!(!s.has_sendable());
        assert_eq!(s.on_puback(1).map(|m| m.name), Ok("a"));
        assert!(s.has_sendable());
        assert_eq!(sent(s.next_to_send(now)), (Some(3), "c"));
        assert_eq!(s.on_puback(1), Err(AckError::Unknown(1)), "already acked");
    }

    #[test]
    fn qos0_is_not_limited_by_the_window_but_keeps_order() {
        let now = Instant::now();
        let mut s = Session::new(10, 1);
        s.enqueue(msg("q1", QoS::AtLeastOnce)).expect("room");
        s.enqueue(msg("q0", QoS::AtMostOnce)).expect("room");
        s.enqueue(msg("q1b", QoS::AtLeastOnce)).expect("room");
        assert_eq!(sent(s.next_to_send(now)), (Some(1), "q1"));
        assert_eq!(sent(s.next_to_send(now)), (None, "q0"));
        assert!(s.next_to_send(now).is_none(), "q1b waits for the window");
    }

    #[test]
    fn qos2_flow_goes_through_pubrec_then_pubcomp() {
        let now = Instant::now();
        let mut s = Session::new(10, 10);
        s.enqueue(msg("x", QoS::ExactlyOnce)).expect("room");
        let (pid, _) = sent(s.next_to_send(now));
        let pid = pid.expect("qos2 has an id");
        assert_eq!(
            s.on_pubcomp(pid),
            Err(AckError::WrongFlow(pid)),
            "PUBCOMP before PUBREC"
        );
        assert_eq!(
            s.on_puback(pid),
            Err(AckError::WrongFlow(pid)),
            "PUBACK does not complete QoS 2"
        );
        assert_eq!(s.on_pubrec(pid, false), Ok(true));
        assert_eq!(
            s.on_pubrec(pid, false),
            Ok(true),
            "a retransmitted PUBREC while PUBCOMP is pending gets PUBREL again"
        );
        assert_eq!(s.inflight_len(), 1);
        assert_eq!(s.on_pubcomp(pid), Ok(()));
        assert_eq!(s.inflight_len(), 0);
        assert_eq!(s.on_pubcomp(pid), Err(AckError::Unknown(pid)));
    }

    #[test]
    fn a_pubrec_for_a_qos1_message_is_another_flow() {
        let now = Instant::now();
        let mut s = Session::new(10, 10);
        s.enqueue(msg("x", QoS::AtLeastOnce)).expect("room");
        let (pid, _) = sent(s.next_to_send(now));
        let pid = pid.expect("id");
        assert_eq!(s.on_pubrec(pid, false), Err(AckError::WrongFlow(pid)));
        assert_eq!(s.on_pubcomp(pid), Err(AckError::WrongFlow(pid)));
        assert_eq!(s.on_pubrec(pid + 1, false), Err(AckError::Unknown(pid + 1)));
    }

    #[test]
    fn failed_pubrec_ends_the_flow_without_pubrel() {
        let now = Instant::now();
        let mut s = Session::new(10, 10);
        s.enqueue(msg("x", QoS::ExactlyOnce)).expect("room");
        let (pid, _) = sent(s.next_to_send(now));
        let pid = pid.expect("id");
        assert_eq!(s.on_pubrec(pid, true), Ok(false));
        assert_eq!(s.inflight_len(), 0);
    }

    #[test]
    fn reconnect_resends_publishes_and_pubrels_in_order() {
        let now = Instant::now();
        let mut s = Session::new(10, 10);
        s.enqueue(msg("one", QoS::ExactlyOnce)).expect("room");
        s.enqueue(msg("two", QoS::AtLeastOnce)).expect("room");
        let (p1, _) = sent(s.next_to_send(now));
        let (p2, _) = sent(s.next_to_send(now));
        let (p1, p2) = (p1.expect("id"), p2.expect("id"));
        s.on_pubrec(p1, false).expect("known");
        let resend: Vec<_> = s.resend().collect();
        assert_eq!(
            resend,
            vec![
                Resend::PubRel { packet_id: p1 },
                Resend::Publish {
                    packet_id: p2,
                    message: &msg("two", QoS::AtLeastOnce)
                },
            ]
        );
        let pending: Vec<_> = s.pending_messages().map(|m| m.name).collect();
        assert_eq!(pending, vec!["two"], "released QoS 2 has been delivered");
    }

    #[test]
    fn expired_messages_are_reported_not_sent() {
        let now = Instant::now();
        let mut s = Session::new(10, 10);
        s.enqueue(Msg {
            name: "old",
            qos: QoS::AtLeastOnce,
            expires: Some(now),
        })
        .expect("room");
        s.enqueue(msg("fresh", QoS::AtLeastOnce)).expect("room");
        let later = now + Duration::from_secs(1);
        assert!(matches!(s.next_to_send(later), Some(Next::Expired(m)) if m.name == "old"));
        assert_eq!(sent(s.next_to_send(later)), (Some(1), "fresh"));
    }

    #[test]
    fn packet_ids_wrap_and_skip_ids_in_flight() {
        let now = Instant::now();
        let mut s = Session::new(10, 10);
        s.next_packet_id = u16::MAX;
        s.enqueue(msg("a", QoS::AtLeastOnce)).expect("room");
        s.enqueue(msg("b", QoS::AtLeastOnce)).expect("room");
        assert_eq!(sent(s.next_to_send(now)).0, Some(u16::MAX));
        assert_eq!(sent(s.next_to_send(now)).0, Some(1), "0 is never used");
        s.next_packet_id = u16::MAX;
        s.enqueue(msg("c", QoS::AtLeastOnce)).expect("room");
        assert_eq!(
            sent(s.next_to_send(now)).0,
            Some(2),
            "65535 and 1 are in flight"
        );
    }

    #[test]
    fn incoming_qos2_duplicates_are_recognised_until_released() {
        let mut s: Session<Msg> = Session::new(10, 10);
        assert!(s.begin_incoming_qos2(7));
        assert!(!s.begin_incoming_qos2(7), "redelivery before PUBREL");
        assert_eq!(s.incoming_qos2_len(), 1);
        assert!(s.release_incoming_qos2(7));
        assert!(!s.release_incoming_qos2(7), "unknown after release");
        assert!(s.begin_incoming_qos2(7), "id can be reused");
    }
}
