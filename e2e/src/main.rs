//! `strait-e2e up`: the whole system on this machine (`make run`).

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use strait_e2e::system::{Progress, System};

/// Brings up Kubernetes on this machine with the operator installed by its
/// Helm chart, applies manifests, waits until every resource is Ready and
/// prints how to use it; stops everything on Ctrl-C.
#[derive(Debug, Parser)]
#[command(name = "strait-e2e")]
enum Cli {
    /// Bring the system up and keep it running until Ctrl-C.
    Up {
        /// Manifests to `kubectl apply` once the operator is installed.
        #[arg(long = "apply")]
        manifests: Vec<PathBuf>,
        /// Helm values files for the operator's chart.
        #[arg(long = "values")]
        values: Vec<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse() {
        Cli::Up { manifests, values } => up(&manifests, &values).await,
    }
}

async fn up(manifests: &[PathBuf], values: &[PathBuf]) -> anyhow::Result<()> {
    let progress = Progress::new(false);
    let values: Vec<&std::path::Path> = values.iter().map(PathBuf::as_path).collect();
    let system = System::start(0, &values, &progress).await?;
    for manifest in manifests {
        progress.step(&format!("kubectl apply -f {}", manifest.display()));
        system
            .kubectl(&["apply", "-f", &manifest.to_string_lossy()])
            .context("apply")?;
    }
    progress.step("running; Ctrl-C stops everything");
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        stopped = tokio::signal::ctrl_c() => stopped?,
        _ = terminate.recv() => {}
    }
    progress.step("stopping");
    system.shutdown().await;
    Ok(())
}
