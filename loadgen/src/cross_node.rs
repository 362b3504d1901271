//! Strait across nodes: each cross-node scenario runs on one Strait node, then
//! on a two-node cluster with publishers on one node and subscribers on the
//! other, back to back so that both see the same machine load.

use std::path::Path;

use tokio::runtime::Handle;

use crate::bench::{one_run, Step, Target};
use crate::broker::{BrokerKind, BrokerProcess, BrokerSpec};
use crate::cluster::StraitCluster;
use crate::idle::connection_rate;
use crate::report::{format_count, format_micros, CrossNodeResults, CrossNodeRow, Measured};
use crate::run::Endpoints;
use crate::scenario::{Plan, Scenario};

/// The label of the single-node runs in progress messages.
const SINGLE: &str = "strait single-node";

/// The label of the cluster runs in progress messages.
const CROSS: &str = "strait cross-node";

/// Runs `plan.cross_node` on a lone node and across a two-node cluster of the
/// strait at `binary`. Every failure (the cluster not meshing, a run that
/// delivers nothing) is recorded, and the affected cells stay empty.
pub async fn cross_node(
    publishers_runtime: &Handle,
    binary: &Path,
    plan: &Plan,
) -> CrossNodeResults {
    let mut results = CrossNodeResults::default();
    if plan.cross_node.is_empty() {
        return results;
    }
    let spec = BrokerSpec {
        kind: BrokerKind::Strait,
        binary: binary.to_owned(),
    };
    eprintln!("[{SINGLE}] starting {}", binary.display());
    let mut single = BrokerProcess::start(&spec)
        .await
        .map_err(|e| results.errors.push(format!("single node: {e}")))
        .ok();
    eprintln!(
        "[{CROSS}] starting two meshed nodes of {}",
        binary.display()
    );
    let mut cluster = StraitCluster::start(binary, plan.delivery_lanes)
        .await
        .map_err(|e| {
            eprintln!("[{CROSS}] {e}");
            results.errors.push(format!("cluster: {e}"));
        })
        .ok();

    for (i, scenario) in plan.cross_node.iter().enumerate() {
        let mut row = CrossNodeRow {
            scenario: scenario.to_string(),
            ..CrossNodeRow::default()
        };
        if let Some(broker) = single.as_mut() {
            let target = Target {
                label: SINGLE,
                endpoints: Endpoints::single(broker.addr()),
                nodes: std::slice::from_mut(broker),
            };
            match measure(
                publishers_runtime,
                target,
                scenario,
                plan,
                &format!("x{i}s"),
                &mut results.errors,
            )
            .await
            {
                Ok(measured) => row.single = measured,
                Err(Died) => single = None,
            }
        }
        if let Some(nodes) = cluster.as_mut() {
            let target = Target {
                label: CROSS,
                endpoints: nodes.endpoints(),
                nodes: nodes.nodes_mut(),
            };
            match measure(
                publishers_runtime,
                target,
                scenario,
                plan,
                &format!("x{i}c"),
                &mut results.errors,
            )
            .await
            {
                Ok(measured) => row.cross = measured,
                Err(Died) => cluster = None,
            }
        }
        results.rows.push(row);
    }
    if let (Some(broker), Some(nodes)) = (single.as_ref(), cluster.as_ref()) {
        let count = plan.idle_connections.clamp(2, CONNECT_RATE_CLIENTS);
        let one = connection_rate(&[broker.addr()], count, "rate-single").await;
        let both = connection_rate(&nodes.addrs(), count, "rate-cluster").await;
        match (one, both) {
            (Ok(one), Ok(both)) => {
                eprintln!(
                    "[{CROSS}] connection rate: one node {} conn/s, cluster {} conn/s",
                    format_count(one),
                    format_count(both)
                );
                results.connect_rates = Some((one, both));
            }
            (Err(e), _) | (_, Err(e)) => results.errors.push(format!("connection rate: {e}")),
        }
    }
    if let Some(broker) = single {
        broker.stop().await;
    }
    if let Some(nodes) = cluster {
        nodes.stop().await;
    }
    results
}

/// Clients opened for the connection rate, at most.
const CONNECT_RATE_CLIENTS: usize = 2_000;

/// A broker of the target exited; its remaining runs are skipped.
struct Died;

/// One run reduced to its rate and p99; `Ok(None)` when it failed (recorded in `errors`).
async fn measure(
    publishers_runtime: &Handle,
    target: Target<'_>,
    scenario: &Scenario,
    plan: &Plan,
    tag: &str,
    errors: &mut Vec<String>,
) -> Result<Option<Measured>, Died> {
    let label = target.label;
    let outcome = match one_run(publishers_runtime, target, scenario, plan, tag, errors).await {
        Step::Measured(outcome) => outcome,
        Step::Failed => return Ok(None),
        Step::BrokerDied => return Err(Died),
    };
    let Some(latency) = outcome.latency else {
        errors.push(format!("{scenario} ({label}): no latency was recorded"));
        return Ok(None);
    };
    let measured = Measured {
        rate: outcome.throughput.per_second(),
        p99: latency.p99,
    };
    let published = outcome.published as f64 / outcome.throughput.window.as_secs_f64();
    eprintln!(
        "[{label}] {scenario}: {} msg/s delivered, {} msg/s published, p99 {} µs",
        format_count(measured.rate),
        format_count(published),
        format_micros(measured.p99),
    );
    Ok(Some(measured))
}
