//! The brokers under test: each runs as a child process on a loopback port,
//! configured from here so that every one gets comparable limits.
//!
//! Limits are set alike where the brokers have a matching knob: 100 QoS 1
//! messages in flight per client, 1,000 queued per client (the default of
//! both strait and mosquitto), no connection
//! limit below the file-descriptor limit, no `$SYS` publishing, no persistence.

use std::fmt;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use strait_broker::config::Config as StraitConfig;
use tempfile::TempDir;
use tokio::process::{Child, Command};

use crate::run::settle;

/// QoS 1/2 messages in flight per client, for every broker.
pub const INFLIGHT_PER_CLIENT: u16 = 100;

/// Messages queued per client beyond the inflight window, for every broker.
pub const QUEUED_PER_CLIENT: usize = 1_000;

/// Connections every broker accepts (the fd limit is the real bound).
pub const MAX_CONNECTIONS: usize = 100_000;

/// How long a broker may take to accept its first MQTT connection.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// Lines of a broker's log quoted when it fails to start.
const LOG_TAIL_LINES: usize = 20;

/// Which broker a binary is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    Strait,
    Mosquitto,
    Rumqttd,
}

impl BrokerKind {
    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            BrokerKind::Strait => "strait",
            BrokerKind::Mosquitto => "mosquitto",
            BrokerKind::Rumqttd => "rumqttd",
        }
    }
}

impl fmt::Display for BrokerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A broker to benchmark: its kind and its executable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerSpec {
    pub kind: BrokerKind,
    pub binary: PathBuf,
}

/// Why a broker could not be run or inspected.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot prepare the {broker} run directory: {source}")]
    Setup {
        broker: BrokerKind,
        source: std::io::Error,
    },
    #[error("cannot render the strait configuration: {0}")]
    Render(#[from] serde_yaml::Error),
    #[error("cannot start {binary}: {source}")]
    Spawn {
        binary: PathBuf,
        source: std::io::Error,
    },
    #[error("{broker} exited during start-up ({status}); its log ends with:\n{log}")]
    Exited {
        broker: BrokerKind,
        status: ExitStatus,
        log: String,
    },
    #[error("{broker} did not accept MQTT connections on {addr} within {timeout:?}: {last_error}")]
    NotReady {
        broker: BrokerKind,
        addr: SocketAddr,
        timeout: Duration,
        last_error: String,
    },
    #[error("{broker} is no longer running")]
    Gone { broker: BrokerKind },
    #[error("cannot read the memory use of {broker}: {detail}")]
    Memory { broker: BrokerKind, detail: String },
}

/// Resident memory of a process, in KiB, from `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// `VmRSS`: resident now.
    pub rss_kib: u64,
    /// `VmHWM`: the most ever resident.
    pub peak_kib: u64,
}

/// Reads the `VmRSS` and `VmHWM` lines of a `/proc/<pid>/status` text.
pub fn parse_status(status: &str) -> Option<Memory> {
    let field = |key: &str| {
        status.lines().find_map(|line| {
            let value = line.strip_prefix(key)?.strip_prefix(':')?;
            value.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()
        })
    };
    Some(Memory {
        rss_kib: field("VmRSS")?,
        peak_kib: field("VmHWM")?,
    })
}

/// The strait configuration for a benchmark run (listeners come from the command line).
pub fn strait_config() -> Result<String, serde_yaml::Error> {
    let mut config = StraitConfig::default();
    config.sys.interval_secs = 0;
    config.persistence.data_dir = None;
    config.limits.max_connections = MAX_CONNECTIONS;
    config.limits.max_inflight = INFLIGHT_PER_CLIENT;
    config.limits.max_queued_messages = QUEUED_PER_CLIENT;
    serde_yaml::to_string(&config)
}

/// The benchmark configuration with `limits.queueFullPolicy` set to `policy`
/// (`backpressure` or `drop`).
pub fn strait_config_with_policy(policy: &str) -> Result<String, serde_yaml::Error> {
    let mut config: StraitConfig = serde_yaml::from_str(&strait_config()?)?;
    config.limits.queue_full_policy = serde_yaml::from_str(policy)?;
    serde_yaml::to_string(&config)
}

/// The configuration of strait node `name` of the two-node benchmark cluster:
/// the benchmark limits, plus a mesh listener on `bind` authenticated by the
/// secret in `secret_file`, dialling `peers`, delivering forwarded messages
/// in `delivery_lanes` lanes (0: the broker's default).
pub fn strait_node_config(
    name: &str,
    bind: SocketAddr,
    secret_file: &Path,
    peers: &[SocketAddr],
    delivery_lanes: usize,
) -> Result<String, serde_yaml::Error> {
    let mut config: StraitConfig = serde_yaml::from_str(&strait_config()?)?;
    config.node.cluster = "bench".to_owned();
    config.node.name = name.to_owned();
    config.cluster.bind = Some(bind);
    config.cluster.secret_file = Some(secret_file.to_owned());
    config.cluster.peers = peers.iter().map(ToString::to_string).collect();
    config.cluster.delivery_lanes = delivery_lanes;
    serde_yaml::to_string(&config)
}

/// The mosquitto configuration: one loopback listener, anonymous access,
/// `max_queued` messages queued per client (0: no limit).
pub fn mosquitto_config(addr: SocketAddr, max_queued: usize) -> String {
    format!(
        "listener {port} {ip}\n\
         allow_anonymous true\n\
         max_connections -1\n\
         max_inflight_messages {INFLIGHT_PER_CLIENT}\n\
         max_queued_messages {max_queued}\n\
         persistence false\n\
         sys_interval 0\n\
         set_tcp_nodelay true\n\
         log_dest stderr\n\
         log_type error\n\
         log_type warning\n",
        port = addr.port(),
        ip = addr.ip(),
    )
}

/// A mosquitto bridge to `remote` importing everything published there, as
/// mosquitto.conf(5) describes it: `topic # in 1` subscribes to every topic on
/// the remote at QoS 1 (messages keep their own QoS up to 1, so none is lost
/// on the way), `try_private` marks the bridge so the remote does not loop
/// messages back, `cleansession true` with `notifications false` keeps no
/// state or status topics, and the bridge may have as many QoS 1 messages in
/// flight as any benchmark client (`max_inflight_messages` above).
pub fn mosquitto_bridge_config(remote: SocketAddr) -> String {
    format!(
        "connection bench-bridge\n\
         address {remote}\n\
         topic # in 1\n\
         bridge_protocol_version mqttv311\n\
         try_private true\n\
         cleansession true\n\
         notifications false\n\
         start_type automatic\n\
         restart_timeout 1\n\
         keepalive_interval 60\n"
    )
}

/// The rumqttd configuration: one MQTT 3.1.1 server on a loopback port, its
/// shipped router defaults, generous connection limits and no accept delay.
pub fn rumqttd_config(addr: SocketAddr) -> String {
    format!(
        "id = 0\n\
         \n\
         [router]\n\
         id = 0\n\
         max_connections = {MAX_CONNECTIONS}\n\
         max_outgoing_packet_count = 200\n\
         max_segment_size = 104857600\n\
         max_segment_count = 10\n\
         \n\
         [v4.1]\n\
         name = \"v4-1\"\n\
         listen = \"{addr}\"\n\
         next_connection_delay_ms = 0\n\
         \n\
         [v4.1.connections]\n\
         connection_timeout_ms = 60000\n\
         max_payload_size = 1048576\n\
         max_inflight_count = {INFLIGHT_PER_CLIENT}\n\
         dynamic_filters = true\n"
    )
}

/// A free loopback address (the port is released again, so a broker can bind it).
pub(crate) fn free_addr() -> std::io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// A running broker; killed when stopped or dropped.
#[derive(Debug)]
pub struct BrokerProcess {
    kind: BrokerKind,
    child: Child,
    addr: SocketAddr,
    admin: Option<SocketAddr>,
    log: std::fs::File,
    _dir: TempDir,
}

impl BrokerProcess {
    /// Writes the broker's benchmark configuration, starts it, and waits until
    /// it completes an MQTT handshake.
    pub async fn start(spec: &BrokerSpec) -> Result<BrokerProcess, BrokerError> {
        match spec.kind {
            BrokerKind::Strait => Self::start_strait(&spec.binary, &strait_config()?).await,
            BrokerKind::Mosquitto => Self::start_mosquitto(&spec.binary, QUEUED_PER_CLIENT).await,
            BrokerKind::Rumqttd => Self::start_rumqttd(&spec.binary).await,
        }
    }

    /// Starts mosquitto with the benchmark configuration and `max_queued`
    /// messages queued per client.
    pub async fn start_mosquitto(
        binary: &Path,
        max_queued: usize,
    ) -> Result<BrokerProcess, BrokerError> {
        let broker = BrokerKind::Mosquitto;
        let setup = |source| BrokerError::Setup { broker, source };
        let dir = run_dir(broker)?;
        let addr = free_addr().map_err(setup)?;
        let config = mosquitto_config(addr, max_queued);
        let path = write(dir.path(), "mosquitto.conf", &config).map_err(setup)?;
        let mut command = Command::new(binary);
        command.arg("-c").arg(path);
        Self::launch(broker, command, addr, None, dir).await
    }

    /// Starts mosquitto with the benchmark configuration and a bridge to the
    /// mosquitto at `remote` that brings every message published there
    /// (`topic # in 1`) to this one: mosquitto's own way of joining two
    /// brokers, with the settings its documentation gives for it (see
    /// [`mosquitto_bridge_config`]).
    pub async fn start_mosquitto_bridged(
        binary: &Path,
        remote: SocketAddr,
    ) -> Result<BrokerProcess, BrokerError> {
        let broker = BrokerKind::Mosquitto;
        let setup = |source| BrokerError::Setup { broker, source };
        let dir = run_dir(broker)?;
        let addr = free_addr().map_err(setup)?;
        let config = mosquitto_config(addr, QUEUED_PER_CLIENT) + &mosquitto_bridge_config(remote);
        let path = write(dir.path(), "mosquitto.conf", &config).map_err(setup)?;
        let mut command = Command::new(binary);
        command.arg("-c").arg(path);
        Self::launch(broker, command, addr, None, dir).await
    }

    /// Starts rumqttd with the benchmark configuration.
    pub async fn start_rumqttd(binary: &Path) -> Result<BrokerProcess, BrokerError> {
        let broker = BrokerKind::Rumqttd;
        let setup = |source| BrokerError::Setup { broker, source };
        let dir = run_dir(broker)?;
        let addr = free_addr().map_err(setup)?;
        let path = write(dir.path(), "rumqttd.toml", &rumqttd_config(addr)).map_err(setup)?;
        let mut command = Command::new(binary);
        command.arg("--quiet").arg("--config").arg(path);
        Self::launch(broker, command, addr, None, dir).await
    }

    /// Starts strait with the YAML configuration `config` (listeners on free
    /// loopback ports, from the command line) and waits until it completes an
    /// MQTT handshake.
    pub async fn start_strait(binary: &Path, config: &str) -> Result<BrokerProcess, BrokerError> {
        let broker = BrokerKind::Strait;
        let setup = |source| BrokerError::Setup { broker, source };
        let dir = run_dir(broker)?;
        let addr = free_addr().map_err(setup)?;
        let admin = free_addr().map_err(setup)?;
        let path = write(dir.path(), "strait.yaml", config).map_err(setup)?;
        let mut command = Command::new(binary);
        command
            .arg("--config")
            .arg(path)
            .arg("--mqtt-listen")
            .arg(addr.to_string())
            .arg("--admin-listen")
            .arg(admin.to_string())
            .env("RUST_LOG", "warn");
        Self::launch(broker, command, addr, Some(admin), dir).await
    }

    /// Spawns `command` with its output in `dir`, then waits until the broker
    /// completes an MQTT handshake on `addr`.
    async fn launch(
        broker: BrokerKind,
        mut command: Command,
        addr: SocketAddr,
        admin: Option<SocketAddr>,
        dir: TempDir,
    ) -> Result<BrokerProcess, BrokerError> {
        let setup = |source| BrokerError::Setup { broker, source };
        let log = std::fs::File::options()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(dir.path().join("broker.log"))
            .map_err(setup)?;
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(setup)?)
            .stderr(log.try_clone().map_err(setup)?)
            .kill_on_drop(true);
        let child = command.spawn().map_err(|source| BrokerError::Spawn {
            binary: PathBuf::from(command.as_std().get_program()),
            source,
        })?;
        let mut process = BrokerProcess {
            kind: broker,
            child,
            addr,
            admin,
            log,
            _dir: dir,
        };
        process.wait_ready().await?;
        Ok(process)
    }

    /// Where the broker listens for MQTT.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where strait serves its admin API (`None` for the other brokers).
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
    }

    /// Which broker this is.
    pub fn kind(&self) -> BrokerKind {
        self.kind
    }

    /// The broker's current and peak resident memory.
    pub fn memory(&self) -> Result<Memory, BrokerError> {
        let pid = self
            .child
            .id()
            .ok_or(BrokerError::Gone { broker: self.kind })?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| {
            BrokerError::Memory {
                broker: self.kind,
                detail: e.to_string(),
            }
        })?;
        parse_status(&status).ok_or(BrokerError::Memory {
            broker: self.kind,
            detail: "no VmRSS/VmHWM in /proc status".into(),
        })
    }

    /// Whether the process is still alive (a crash mid-run shows here).
    pub fn check_alive(&mut self) -> Result<(), BrokerError> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(BrokerError::Exited {
                broker: self.kind,
                status,
                log: self.log_tail(),
            }),
            Err(_) => Err(BrokerError::Gone { broker: self.kind }),
        }
    }

    /// Kills the broker and reaps it.
    pub async fn stop(mut self) {
        // An error here means the process is already gone, which is what we want.
        let _ = self.child.kill().await;
    }

    async fn wait_ready(&mut self) -> Result<(), BrokerError> {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            self.check_alive()?;
            let error = match settle(self.addr, "ready").await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(BrokerError::NotReady {
                    broker: self.kind,
                    addr: self.addr,
                    timeout: START_TIMEOUT,
                    last_error: error.to_string(),
                });
            }
            // Polling a port that is not open yet: there is nothing to wait on instead.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The last lines the broker wrote to stdout/stderr.
    fn log_tail(&mut self) -> String {
        if self.log.seek(SeekFrom::Start(0)).is_err() {
            return String::new();
        }
        let lines: Vec<String> = BufReader::new(&self.log)
            .lines()
            .map_while(Result::ok)
            .collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }
}

/// A fresh directory for one broker process's configuration and log.
fn run_dir(broker: BrokerKind) -> Result<TempDir, BrokerError> {
    tempfile::Builder::new()
        .prefix(&format!("strait-bench-{broker}-"))
        .tempdir()
        .map_err(|source| BrokerError::Setup { broker, source })
}

fn write(dir: &Path, name: &str, contents: &str) -> std::io::Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, contents)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_parsing_reads_rss_and_peak() {
        let status = "Name:\tmosquitto\nVmPeak:\t  20000 kB\nVmHWM:\t    8120 kB\nVmRSS:\t    7000 kB\nThreads:\t1\n";
        assert_eq!(
            parse_status(status),
            Some(Memory {
                rss_kib: 7000,
                peak_kib: 8120
            })
        );
    }

    #[test]
    fn status_without_memory_lines_is_refused() {
        assert_eq!(parse_status("Name:\tzombie\nState:\tZ (zombie)\n"), None);
        assert_eq!(parse_status("VmRSS:\tlots\nVmHWM:\t1 kB\n"), None);
    }

    #[test]
    fn own_process_status_parses() {
        let status = std::fs::read_to_string("/proc/self/status").expect("procfs is mounted");
        let memory = parse_status(&status).expect("a live process has VmRSS and VmHWM");
        assert!(memory.rss_kib > 0 && memory.peak_kib >= memory.rss_kib);
    }

    #[test]
    fn strait_config_round_trips_through_the_broker_types() {
        let yaml = strait_config().expect("renders");
        let config: StraitConfig = serde_yaml::from_str(&yaml).expect("parses back");
        assert_eq!(config.sys.interval_secs, 0);
        assert_eq!(config.limits.max_inflight, INFLIGHT_PER_CLIENT);
        assert_eq!(config.limits.max_queued_messages, QUEUED_PER_CLIENT);
        config
            .validate()
            .expect("a loopback benchmark config is valid");
    }

    #[test]
    fn a_node_config_meshes_with_its_peer_and_keeps_the_benchmark_limits() {
        let bind: SocketAddr = "127.0.0.1:47001".parse().expect("address");
        let peer: SocketAddr = "127.0.0.1:47002".parse().expect("address");
        let yaml =
            strait_node_config("a", bind, Path::new("/run/secret"), &[peer], 2).expect("renders");
        let config: StraitConfig = serde_yaml::from_str(&yaml).expect("parses back");
        assert_eq!(config.node.name, "a");
        assert_eq!(config.node.cluster, "bench");
        assert_eq!(config.cluster.bind, Some(bind));
        assert_eq!(config.cluster.peers, ["127.0.0.1:47002"]);
        assert_eq!(config.cluster.delivery_lanes, 2);
        assert_eq!(
            config.cluster.secret_file.as_deref(),
            Some(Path::new("/run/secret"))
        );
        assert_eq!(config.limits.max_inflight, INFLIGHT_PER_CLIENT);
        config.validate().expect("a benchmark node config is valid");
    }

    #[test]
    fn mosquitto_config_listens_on_the_given_loopback_port() {
        let conf = mosquitto_config(
            "127.0.0.1:41883".parse().expect("address"),
            QUEUED_PER_CLIENT,
        );
        assert!(conf.lines().any(|l| l == "listener 41883 127.0.0.1"));
        assert!(conf.lines().any(|l| l == "max_connections -1"));
        assert!(conf.lines().any(|l| l == "allow_anonymous true"));
    }

    #[test]
    fn rumqttd_config_has_one_v4_server_and_no_accept_delay() {
        let conf = rumqttd_config("127.0.0.1:41884".parse().expect("address"));
        assert!(conf.contains("[v4.1]\n"));
        assert!(conf.contains("listen = \"127.0.0.1:41884\"\n"));
        assert!(conf.contains("next_connection_delay_ms = 0\n"));
        assert!(!conf.contains("[v5"));
    }
}
