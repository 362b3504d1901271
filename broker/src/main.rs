//! `strait-broker`: run one broker node, or hash a password for the credentials file.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use strait_broker::config::Config;

/// Strait's MQTT 3.1.1 / 5.0 broker.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// YAML configuration file; without it, a loopback broker with defaults.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address of the (first) MQTT listener, overriding the configuration.
    #[arg(long, value_name = "ADDR")]
    mqtt_listen: Option<SocketAddr>,
    /// Address of the admin HTTP endpoint, overriding the configuration.
    #[arg(long, value_name = "ADDR")]
    admin_listen: Option<SocketAddr>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Read a password from standard input and print a credentials-file line for USER.
    Passwd { user: String },
    /// Read a link secret from standard input and print the line that lets
    /// CLUSTER's links in, for the `linkListener.credentialsFile` of the
    /// cluster it dials (the secret itself stays with CLUSTER).
    LinkCredential { cluster: String },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Passwd { user }) => {
            let password = read_stdin_line("the password")?;
            anyhow::ensure!(!password.is_empty(), "the password is empty");
            anyhow::ensure!(!user.contains(':'), "a username cannot contain ':'");
            println!("{user}:{}", strait_broker::auth::hash_password(&password)?);
            return Ok(());
        }
        Some(Command::LinkCredential { cluster }) => {
            let secret = read_stdin_line("the link secret")?;
            let secret = strait_broker::link::LinkSecret::new(secret.trim().as_bytes())
                .context("a link secret must be at least 16 bytes")?;
            anyhow::ensure!(!cluster.contains(':'), "a cluster name cannot contain ':'");
            println!("{cluster}:{}", secret.hash()?.encode());
            return Ok(());
        }
        None => {}
    }

    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();

    let mut config = match &cli.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(addr) = cli.mqtt_listen {
        match config.listeners.first_mut() {
            Some(first) => first.bind = addr,
            None => anyhow::bail!("--mqtt-listen given but the configuration has no listener"),
        }
    }
    if let Some(addr) = cli.admin_listen {
        config.admin.bind = addr;
    }
    config.validate()?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run_until_signal(config))
}

/// One line of standard input, without its line ending.
fn read_stdin_line(what: &str) -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .with_context(|| format!("reading {what} from standard input"))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// Runs the broker until SIGINT or SIGTERM, then shuts it down gracefully.
async fn run_until_signal(config: Config) -> anyhow::Result<()> {
    let server = strait_broker::server::Server::start(config).await?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = terminate.recv() => {}
        result = tokio::signal::ctrl_c() => result.context("waiting for SIGINT")?,
    }
    server.shutdown().await;
    Ok(())
}
