//! `kill -9` of the node that holds a link, with real processes: cluster
//! `east` is two broker processes, each with a link listener; cluster `west`
//! (one node, in this process) dials both. When the east node holding the
//! link is killed, west redials the survivor and messages flow again. Its
//! own test binary: the processes bind ports picked just before they start.

mod support;

use std::net::SocketAddr;
use std::process::Child;
use std::time::Duration;

use strait_broker::link::LinkSecret;
use support::linked::link;
use support::{free_port, v4, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LINK_SECRET: &str = "west-to-east-link-secret-0123456789";

/// One east node as a process.
struct EastNode {
    child: Child,
    mqtt: SocketAddr,
    admin: SocketAddr,
    link: SocketAddr,
}

impl EastNode {
    fn spawn(dir: &std::path::Path, index: usize, cluster_ports: &[u16]) -> EastNode {
        let ports = (free_port(), free_port(), free_port());
        let peers: Vec<String> = cluster_ports
            .iter()
            .map(|p| format!("\"127.0.0.1:{p}\""))
            .collect();
        let config = format!(
            "node: {{cluster: east, name: east-{index}}}\n\
             listeners: [{{bind: '127.0.0.1:{mqtt}'}}]\n\
             admin: {{bind: '127.0.0.1:{admin}'}}\n\
             sys: {{intervalSecs: 0}}\n\
             cluster:\n  bind: '127.0.0.1:{cluster}'\n  secretFile: {dir}/cluster-secret\n  peers: [{peers}]\n  \
             heartbeatIntervalMs: 100\n  peerTimeoutMs: 1000\n  maxBackoffMs: 200\n  discoveryIntervalMs: 200\n\
             linkListener: {{bind: '127.0.0.1:{link}', credentialsFile: {dir}/east-credentials}}\n\
             links: [{{name: west, export: ['#'], import: ['#']}}]\n",
            mqtt = ports.0,
            admin = ports.1,
            link = ports.2,
            cluster = cluster_ports[index],
            dir = dir.display(),
            peers = peers.join(", "),
        );
        let path = dir.join(format!("east-{index}.yaml"));
        std::fs::write(&path, config).expect("write config");
        let child = support::spawn_broker_process(&path);
        let at = |port| SocketAddr::from(([127, 0, 0, 1], port));
        EastNode {
            child,
            mqtt: at(ports.0),
            admin: at(ports.1),
            link: at(ports.2),
        }
    }

    /// Whether this node holds the link (its `strait_link_up` is 1); `None`
    /// while it does not answer.
    async fn holds_link(&self) -> Option<bool> {
        let mut stream = tokio::net::TcpStream::connect(self.admin).await.ok()?;
        let request = "GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n";
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await.ok()?;
        Some(
            response
                .lines()
                .any(|l| l == "strait_link_up{link=\"west\"} 1"),
        )
    }
}

impl Drop for EastNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Probes until a message published at `publisher` reaches `subscriber`.
async fn wait_flowing(publisher: &mut v4::Client, subscriber: &mut v4::Client) {
    within("messages to cross the link", async {
        loop {
            publisher.publish_acked("t/probe", false, b"probe").await;
            if tokio::time::timeout(Duration::from_millis(300), subscriber.publish_received())
                .await
                .is_ok()
            {
                break;
            }
        }
    })
    .await;
    publisher
        .publish_acked("t/drained", false, b"drained")
        .await;
    while subscriber.publish_received().await.topic != "t/drained" {}
}

async fn stream(publisher: &mut v4::Client, subscriber: &mut v4::Client, from: u32, count: u32) {
    for i in from..from + count {
        publisher
            .publish_acked("t/seq", false, &i.to_be_bytes())
            .await;
    }
    for i in from..from + count {
        let got = subscriber.publish_received().await;
        assert_eq!(
            (got.topic.as_str(), got.payload.as_ref()),
            ("t/seq", &i.to_be_bytes()[..])
        );
    }
}

#[tokio::test]
async fn killing_the_node_that_holds_the_link_moves_it_to_a_survivor() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("cluster-secret"),
        "east-cluster-secret-0123456789",
    )
    .expect("write");
    let hashed = LinkSecret::new(LINK_SECRET.as_bytes())
        .expect("long enough")
        .hash()
        .expect("hash");
    std::fs::write(
        dir.path().join("east-credentials"),
        format!("west:{}\n", hashed.encode()),
    )
    .expect("write");
    std::fs::write(dir.path().join("west.secret"), LINK_SECRET).expect("write");
    let cluster_ports = [free_port(), free_port()];
    let mut east: Vec<Option<EastNode>> = (0..2)
        .map(|i| Some(EastNode::spawn(dir.path(), i, &cluster_ports)))
        .collect();

    let west = support::start_broker(|config| {
        config.node.cluster = "west".into();
        let mut to_east = link("east");
        to_east.endpoints = east.iter().flatten().map(|n| n.link.to_string()).collect();
        to_east.secret_file = Some(dir.path().join("west.secret"));
        config.links = vec![to_east];
    })
    .await;
    let links = west.broker().links().clone();
    support::cluster::eventually("west to link to east", || {
        links.get("east").is_some_and(|l| l.is_connected())
    })
    .await;
    let mut subscriber = v4::connect(v4::options(west.mqtt_addrs()[0], "west-sub")).await;
    subscriber.subscribe("t/#", v4::QoS::AtLeastOnce).await;

    let holder = within("an east node to hold the link", async {
        loop {
            for (i, node) in east.iter().enumerate() {
                if node.as_ref().expect("running").holds_link().await == Some(true) {
                    return i;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await; // polling other processes
        }
    })
    .await;
    let survivor = 1 - holder;
    let survivor_mqtt = east[survivor].as_ref().expect("running").mqtt;
    let mut publisher = v4::connect(v4::options(survivor_mqtt, "east-pub")).await;
    wait_flowing(&mut publisher, &mut subscriber).await;
    stream(&mut publisher, &mut subscriber, 0, 50).await;

    // SIGKILL: no goodbye to its peers, no release of its claim.
    drop(east[holder].take());
    let survivor_link = east[survivor].as_ref().expect("running").link.to_string();
    support::cluster::eventually("west to reach the survivor", || {
        let status = &links.status()[0];
        status.state == "connected" && status.endpoint.as_deref() == Some(survivor_link.as_str())
    })
    .await;
    wait_flowing(&mut publisher, &mut subscriber).await;
    stream(&mut publisher, &mut subscriber, 50, 50).await;
    assert_eq!(
        east[survivor].as_ref().expect("running").holds_link().await,
        Some(true)
    );
    west.shutdown().await;
}
