//! Rate limiting for fixed-load runs: how many messages are due by now.
//!
//! A paced publisher wakes every millisecond and sends whatever the schedule
//! says is due, so short stalls are caught up rather than lost and the long-run
//! rate is exact.

use std::time::Duration;

use tokio::time::{interval, Interval, MissedTickBehavior};

/// How often a paced publisher wakes.
const TICK: Duration = Duration::from_millis(1);

/// Messages due after `elapsed` at `rate` per second.
pub fn due(elapsed: Duration, rate: f64) -> u64 {
    (elapsed.as_secs_f64() * rate).floor() as u64
}

/// A publisher's schedule at a fixed rate.
#[derive(Debug)]
pub struct Pace {
    rate: f64,
    started: tokio::time::Instant,
    sent: u64,
    ticker: Interval,
}

impl Pace {
    /// A schedule at `rate` messages per second, starting now.
    pub fn new(rate: f64) -> Pace {
        let mut ticker = interval(TICK);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        Pace {
            rate,
            started: tokio::time::Instant::now(),
            sent: 0,
            ticker,
        }
    }

    /// Waits until at least one message is due, then returns how many may be
    /// sent now (at most `limit`), counting them as sent.
    pub async fn next_batch(&mut self, limit: u64) -> u64 {
        loop {
            let owed = due(self.started.elapsed(), self.rate).saturating_sub(self.sent);
            if owed > 0 {
                let batch = owed.min(limit);
                self.sent += batch;
                return batch;
            }
            self.ticker.tick().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_grows_linearly_with_time() {
        assert_eq!(due(Duration::ZERO, 1000.0), 0);
        assert_eq!(due(Duration::from_micros(999), 1000.0), 0);
        assert_eq!(due(Duration::from_millis(1), 1000.0), 1);
        assert_eq!(due(Duration::from_millis(1500), 1250.0), 1875);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pace_sends_what_is_due_and_no_more() {
        let mut pace = Pace::new(1000.0);
        // Nothing is due at t=0: the first batch comes after a tick.
        assert_eq!(pace.next_batch(100).await, 1);
        tokio::time::advance(Duration::from_millis(10)).await;
        // Ten more milliseconds owe ten messages, capped by the limit.
        assert_eq!(pace.next_batch(4).await, 4);
        assert_eq!(pace.next_batch(100).await, 6);
        let before = tokio::time::Instant::now();
        assert_eq!(pace.next_batch(100).await, 1);
        assert!(
            tokio::time::Instant::now() > before,
            "had to wait for the next message"
        );
    }
}
