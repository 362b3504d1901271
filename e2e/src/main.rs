//! `strait-e2e up`: the whole system on this machine (`make run`).

use std::path::{Path, PathBuf};

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
        /// Namespaces that get a users Secret `demo-users` (user `demo`,
        /// a fresh password) before the manifests are applied.
        #[arg(long = "demo-users-in")]
        demo_users_in: Vec<String>,
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
        Cli::Up {
            manifests,
            values,
            demo_users_in,
        } => up(&manifests, &values, &demo_users_in).await,
    }
}

async fn up(
    manifests: &[PathBuf],
    values: &[PathBuf],
    demo_users_in: &[String],
) -> anyhow::Result<()> {
    let progress = Progress::new(false);
    let values: Vec<&Path> = values.iter().map(PathBuf::as_path).collect();
    let system = System::start(0, &values, &progress).await?;
    let result = bring_up(&system, manifests, demo_users_in, &progress).await;
    match result {
        Ok(()) => {
            let mut terminate =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                stopped = tokio::signal::ctrl_c() => stopped?,
                _ = terminate.recv() => {}
            }
            progress.step("stopping");
        }
        Err(ref error) => eprintln!("error: {error:#}\nstopping"),
    }
    system.shutdown().await;
    result
}

async fn bring_up(
    system: &System,
    manifests: &[PathBuf],
    demo_users_in: &[String],
    progress: &Progress,
) -> anyhow::Result<()> {
    let password = strait_e2e::system::random_password();
    for namespace in demo_users_in {
        progress.step(&format!("creating user `demo` in namespace {namespace}"));
        system.create_users_secret(namespace, "demo-users", "demo", &password)?;
    }
    for manifest in manifests {
        progress.step(&format!("kubectl apply -f {}", manifest.display()));
        system.kubectl(&["apply", "-f", &manifest.to_string_lossy()])?;
    }
    progress.step("kubectl wait --for=condition=Ready mqc,clink --all -A (pods start, mesh, link)");
    system
        .kubectl(&[
            "wait",
            "--for=condition=Ready",
            "mqc,clink",
            "--all",
            "-A",
            "--timeout=300s",
        ])
        .context("waiting for Ready")?;
    progress.step("ready");
    println!("{}", system.kubectl(&["get", "mqc,clink", "-A"])?);
    print_usage(system, demo_users_in, &password)
}

fn print_usage(system: &System, namespaces: &[String], password: &str) -> anyhow::Result<()> {
    let clusters = system.kubectl(&[
        "get",
        "mqc",
        "-A",
        "-o",
        "jsonpath={range .items[*]}{.metadata.namespace}/{.metadata.name}{\"\\n\"}{end}",
    ])?;
    let mut addresses = Vec::new();
    for cluster in clusters.lines().filter(|l| !l.is_empty()) {
        let (ns, name) = cluster.split_once('/').context("namespace/name")?;
        let ip = system.kubectl(&[
            "get",
            "svc",
            "-n",
            ns,
            name,
            "-o",
            "jsonpath={.spec.clusterIP}",
        ])?;
        addresses.push((name.to_owned(), ip));
    }
    let auth = if namespaces.is_empty() {
        String::new()
    } else {
        format!(" -u demo -P '{password}'")
    };
    println!("MQTT, each region's client Service (cluster IP, port 1883):");
    for (name, ip) in &addresses {
        println!("  {name:<6} {ip}");
    }
    if let [(a, a_ip), (b, b_ip), ..] = addresses.as_slice() {
        println!("\nSubscribe in {b}, publish in {a}:");
        println!("  mosquitto_sub -h {b_ip}{auth} -t 'fleet/#' -v");
        println!("  mosquitto_pub -h {a_ip}{auth} -t fleet/car-1/telemetry -m 'hello from {a}'");
    }
    println!("\nkubectl:");
    println!(
        "  {} --kubeconfig {} get mqc,clink,pods -A",
        system.kubectl_path().display(),
        system.kubeconfig().display()
    );
    println!(
        "\nPods' output: {}/pods/<uid>/container.log",
        system.state_dir().display()
    );
    println!("Ctrl-C stops everything.");
    Ok(())
}
