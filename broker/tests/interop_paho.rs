//! Interoperability with paho-mqtt 2.x (Python), over MQTT 3.1.1 and 5.0, on
//! TCP and WebSocket.
//!
//! The scenarios live in `tests/paho/*.py`; each takes the broker's port and
//! protocol version, checks every answer of the broker, and exits non-zero
//! with a message on any mismatch. The interpreter comes from `STRAIT_PYTHON`,
//! which the Makefile exports after `make deps` has built a venv with paho-mqtt.

mod support;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use strait_broker::config::{ListenerConfig, ListenerProtocol};
use strait_broker::server::Server;
use support::start_broker;

/// Longest a script may run; the slowest one waits out a 1 s message expiry.
const SCRIPT_LIMIT: Duration = Duration::from_secs(30);

fn python() -> String {
    std::env::var("STRAIT_PYTHON").unwrap_or_else(|_| {
        panic!(
            "STRAIT_PYTHON is not set: run `make deps` (it creates a venv with paho-mqtt) and run \
             the tests through make, or export STRAIT_PYTHON=<that venv>/bin/python"
        )
    })
}

/// Runs `tests/paho/<script>` with `<port> <version> [extra ports]` and fails
/// the test with the script's output unless it reports success.
async fn run_script(script: &str, version: &str, ports: &[u16]) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/paho")
        .join(script);
    let python = python();
    let mut command = tokio::process::Command::new(&python);
    command
        .arg(&path)
        .arg(ports[0].to_string())
        .arg(version)
        .args(ports[1..].iter().map(u16::to_string))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(SCRIPT_LIMIT, command.output())
        .await
        .unwrap_or_else(|_| {
            panic!("{script} (MQTT {version}) did not finish within {SCRIPT_LIMIT:?}")
        })
        .unwrap_or_else(|err| panic!("cannot run {python} (run `make deps`): {err}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.trim_end() == "ok",
        "{script} (MQTT {version}) failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
}

/// A broker with a plain MQTT listener and a WebSocket listener on path `/mqtt`.
async fn broker_with_websocket() -> Server {
    start_broker(|config| {
        config.listeners.push(ListenerConfig {
            name: "ws".into(),
            bind: "127.0.0.1:0".parse().expect("addr"),
            protocol: ListenerProtocol::Websocket,
            tls: None,
            ..ListenerConfig::default()
        });
    })
    .await
}

/// Starts a broker, runs `script` against it, and shuts the broker down.
async fn scenario(script: &str, version: &str) {
    let server = if script == "websocket.py" {
        broker_with_websocket().await
    } else {
        // A small alias maximum, so topic_alias.py can step over it.
        start_broker(|config| config.limits.topic_alias_maximum = 4).await
    };
    let ports: Vec<u16> = server.mqtt_addrs().iter().map(|addr| addr.port()).collect();
    run_script(script, version, &ports).await;
    server.shutdown().await;
}

macro_rules! paho_tests {
    ($($name:ident: $script:literal for [$($version:ident),+];)*) => {
        $(
            mod $name {
                $(
                    #[tokio::test]
                    async fn $version() {
                        super::scenario($script, &stringify!($version)[1..]).await;
                    }
                )+
            }
        )*
    };
}

/// MQTT over WebSocket; see `websocket.py`.
mod websocket_transport {
    #[tokio::test]
    async fn v311() {
        super::scenario("websocket.py", "311").await;
    }

    #[tokio::test]
    async fn v5() {
        super::scenario("websocket.py", "5").await;
    }
}

paho_tests! {
    qos2_round_trip: "qos2.py" for [v311, v5];
    retained_messages: "retained.py" for [v311, v5];
    will_on_abrupt_death: "will.py" for [v311, v5];
    session_resume_with_queued_qos1: "session.py" for [v311, v5];
    shared_subscription: "shared.py" for [v311, v5];
    topic_alias: "topic_alias.py" for [v5];
    message_expiry: "expiry.py" for [v5];
    no_local: "no_local.py" for [v5];
    subscription_identifiers: "sub_ids.py" for [v5];
    request_response_properties: "request_response.py" for [v5];
}
