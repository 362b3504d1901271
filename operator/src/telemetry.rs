//! The operator's Prometheus metrics: reconciles, failures by reason,
//! durations, and API requests by kind (reads and writes), rendered as text.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the reconcile-duration histogram, in seconds.
const BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// Counters shared by every reconcile. Cheap to update: atomics, plus a
/// short-held lock for the failure reasons.
#[derive(Debug, Default)]
pub struct Metrics {
    started: AtomicU64,
    reconciles: AtomicU64,
    reads: AtomicU64,
    writes: AtomicU64,
    events: AtomicU64,
    failures: Mutex<BTreeMap<&'static str, u64>>,
    duration_buckets: [AtomicU64; BUCKETS.len()],
    duration_count: AtomicU64,
    duration_sum_micros: AtomicU64,
    /// Each link's health (`namespace/name`), as last read from its brokers.
    links: Mutex<BTreeMap<String, LinkGauges>>,
}

/// What the operator last read of one link's health: numbers that change
/// all the time live here, not in the link's status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkGauges {
    pub ready: bool,
    /// Ready nodes of the link's own cluster.
    pub nodes: usize,
    /// Of those, the ones that reach the peer.
    pub connected_nodes: usize,
    /// Messages queued on either end for the other.
    pub queued: i64,
}

/// A snapshot of the request counters, for tests and the benchmark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Reconciles begun; with `reconciles` (finished) it tells whether one is in flight.
    pub started: u64,
    pub reconciles: u64,
    pub reads: u64,
    pub writes: u64,
    pub events: u64,
}

impl Metrics {
    /// Counts one API read (GET).
    pub fn read(&self) {
        self.reads.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one API write (apply, status patch).
    pub fn write(&self) {
        self.writes.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one Event published.
    pub fn event(&self) {
        self.events.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a reconcile as begun.
    pub fn reconcile_started(&self) {
        self.started.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a finished reconcile; `failure` is its reason when it failed.
    pub fn reconciled(&self, took: Duration, failure: Option<&'static str>) {
        self.reconciles.fetch_add(1, Ordering::Relaxed);
        let secs = took.as_secs_f64();
        for (bound, bucket) in BUCKETS.iter().zip(&self.duration_buckets) {
            if secs <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.duration_count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.duration_sum_micros
            .fetch_add(micros, Ordering::Relaxed);
        if let Some(reason) = failure {
            if let Ok(mut failures) = self.failures.lock() {
                *failures.entry(reason).or_default() += 1;
            }
        }
    }

    /// Records what was read of a link's health.
    pub fn set_link(&self, link: &str, gauges: LinkGauges) {
        if let Ok(mut links) = self.links.lock() {
            links.insert(link.to_owned(), gauges);
        }
    }

    /// Forgets a deleted link.
    pub fn remove_link(&self, link: &str) {
        if let Ok(mut links) = self.links.lock() {
            links.remove(link);
        }
    }

    /// The current counters.
    pub fn counts(&self) -> Counts {
        Counts {
            started: self.started.load(Ordering::Relaxed),
            reconciles: self.reconciles.load(Ordering::Relaxed),
            reads: self.reads.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            events: self.events.load(Ordering::Relaxed),
        }
    }

    /// Failures so far by reason.
    pub fn failures(&self) -> BTreeMap<&'static str, u64> {
        self.failures.lock().map(|f| f.clone()).unwrap_or_default()
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let c = self.counts();
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        counter(
            "strait_operator_reconciles_total",
            "Reconciles finished.",
            c.reconciles,
        );
        counter(
            "strait_operator_api_reads_total",
            "API reads made by reconciles.",
            c.reads,
        );
        counter(
            "strait_operator_api_writes_total",
            "API writes made by reconciles.",
            c.writes,
        );
        counter(
            "strait_operator_events_total",
            "Events published.",
            c.events,
        );
        let _ = writeln!(
            out,
            "# HELP strait_operator_reconcile_failures_total Failed reconciles by reason.\n\
             # TYPE strait_operator_reconcile_failures_total counter"
        );
        for (reason, n) in self.failures() {
            let _ = writeln!(
                out,
                "strait_operator_reconcile_failures_total{{reason=\"{reason}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP strait_operator_reconcile_duration_seconds Time per reconcile.\n\
             # TYPE strait_operator_reconcile_duration_seconds histogram"
        );
        for (bound, bucket) in BUCKETS.iter().zip(&self.duration_buckets) {
            let _ = writeln!(
                out,
                "strait_operator_reconcile_duration_seconds_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        self.render_links(&mut out);
        let count = self.duration_count.load(Ordering::Relaxed);
        let sum = self.duration_sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "strait_operator_reconcile_duration_seconds_bucket{{le=\"+Inf\"}} {count}\n\
             strait_operator_reconcile_duration_seconds_sum {sum}\n\
             strait_operator_reconcile_duration_seconds_count {count}"
        );
        out
    }
}

/// Reads one gauge of a link.
type GaugeOf = fn(&LinkGauges) -> i64;

impl Metrics {
    fn render_links(&self, out: &mut String) {
        let links = self.links.lock().map(|l| l.clone()).unwrap_or_default();
        let families: [(&str, &str, GaugeOf); 4] = [
            (
                "strait_operator_link_ready",
                "Whether the link is Ready (1) or not (0).",
                |g| i64::from(g.ready),
            ),
            (
                "strait_operator_link_nodes",
                "Ready nodes of the link's own cluster.",
                |g| g.nodes as i64,
            ),
            (
                "strait_operator_link_connected_nodes",
                "Nodes of the link's own cluster that reach the peer.",
                |g| g.connected_nodes as i64,
            ),
            (
                "strait_operator_link_queued_messages",
                "Messages queued on either end of the link for the other.",
                |g| g.queued,
            ),
        ];
        for (name, help, value) in families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for (link, gauges) in &links {
                let _ = writeln!(out, "{name}{{link=\"{link}\"}} {}", value(gauges));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_failures_and_histogram() {
        let m = Metrics::default();
        m.write();
        m.reconciled(Duration::from_millis(20), None);
        m.reconciled(Duration::from_secs(3), Some("InvalidSpec"));
        let text = m.render();
        assert!(
            text.contains("strait_operator_api_writes_total 1"),
            "{text}"
        );
        assert!(text.contains("strait_operator_reconcile_failures_total{reason=\"InvalidSpec\"} 1"));
        assert!(text.contains("strait_operator_reconcile_duration_seconds_bucket{le=\"0.025\"} 1"));
        assert!(text.contains("strait_operator_reconcile_duration_seconds_count 2"));
        m.set_link(
            "ns/a",
            LinkGauges {
                ready: true,
                nodes: 3,
                connected_nodes: 3,
                queued: 7,
            },
        );
        let text = m.render();
        assert!(
            text.contains("strait_operator_link_ready{link=\"ns/a\"} 1"),
            "{text}"
        );
        assert!(text.contains("strait_operator_link_queued_messages{link=\"ns/a\"} 7"));
        m.remove_link("ns/a");
        assert!(!m.render().contains("link=\"ns/a\""));
    }
}
