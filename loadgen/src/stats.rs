//! Throughput and latency figures of one run.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Longest latency the histogram resolves; slower messages count as this.
const MAX_LATENCY_NANOS: u64 = 60_000_000_000;

/// Significant digits kept: 0.1 % resolution at every magnitude.
const SIGNIFICANT_DIGITS: u8 = 3;

/// End-to-end latencies in nanoseconds, mergeable across subscribers.
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    histogram: Histogram<u64>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram::new()
    }
}

impl LatencyHistogram {
    /// An empty histogram from 1 ns to 60 s.
    pub fn new() -> LatencyHistogram {
        LatencyHistogram {
            histogram: Histogram::new_with_bounds(1, MAX_LATENCY_NANOS, SIGNIFICANT_DIGITS)
                .expect("constant histogram bounds are valid"),
        }
    }

    /// Records one latency; values beyond the range are clamped into it.
    pub fn record(&mut self, nanos: u64) {
        self.histogram.saturating_record(nanos.max(1));
    }

    /// Adds every value of `other` (histograms of the same range always merge).
    pub fn merge(&mut self, other: &LatencyHistogram) {
        for bucket in other.histogram.iter_recorded() {
            self.histogram
                .saturating_record_n(bucket.value_iterated_to(), bucket.count_at_value());
        }
    }

    /// Number of recorded values.
    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// Percentiles, or `None` when nothing was recorded.
    pub fn summary(&self) -> Option<LatencySummary> {
        if self.histogram.is_empty() {
            return None;
        }
        let at = |quantile: f64| Duration::from_nanos(self.histogram.value_at_quantile(quantile));
        Some(LatencySummary {
            count: self.count(),
            p50: at(0.50),
            p99: at(0.99),
            max: Duration::from_nanos(self.histogram.max()),
        })
    }
}

/// The latency figures reported for a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencySummary {
    pub count: u64,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

/// Messages delivered to subscribers over a measured window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throughput {
    pub delivered: u64,
    pub window: Duration,
}

impl Throughput {
    /// Messages per second; zero for an empty window.
    pub fn per_second(&self) -> f64 {
        let secs = self.window.as_secs_f64();
        if secs > 0.0 {
            self.delivered as f64 / secs
        } else {
            0.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `actual` is within the histogram's 0.1 % resolution of `expected`.
    fn close(actual: Duration, expected: Duration) -> bool {
        let (a, e) = (actual.as_nanos() as f64, expected.as_nanos() as f64);
        (a - e).abs() <= e * 0.001 + 1.0
    }

    #[test]
    fn percentiles_of_a_uniform_spread() {
        let mut latencies = LatencyHistogram::new();
        for micros in 1..=1000u64 {
            latencies.record(micros * 1000);
        }
        let summary = latencies.summary().expect("values were recorded");
        assert_eq!(summary.count, 1000);
        assert!(
            close(summary.p50, Duration::from_micros(500)),
            "{summary:?}"
        );
        assert!(
            close(summary.p99, Duration::from_micros(990)),
            "{summary:?}"
        );
        assert!(
            close(summary.max, Duration::from_micros(1000)),
            "{summary:?}"
        );
    }

    #[test]
    fn a_slow_tail_shows_in_p99_but_not_p50() {
        let mut latencies = LatencyHistogram::new();
        for _ in 0..980 {
            latencies.record(100_000);
        }
        for _ in 0..20 {
            latencies.record(50_000_000);
        }
        let summary = latencies.summary().expect("values were recorded");
        assert!(close(summary.p50, Duration::from_micros(100)));
        assert!(close(summary.p99, Duration::from_millis(50)));
    }

    #[test]
    fn merging_keeps_every_value() {
        let mut a = LatencyHistogram::new();
        let mut b = LatencyHistogram::new();
        for _ in 0..10 {
            a.record(1_000);
            b.record(3_000);
        }
        a.merge(&b);
        let summary = a.summary().expect("values were recorded");
        assert_eq!(summary.count, 20);
        assert!(close(summary.p50, Duration::from_micros(1)));
        assert!(close(summary.max, Duration::from_micros(3)));
    }

    #[test]
    fn out_of_range_values_are_clamped_not_lost() {
        let mut latencies = LatencyHistogram::new();
        latencies.record(0);
        latencies.record(u64::MAX);
        assert_eq!(latencies.count(), 2);
    }

    #[test]
    fn empty_histograms_have_no_summary() {
        assert_eq!(LatencyHistogram::new().summary(), None);
    }

    #[test]
    fn throughput_is_deliveries_over_the_window() {
        let t = Throughput {
            delivered: 150_000,
            window: Duration::from_millis(1500),
        };
        assert_eq!(t.per_second(), 100_000.0);
        let empty = Throughput {
            delivered: 5,
            window: Duration::ZERO,
        };
        assert_eq!(empty.per_second(), 0.0);
    }
}
