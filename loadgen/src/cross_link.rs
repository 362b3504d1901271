//! Strait across a link between clusters, against Strait on one node and
//! against two mosquitto brokers joined by mosquitto's bridge: the same
//! scenarios with publishers on one side and subscribers on the other, the
//! bytes that cross per delivered message and when nobody subscribes, and
//! QoS 1 over a link with a 100 ms round trip.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use strait_broker::protocol::{Packet, QoS};
use tokio::runtime::Handle;

use crate::bench::{one_run, Step, Target};
use crate::broker::{BrokerKind, BrokerProcess, BrokerSpec};
use crate::client::{Client, ClientError, ConnectOptions};
use crate::linked::LinkedPair;
use crate::report::{
    cell, format_count, format_micros, judged_added_p99, judged_ratio, markdown_table, Measured,
};
use crate::routes::qos0;
use crate::run::Endpoints;
use crate::scenario::{Load, Plan, Scenario, Topology};

/// Strait across a link should deliver at least this multiple of the bridge's rate.
pub const BRIDGE_RATE_GOAL: f64 = 5.0;

/// QoS 1 across a 100 ms round trip should reach this rate on one node pair.
pub const WAN_RATE_GOAL: f64 = 20_000.0;

/// Each direction's delay on the long-distance link.
const WAN_ONE_WAY: Duration = Duration::from_millis(50);

/// Messages of the byte-counting runs.
pub const COUNTED_MESSAGES: usize = 20_000;

/// One scenario on each target; `None` where a run failed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CrossLinkRow {
    pub scenario: String,
    /// A fixed offered load: every target delivers it, so only latency is judged.
    pub fixed_load: bool,
    pub single: Option<Measured>,
    pub linked: Option<Measured>,
    pub linked_2x2: Option<Measured>,
    pub bridge: Option<Measured>,
}

/// Bytes over the link for [`COUNTED_MESSAGES`] messages of 64 bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Crossing {
    /// With a subscriber on the far side: per delivered message.
    pub per_message: Option<f64>,
    /// With nobody subscribed there: in total.
    pub unwanted_total: Option<u64>,
}

/// The cross-link section of the report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CrossLinkResults {
    pub rows: Vec<CrossLinkRow>,
    pub strait_bytes: Crossing,
    pub bridge_bytes: Crossing,
    /// QoS 1 pairs across a 100 ms round trip: Strait, then the bridge (msg/s).
    pub wan: (Option<f64>, Option<f64>),
    pub wan_scenario: Option<String>,
    pub errors: Vec<String>,
}

/// Runs the cross-link section with the strait at `strait` and, when given,
/// the mosquitto at `mosquitto`.
pub async fn cross_link(
    publishers_runtime: &Handle,
    strait: &Path,
    mosquitto: Option<&Path>,
    plan: &Plan,
) -> CrossLinkResults {
    let mut results = CrossLinkResults::default();
    if plan.cross_node.is_empty() {
        return results;
    }
    let spec = BrokerSpec {
        kind: BrokerKind::Strait,
        binary: strait.to_owned(),
    };
    let mut single = BrokerProcess::start(&spec)
        .await
        .map_err(|e| results.errors.push(format!("single node: {e}")))
        .ok();
    let mut linked = start(
        &mut results,
        "strait linked",
        LinkedPair::strait(strait, 1, Duration::ZERO),
    )
    .await;
    let mut linked_2x2 = start(
        &mut results,
        "strait linked 2×2",
        LinkedPair::strait(strait, 2, Duration::ZERO),
    )
    .await;
    let mut bridge = match mosquitto {
        Some(binary) => {
            start(
                &mut results,
                "mosquitto bridge",
                LinkedPair::mosquitto(binary, Duration::ZERO),
            )
            .await
        }
        None => None,
    };

    for (i, scenario) in plan.cross_node.iter().enumerate() {
        let mut row = CrossLinkRow {
            scenario: scenario.to_string(),
            fixed_load: scenario.load != Load::Max,
            ..CrossLinkRow::default()
        };
        if let Some(broker) = single.as_mut() {
            let endpoints = Endpoints::single(broker.addr());
            row.single = measure(
                publishers_runtime,
                "strait one node",
                endpoints,
                std::slice::from_mut(broker),
                scenario,
                plan,
                &format!("l{i}s"),
                &mut results.errors,
            )
            .await;
        }
        for (label, target, slot, tag) in [
            ("strait linked", &mut linked, &mut row.linked, "l"),
            (
                "strait linked 2×2",
                &mut linked_2x2,
                &mut row.linked_2x2,
                "q",
            ),
            ("mosquitto bridge", &mut bridge, &mut row.bridge, "b"),
        ] {
            if let Some(pair) = target.as_mut() {
                let endpoints = pair.endpoints();
                *slot = measure(
                    publishers_runtime,
                    label,
                    endpoints,
                    pair.nodes_mut(),
                    scenario,
                    plan,
                    &format!("l{i}{tag}"),
                    &mut results.errors,
                )
                .await;
            }
        }
        results.rows.push(row);
    }

    if let Some(pair) = linked.as_ref() {
        results.strait_bytes = crossing(pair, &mut results.errors, "strait").await;
    }
    if let Some(pair) = bridge.as_ref() {
        results.bridge_bytes = crossing(pair, &mut results.errors, "mosquitto").await;
    }
    if let Some(process) = single {
        process.stop().await;
    }
    for pair in [linked, linked_2x2, bridge].into_iter().flatten() {
        pair.stop().await;
    }

    // QoS 1 across a long round trip: throughput must not be capped by an inflight window.
    let wan = plan
        .cross_node
        .iter()
        .find(|s| {
            s.qos == QoS::AtLeastOnce
                && s.load == Load::Max
                && matches!(s.topology, Topology::Pairs(_))
        })
        .cloned();
    if let Some(scenario) = wan {
        results.wan_scenario = Some(scenario.to_string());
        let strait_pair = start(
            &mut results,
            "strait linked, 100 ms RTT",
            LinkedPair::strait(strait, 1, WAN_ONE_WAY),
        )
        .await;
        results.wan.0 = measure_once(
            publishers_runtime,
            "strait linked, 100 ms RTT",
            strait_pair,
            &scenario,
            plan,
            "wan-s",
            &mut results.errors,
        )
        .await;
        if let Some(binary) = mosquitto {
            let bridge_pair = start(
                &mut results,
                "mosquitto bridge, 100 ms RTT",
                LinkedPair::mosquitto(binary, WAN_ONE_WAY),
            )
            .await;
            results.wan.1 = measure_once(
                publishers_runtime,
                "mosquitto bridge, 100 ms RTT",
                bridge_pair,
                &scenario,
                plan,
                "wan-b",
                &mut results.errors,
            )
            .await;
        }
    }
    results
}

async fn start(
    results: &mut CrossLinkResults,
    label: &str,
    starting: impl std::future::Future<Output = Result<LinkedPair, crate::linked::LinkedError>>,
) -> Option<LinkedPair> {
    eprintln!("[{label}] starting");
    match starting.await {
        Ok(pair) => Some(pair),
        Err(e) => {
            eprintln!("[{label}] {e}");
            results.errors.push(format!("{label}: {e}"));
            None
        }
    }
}

/// The delivered rate of one run on `pair`, which is stopped afterwards.
#[allow(clippy::too_many_arguments)]
async fn measure_once(
    publishers_runtime: &Handle,
    label: &'static str,
    pair: Option<LinkedPair>,
    scenario: &Scenario,
    plan: &Plan,
    tag: &str,
    errors: &mut Vec<String>,
) -> Option<f64> {
    let mut pair = pair?;
    let endpoints = pair.endpoints();
    let measured = measure(
        publishers_runtime,
        label,
        endpoints,
        pair.nodes_mut(),
        scenario,
        plan,
        tag,
        errors,
    )
    .await;
    pair.stop().await;
    measured.map(|m| m.rate)
}

/// One run reduced to its rate and p99; `None` when it failed (recorded).
#[allow(clippy::too_many_arguments)]
async fn measure(
    publishers_runtime: &Handle,
    label: &'static str,
    endpoints: Endpoints,
    nodes: &mut [BrokerProcess],
    scenario: &Scenario,
    plan: &Plan,
    tag: &str,
    errors: &mut Vec<String>,
) -> Option<Measured> {
    let target = Target {
        label,
        endpoints,
        nodes,
    };
    let Step::Measured(outcome) =
        one_run(publishers_runtime, target, scenario, plan, tag, errors).await
    else {
        return None;
    };
    let Some(latency) = outcome.latency else {
        errors.push(format!("{scenario} ({label}): no latency was recorded"));
        return None;
    };
    let measured = Measured {
        rate: outcome.throughput.per_second(),
        p99: latency.p99,
    };
    eprintln!(
        "[{label}] {scenario}: {} msg/s delivered, p99 {} µs",
        format_count(measured.rate),
        format_micros(measured.p99)
    );
    Some(measured)
}

/// Link bytes for [`COUNTED_MESSAGES`] messages, with a subscriber on the
/// far side and then with nobody subscribed there.
async fn crossing(pair: &LinkedPair, errors: &mut Vec<String>, who: &str) -> Crossing {
    let mut out = Crossing::default();
    match count_bytes(pair, true, "xl-wanted").await {
        Ok(bytes) => out.per_message = Some(bytes as f64 / COUNTED_MESSAGES as f64),
        Err(e) => errors.push(format!("{who}: counting link bytes: {e}")),
    }
    match count_bytes(pair, false, "xl-unwanted").await {
        Ok(bytes) => out.unwanted_total = Some(bytes),
        Err(e) => errors.push(format!(
            "{who}: counting link bytes with no subscriber: {e}"
        )),
    }
    eprintln!(
        "[{who}] link bytes per delivered message: {}; with nobody subscribed: {} bytes for {COUNTED_MESSAGES} messages",
        out.per_message.map_or("failed".into(), |b| format!("{b:.1}")),
        out.unwanted_total.map_or("failed".into(), |b| format_count(b as f64)),
    );
    out
}

/// Publishes [`COUNTED_MESSAGES`] QoS 0 messages of 64 bytes on side `a`,
/// then a marker; the subscriber on side `b` takes the marker (and, when
/// `wanted`, the messages too). Returns the bytes the relay carried from the
/// first message to the marker's arrival.
async fn count_bytes(pair: &LinkedPair, wanted: bool, prefix: &str) -> Result<u64, ClientError> {
    let endpoints = pair.endpoints();
    let data = format!("{prefix}/data");
    let marker = format!("{prefix}/marker");
    let mut subscriber = Client::connect(
        endpoints.subscribers,
        &ConnectOptions::new(format!("{prefix}-sub")),
    )
    .await?;
    subscriber.subscribe(&marker, QoS::AtMostOnce).await?;
    if wanted {
        subscriber.subscribe(&data, QoS::AtMostOnce).await?;
    }
    let mut publisher = Client::connect(
        endpoints.publishers,
        &ConnectOptions::new(format!("{prefix}-pub")),
    )
    .await?;
    // Markers until one arrives: the marker's route is known on side `a`.
    loop {
        publisher
            .send(&qos0(&marker, Bytes::from_static(b"probe")))
            .await?;
        if tokio::time::timeout(Duration::from_millis(200), subscriber.receive())
            .await
            .is_ok()
        {
            break;
        }
    }
    // Let late probes arrive before counting.
    publisher
        .send(&qos0(&marker, Bytes::from_static(b"start")))
        .await?;
    loop {
        if let Packet::Publish(p) = subscriber.receive().await? {
            if p.payload.as_ref() == b"start" {
                break;
            }
        }
    }
    let before = pair.link_bytes();
    let payload = Bytes::from(vec![b'x'; 64]);
    for _ in 0..COUNTED_MESSAGES / BATCH {
        for _ in 0..BATCH {
            publisher.send(&qos0(&data, payload.clone())).await?;
        }
        if wanted {
            // Paced by the subscriber, so no queue on the way overflows (QoS 0
            // beyond a full queue is dropped, and would not be counted).
            for _ in 0..BATCH {
                expect_publish(&mut subscriber, &data).await?;
            }
        } else {
            // A round trip per batch: the broker has taken it before the next.
            publisher.ping().await?;
        }
    }
    publisher
        .send(&qos0(&marker, Bytes::from_static(b"end")))
        .await?;
    expect_publish(&mut subscriber, &marker).await?;
    Ok(pair.link_bytes() - before)
}

/// Messages published between two checks in the byte-counting runs.
const BATCH: usize = 500;

/// The next PUBLISH, which must be on `topic` (nothing else may cross).
async fn expect_publish(subscriber: &mut Client, topic: &str) -> Result<(), ClientError> {
    loop {
        match subscriber.receive().await? {
            Packet::Publish(p) if p.topic == topic => return Ok(()),
            Packet::Publish(_) => {
                return Err(ClientError::Unexpected {
                    expected: "a message of the counted run",
                    got: "PUBLISH on another topic",
                })
            }
            _ => continue,
        }
    }
}

impl CrossLinkResults {
    /// The section as markdown, every ratio judged against its goal.
    pub fn to_markdown(&self) -> String {
        let mut out = format!(
            "\n## Cross-link\n\nPublishers on one cluster, subscribers on another, the two joined by a link \
             through a relay that counts its bytes. Targets: Strait on one node (the baseline), two \
             single-node Strait clusters linked, two two-node Strait clusters linked (publishers and \
             subscribers on the nodes that do not hold the link, so messages cross both meshes too), and \
             two mosquitto brokers joined by mosquitto's bridge (`topic # in 1`, `try_private true`, \
             `cleansession true`, the benchmark's 100 messages in flight). Goals: linked at least \
             {:.2}× one node, added p99 under 1000 µs at a fixed load, at least {BRIDGE_RATE_GOAL:.0}× \
             the bridge. Throughput runs saturate the brokers, so their p99 is mostly queueing \
             (marked saturated); the fixed-load rows show what crossing the link adds.\n\n",
            crate::report::CROSS_NODE_RATE_GOAL
        );
        let header: Vec<String> = [
            "Scenario",
            "one node msg/s",
            "linked msg/s",
            "linked/one",
            "linked 2×2 msg/s",
            "2×2/one",
            "bridge msg/s",
            "linked/bridge",
            "one p99 µs",
            "linked p99 µs",
            "added p99 µs",
            "bridge p99 µs",
        ]
        .map(str::to_owned)
        .to_vec();
        let rate = |m: Option<Measured>| cell(m.map(|m| m.rate), format_count);
        let p99 = |m: Option<Measured>| cell(m.map(|m| m.p99), format_micros);
        let rows: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|row| {
                let versus_one = |other: Option<Measured>| match (row.single, other) {
                    _ if row.fixed_load => "fixed load".to_owned(),
                    (Some(one), Some(other)) => judged_ratio(one.rate, other.rate),
                    _ => "–".to_owned(),
                };
                let added = match (row.single, row.linked) {
                    (Some(one), Some(linked)) if row.fixed_load => {
                        judged_added_p99(one.p99, linked.p99)
                    }
                    (Some(one), Some(linked)) => format!(
                        "{:+.1} (saturated)",
                        (linked.p99.as_secs_f64() - one.p99.as_secs_f64()) * 1e6
                    ),
                    _ => "–".to_owned(),
                };
                let versus_bridge = match (row.linked, row.bridge) {
                    _ if row.fixed_load => "fixed load".to_owned(),
                    (Some(linked), Some(bridge)) if bridge.rate > 0.0 => {
                        let ratio = linked.rate / bridge.rate;
                        let verdict = if ratio >= BRIDGE_RATE_GOAL {
                            "met"
                        } else {
                            "missed"
                        };
                        format!("{ratio:.2}× ({verdict})")
                    }
                    _ => "–".to_owned(),
                };
                vec![
                    row.scenario.clone(),
                    rate(row.single),
                    rate(row.linked),
                    versus_one(row.linked),
                    rate(row.linked_2x2),
                    versus_one(row.linked_2x2),
                    rate(row.bridge),
                    versus_bridge,
                    p99(row.single),
                    p99(row.linked),
                    added,
                    p99(row.bridge),
                ]
            })
            .collect();
        out.push_str(&markdown_table(&header, &rows));

        let bytes = |c: Crossing| {
            (
                cell(c.per_message, |b| format!("{b:.1}")),
                cell(c.unwanted_total, |b| format_count(b as f64)),
            )
        };
        let (strait_per, strait_unwanted) = bytes(self.strait_bytes);
        let (bridge_per, bridge_unwanted) = bytes(self.bridge_bytes);
        let _ = write!(
            out,
            "\nLink bytes ({} QoS 0 messages of 64 bytes, both directions counted):\n\n",
            format_count(COUNTED_MESSAGES as f64)
        );
        out.push_str(&markdown_table(
            &[
                "".to_owned(),
                "strait link".to_owned(),
                "mosquitto bridge".to_owned(),
            ],
            &[
                vec!["per delivered message".to_owned(), strait_per, bridge_per],
                vec![
                    "in total with nobody subscribed on the far side".to_owned(),
                    strait_unwanted,
                    bridge_unwanted,
                ],
            ],
        ));
        if let Some(scenario) = &self.wan_scenario {
            let (strait, bridge) = self.wan;
            let verdict = match strait {
                Some(rate) if rate >= WAN_RATE_GOAL => "met",
                Some(_) => "missed",
                None => "failed",
            };
            let _ = writeln!(
                out,
                "\nQoS 1 across a 100 ms round trip ({scenario}, 50 ms added each way by the relay): strait \
                 linked {} msg/s (goal {} msg/s: {verdict}), mosquitto bridge {} msg/s.",
                cell(strait, format_count),
                format_count(WAN_RATE_GOAL),
                cell(bridge, format_count),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(rate: f64, p99_us: u64) -> Option<Measured> {
        Some(Measured {
            rate,
            p99: Duration::from_micros(p99_us),
        })
    }

    #[test]
    fn rates_are_judged_at_full_load_and_latency_at_a_fixed_one() {
        let results = CrossLinkResults {
            rows: vec![
                CrossLinkRow {
                    scenario: "full".into(),
                    fixed_load: false,
                    single: measured(1000.0, 100),
                    linked: measured(800.0, 5000),
                    linked_2x2: measured(500.0, 9000),
                    bridge: measured(100.0, 9000),
                },
                CrossLinkRow {
                    scenario: "fixed".into(),
                    fixed_load: true,
                    single: measured(10.0, 100),
                    linked: measured(10.0, 400),
                    linked_2x2: None,
                    bridge: measured(10.0, 500),
                },
            ],
            ..CrossLinkResults::default()
        };
        let md = results.to_markdown();
        let full = md
            .lines()
            .find(|l| l.starts_with("| full"))
            .expect("full row");
        assert!(
            full.contains("0.80× (met)") && full.contains("0.50× (missed)"),
            "{full}"
        );
        assert!(
            full.contains("8.00× (met)") && full.contains("(saturated)"),
            "{full}"
        );
        let fixed = md
            .lines()
            .find(|l| l.starts_with("| fixed"))
            .expect("fixed row");
        assert!(
            fixed.contains("+300.0 (met)") && fixed.contains("failed"),
            "{fixed}"
        );
        assert!(
            !fixed.contains("×"),
            "no rate is judged at a fixed load: {fixed}"
        );
    }
}
