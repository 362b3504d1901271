//! Back-pressure: holding a publisher until the receivers of what it sent have
//! room again.
//!
//! A receiver (a connected session, or a peer node whose stream is falling
//! behind) that takes a message beyond its bound becomes a [`Gate`] for the
//! sender. The sender collects the gates of one message in a [`Hold`] and reads
//! nothing more from its own source until every gate is open again, or until
//! the hold's deadline passes. A gate still closed at the deadline is told it
//! [stalled](Gate::stalled): from then on its receiver drops (and counts) what
//! meets its full queue instead of holding anyone, until it drains. So a
//! receiver that is slow slows its publishers down, and a receiver that stopped
//! altogether costs each of them one bounded wait, not a standstill.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// A receiver that took a message beyond its bound.
pub trait Gate: Send + Sync + std::fmt::Debug {
    /// Whether the sender may go on: there is room again, or waiting no longer
    /// makes sense (the receiver went away).
    fn is_open(&self) -> bool;
    /// Notified (`notify_waiters`) whenever the gate may have opened.
    fn room(&self) -> &Notify;
    /// The receiver made no room within the hold's deadline.
    fn stalled(&self);
}

/// What delivering one message asks of its sender.
#[derive(Debug, Default)]
pub struct Pushback {
    /// Some receiver could not take the message now (dropped there and
    /// counted, or taken beyond its bound and listed in `gates`).
    pub congested: bool,
    /// Receivers that took the message beyond their bound: hold the sender
    /// until they have room.
    pub gates: Vec<Arc<dyn Gate>>,
}

impl Pushback {
    /// Adds what another receiver of the same messages asks.
    pub fn merge(&mut self, other: Pushback) {
        self.congested |= other.congested;
        self.gates.extend(other.gates);
    }

    /// What a reader of a stream of messages (a peer's, a link's) does about
    /// its receivers: read nothing more until the gates open (at most
    /// `max_wait`), returning how that ended, or only yield to them when they
    /// are congested without gates.
    pub async fn hold_reader(self, max_wait: Duration) -> Option<Release> {
        if !self.gates.is_empty() {
            Some(Hold::new(self.gates, max_wait).released().await)
        } else {
            if self.congested {
                tokio::task::yield_now().await;
            }
            None
        }
    }
}

/// How a [`Hold`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Every gate opened in time.
    Room,
    /// The deadline passed with this many gates still closed; they were told
    /// they stalled.
    TimedOut(usize),
}

/// The gates one sender waits for, with the deadline of its wait.
#[derive(Debug)]
pub struct Hold {
    gates: Vec<Arc<dyn Gate>>,
    deadline: Instant,
}

impl Hold {
    /// A hold on `gates` that gives up after `max_wait`.
    pub fn new(gates: Vec<Arc<dyn Gate>>, max_wait: Duration) -> Hold {
        Hold {
            gates,
            deadline: Instant::now() + max_wait,
        }
    }

    /// Whether there is nothing to wait for.
    pub fn is_empty(&self) -> bool {
        self.gates.is_empty()
    }

    /// Waits until every gate is open or the deadline passes. Cancel-safe: a
    /// cancelled wait can simply be started again.
    pub async fn released(&self) -> Release {
        for (at, gate) in self.gates.iter().enumerate() {
            loop {
                let notified = gate.room().notified();
                tokio::pin!(notified);
                // Registered before the check, so a notification between the
                // check and the wait is not lost.
                notified.as_mut().enable();
                if gate.is_open() {
                    break;
                }
                tokio::select! {
                    _ = &mut notified => {}
                    _ = tokio::time::sleep_until(self.deadline) => {
                        let closed: Vec<_> = self.gates[at..].iter().filter(|g| !g.is_open()).collect();
                        for gate in &closed {
                            gate.stalled();
                        }
                        return Release::TimedOut(closed.len());
                    }
                }
            }
        }
        Release::Room
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use super::*;

    #[derive(Debug, Default)]
    struct Valve {
        open: AtomicBool,
        room: Notify,
        stalls: AtomicUsize,
    }

    impl Gate for Valve {
        fn is_open(&self) -> bool {
            self.open.load(Ordering::Acquire)
        }
        fn room(&self) -> &Notify {
            &self.room
        }
        fn stalled(&self) {
            self.stalls.fetch_add(1, Ordering::AcqRel);
        }
    }

    fn open(valve: &Valve) {
        valve.open.store(true, Ordering::Release);
        valve.room.notify_waiters();
    }

    #[tokio::test(start_paused = true)]
    async fn a_hold_ends_when_every_gate_opens() {
        let a = Arc::new(Valve::default());
        let b = Arc::new(Valve::default());
        let gates: Vec<Arc<dyn Gate>> = vec![a.clone(), b.clone()];
        let hold = Hold::new(gates, Duration::from_secs(5));
        let waiting = tokio::spawn(async move { hold.released().await });
        tokio::task::yield_now().await;
        open(&b);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "gate a is still closed");
        open(&a);
        assert_eq!(waiting.await.ok(), Some(Release::Room));
        assert_eq!(a.stalls.load(Ordering::Acquire), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn gates_still_closed_at_the_deadline_are_told_they_stalled() {
        let a = Arc::new(Valve::default());
        let b = Arc::new(Valve::default());
        open(&a);
        let gates: Vec<Arc<dyn Gate>> = vec![a.clone(), b.clone()];
        let hold = Hold::new(gates, Duration::from_millis(200));
        assert_eq!(hold.released().await, Release::TimedOut(1));
        assert_eq!(a.stalls.load(Ordering::Acquire), 0);
        assert_eq!(b.stalls.load(Ordering::Acquire), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reader_is_held_only_for_gates_and_merged_pushback_keeps_both() {
        let closed = Arc::new(Valve::default());
        let mut pushback = Pushback::default();
        pushback.merge(Pushback {
            congested: true,
            gates: Vec::new(),
        });
        assert_eq!(
            Pushback::default()
                .hold_reader(Duration::from_secs(1))
                .await,
            None
        );
        pushback.merge(Pushback {
            congested: false,
            gates: vec![closed.clone() as Arc<dyn Gate>],
        });
        assert!(pushback.congested && pushback.gates.len() == 1);
        let held = pushback.hold_reader(Duration::from_millis(100)).await;
        assert_eq!(held, Some(Release::TimedOut(1)));
        assert_eq!(closed.stalls.load(Ordering::Acquire), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_gate_releases_at_once() {
        let a = Arc::new(Valve::default());
        open(&a);
        let hold = Hold::new(vec![a as Arc<dyn Gate>], Duration::from_secs(5));
        assert_eq!(hold.released().await, Release::Room);
    }
}
