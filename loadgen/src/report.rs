//! The benchmark report: markdown tables comparing the first broker (the
//! subject, Strait) with each other broker, as absolute figures and ratios.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use crate::cross_link::CrossLinkResults;
use crate::delivery::DeliveryResults;
use crate::stats::LatencySummary;

/// Everything measured on one broker. A missing entry means the run failed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BrokerResults {
    pub name: String,
    /// Delivered messages per second, by scenario name.
    pub throughput: HashMap<String, f64>,
    /// PUBLISH packets the broker took from publishers per second, by scenario
    /// name: above the delivered rate (divided by the fan-out) when it dropped.
    pub published: HashMap<String, f64>,
    /// Latency percentiles, by scenario name.
    pub latency: HashMap<String, LatencySummary>,
    /// `VmHWM` after the throughput runs, in KiB.
    pub peak_rss_kib: Option<u64>,
    /// Growth of `VmRSS` per idle connection, in bytes.
    pub idle_bytes_per_connection: Option<f64>,
    /// Idle connections the figure above was measured with.
    pub idle_connections: usize,
    /// What went wrong, in the order it happened.
    pub errors: Vec<String>,
}

/// What one run delivered: its rate and its p99 latency.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measured {
    /// Messages delivered to subscribers per second.
    pub rate: f64,
    pub p99: Duration,
}

/// One scenario on one Strait node and across two; `None` where the run failed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CrossNodeRow {
    pub scenario: String,
    pub single: Option<Measured>,
    pub cross: Option<Measured>,
}

/// Strait on one node against Strait across a two-node cluster.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CrossNodeResults {
    /// In plan order.
    pub rows: Vec<CrossNodeRow>,
    /// Connections accepted per second by one node, and by the cluster's
    /// nodes together (clients spread over them).
    pub connect_rates: Option<(f64, f64)>,
    /// What went wrong, in the order it happened.
    pub errors: Vec<String>,
}

/// Cross-node throughput should be at least this fraction of a single node's.
pub const CROSS_NODE_RATE_GOAL: f64 = 0.70;

/// Crossing nodes should add less than this to the p99 latency.
pub const CROSS_NODE_ADDED_P99_GOAL: Duration = Duration::from_millis(1);

/// The whole report: scenario names in plan order, then one entry per broker,
/// the subject first, then Strait's cross-node comparison if it ran.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub throughput_scenarios: Vec<String>,
    pub latency_scenarios: Vec<String>,
    pub brokers: Vec<BrokerResults>,
    pub cross_node: Option<CrossNodeResults>,
    pub cross_link: Option<CrossLinkResults>,
    pub delivery: Option<DeliveryResults>,
    /// Free-form lines printed under the title (machine, durations, configuration).
    pub notes: Vec<String>,
}

/// Picks one percentile out of a latency summary.
type Percentile = fn(&LatencySummary) -> Duration;

/// The percentiles of the latency table, with their labels.
const PERCENTILES: [(&str, Percentile); 2] = [("p50", |s| s.p50), ("p99", |s| s.p99)];

/// A count with thousands separators: 1234567.4 -> "1,234,567".
pub fn format_count(value: f64) -> String {
    let rounded = value.round();
    let digits = format!("{}", rounded.abs() as u64);
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    if rounded < 0.0 {
        out.insert(0, '-');
    }
    out
}

/// `subject / other` as "1.23×"; a dash when either side is missing or the
/// divisor is not positive.
pub fn format_ratio(subject: Option<f64>, other: Option<f64>) -> String {
    match (subject, other) {
        (Some(s), Some(o)) if o > 0.0 && s.is_finite() => format!("{:.2}×", s / o),
        _ => "–".to_owned(),
    }
}

/// A duration in microseconds with one decimal: "123.4".
pub fn format_micros(duration: Duration) -> String {
    format!("{:.1}", duration.as_secs_f64() * 1e6)
}

/// KiB as MiB with one decimal.
pub fn format_mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// A cell for an optional figure: the formatted value, or "failed".
pub(crate) fn cell<T>(value: Option<T>, format: impl Fn(T) -> String) -> String {
    value.map(format).unwrap_or_else(|| "failed".to_owned())
}

/// A GitHub-flavoured markdown table; the first column left-aligned, the rest right.
pub fn markdown_table(header: &[String], rows: &[Vec<String>]) -> String {
    let mut out = String::new();
    let line = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
    out.push_str(&line(header));
    let rule: Vec<String> = (0..header.len())
        .map(|i| {
            if i == 0 {
                "---".to_owned()
            } else {
                "---:".to_owned()
            }
        })
        .collect();
    out.push_str(&line(&rule));
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

impl Report {
    /// The report as markdown.
    pub fn to_markdown(&self) -> String {
        let mut out = String::from("# Strait broker benchmark\n\n");
        for note in &self.notes {
            let _ = writeln!(out, "- {note}");
        }
        let Some((subject, peers)) = self.brokers.split_first() else {
            out.push_str("\nNo broker was benchmarked.\n");
            return out;
        };
        let ratio_headers = || peers.iter().map(|p| format!("{}/{}", subject.name, p.name));

        out.push_str("\n## Throughput\n\nMessages delivered to subscribers per second (higher is better; a ratio above 1 means ");
        let _ = write!(out, "{} delivered more).\n\n", subject.name);
        let mut header = vec!["Scenario".to_owned()];
        header.extend(self.brokers.iter().map(|b| format!("{} msg/s", b.name)));
        header.extend(ratio_headers());
        let rows: Vec<Vec<String>> = self
            .throughput_scenarios
            .iter()
            .map(|scenario| {
                let value = |b: &BrokerResults| b.throughput.get(scenario).copied();
                let mut row = vec![scenario.clone()];
                row.extend(self.brokers.iter().map(|b| cell(value(b), format_count)));
                row.extend(peers.iter().map(|p| format_ratio(value(subject), value(p))));
                row
            })
            .collect();
        out.push_str(&markdown_table(&header, &rows));

        out.push_str(
            "\nPUBLISH packets taken from the publishers per second in the same runs: where this \
             exceeds deliveries (divided by the fan-out), the broker accepted more than it delivered \
             and dropped the rest.\n\n",
        );
        let mut header = vec!["Scenario".to_owned()];
        header.extend(
            self.brokers
                .iter()
                .map(|b| format!("{} publishes/s", b.name)),
        );
        let rows: Vec<Vec<String>> = self
            .throughput_scenarios
            .iter()
            .map(|scenario| {
                let mut row = vec![scenario.clone()];
                row.extend(
                    self.brokers
                        .iter()
                        .map(|b| cell(b.published.get(scenario).copied(), format_count)),
                );
                row
            })
            .collect();
        out.push_str(&markdown_table(&header, &rows));

        out.push_str("\n## Latency\n\nEnd-to-end publish-to-delivery latency at a fixed offered load, in µs (lower is better; a ratio below 1 means ");
        let _ = write!(out, "{} was faster).\n\n", subject.name);
        let mut header = vec!["Scenario".to_owned(), "Percentile".to_owned()];
        header.extend(self.brokers.iter().map(|b| format!("{} µs", b.name)));
        header.extend(ratio_headers());
        let mut rows = Vec::new();
        for scenario in &self.latency_scenarios {
            for (label, pick) in PERCENTILES {
                let value = |b: &BrokerResults| b.latency.get(scenario).map(pick);
                let mut row = vec![scenario.clone(), label.to_owned()];
                row.extend(self.brokers.iter().map(|b| cell(value(b), format_micros)));
                row.extend(peers.iter().map(|p| {
                    format_ratio(
                        value(subject).map(|d| d.as_secs_f64()),
                        value(p).map(|d| d.as_secs_f64()),
                    )
                }));
                rows.push(row);
            }
        }
        out.push_str(&markdown_table(&header, &rows));

        out.push_str("\n## Memory\n\nLower is better; a ratio below 1 means ");
        let _ = write!(out, "{} used less.\n\n", subject.name);
        let mut header = vec!["Measure".to_owned()];
        header.extend(self.brokers.iter().map(|b| b.name.clone()));
        header.extend(ratio_headers());
        let peak = |b: &BrokerResults| b.peak_rss_kib.map(|k| k as f64);
        let idle = |b: &BrokerResults| b.idle_bytes_per_connection;
        let connections = self
            .brokers
            .iter()
            .map(|b| b.idle_connections)
            .max()
            .unwrap_or(0);
        let mut peak_row = vec!["Peak RSS after the throughput runs (MiB)".to_owned()];
        peak_row.extend(
            self.brokers
                .iter()
                .map(|b| cell(b.peak_rss_kib, format_mib)),
        );
        peak_row.extend(peers.iter().map(|p| format_ratio(peak(subject), peak(p))));
        let mut idle_row = vec![format!(
            "RSS per idle connection, {} connections (bytes)",
            format_count(connections as f64)
        )];
        idle_row.extend(self.brokers.iter().map(|b| cell(idle(b), format_count)));
        idle_row.extend(peers.iter().map(|p| format_ratio(idle(subject), idle(p))));
        out.push_str(&markdown_table(&header, &[peak_row, idle_row]));

        if let Some(cross) = &self.cross_node {
            out.push_str(&cross.to_markdown());
        }
        if let Some(cross) = &self.cross_link {
            out.push_str(&cross.to_markdown());
        }
        if let Some(delivery) = &self.delivery {
            out.push_str(&delivery.to_markdown());
        }

        let cross_errors = self
            .cross_node
            .iter()
            .flat_map(|c| c.errors.iter().map(|e| ("strait cross-node", e)))
            .chain(
                self.cross_link
                    .iter()
                    .flat_map(|c| c.errors.iter().map(|e| ("cross-link", e))),
            );
        let failures: Vec<String> = self
            .brokers
            .iter()
            .flat_map(|b| b.errors.iter().map(move |e| (b.name.as_str(), e)))
            .chain(cross_errors)
            .map(|(who, e)| format!("- {who}: {}", e.replace('\n', " ")))
            .collect();
        if !failures.is_empty() {
            out.push_str("\n## Failures\n\n");
            for failure in failures {
                out.push_str(&failure);
                out.push('\n');
            }
        }
        out
    }
}

impl CrossNodeResults {
    /// The cross-node section: one row per scenario, with the ratio and the
    /// added p99 judged against their goals. A failed run shows as failed,
    /// never as a zero that would pass for a measurement.
    pub fn to_markdown(&self) -> String {
        let mut out = format!(
            "\n## Cross-node\n\nThe same load on one Strait node, then across a two-node Strait cluster \
             (publishers on node a, subscribers on node b). Goals: cross-node throughput at least \
             {CROSS_NODE_RATE_GOAL:.2}× the single node's, added p99 under {} µs. Throughput runs \
             saturate the broker, so their p99 is mostly queueing; the fixed-load rows show the \
             latency a message pays for crossing.\n\n",
            format_micros(CROSS_NODE_ADDED_P99_GOAL),
        );
        let header: Vec<String> = [
            "Scenario",
            "single-node msg/s",
            "cross-node msg/s",
            "cross/single",
            "single-node p99 µs",
            "cross-node p99 µs",
            "added p99 µs",
        ]
        .map(str::to_owned)
        .to_vec();
        let rows: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|row| {
                let rate = |m: Option<Measured>| cell(m.map(|m| m.rate), format_count);
                let p99 = |m: Option<Measured>| cell(m.map(|m| m.p99), format_micros);
                let (ratio, added) = match (row.single, row.cross) {
                    (Some(single), Some(cross)) => (
                        judged_ratio(single.rate, cross.rate),
                        judged_added_p99(single.p99, cross.p99),
                    ),
                    _ => ("–".to_owned(), "–".to_owned()),
                };
                vec![
                    row.scenario.clone(),
                    rate(row.single),
                    rate(row.cross),
                    ratio,
                    p99(row.single),
                    p99(row.cross),
                    added,
                ]
            })
            .collect();
        out.push_str(&markdown_table(&header, &rows));
        if let Some((single, cluster)) = self.connect_rates {
            let _ = write!(
                out,
                "\nConnection rate (new client ids, CONNECT to CONNACK, spread over the nodes): \
                 one node {} conn/s, the two-node cluster {} conn/s ({:.2}×).\n",
                format_count(single),
                format_count(cluster),
                cluster / single.max(f64::EPSILON)
            );
        }
        out
    }
}

/// `cross / single` with whether it meets [`CROSS_NODE_RATE_GOAL`].
pub(crate) fn judged_ratio(single: f64, cross: f64) -> String {
    if single <= 0.0 || !cross.is_finite() {
        return "–".to_owned();
    }
    let ratio = cross / single;
    let verdict = if ratio >= CROSS_NODE_RATE_GOAL {
        "met"
    } else {
        "missed"
    };
    format!("{ratio:.2}× ({verdict})")
}

/// `cross - single` in µs, signed, with whether it meets [`CROSS_NODE_ADDED_P99_GOAL`].
pub(crate) fn judged_added_p99(single: Duration, cross: Duration) -> String {
    let added = cross.as_secs_f64() - single.as_secs_f64();
    let verdict = if added < CROSS_NODE_ADDED_P99_GOAL.as_secs_f64() {
        "met"
    } else {
        "missed"
    };
    format!("{:+.1} ({verdict})", added * 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_get_thousands_separators() {
        assert_eq!(format_count(0.0), "0");
        assert_eq!(format_count(999.4), "999");
        assert_eq!(format_count(1000.0), "1,000");
        assert_eq!(format_count(1_234_567.6), "1,234,568");
        assert_eq!(format_count(-12_345.0), "-12,345");
    }

    #[test]
    fn ratios_have_two_decimals_and_a_dash_when_undefined() {
        assert_eq!(format_ratio(Some(300.0), Some(200.0)), "1.50×");
        assert_eq!(format_ratio(Some(1.0), Some(3.0)), "0.33×");
        assert_eq!(format_ratio(None, Some(3.0)), "–");
        assert_eq!(format_ratio(Some(1.0), None), "–");
        assert_eq!(format_ratio(Some(1.0), Some(0.0)), "–");
    }

    #[test]
    fn micros_and_mib() {
        assert_eq!(format_micros(Duration::from_nanos(123_456)), "123.5");
        assert_eq!(format_mib(1536), "1.5");
    }

    #[test]
    fn tables_align_numbers_right() {
        let table = markdown_table(
            &["a".to_owned(), "b".to_owned()],
            &[vec!["x".to_owned(), "1".to_owned()]],
        );
        assert_eq!(table, "| a | b |\n| --- | ---: |\n| x | 1 |\n");
    }

    fn broker(name: &str, rate: Option<f64>, p50_us: u64) -> BrokerResults {
        let mut results = BrokerResults {
            name: name.to_owned(),
            peak_rss_kib: Some(10_240),
            idle_bytes_per_connection: Some(2_000.0),
            idle_connections: 10_000,
            ..BrokerResults::default()
        };
        if let Some(rate) = rate {
            results.throughput.insert("pairs".to_owned(), rate);
            results.published.insert("pairs".to_owned(), rate * 2.0);
        }
        results.latency.insert(
            "paced".to_owned(),
            LatencySummary {
                count: 100,
                p50: Duration::from_micros(p50_us),
                p99: Duration::from_micros(p50_us * 2),
                max: Duration::from_micros(p50_us * 3),
            },
        );
        results
    }

    #[test]
    fn the_report_compares_the_subject_with_each_peer() {
        let mut rumqttd = broker("rumqttd", None, 100);
        rumqttd.errors.push("connection refused".to_owned());
        let report = Report {
            throughput_scenarios: vec!["pairs".to_owned()],
            latency_scenarios: vec!["paced".to_owned()],
            brokers: vec![
                broker("strait", Some(200_000.0), 50),
                broker("mosquitto", Some(100_000.0), 100),
                rumqttd,
            ],
            cross_node: None,
            cross_link: None,
            delivery: None,
            notes: vec!["2 cores".to_owned()],
        };
        let md = report.to_markdown();
        assert!(md.contains("- 2 cores\n"), "{md}");
        assert!(
            md.contains("| Scenario | strait msg/s | mosquitto msg/s | rumqttd msg/s | strait/mosquitto | strait/rumqttd |"),
            "{md}"
        );
        assert!(
            md.contains("| pairs | 200,000 | 100,000 | failed | 2.00× | – |"),
            "{md}"
        );
        assert!(
            md.contains("| paced | p50 | 50.0 | 100.0 | 100.0 | 0.50× | 0.50× |"),
            "{md}"
        );
        assert!(
            md.contains("| paced | p99 | 100.0 | 200.0 | 200.0 | 0.50× | 0.50× |"),
            "{md}"
        );
        assert!(
            md.contains(
                "| Peak RSS after the throughput runs (MiB) | 10.0 | 10.0 | 10.0 | 1.00× | 1.00× |"
            ),
            "{md}"
        );
        assert!(
            md.contains("10,000 connections (bytes) | 2,000 | 2,000 | 2,000 |"),
            "{md}"
        );
        assert!(
            md.contains("## Failures\n\n- rumqttd: connection refused\n"),
            "{md}"
        );
    }

    #[test]
    fn the_cross_node_table_judges_each_row_against_the_goals() {
        let measured = |rate, p99_us| {
            Some(Measured {
                rate,
                p99: Duration::from_micros(p99_us),
            })
        };
        let cross = CrossNodeResults {
            rows: vec![
                CrossNodeRow {
                    scenario: "fan-in".to_owned(),
                    single: measured(100_000.0, 2_000),
                    cross: measured(80_000.0, 2_500),
                },
                CrossNodeRow {
                    scenario: "pairs".to_owned(),
                    single: measured(100_000.0, 300),
                    cross: measured(50_000.0, 1_400),
                },
                CrossNodeRow {
                    scenario: "latency".to_owned(),
                    single: measured(10_000.0, 300),
                    cross: None,
                },
            ],
            connect_rates: Some((10_000.0, 19_000.0)),
            errors: vec!["latency: nothing delivered".to_owned()],
        };
        let report = Report {
            brokers: vec![broker("strait", Some(1.0), 50)],
            cross_node: Some(cross),
            ..Report::default()
        };
        let md = report.to_markdown();
        assert!(md.contains("## Cross-node"), "{md}");
        assert!(
            md.contains("one node 10,000 conn/s, the two-node cluster 19,000 conn/s (1.90×)"),
            "{md}"
        );
        assert!(
            md.contains(
                "| fan-in | 100,000 | 80,000 | 0.80× (met) | 2000.0 | 2500.0 | +500.0 (met) |"
            ),
            "{md}"
        );
        assert!(
            md.contains(
                "| pairs | 100,000 | 50,000 | 0.50× (missed) | 300.0 | 1400.0 | +1100.0 (missed) |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| latency | 10,000 | failed | – | 300.0 | failed | – |"),
            "{md}"
        );
        assert!(
            md.contains("- strait cross-node: latency: nothing delivered\n"),
            "{md}"
        );
    }

    #[test]
    fn an_empty_report_says_so() {
        assert!(Report::default()
            .to_markdown()
            .contains("No broker was benchmarked."));
    }
}
