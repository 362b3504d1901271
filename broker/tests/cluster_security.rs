//! The cluster port refuses what is not a peer of this cluster: a node with
//! the wrong secret or of another cluster, a peer speaking another protocol
//! version, and bytes that are not the peer protocol at all. Refusals are
//! counted and logged, and the mesh keeps serving.

mod support;

use std::net::SocketAddr;

use bytes::BytesMut;
use strait_broker::cluster::wire::{self, Frame, MAX_HANDSHAKE_FRAME, PROTOCOL_VERSION};
use strait_broker::cluster::ClusterMetrics;
use strait_broker::server::Server;
use support::cluster::{eventually, node_config, secret_dir, TestCluster};
use support::logs::Logs;
use support::{v4, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const OTHER_SECRET: &str = "not-the-cluster-secret-but-long-enough";

fn mesh(server: &Server) -> &ClusterMetrics {
    server.broker().cluster().expect("clustered").metrics()
}

/// Runs `intruder` (listed in the cluster's discovery, so it dials and is
/// dialled) until every member has refused it at least twice, then checks
/// it never became anyone's peer and the refusals were logged with
/// `reason`, without the secrets.
async fn assert_kept_out(cluster: &TestCluster, intruder: Server, logs: &Logs, reason: &str) {
    eventually("every member to refuse the intruder twice", || {
        (0..3).all(|i| mesh(cluster.node(i)).handshakes_refused_total() >= 2)
    })
    .await;
    eventually("the intruder to refuse the members' dials", || {
        mesh(&intruder).handshakes_refused_total() >= 3
    })
    .await;
    for i in 0..3 {
        let names: Vec<String> = cluster.peers_of(i).into_iter().map(|p| p.name).collect();
        assert_eq!(names.len(), 2, "node-{i} knows only its peers: {names:?}");
        assert!(!names.contains(&"intruder".to_owned()), "{names:?}");
    }
    let intruder_status = intruder.broker().cluster().expect("clustered").status();
    assert!(
        intruder_status.peers.is_empty(),
        "the intruder has no peer: {:?}",
        intruder_status.peers
    );
    cluster.wait_meshed().await;

    let text = logs.text();
    let refusals: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("refused a peer connection") && l.contains("intruder"))
        .collect();
    assert!(
        refusals.iter().any(|l| l.contains(reason)),
        "a refusal naming {reason:?} is logged:\n{text}"
    );
    for secret in [OTHER_SECRET, support::cluster::TEST_SECRET] {
        assert!(!text.contains(secret), "a secret leaked into the logs");
    }

    cluster
        .discovery
        .remove(intruder.cluster_addr().expect("cluster address"));
    intruder.shutdown().await;
}

/// Checks that the members still serve clients across nodes.
async fn assert_cluster_serves(cluster: &TestCluster, topic: &str) {
    let mut sub = v4::connect(v4::options(cluster.mqtt(0), "still-sub")).await;
    sub.subscribe(topic, v4::QoS::AtLeastOnce).await;
    cluster.wait_routes(2, 0, 1).await;
    let mut publisher = v4::connect(v4::options(cluster.mqtt(2), "still-pub")).await;
    publisher.publish_acked(topic, false, b"alive").await;
    assert_eq!(&sub.publish_received().await.payload[..], b"alive");
}

#[tokio::test]
async fn a_node_with_the_wrong_secret_is_refused_and_logged() {
    let logs = Logs::default();
    let _capture = logs.capture();
    let cluster = TestCluster::start(3).await;
    let other = secret_dir(OTHER_SECRET);
    let intruder = cluster
        .start_joined(node_config("test", "intruder", &other))
        .await;
    assert_kept_out(
        &cluster,
        intruder,
        &logs,
        "node intruder did not prove the cluster secret",
    )
    .await;
    assert_cluster_serves(&cluster, "secret/ok").await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_node_of_another_cluster_is_refused() {
    let logs = Logs::default();
    let _capture = logs.capture();
    let cluster = TestCluster::start(3).await;
    let intruder = cluster
        .start_joined({
            let mut config = cluster.config_for("intruder");
            config.node.cluster = "elsewhere".into();
            config
        })
        .await;
    assert_kept_out(
        &cluster,
        intruder,
        &logs,
        r#"node intruder belongs to cluster "elsewhere", this is cluster "test""#,
    )
    .await;
    assert_cluster_serves(&cluster, "cluster/ok").await;
    cluster.shutdown().await;
}

/// A raw connection to a cluster port, speaking frames.
struct RawPeer {
    stream: TcpStream,
    buf: BytesMut,
}

impl RawPeer {
    async fn connect(addr: SocketAddr) -> RawPeer {
        RawPeer {
            stream: TcpStream::connect(addr).await.expect("connect"),
            buf: BytesMut::new(),
        }
    }

    async fn send(&mut self, frame: &Frame) {
        let bytes = wire::encode_to_bytes(frame).expect("encode");
        self.stream.write_all(&bytes).await.expect("write");
    }

    /// The next frame, or `None` once the node closed the connection.
    async fn recv(&mut self) -> Option<Frame> {
        within("a frame or close", async {
            loop {
                if let Some(frame) =
                    wire::decode(&mut self.buf, wire::MAX_FRAME).expect("a valid frame")
                {
                    return Some(frame);
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
    }

    async fn challenge(&mut self) -> [u8; wire::NONCE_LEN] {
        match self.recv().await {
            Some(Frame::Challenge { version, nonce }) => {
                assert_eq!(version, PROTOCOL_VERSION);
                nonce
            }
            other => panic!("expected a challenge, got {other:?}"),
        }
    }

    /// Reads (and discards) whatever comes until the node closes the connection.
    async fn until_closed(&mut self) {
        within("the node to close the connection", async {
            let mut sink = [0u8; 4096];
            while let Ok(n) = self.stream.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
    }
}

#[tokio::test]
async fn a_peer_speaking_another_protocol_version_is_refused() {
    let logs = Logs::default();
    let _capture = logs.capture();
    let cluster = TestCluster::start(2).await;
    let node = cluster.node(0);
    let mut peer = RawPeer::connect(node.cluster_addr().expect("cluster address")).await;
    peer.challenge().await;
    peer.send(&Frame::Hello {
        version: 99,
        cluster: "test".into(),
        node: "from-the-future".into(),
        incarnation: 1,
        proof: [0; wire::NONCE_LEN],
    })
    .await;
    match peer.recv().await {
        Some(Frame::Refused { reason }) => assert!(
            reason.contains("protocol version 99"),
            "the reason names the version: {reason}"
        ),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(peer.recv().await, None, "the connection is closed");
    assert_eq!(mesh(node).handshakes_refused_total(), 1);
    let metrics = node.broker().cluster().expect("clustered").metrics_text();
    assert!(
        metrics.contains("\nstrait_cluster_handshakes_refused_total 1\n"),
        "{metrics}"
    );
    assert_eq!(cluster.peers_of(0).len(), 1, "no peer was created");
    assert!(
        logs.text()
            .lines()
            .any(|l| l.contains("refused a peer connection") && l.contains("protocol version 99")),
        "the refusal is logged:\n{}",
        logs.text()
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn garbage_on_the_cluster_port_is_dropped_without_harm() {
    // A peer timeout longer than any wait of the test: a connection that
    // closes in time was closed for its bytes, not for its silence.
    let cluster = TestCluster::start_with(3, |config| {
        config.cluster.peer_timeout_ms = 60_000;
    })
    .await;
    let addr = cluster.node(0).cluster_addr().expect("cluster address");

    // A hello announced at the largest size a stranger may send, and never
    // sent, holds only its own connection while the node serves everyone else.
    let mut stalled = RawPeer::connect(addr).await;
    stalled.challenge().await;
    let longest = (MAX_HANDSHAKE_FRAME as u32).to_be_bytes();
    stalled.stream.write_all(&longest).await.expect("write");

    // Before the handshake, anything longer is refused on its length alone.
    let too_long = (MAX_HANDSHAKE_FRAME as u32 + 1).to_be_bytes().to_vec();
    let malformed = vec![0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff];
    // Random bytes inside a well-formed length, so they reach the decoder.
    let mut random = 4096u32.to_be_bytes().to_vec();
    random.extend((0..4096).map(|_| rand::random::<u8>()));
    let mut wrong_frame = BytesMut::new();
    wire::encode(&Frame::Ping, &mut wrong_frame).expect("encode");
    let cases: [(&str, Vec<u8>); 4] = [
        ("a length over the frame limit", too_long),
        ("a frame that does not decode", malformed),
        ("a frame of random bytes", random),
        ("a frame other than a hello", wrong_frame.to_vec()),
    ];
    for (what, bytes) in cases {
        let mut peer = RawPeer::connect(addr).await;
        peer.challenge().await;
        peer.stream.write_all(&bytes).await.expect("write");
        eprintln!("sent {what}");
        peer.until_closed().await;
    }

    // The node is unharmed: still meshed with the same peers, none added,
    // and still delivering across nodes.
    cluster.wait_meshed().await;
    assert_eq!(cluster.peers_of(0).len(), 2);
    assert_cluster_serves(&cluster, "garbage/ok").await;
    drop(stalled);
    cluster.shutdown().await;
}
