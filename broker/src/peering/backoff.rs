//! The pause between attempts to reach a peer: it doubles from a first
//! pause up to a cap, with jitter so that many dialers do not retry in step,
//! and starts afresh after a connection that lived long enough to count as
//! healthy.

use std::time::Duration;

/// Capped exponential backoff with jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            first,
            max: max.max(first),
            next: first,
        }
    }

    /// The pause before the next attempt (up to a quarter more, at random),
    /// and the one after it doubles, up to the cap.
    pub fn next_pause(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        let quarter = u64::try_from(base.as_millis() / 4)
            .unwrap_or(u64::MAX)
            .max(1);
        base + Duration::from_millis(rand::random::<u64>() % quarter)
    }

    /// The last connection was healthy: the next pause is the first again.
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_the_cap_with_jitter_and_reset() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let pauses: Vec<u128> = (0..6).map(|_| backoff.next_pause().as_millis()).collect();
        for (pause, base) in pauses.iter().zip([100, 200, 400, 800, 1000, 1000]) {
            assert!((base..base + base / 4 + 1).contains(pause), "{pauses:?}");
        }
        backoff.reset();
        assert!(backoff.next_pause() < Duration::from_millis(126));
    }
}
