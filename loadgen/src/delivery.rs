//! Does a broker deliver what it acknowledged? The most common IoT shape, many
//! QoS 1 devices into one QoS 1 backend, sends a fixed number of messages as
//! fast as the publishers may; the subscriber is the bottleneck, so the
//! broker must either slow the publishers down or drop. Each broker runs in a
//! fresh process so its peak memory is this run's.
//!
//! The table shows, per broker and setting, the messages acknowledged to
//! publishers, those delivered (each counted once; duplicates apart), the
//! delivered rate and the peak resident memory.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use strait_broker::protocol::{Packet, PubAck, Publish, PublishProperties, QoS};
use tokio::runtime::Handle;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::broker::{BrokerError, BrokerProcess};
use crate::client::{Client, ClientError, ConnectOptions, PacketReader};
use crate::report::format_count;
use crate::run::PUBLISH_WINDOW;

/// Publishers in the fan-in.
pub const PUBLISHERS: usize = 10;

/// How long the subscriber waits for more once the publishers are done and
/// nothing arrives: what has not come by then was dropped.
const SILENCE: Duration = Duration::from_secs(5);

/// A whole run may take this long before it counts as hung.
const RUN_LIMIT: Duration = Duration::from_secs(600);

/// One broker under one setting.
#[derive(Debug, Clone)]
pub struct Contender {
    /// The broker and the setting that matters, as the table shows it.
    pub label: String,
    pub start: Start,
}

/// How to start a contender's broker.
#[derive(Debug, Clone)]
pub enum Start {
    /// strait with this YAML configuration.
    Strait {
        binary: std::path::PathBuf,
        config: String,
    },
    /// mosquitto with the benchmark configuration and this `max_queued_messages`.
    Mosquitto {
        binary: std::path::PathBuf,
        max_queued: usize,
    },
    /// rumqttd with the benchmark configuration.
    Rumqttd { binary: std::path::PathBuf },
}

/// What one contender did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeliveryRow {
    pub label: String,
    /// PUBACKs the publishers received.
    pub acknowledged: u64,
    /// Distinct messages the subscriber received.
    pub delivered: u64,
    /// Messages the subscriber received more than once.
    pub duplicates: u64,
    /// Distinct messages delivered per second, from the first publish to the last delivery.
    pub rate: f64,
    pub peak_rss_kib: Option<u64>,
    pub error: Option<String>,
}

/// The fan-in delivery section of the report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeliveryResults {
    pub per_publisher: u32,
    pub rows: Vec<DeliveryRow>,
}

/// Why a delivery run failed.
#[derive(Debug, thiserror::Error)]
enum DeliveryError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("a benchmark task died: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("did not finish within {0:?}")]
    Hung(Duration),
}

/// Runs the fan-in with `per_publisher` messages from each of [`PUBLISHERS`]
/// publishers against every contender in turn.
pub async fn run_delivery(
    publishers_runtime: &Handle,
    contenders: &[Contender],
    per_publisher: u32,
) -> DeliveryResults {
    let mut rows = Vec::with_capacity(contenders.len());
    for contender in contenders {
        eprintln!("[delivery] {}", contender.label);
        let mut row = DeliveryRow {
            label: contender.label.clone(),
            ..DeliveryRow::default()
        };
        let run = one_contender(
            publishers_runtime,
            &contender.start,
            per_publisher,
            &mut row,
        );
        match tokio::time::timeout(RUN_LIMIT, run).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => row.error = Some(e.to_string()),
            Err(_) => row.error = Some(DeliveryError::Hung(RUN_LIMIT).to_string()),
        }
        eprintln!(
            "[delivery] {}: {} acknowledged, {} delivered, {} msg/s",
            row.label,
            row.acknowledged,
            row.delivered,
            format_count(row.rate)
        );
        rows.push(row);
    }
    DeliveryResults {
        per_publisher,
        rows,
    }
}

async fn start(start: &Start) -> Result<BrokerProcess, BrokerError> {
    match start {
        Start::Strait { binary, config } => BrokerProcess::start_strait(binary, config).await,
        Start::Mosquitto { binary, max_queued } => {
            BrokerProcess::start_mosquitto(binary, *max_queued).await
        }
        Start::Rumqttd { binary } => BrokerProcess::start_rumqttd(binary).await,
    }
}

async fn one_contender(
    publishers_runtime: &Handle,
    how: &Start,
    per_publisher: u32,
    row: &mut DeliveryRow,
) -> Result<(), DeliveryError> {
    let broker = start(how).await?;
    let result = fan_in(publishers_runtime, broker.addr(), per_publisher, row).await;
    if let Ok(memory) = broker.memory() {
        row.peak_rss_kib = Some(memory.peak_kib);
    }
    broker.stop().await;
    result
}

/// Ten publishers into one subscriber; fills `row`'s counts and rate.
async fn fan_in(
    publishers_runtime: &Handle,
    addr: SocketAddr,
    per_publisher: u32,
    row: &mut DeliveryRow,
) -> Result<(), DeliveryError> {
    let mut subscriber = Client::connect(addr, &ConnectOptions::new("delivery-sub")).await?;
    subscriber.subscribe("delivery/+", QoS::AtLeastOnce).await?;
    let mut publishers = Vec::with_capacity(PUBLISHERS);
    for i in 0..PUBLISHERS {
        let options = ConnectOptions::new(format!("delivery-pub-{i}"));
        publishers.push(Client::connect(addr, &options).await?);
    }
    let (done_tx, done_rx) = watch::channel(false);
    let started = Instant::now();
    let receiving = tokio::spawn(receive(subscriber, per_publisher, done_rx));
    let mut sending = JoinSet::new();
    for (i, client) in publishers.into_iter().enumerate() {
        sending.spawn_on(send(client, i, per_publisher), publishers_runtime);
    }
    while let Some(joined) = sending.join_next().await {
        row.acknowledged += joined??;
    }
    let _ = done_tx.send(true);
    let received = receiving.await??;
    row.delivered = received.distinct;
    row.duplicates = received.duplicates;
    let elapsed = received
        .last_at
        .map_or(Duration::ZERO, |at| at.duration_since(started));
    if !elapsed.is_zero() {
        row.rate = received.distinct as f64 / elapsed.as_secs_f64();
    }
    Ok(())
}

/// Sends `count` QoS 1 messages on `delivery/<index>` with at most
/// [`PUBLISH_WINDOW`] unacknowledged; returns the PUBACKs received.
async fn send(client: Client, index: usize, count: u32) -> Result<u64, ClientError> {
    let (reader, mut writer) = client.split();
    let credit = Arc::new(Semaphore::new(PUBLISH_WINDOW as usize));
    let acks = tokio::spawn(count_acks(reader, Arc::clone(&credit), count));
    let topic = format!("delivery/{index}");
    let mut next_id: u16 = 0;
    for seq in 0..count {
        // Never closed, so acquiring cannot fail.
        if let Ok(permit) = credit.acquire().await {
            permit.forget();
        }
        next_id = next_id.checked_add(1).unwrap_or(1);
        writer.queue(&Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: topic.clone(),
            packet_id: Some(next_id),
            payload: Bytes::copy_from_slice(&seq.to_be_bytes()),
            properties: PublishProperties::default(),
        }))?;
        if credit.available_permits() == 0 || seq + 1 == count {
            writer.flush().await?;
        }
    }
    let acked = acks.await.map_err(|_| ClientError::Closed)??;
    Ok(acked)
}

/// Counts PUBACKs (returning a credit for each) until `count` arrived.
async fn count_acks(
    mut reader: PacketReader,
    credit: Arc<Semaphore>,
    count: u32,
) -> Result<u64, ClientError> {
    let mut acked = 0u64;
    let mut packets = Vec::new();
    while acked < u64::from(count) {
        reader.read_batch(&mut packets).await?;
        for packet in packets.drain(..) {
            if let Packet::PubAck(_) = packet {
                acked += 1;
                credit.add_permits(1);
            }
        }
    }
    Ok(acked)
}

/// What the subscriber saw.
#[derive(Debug)]
struct Received {
    distinct: u64,
    duplicates: u64,
    last_at: Option<Instant>,
}

/// Receives and acknowledges until every message arrived, or until the
/// publishers are done and nothing came for [`SILENCE`].
async fn receive(
    client: Client,
    per_publisher: u32,
    mut done: watch::Receiver<bool>,
) -> Result<Received, ClientError> {
    let (mut reader, mut writer) = client.split();
    let expected = PUBLISHERS as u64 * u64::from(per_publisher);
    let mut seen = vec![vec![false; per_publisher as usize]; PUBLISHERS];
    let mut received = Received {
        distinct: 0,
        duplicates: 0,
        last_at: None,
    };
    let mut packets = Vec::new();
    while received.distinct < expected {
        let read = async {
            if *done.borrow() {
                tokio::time::timeout(SILENCE, reader.read_batch(&mut packets))
                    .await
                    .ok()
            } else {
                tokio::select! {
                    read = reader.read_batch(&mut packets) => Some(read),
                    _ = done.changed() => Some(Ok(())),
                }
            }
        };
        match read.await {
            None => break,
            Some(result) => result?,
        }
        for packet in packets.drain(..) {
            let Packet::Publish(publish) = packet else {
                continue;
            };
            if let Some(id) = publish.packet_id {
                writer.queue(&Packet::PubAck(PubAck::success(id)))?;
            }
            let Some(slot) = slot_of(&publish, &mut seen) else {
                continue;
            };
            if std::mem::replace(slot, true) {
                received.duplicates += 1;
            } else {
                received.distinct += 1;
                received.last_at = Some(Instant::now());
            }
        }
        writer.flush().await?;
    }
    Ok(received)
}

/// The "seen" mark of a delivery: publisher from the topic, sequence from the payload.
fn slot_of<'s>(publish: &Publish, seen: &'s mut [Vec<bool>]) -> Option<&'s mut bool> {
    let index: usize = publish.topic.strip_prefix("delivery/")?.parse().ok()?;
    let seq = u32::from_be_bytes(publish.payload.get(..4)?.try_into().ok()?);
    seen.get_mut(index)?.get_mut(seq as usize)
}

impl DeliveryResults {
    /// The section as markdown.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        let total = PUBLISHERS as u64 * u64::from(self.per_publisher);
        let _ = writeln!(
            out,
            "\n## Fan-in delivery: is every acknowledged message delivered?\n\n\
             {PUBLISHERS} QoS 1 publishers send {} messages each ({} in all, at most \
             {PUBLISH_WINDOW} unacknowledged each) to one QoS 1 subscriber, which is slower \
             than all of them together. Rate: distinct messages delivered per second, from \
             the first publish to the last delivery.\n",
            format_count(f64::from(self.per_publisher)),
            format_count(total as f64)
        );
        out.push_str(
            "| broker (setting) | acknowledged | delivered | delivered / acknowledged | duplicates | msg/s | peak RSS (MiB) |\n\
             | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        );
        for row in &self.rows {
            if let Some(error) = &row.error {
                let _ = writeln!(
                    out,
                    "| {} | failed: {} | | | | | |",
                    row.label,
                    error.replace('\n', " ")
                );
                continue;
            }
            let share = if row.acknowledged == 0 {
                "–".to_owned()
            } else {
                format!(
                    "{:.1}%",
                    100.0 * row.delivered as f64 / row.acknowledged as f64
                )
            };
            let rss = row.peak_rss_kib.map_or("–".to_owned(), |kib| {
                format!("{:.1}", kib as f64 / 1024.0)
            });
            let _ = writeln!(
                out,
                "| {} | {} | {} | {share} | {} | {} | {rss} |",
                row.label,
                format_count(row.acknowledged as f64),
                format_count(row.delivered as f64),
                format_count(row.duplicates as f64),
                format_count(row.rate),
            );
        }
        out
    }
}

/// The contenders for the brokers given: strait with back-pressure (its
/// default) and with the `drop` policy; mosquitto with its default
/// `max_queued_messages` (1000) and with 0 (unlimited); rumqttd as shipped.
pub fn contenders(
    strait: Option<&Path>,
    strait_config: impl Fn(&str) -> Option<String>,
    mosquitto: Option<&Path>,
    rumqttd: Option<&Path>,
) -> Vec<Contender> {
    let mut out = Vec::new();
    if let Some(binary) = strait {
        for policy in ["backpressure", "drop"] {
            if let Some(config) = strait_config(policy) {
                out.push(Contender {
                    label: format!("strait (queueFullPolicy: {policy}, maxQueuedMessages 1000)"),
                    start: Start::Strait {
                        binary: binary.to_owned(),
                        config,
                    },
                });
            }
        }
    }
    if let Some(binary) = mosquitto {
        for (max_queued, note) in [(1000, "its default"), (0, "unlimited")] {
            out.push(Contender {
                label: format!("mosquitto (max_queued_messages {max_queued}, {note})"),
                start: Start::Mosquitto {
                    binary: binary.to_owned(),
                    max_queued,
                },
            });
        }
    }
    if let Some(binary) = rumqttd {
        out.push(Contender {
            label: "rumqttd (shipped router settings)".to_owned(),
            start: Start::Rumqttd {
                binary: binary.to_owned(),
            },
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_is_placed_by_its_topic_and_sequence() {
        let mut seen = vec![vec![false; 4]; PUBLISHERS];
        let publish = Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: "delivery/3".into(),
            packet_id: Some(1),
            payload: Bytes::copy_from_slice(&2u32.to_be_bytes()),
            properties: PublishProperties::default(),
        };
        *slot_of(&publish, &mut seen).expect("a slot") = true;
        assert!(seen[3][2]);
        let stranger = Publish {
            topic: "other/3".into(),
            ..publish
        };
        assert!(slot_of(&stranger, &mut seen).is_none());
    }

    #[test]
    fn the_table_shows_the_delivered_share_and_failures() {
        let results = DeliveryResults {
            per_publisher: 100,
            rows: vec![
                DeliveryRow {
                    label: "a".into(),
                    acknowledged: 1000,
                    delivered: 800,
                    rate: 400.0,
                    peak_rss_kib: Some(2048),
                    ..DeliveryRow::default()
                },
                DeliveryRow {
                    label: "b".into(),
                    error: Some("boom".into()),
                    ..DeliveryRow::default()
                },
            ],
        };
        let md = results.to_markdown();
        assert!(
            md.contains("| a | 1,000 | 800 | 80.0% | 0 | 400 | 2.0 |"),
            "{md}"
        );
        assert!(md.contains("| b | failed: boom |"), "{md}");
    }
}
