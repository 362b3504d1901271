//! `strait-loadgen`: benchmark Strait against other MQTT brokers.
//!
//! Each broker given on the command line is started, driven through the same
//! plan and killed, one at a time; the report goes to stdout and to `--out`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use strait_loadgen::bench::run_bench;
use strait_loadgen::broker::{BrokerKind, BrokerSpec};
use strait_loadgen::scenario::Plan;

/// File descriptors kept free for everything but the idle connections.
const FD_MARGIN: u64 = 1024;

/// Benchmark Strait against mosquitto and rumqttd with identical MQTT load.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// The strait-broker executable: the subject of every ratio.
    #[arg(long, value_name = "PATH")]
    strait: Option<PathBuf>,
    /// The mosquitto executable.
    #[arg(long, value_name = "PATH")]
    mosquitto: Option<PathBuf>,
    /// The rumqttd executable.
    #[arg(long, value_name = "PATH")]
    rumqttd: Option<PathBuf>,
    /// Short runs of a few scenarios: a smoke test in well under a minute.
    #[arg(long)]
    quick: bool,
    /// Measured seconds per run, overriding the plan's.
    #[arg(long, value_name = "SECS")]
    measure_secs: Option<f64>,
    /// Idle connections for the memory-per-connection figure, overriding the plan's.
    #[arg(long, value_name = "N")]
    idle_connections: Option<usize>,
    /// The cross-node cluster's `cluster.deliveryLanes` (0: the broker's default).
    #[arg(long, value_name = "N", default_value_t = 0)]
    delivery_lanes: usize,
    /// Threads of the load generator's publishers.
    #[arg(long, default_value_t = 1)]
    publisher_threads: usize,
    /// Threads of the load generator's subscribers (and its control flow).
    #[arg(long, default_value_t = 1)]
    subscriber_threads: usize,
    /// Where to write the markdown report.
    #[arg(long, value_name = "FILE", default_value = "target/bench/report.md")]
    out: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let brokers: Vec<BrokerSpec> = [
        (BrokerKind::Strait, &cli.strait),
        (BrokerKind::Mosquitto, &cli.mosquitto),
        (BrokerKind::Rumqttd, &cli.rumqttd),
    ]
    .into_iter()
    .filter_map(|(kind, binary)| {
        binary.as_ref().map(|binary| BrokerSpec {
            kind,
            binary: binary.clone(),
        })
    })
    .collect();
    anyhow::ensure!(
        !brokers.is_empty(),
        "give at least one of --strait, --mosquitto, --rumqttd"
    );

    let mut plan = if cli.quick {
        Plan::quick()
    } else {
        Plan::full()
    };
    if let Some(secs) = cli.measure_secs {
        plan.timing.measure = Duration::try_from_secs_f64(secs).context("--measure-secs")?;
    }
    if let Some(n) = cli.idle_connections {
        plan.idle_connections = n;
    }
    plan.delivery_lanes = cli.delivery_lanes;
    // Brokers inherit this limit, so both ends of every idle connection fit.
    let fd_limit =
        rlimit::increase_nofile_limit(u64::MAX).context("raising the open-files limit")?;
    let usable = usize::try_from(fd_limit.saturating_sub(FD_MARGIN)).unwrap_or(usize::MAX);
    if plan.idle_connections > usable {
        eprintln!(
            "the open-files limit is {fd_limit}: measuring {usable} idle connections instead of {}",
            plan.idle_connections
        );
        plan.idle_connections = usable;
    }

    let runtime = |threads: usize| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .enable_all()
            .build()
            .context("starting an async runtime")
    };
    let publishers = runtime(cli.publisher_threads)?;
    let subscribers = runtime(cli.subscriber_threads)?;
    let mut report = subscribers.block_on(run_bench(publishers.handle(), &brokers, &plan));
    report.notes.insert(
        1,
        format!(
            "The load generator ran its publishers on {} thread(s) and its subscribers on {} other thread(s), \
             so flooding publishers cannot starve the subscribers.",
            cli.publisher_threads.max(1),
            cli.subscriber_threads.max(1)
        ),
    );
    let markdown = report.to_markdown();
    print!("{markdown}");
    if let Some(dir) = cli.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&cli.out, &markdown)
        .with_context(|| format!("writing {}", cli.out.display()))?;
    eprintln!("report written to {}", cli.out.display());
    Ok(())
}
