//! The `strait-broker` binary as an operator runs it: signals, crashes, restarts.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::v5::{self, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Broker {
    child: Child,
    mqtt: SocketAddr,
    admin: SocketAddr,
}

impl Broker {
    async fn spawn(config: Option<&Path>) -> Broker {
        let mqtt: SocketAddr = format!("127.0.0.1:{}", support::free_port())
            .parse()
            .expect("addr");
        let admin: SocketAddr = format!("127.0.0.1:{}", support::free_port())
            .parse()
            .expect("addr");
        let mut command = Command::new(support::BROKER_BIN);
        command
            .arg("--mqtt-listen")
            .arg(mqtt.to_string())
            .arg("--admin-listen")
            .arg(admin.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(path) = config {
            command.arg("--config").arg(path);
        }
        let child = command.spawn().expect("spawn strait-broker");
        let broker = Broker { child, mqtt, admin };
        support::within("the broker to become ready", async {
            while broker.metrics().await.is_none() {
                tokio::time::sleep(Duration::from_millis(20)).await; // polling readiness
            }
        })
        .await;
        broker
    }

    /// GET /metrics, or `None` while the endpoint is not up.
    async fn metrics(&self) -> Option<String> {
        let mut stream = tokio::net::TcpStream::connect(self.admin).await.ok()?;
        let request = format!(
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.admin
        );
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await.ok()?;
        response.starts_with("HTTP/1.1 200").then_some(response)
    }

    async fn counter(&self, name: &str) -> u64 {
        let text = self.metrics().await.expect("metrics");
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("metric {name} missing"))
    }

    /// Waits until two flush cycles complete, so every change made before the
    /// call is on disk.
    async fn wait_for_flush(&self) {
        let start = self.counter("strait_store_flushes_total").await;
        support::within("two flush cycles", async {
            while self.counter("strait_store_flushes_total").await < start + 2 {
                tokio::time::sleep(Duration::from_millis(20)).await; // polling a counter
            }
        })
        .await;
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "broker did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20)); // polling the child
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn sigterm_tells_v5_clients_and_exits_promptly() {
    use strait_broker::protocol as p;
    let mut broker = Broker::spawn(None).await;
    let mut client =
        support::RawClient::connected(broker.mqtt, p::ProtocolVersion::V5, "watcher").await;
    broker.signal("TERM");
    let closing = client.recv_until_closed().await;
    assert_eq!(
        closing,
        vec![p::Packet::Disconnect(p::Disconnect::with_reason(
            p::ReasonCode::ServerShuttingDown
        ))]
    );
    let status = broker.wait_exit(Duration::from_secs(8));
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn state_flushed_before_kill_9_survives_the_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("broker.yaml");
    std::fs::write(
        &config,
        format!(
            "persistence:\n  dataDir: {}\n  flushIntervalMs: 50\nsys:\n  intervalSecs: 0\n",
            dir.path().join("data").display()
        ),
    )
    .expect("write config");

    let durable_options = |addr| {
        let mut options = v5::options(addr, "durable");
        options.set_clean_start(false);
        let mut props = v5::ConnectProperties::new();
        props.session_expiry_interval = Some(3600);
        options.set_connect_properties(props);
        options
    };
    let mut broker = Broker::spawn(Some(&config)).await;
    let mut durable = v5::connect(durable_options(broker.mqtt)).await;
    durable.subscribe("orders/#", QoS::AtLeastOnce).await;
    durable.client.disconnect().await.expect("disconnect");
    drop(durable);

    let mut publisher = v5::connect(v5::options(broker.mqtt, "pub")).await;
    publisher
        .publish_acked("config/site", true, b"retained-v1")
        .await;
    publisher.publish_acked("orders/1", false, b"first").await;
    publisher.publish_acked("orders/2", false, b"second").await;
    broker.wait_for_flush().await;
    broker.signal("KILL");
    broker.wait_exit(Duration::from_secs(5));
    drop(publisher);

    let restarted = Broker::spawn(Some(&config)).await;
    let mut durable = v5::connect(durable_options(restarted.mqtt)).await;
    assert!(
        durable.connack.session_present,
        "the session survived kill -9"
    );
    for expected in [&b"first"[..], b"second"] {
        assert_eq!(&durable.publish_received().await.payload[..], expected);
    }
    let mut fresh = v5::connect(v5::options(restarted.mqtt, "fresh")).await;
    fresh.subscribe("config/#", QoS::AtLeastOnce).await;
    let retained = fresh.publish_received().await;
    assert_eq!(&retained.payload[..], b"retained-v1");
    assert!(retained.retain);
}

#[test]
fn anonymous_on_a_public_address_is_refused_at_start() {
    let port = support::free_port();
    let output = Command::new(support::BROKER_BIN)
        .arg("--mqtt-listen")
        .arg(format!("0.0.0.0:{port}"))
        .arg("--admin-listen")
        .arg(format!("127.0.0.1:{}", support::free_port()))
        .output()
        .expect("run strait-broker");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("allowAnonymous"), "{stderr}");
}

#[test]
fn passwd_prints_a_credentials_line() {
    let mut child = Command::new(support::BROKER_BIN)
        .args(["passwd", "alice"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"s3cret\n")
        .expect("write");
    let output = child.wait_with_output().expect("wait");
    assert!(output.status.success());
    let line = String::from_utf8(output.stdout).expect("utf8");
    assert!(line.starts_with("alice:$argon2id$"), "{line}");
    assert!(!line.contains("s3cret"));
}
