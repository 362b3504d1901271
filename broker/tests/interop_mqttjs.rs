//! MQTT over WebSocket with mqtt.js (npm `mqtt`), the client browsers use, over
//! MQTT 3.1.1 and 5.0.
//!
//! The scenario is `tests/mqttjs/websocket.js`; it finds the package through
//! `STRAIT_NODE_MODULES`, which the Makefile exports after `make deps` has
//! installed it.

mod support;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use strait_broker::config::{ListenerConfig, ListenerProtocol};
use support::start_broker;

/// Longest the script may run (node starts slowly on a loaded machine).
const SCRIPT_LIMIT: Duration = Duration::from_secs(30);

async fn websocket_scenario(protocol_version: u8) {
    let node_modules = std::env::var("STRAIT_NODE_MODULES").unwrap_or_else(|_| {
        panic!(
            "STRAIT_NODE_MODULES is not set: run `make deps` (it installs the npm package mqtt) \
             and run the tests through make, or export STRAIT_NODE_MODULES=<dir>/node_modules"
        )
    });
    let server = start_broker(|config| {
        config.listeners.push(ListenerConfig {
            name: "ws".into(),
            bind: "127.0.0.1:0".parse().expect("addr"),
            protocol: ListenerProtocol::Websocket,
            tls: None,
            ..ListenerConfig::default()
        });
    })
    .await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/mqttjs/websocket.js");
    let mut command = tokio::process::Command::new("node");
    command
        .arg(&script)
        .arg(server.mqtt_addrs()[0].port().to_string())
        .arg(server.mqtt_addrs()[1].port().to_string())
        .arg(protocol_version.to_string())
        .env("NODE_PATH", &node_modules)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(SCRIPT_LIMIT, command.output())
        .await
        .unwrap_or_else(|_| panic!("websocket.js did not finish within {SCRIPT_LIMIT:?}"))
        .unwrap_or_else(|err| panic!("cannot run node (run `make deps`): {err}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.trim_end() == "ok",
        "websocket.js failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    server.shutdown().await;
}

#[tokio::test]
async fn websocket_v311() {
    websocket_scenario(4).await;
}

#[tokio::test]
async fn websocket_v5() {
    websocket_scenario(5).await;
}
