//! The time base of one scenario run.
//!
//! Every publisher and subscriber of a run lives in this process and shares
//! one origin `Instant`, so a send timestamp carried in a payload and the
//! receive time are on the same monotonic clock, and latency is a subtraction.

use std::time::{Duration, Instant};

/// A shared monotonic origin; times are nanoseconds since it.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Instant,
}

impl Clock {
    /// A clock whose origin is now.
    pub fn start() -> Clock {
        Clock {
            origin: Instant::now(),
        }
    }

    /// Nanoseconds since the origin (saturating after ~584 years).
    pub fn nanos(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The instant `offset` after the origin, for deadlines.
    pub fn at(&self, offset: Duration) -> Instant {
        self.origin + offset
    }
}

/// The measured part of a run: a warm-up is excluded, then a fixed duration counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    start: Duration,
    end: Duration,
}

impl Window {
    /// The window that opens after `warmup` and lasts `measure`.
    pub fn new(warmup: Duration, measure: Duration) -> Window {
        Window {
            start: warmup,
            end: warmup + measure,
        }
    }

    /// Whether a time, in nanoseconds since the clock's origin, falls in the window
    /// (start included, end excluded).
    pub fn contains(&self, nanos: u64) -> bool {
        let t = Duration::from_nanos(nanos);
        t >= self.start && t < self.end
    }

    /// When the window closes, as an offset from the origin.
    pub fn end(&self) -> Duration {
        self.end
    }

    /// How long the window is.
    pub fn length(&self) -> Duration {
        self.end - self.start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_includes_its_start_and_excludes_its_end() {
        let window = Window::new(Duration::from_millis(500), Duration::from_secs(2));
        assert!(!window.contains(499_999_999));
        assert!(window.contains(500_000_000));
        assert!(window.contains(2_499_999_999));
        assert!(!window.contains(2_500_000_000));
        assert_eq!(window.length(), Duration::from_secs(2));
        assert_eq!(window.end(), Duration::from_millis(2500));
    }

    #[test]
    fn clock_is_monotonic_and_deadlines_are_offsets_from_its_origin() {
        let clock = Clock::start();
        let first = clock.nanos();
        let second = clock.nanos();
        assert!(second >= first);
        assert_eq!(
            clock.at(Duration::from_secs(3)) - clock.at(Duration::from_secs(1)),
            Duration::from_secs(2)
        );
    }
}
