//! The load generator's client and scenario runner against a real mosquitto,
//! started by the test on a free loopback port.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use strait_broker::protocol::{Packet, PubAck, Publish, PublishProperties, QoS};
use strait_loadgen::broker::{BrokerKind, BrokerProcess, BrokerSpec};
use strait_loadgen::client::{Client, ConnectOptions};
use strait_loadgen::run::{run_scenario, Endpoints};
use strait_loadgen::scenario::{Load, Scenario, Timing, Topology};

/// Upper bound on each test, so a broken broker fails the test instead of hanging it.
const TEST_TIMEOUT: Duration = Duration::from_secs(5);

/// mosquitto from `$STRAIT_MOSQUITTO`, the `PATH`, or Debian's location
/// (`make deps` installs it).
fn mosquitto() -> BrokerSpec {
    let binary = std::env::var_os("STRAIT_MOSQUITTO")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("PATH").and_then(|path| {
                std::env::split_paths(&path)
                    .map(|dir| dir.join("mosquitto"))
                    .find(|candidate| candidate.is_file())
            })
        })
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/mosquitto"));
    assert!(
        binary.is_file(),
        "mosquitto is not installed (run `make deps`)"
    );
    BrokerSpec {
        kind: BrokerKind::Mosquitto,
        binary,
    }
}

#[tokio::test]
async fn a_qos1_publish_reaches_a_subscriber_and_is_acknowledged() {
    let broker = BrokerProcess::start(&mosquitto())
        .await
        .expect("mosquitto starts");
    let addr = broker.addr();
    tokio::time::timeout(TEST_TIMEOUT, async {
        let mut subscriber = Client::connect(addr, &ConnectOptions::new("it-sub"))
            .await
            .expect("subscriber connects");
        let granted = subscriber
            .subscribe("it/+/data", QoS::AtLeastOnce)
            .await
            .expect("subscription accepted");
        assert_eq!(granted, QoS::AtLeastOnce);

        let publisher = Client::connect(addr, &ConnectOptions::new("it-pub"))
            .await
            .expect("publisher connects");
        let (mut pub_reader, mut pub_writer) = publisher.split();
        let publish = Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: "it/7/data".to_owned(),
            packet_id: Some(7),
            payload: Bytes::from_static(b"hello, strait"),
            properties: PublishProperties::default(),
        });
        pub_writer.send(&publish).await.expect("publish written");
        match pub_reader.next().await.expect("an answer to the publish") {
            Packet::PubAck(ack) => assert_eq!(ack.packet_id, 7),
            other => panic!("expected PUBACK, got {other:?}"),
        }

        let (mut sub_reader, mut sub_writer) = subscriber.split();
        match sub_reader.next().await.expect("a delivery") {
            Packet::Publish(delivered) => {
                assert_eq!(delivered.topic, "it/7/data");
                assert_eq!(delivered.qos, QoS::AtLeastOnce);
                assert_eq!(&delivered.payload[..], b"hello, strait");
                let id = delivered
                    .packet_id
                    .expect("QoS 1 deliveries carry a packet id");
                sub_writer
                    .send(&Packet::PubAck(PubAck::success(id)))
                    .await
                    .expect("delivery acknowledged");
            }
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    })
    .await
    .expect("the exchange completes in time");
    broker.stop().await;
}

#[tokio::test]
async fn a_short_qos1_run_counts_deliveries_and_latency() {
    let broker = BrokerProcess::start(&mosquitto())
        .await
        .expect("mosquitto starts");
    let scenario = Scenario {
        topology: Topology::Pairs(2),
        qos: QoS::AtLeastOnce,
        payload_size: 64,
        load: Load::Rate(2_000.0),
    };
    let timing = Timing {
        warmup: Duration::from_millis(100),
        measure: Duration::from_millis(400),
    };
    let outcome = tokio::time::timeout(
        TEST_TIMEOUT,
        run_scenario(
            &tokio::runtime::Handle::current(),
            Endpoints::single(broker.addr()),
            &scenario,
            timing,
            "it-run",
        ),
    )
    .await
    .expect("the run ends in time")
    .expect("the run succeeds");
    broker.stop().await;

    // 2,000 msg/s offered for 0.4 s: about 800 deliveries; allow for a slow CI machine.
    let delivered = outcome.throughput.delivered;
    assert!((400..=900).contains(&delivered), "{delivered} deliveries");
    assert!(outcome.published >= delivered / 2, "{outcome:?}");
    let latency = outcome.latency.expect("delivered messages have latencies");
    assert_eq!(latency.count, delivered);
    assert!(latency.p50 <= latency.p99 && latency.p99 <= latency.max);
    assert!(
        latency.p50 > Duration::ZERO && latency.p50 < Duration::from_secs(1),
        "{latency:?}"
    );
}
