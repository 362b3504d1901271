//! The whole benchmark: every broker in turn, alone on the machine, through
//! the same plan, then Strait's cross-node runs. A failure is recorded in the
//! report and the benchmark goes on, so one broker's crash never hides the
//! other figures.

use std::path::Path;
use std::time::Duration;

use crate::broker::{
    strait_config_with_policy, BrokerError, BrokerKind, BrokerProcess, BrokerSpec,
    INFLIGHT_PER_CLIENT, QUEUED_PER_CLIENT,
};
use crate::client::ClientError;
use crate::cross_link::cross_link;
use crate::cross_node::cross_node;
use crate::delivery;
use crate::idle::{bytes_per_connection, open_idle};
use crate::report::{format_count, format_micros, BrokerResults, Report};
use crate::run::{run_scenario, settle, Endpoints, Outcome, RunError, PUBLISH_WINDOW};
use crate::scenario::{Plan, Scenario};
use tokio::runtime::Handle;

/// How long a broker may take to drain the previous run before the next starts.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Time allowed on top of a run's warm-up and window (connecting, subscribing,
/// winding down) before it counts as hung.
const RUN_SLACK: Duration = Duration::from_secs(60);

/// How long opening every idle connection may take before it counts as hung.
const IDLE_TIMEOUT: Duration = Duration::from_secs(180);

/// Runs `plan` against each broker in turn; the first is the subject of the ratios.
/// Publishers run on `publishers_runtime`, everything else on the caller's.
pub async fn run_bench(publishers_runtime: &Handle, brokers: &[BrokerSpec], plan: &Plan) -> Report {
    let mut results = Vec::with_capacity(brokers.len());
    for spec in brokers {
        results.push(bench_broker(publishers_runtime, spec, plan).await);
    }
    let strait = brokers.iter().find(|spec| spec.kind == BrokerKind::Strait);
    let cross_node = match strait {
        Some(spec) => Some(cross_node(publishers_runtime, &spec.binary, plan).await),
        None => None,
    };
    let binary_of = |kind| {
        brokers
            .iter()
            .find(|spec| spec.kind == kind)
            .map(|spec| spec.binary.as_path())
    };
    let cross_link = match strait {
        Some(spec) => Some(
            cross_link(
                publishers_runtime,
                &spec.binary,
                binary_of(BrokerKind::Mosquitto),
                plan,
            )
            .await,
        ),
        None => None,
    };
    let contenders = delivery::contenders(
        binary_of(BrokerKind::Strait),
        |policy| strait_config_with_policy(policy).ok(),
        binary_of(BrokerKind::Mosquitto),
        binary_of(BrokerKind::Rumqttd),
    );
    let delivery = Some(
        delivery::run_delivery(publishers_runtime, &contenders, plan.delivery_per_publisher).await,
    );
    Report {
        throughput_scenarios: plan.throughput.iter().map(ToString::to_string).collect(),
        latency_scenarios: plan.latency.iter().map(ToString::to_string).collect(),
        brokers: results,
        cross_node,
        cross_link,
        delivery,
        notes: notes(brokers, plan),
    }
}

/// Throughput and latency runs on one broker process, then the idle-connection
/// measurement on a fresh one (so its baseline is not inflated by earlier runs).
async fn bench_broker(
    publishers_runtime: &Handle,
    spec: &BrokerSpec,
    plan: &Plan,
) -> BrokerResults {
    let name = spec.kind.name();
    let mut results = BrokerResults {
        name: name.to_owned(),
        idle_connections: plan.idle_connections,
        ..BrokerResults::default()
    };
    eprintln!("[{name}] starting {}", spec.binary.display());
    match BrokerProcess::start(spec).await {
        Ok(mut broker) => {
            traffic_runs(publishers_runtime, &mut broker, plan, &mut results).await;
            broker.stop().await;
        }
        Err(e) => {
            results.errors.push(e.to_string());
            return results;
        }
    }
    match BrokerProcess::start(spec).await {
        Ok(broker) => {
            match tokio::time::timeout(IDLE_TIMEOUT, idle_memory(&broker, plan.idle_connections))
                .await
            {
                Err(_) => results.errors.push(format!(
                    "idle connections: not all open within {IDLE_TIMEOUT:?}"
                )),
                Ok(Err(e)) => results.errors.push(format!("idle connections: {e}")),
                Ok(Ok(bytes)) => {
                    eprintln!("[{name}] {} bytes per idle connection", format_count(bytes));
                    results.idle_bytes_per_connection = Some(bytes);
                }
            }
            broker.stop().await;
        }
        Err(e) => results.errors.push(e.to_string()),
    }
    results
}

/// The throughput runs, the peak-memory reading, then the latency runs.
async fn traffic_runs(
    publishers_runtime: &Handle,
    broker: &mut BrokerProcess,
    plan: &Plan,
    results: &mut BrokerResults,
) {
    let name = broker.kind().name();
    for (i, scenario) in plan.throughput.iter().enumerate() {
        let tag = format!("t{i}");
        let outcome = match run_alone(
            publishers_runtime,
            broker,
            scenario,
            plan,
            &tag,
            &mut results.errors,
        )
        .await
        {
            Step::Measured(outcome) => outcome,
            Step::Failed => continue,
            Step::BrokerDied => return,
        };
        let rate = outcome.throughput.per_second();
        let published = outcome.published as f64 / outcome.throughput.window.as_secs_f64();
        eprintln!(
            "[{name}] {scenario}: {} msg/s delivered, {} msg/s published",
            format_count(rate),
            format_count(published),
        );
        results.throughput.insert(scenario.to_string(), rate);
        results.published.insert(scenario.to_string(), published);
    }
    match broker.memory() {
        Ok(memory) => results.peak_rss_kib = Some(memory.peak_kib),
        Err(e) => results.errors.push(e.to_string()),
    }
    for (i, scenario) in plan.latency.iter().enumerate() {
        let tag = format!("l{i}");
        let outcome = match run_alone(
            publishers_runtime,
            broker,
            scenario,
            plan,
            &tag,
            &mut results.errors,
        )
        .await
        {
            Step::Measured(outcome) => outcome,
            Step::Failed => continue,
            Step::BrokerDied => return,
        };
        match outcome.latency {
            Some(latency) => {
                eprintln!(
                    "[{name}] {scenario}: p50 {} µs, p99 {} µs, max {} µs over {} messages",
                    format_micros(latency.p50),
                    format_micros(latency.p99),
                    format_micros(latency.max),
                    format_count(latency.count as f64),
                );
                results.latency.insert(scenario.to_string(), latency);
            }
            None => results
                .errors
                .push(format!("{scenario}: no message was delivered")),
        }
    }
}

/// One run of `scenario` on a lone broker.
async fn run_alone(
    publishers_runtime: &Handle,
    broker: &mut BrokerProcess,
    scenario: &Scenario,
    plan: &Plan,
    tag: &str,
    errors: &mut Vec<String>,
) -> Step {
    let target = Target {
        label: broker.kind().name(),
        endpoints: Endpoints::single(broker.addr()),
        nodes: std::slice::from_mut(broker),
    };
    one_run(publishers_runtime, target, scenario, plan, tag, errors).await
}

/// How one run ended; failures are already recorded.
pub(crate) enum Step {
    Measured(Outcome),
    /// The run failed but the brokers are alive: go on with the next run.
    Failed,
    /// A broker exited: skip its remaining runs.
    BrokerDied,
}

/// What a run drives: the broker processes it needs alive (one, or every node
/// of a cluster), where its clients connect, and its name in messages.
pub(crate) struct Target<'a> {
    pub label: &'a str,
    pub nodes: &'a mut [BrokerProcess],
    pub endpoints: Endpoints,
}

/// One run followed by waiting for every broker to catch up. A run that
/// delivers nothing is a failure, never a measurement of zero.
pub(crate) async fn one_run(
    publishers_runtime: &Handle,
    target: Target<'_>,
    scenario: &Scenario,
    plan: &Plan,
    tag: &str,
    errors: &mut Vec<String>,
) -> Step {
    let Target {
        label,
        nodes,
        endpoints,
    } = target;
    let limit = plan.timing.warmup + plan.timing.measure + RUN_SLACK;
    let outcome = tokio::time::timeout(
        limit,
        run_scenario(publishers_runtime, endpoints, scenario, plan.timing, tag),
    )
    .await;
    for node in nodes.iter_mut() {
        let settled = tokio::time::timeout(SETTLE_TIMEOUT, settle(node.addr(), tag)).await;
        if let Err(e) = node.check_alive() {
            eprintln!("[{label}] {scenario}: {e}");
            errors.push(format!("{scenario}: {e}"));
            return Step::BrokerDied;
        }
        match settled {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errors.push(format!("after {scenario}: {e}")),
            Err(_) => errors.push(format!(
                "after {scenario}: still busy after {SETTLE_TIMEOUT:?}"
            )),
        }
    }
    match outcome {
        Ok(Ok(outcome)) if outcome.throughput.delivered == 0 => {
            eprintln!("[{label}] {scenario}: no message was delivered");
            errors.push(format!("{scenario}: no message was delivered"));
            Step::Failed
        }
        Ok(Ok(outcome)) => Step::Measured(outcome),
        Ok(Err(e)) => {
            eprintln!("[{label}] {scenario}: failed: {e}");
            errors.push(format!("{scenario}: {e}"));
            Step::Failed
        }
        Err(_) => {
            eprintln!("[{label}] {scenario}: hung for {limit:?}");
            errors.push(format!("{scenario}: did not finish within {limit:?}"));
            Step::Failed
        }
    }
}

/// Why the idle-connection measurement failed.
#[derive(Debug, thiserror::Error)]
enum IdleError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// Resident-memory growth per idle connection, in bytes.
async fn idle_memory(broker: &BrokerProcess, connections: usize) -> Result<f64, IdleError> {
    let before = broker.memory()?;
    let clients = open_idle(broker.addr(), connections, "idle").await?;
    // A round trip after the last CONNACK: the broker has finished with every handshake.
    settle(broker.addr(), "idle").await?;
    let after = broker.memory()?;
    drop(clients);
    Ok(bytes_per_connection(
        before.rss_kib,
        after.rss_kib,
        connections,
    ))
}

/// The conditions of the run, printed at the top of the report.
fn notes(brokers: &[BrokerSpec], plan: &Plan) -> Vec<String> {
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let mut notes = vec![
        format!(
            "Each broker ran alone on 127.0.0.1 as a child of the load generator, which shares the machine's {cpus} CPUs with it.",
        ),
        "Every client speaks MQTT 3.1.1 with clean sessions; QoS 1 subscriptions for QoS 1 runs.".to_owned(),
        format!(
            "Throughput runs: {:?} warm-up, then {:?} measured; publishers send as fast as they can \
             (QoS 1: at most {PUBLISH_WINDOW} unacknowledged per publisher).",
            plan.timing.warmup, plan.timing.measure
        ),
        "Latency: send timestamp in the payload, measured on arrival at the subscriber, same process and clock.".to_owned(),
        format!(
            "Broker limits: {INFLIGHT_PER_CLIENT} QoS 1 messages in flight and {QUEUED_PER_CLIENT} queued per client, \
             no persistence, no $SYS; mosquitto with set_tcp_nodelay (rumqttd has no such setting)."
        ),
    ];
    for spec in brokers {
        let version = version_of(&spec.binary).unwrap_or_default();
        notes.push(format!(
            "{}: `{}` {version}",
            spec.kind,
            spec.binary.display()
        ));
    }
    notes
}

/// The first line of a broker's `--version` or `-h` output that names a version.
fn version_of(binary: &Path) -> Option<String> {
    ["--version", "-h"].into_iter().find_map(|flag| {
        let output = std::process::Command::new(binary).arg(flag).output().ok()?;
        let text = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        text.lines()
            .find(|line| line.chars().any(|c| c.is_ascii_digit()) && line.split('.').count() >= 3)
            .map(|line| format!("({})", line.trim()))
    })
}
