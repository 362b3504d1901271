//! `strait-operator`: reconciles MqttCluster resources.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use strait_operator::leader::LeaseTiming;
use strait_operator::operator::{self, Election, Handle};
use strait_operator::settings::Settings;
use tokio::sync::watch;

/// Strait's Kubernetes operator.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions as YAML, or write one file each.
    Crd {
        /// Write `strait.dev_<plural>.yaml` files into this folder instead.
        #[arg(long)]
        out_dir: Option<std::path::PathBuf>,
    },
    /// Run the operator against the cluster of the current kubeconfig (or in-cluster).
    Run(RunArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Broker image for clusters whose spec sets none: by default the one
    /// `make images` builds from this same version.
    #[arg(
        long,
        env = "STRAIT_BROKER_IMAGE",
        default_value = concat!("ghcr.io/strait/broker:", env!("CARGO_PKG_VERSION"))
    )]
    broker_image: String,
    /// Only watch this namespace (all namespaces by default).
    #[arg(long, env = "STRAIT_WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Clusters reconciled at once.
    #[arg(long, default_value_t = 4)]
    concurrency: u16,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8081")]
    http_bind: SocketAddr,
    /// This instance's name (the pod name), for Events and the Lease.
    #[arg(long, env = "POD_NAME", default_value = "strait-operator")]
    instance: String,
    /// Run without leader election (a single replica only).
    #[arg(long)]
    no_leader_election: bool,
    /// Namespace of the leader Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Name of the leader Lease.
    #[arg(long, default_value = "strait-operator")]
    lease_name: String,
    /// Seconds a silent leader keeps the Lease.
    #[arg(long, default_value_t = 15)]
    lease_duration_secs: u64,
    /// Seconds between reads of each link's health from its brokers.
    #[arg(long, default_value_t = 10)]
    link_health_interval_secs: u64,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd { out_dir: None } => print!("{}", strait_operator::crd::crds_yaml()?),
        Command::Crd { out_dir: Some(dir) } => {
            for crd in strait_operator::crd::crds() {
                let path = dir.join(strait_operator::crd::crd_file_name(&crd));
                std::fs::write(&path, strait_operator::crd::crd_yaml(&crd)?)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
        Command::Run(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(run(args))?;
        }
    }
    Ok(())
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let subscriber = tracing_subscriber::fmt().with_env_filter(filter);
    if args.log_json {
        subscriber.json().init();
    } else {
        subscriber.init();
    }

    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    let settings = Settings {
        namespace: args.namespace,
        concurrency: args.concurrency,
        link_health_interval: Duration::from_secs(args.link_health_interval_secs),
        ..Settings::new(&args.instance, &args.broker_image)
    };
    let election = (!args.no_leader_election).then(|| Election {
        namespace: args.lease_namespace,
        lease_name: args.lease_name,
        timing: LeaseTiming {
            lease_duration: Duration::from_secs(args.lease_duration_secs),
            retry_period: Duration::from_secs((args.lease_duration_secs / 5).max(1)),
        },
    });
    let (shutdown_tx, shutdown) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        let _ = shutdown_tx.send(true);
    });
    let handle = Handle::default();
    let http = tokio::spawn(strait_operator::http::serve(
        args.http_bind,
        handle.clone(),
        shutdown.clone(),
    ));
    let result = operator::run(client, settings, election, handle, shutdown).await;
    http.abort();
    result.map_err(Into::into)
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
