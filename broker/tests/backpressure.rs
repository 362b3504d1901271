//! Back-pressure: a connected subscriber that cannot keep up slows its
//! publishers down instead of losing what they were told was delivered; one
//! that stopped costs them a bounded wait; the `drop` policy still drops.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use strait_broker::config::QueueFullPolicy;
use strait_broker::metrics::DropReason;
use strait_broker::protocol::{Packet, ProtocolVersion, PubAck, QoS, ReasonCode};
use support::cluster::TestCluster;
use support::{start_broker, within, RawClient};

const PUBLISHERS: usize = 10;
const PER_PUBLISHER: u32 = 5_000;
/// QoS 1 publishes a publisher keeps unacknowledged, as client libraries do.
const PUBLISHER_WINDOW: u32 = 32;

/// A QoS 1 PUBLISH.
fn publish(topic: &str, packet_id: u16, payload: Vec<u8>) -> Packet {
    Packet::Publish(support::publish(
        topic,
        QoS::AtLeastOnce,
        Some(packet_id),
        payload,
    ))
}

/// Publishes `count` QoS 1 messages `[index, seq (4 bytes)]` to `topic` with
/// [`PUBLISHER_WINDOW`] in flight; returns how many were acknowledged with success.
async fn run_publisher(addr: SocketAddr, index: u8, topic: &str, count: u32) -> u32 {
    let mut client =
        RawClient::connected(addr, ProtocolVersion::V311, &format!("pub-{index}")).await;
    let mut acked = 0;
    for seq in 0..count {
        if seq >= PUBLISHER_WINDOW {
            acked += expect_puback(&mut client).await;
        }
        let mut payload = vec![index];
        payload.extend_from_slice(&seq.to_be_bytes());
        let packet_id = u16::try_from(seq % 60_000 + 1).expect("packet id");
        client.send(&publish(topic, packet_id, payload)).await;
    }
    for _ in 0..count.min(PUBLISHER_WINDOW) {
        acked += expect_puback(&mut client).await;
    }
    acked
}

async fn expect_puback(client: &mut RawClient) -> u32 {
    match client.recv().await {
        Some(Packet::PubAck(ack)) => u32::from(ack.reason == ReasonCode::Success),
        other => panic!("expected PUBACK, got {other:?}"),
    }
}

/// Receives `count` QoS 1 messages on `client`, acknowledging each.
async fn receive_acking(mut client: RawClient, count: u16) {
    for _ in 0..count {
        match client.recv().await {
            Some(Packet::Publish(p)) => {
                let id = p.packet_id.expect("QoS 1");
                client.send(&Packet::PubAck(PubAck::success(id))).await;
            }
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
}

/// A QoS 1 subscriber that acknowledges every message but pauses now and
/// then, so it is slower than the publishers together. Returns, per
/// publisher, the sequence numbers in the order they arrived.
async fn run_slow_subscriber(mut client: RawClient, expected: usize) -> Vec<Vec<u32>> {
    let mut seen = vec![Vec::new(); PUBLISHERS];
    let mut total = 0;
    while total < expected {
        match client.recv().await {
            Some(Packet::Publish(p)) => {
                let index = usize::from(p.payload[0]);
                let seq = u32::from_be_bytes(p.payload[1..5].try_into().expect("seq"));
                seen[index].push(seq);
                total += 1;
                let id = p.packet_id.expect("QoS 1 has a packet id");
                client.send(&Packet::PubAck(PubAck::success(id))).await;
                if total % 500 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            Some(other) => panic!("unexpected {other:?}"),
            None => panic!("subscriber closed after {total} messages"),
        }
    }
    seen
}

/// [`PUBLISHERS`] publishers on `addr` send `per_publisher` messages each on
/// `devices/<i>/data` to `subscriber`; returns the PUBACKs the publishers
/// received and what the subscriber saw, per publisher.
async fn fan_in(
    addr: SocketAddr,
    subscriber: RawClient,
    per_publisher: u32,
) -> (u32, Vec<Vec<u32>>) {
    let expected = PUBLISHERS * per_publisher as usize;
    let consumer = tokio::spawn(run_slow_subscriber(subscriber, expected));
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|i| {
            let index = u8::try_from(i).expect("index");
            let topic = format!("devices/{i}/data");
            tokio::spawn(async move { run_publisher(addr, index, &topic, per_publisher).await })
        })
        .collect();
    let mut acked = 0;
    for publisher in publishers {
        acked += tokio::time::timeout(Duration::from_secs(120), publisher)
            .await
            .expect("publishers finish")
            .expect("publisher task");
    }
    let seen = tokio::time::timeout(Duration::from_secs(120), consumer)
        .await
        .expect("subscriber gets everything")
        .expect("subscriber task");
    (acked, seen)
}

fn assert_all_in_order(seen: &[Vec<u32>], per_publisher: u32) {
    let in_order: Vec<u32> = (0..per_publisher).collect();
    for (index, seqs) in seen.iter().enumerate() {
        assert_eq!(
            seqs, &in_order,
            "publisher {index}: every message, once, in order"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_in_delivers_every_acknowledged_message_with_the_queue_bounded() {
    let server = start_broker(|c| {
        c.limits.max_queued_messages = 200;
    })
    .await;
    let addr = server.mqtt_addrs()[0];
    let mut subscriber = RawClient::connected(addr, ProtocolVersion::V311, "backend").await;
    subscriber
        .subscribe("devices/+/data", QoS::AtLeastOnce)
        .await;
    let (acked, seen) = fan_in(addr, subscriber, PER_PUBLISHER).await;
    let expected = PUBLISHERS * PER_PUBLISHER as usize;
    let metrics = server.broker().metrics();
    assert_eq!(acked as usize, expected, "every publish was acknowledged");
    assert_all_in_order(&seen, PER_PUBLISHER);
    assert_eq!(metrics.drops_total(DropReason::QueueFull), 0);
    assert!(
        metrics.backpressure_holds_total() > 0,
        "the subscriber was slower than the publishers, so they were held"
    );
    assert_eq!(metrics.backpressure_timeouts_total(), 0);
    assert!(
        metrics.queue_overshoot_peak() <= PUBLISHERS as u64,
        "the queue exceeded its bound by at most one message per held publisher, not {}",
        metrics.queue_overshoot_peak()
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_pressure_crosses_the_mesh_and_loses_nothing() {
    // Three delivery lanes, whatever the cores: each publisher's order must
    // hold across them.
    let cluster = TestCluster::start_with(2, |c| {
        c.limits.max_queued_messages = 200;
        c.cluster.delivery_lanes = 3;
    })
    .await;
    let mut subscriber =
        RawClient::connected(cluster.mqtt(1), ProtocolVersion::V311, "backend").await;
    subscriber
        .subscribe("devices/+/data", QoS::AtLeastOnce)
        .await;
    cluster.wait_routes(0, 1, 1).await;
    let per_publisher = 2_000;
    let (acked, seen) = fan_in(cluster.mqtt(0), subscriber, per_publisher).await;
    assert_eq!(acked as usize, PUBLISHERS * per_publisher as usize);
    assert_all_in_order(&seen, per_publisher);
    let receiving = cluster.node(1).broker().metrics();
    assert_eq!(receiving.drops_total(DropReason::QueueFull), 0);
    assert!(
        receiving.backpressure_holds_total() > 0,
        "the peer's stream was held for the slow subscriber"
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_stalled_subscriber_holds_an_unrelated_pair_no_longer_than_the_wait() {
    let wait = Duration::from_millis(500);
    let server = start_broker(|c| {
        c.limits.max_queued_messages = 10;
        c.limits.max_inflight = 4;
        c.limits.backpressure_max_wait_ms = 500;
    })
    .await;
    let addr = server.mqtt_addrs()[0];
    // Subscribed to everything, then never reads again: 4 in flight and 10
    // queued fill it up.
    let mut stalled = RawClient::connected(addr, ProtocolVersion::V5, "stalled").await;
    stalled.subscribe("#", QoS::AtLeastOnce).await;
    let mut receiver = RawClient::connected(addr, ProtocolVersion::V5, "receiver").await;
    receiver.subscribe("pair/b", QoS::AtLeastOnce).await;
    let mut sender = RawClient::connected(addr, ProtocolVersion::V5, "sender").await;

    let count = 100u16;
    let receiving = tokio::spawn(receive_acking(receiver, count));
    let started = Instant::now();
    for id in 1..=count {
        sender.send(&publish("pair/b", id, vec![1])).await;
        match sender.recv().await {
            Some(Packet::PubAck(ack)) => assert_eq!(ack.packet_id, id),
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
    within("the receiver's messages", receiving)
        .await
        .expect("receiver task");
    let elapsed = started.elapsed();
    let metrics = server.broker().metrics();
    assert!(
        elapsed < wait + Duration::from_secs(3),
        "the pair was held {elapsed:?}, beyond the {wait:?} wait"
    );
    assert_eq!(
        metrics.backpressure_timeouts_total(),
        1,
        "one wait, then the subscriber counts as stalled"
    );
    assert!(
        metrics.drops_total(DropReason::QueueFull) >= u64::from(count) - 15,
        "messages for the stalled subscriber are dropped and counted"
    );
    drop(stalled);
    server.shutdown().await;
}

#[tokio::test]
async fn a_shared_group_gives_messages_to_the_member_with_room() {
    let server = start_broker(|c| {
        c.limits.max_queued_messages = 10;
        c.limits.max_inflight = 4;
    })
    .await;
    let addr = server.mqtt_addrs()[0];
    let mut stuck = RawClient::connected(addr, ProtocolVersion::V5, "stuck").await;
    stuck.subscribe("$share/g/jobs", QoS::AtLeastOnce).await;
    let mut worker = RawClient::connected(addr, ProtocolVersion::V5, "worker").await;
    worker.subscribe("$share/g/jobs", QoS::AtLeastOnce).await;
    let mut sender = RawClient::connected(addr, ProtocolVersion::V5, "sender").await;
    let count = 200u16;
    // `stuck` takes at most its window and its queue (and one beyond).
    let worker_task = tokio::spawn(receive_acking(worker, count - 15));
    for id in 1..=count {
        sender.send(&publish("jobs", id, vec![1])).await;
        match sender.recv().await {
            Some(Packet::PubAck(ack)) => assert_eq!(ack.reason, ReasonCode::Success),
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
    within("the worker's share", worker_task)
        .await
        .expect("worker task");
    let metrics = server.broker().metrics();
    assert_eq!(metrics.drops_total(DropReason::QueueFull), 0);
    assert_eq!(metrics.backpressure_timeouts_total(), 0);
    drop(stuck);
    server.shutdown().await;
}

#[tokio::test]
async fn a_listener_with_the_drop_policy_drops_and_counts() {
    let server = start_broker(|c| {
        c.limits.max_queued_messages = 3;
        c.limits.max_inflight = 1;
        c.listeners[0].queue_full_policy = Some(QueueFullPolicy::Drop);
    })
    .await;
    let addr = server.mqtt_addrs()[0];
    let mut sub = RawClient::connected(addr, ProtocolVersion::V5, "sub").await;
    sub.subscribe("q", QoS::AtLeastOnce).await;
    let mut publisher = RawClient::connected(addr, ProtocolVersion::V5, "pub").await;
    // One in flight (never acknowledged), three queued, the rest dropped.
    let mut reasons = Vec::new();
    for i in 1..=6u16 {
        publisher.send(&publish("q", i, vec![1])).await;
        match publisher.recv().await {
            Some(Packet::PubAck(ack)) => reasons.push(ack.reason),
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
    assert_eq!(
        reasons,
        [
            [ReasonCode::Success; 4].as_slice(),
            &[ReasonCode::QuotaExceeded; 2]
        ]
        .concat(),
        "the v5 publisher learns which messages were not taken"
    );
    let metrics = server.broker().metrics();
    assert_eq!(metrics.drops_total(DropReason::QueueFull), 2);
    assert_eq!(metrics.backpressure_holds_total(), 0);
    server.shutdown().await;
}

#[tokio::test]
async fn qos0_beyond_a_full_queue_is_dropped_without_holding_the_publisher() {
    let server = start_broker(|c| {
        c.limits.max_queued_messages = 3;
    })
    .await;
    let addr = server.mqtt_addrs()[0];
    let mut sub = RawClient::connected(addr, ProtocolVersion::V5, "sub").await;
    sub.subscribe("q", QoS::AtMostOnce).await;
    // The subscriber stops reading; its socket buffers fill, then its queue.
    let mut publisher = RawClient::connected(addr, ProtocolVersion::V5, "pub").await;
    let big = vec![0u8; 64 * 1024];
    for _ in 0..200 {
        publisher
            .send(&Packet::Publish(support::publish(
                "q",
                QoS::AtMostOnce,
                None,
                big.clone(),
            )))
            .await;
    }
    // The publisher's connection still answers at once: it is not held.
    publisher.send(&Packet::PingReq).await;
    assert!(matches!(publisher.recv().await, Some(Packet::PingResp)));
    let metrics = server.broker().metrics();
    assert!(metrics.drops_total(DropReason::QueueFull) > 0);
    assert_eq!(metrics.backpressure_holds_total(), 0);
    drop(sub);
    server.shutdown().await;
}
