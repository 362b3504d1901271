//! Running one scenario against a broker address.
//!
//! All clients connect (and subscribers subscribe) before the clock starts;
//! then publishers and subscribers run as tasks until the measured window
//! closes. Subscribers count the messages that arrive inside the window and
//! record each one's end-to-end latency from the timestamp in its payload.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use strait_broker::protocol::{Packet, PubAck, Publish, PublishProperties, QoS};
use tokio::runtime::Handle;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{sleep_until, timeout_at, Instant};

use crate::client::{Client, ClientError, ConnectOptions, PacketReader};
use crate::clock::{Clock, Window};
use crate::pace::Pace;
use crate::payload;
use crate::routes::{await_routes, RouteError};
use crate::scenario::{Scenario, Timing};
use crate::stats::{LatencyHistogram, LatencySummary, Throughput};

/// QoS 1 messages a publisher may have unacknowledged (comparable to the
/// brokers' own per-client inflight limits).
pub const PUBLISH_WINDOW: u32 = 64;

/// Upper bound on one write of an unlimited publisher, in bytes.
const BATCH_BYTES: usize = 64 * 1024;

/// Upper bound on one write of an unlimited publisher, in messages.
const BATCH_MESSAGES: usize = 256;

/// How long the routes of a run may take to carry their first probe.
const ROUTE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error("a benchmark task died: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Where a run's clients connect. On one broker both are its address; across
/// a cluster, publishers and subscribers connect to different nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoints {
    pub publishers: SocketAddr,
    pub subscribers: SocketAddr,
}

impl Endpoints {
    /// Every client on the broker at `addr`.
    pub fn single(addr: SocketAddr) -> Endpoints {
        Endpoints {
            publishers: addr,
            subscribers: addr,
        }
    }
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Deliveries to subscribers inside the window.
    pub throughput: Throughput,
    /// PUBLISH packets whose write completed inside the window (all publishers).
    pub published: u64,
    /// Latency of the messages delivered inside the window.
    pub latency: Option<LatencySummary>,
}

/// Runs `scenario` with publishers connected to `endpoints.publishers` and
/// subscribers to `endpoints.subscribers`. `tag` makes client ids and topics
/// unique to this run. The clock starts once every route has carried a probe.
///
/// Publishers run on `publishers`, subscribers on the caller's runtime: with
/// their own threads, publishers flooding a broker that never pushes back
/// cannot starve the subscribers of CPU (which would show up as the broker's
/// drops rather than the load generator's).
pub async fn run_scenario(
    publishers_runtime: &Handle,
    endpoints: Endpoints,
    scenario: &Scenario,
    timing: Timing,
    tag: &str,
) -> Result<Outcome, RunError> {
    let layout = scenario.layout(&format!("bench/{tag}"));
    let mut subscribers = Vec::with_capacity(layout.subscribers.len());
    for (i, filter) in layout.subscribers.iter().enumerate() {
        let mut client = Client::connect(
            endpoints.subscribers,
            &ConnectOptions::new(format!("{tag}-sub-{i}")),
        )
        .await?;
        client.subscribe(filter, scenario.qos).await?;
        subscribers.push(client);
    }
    let mut publishers = Vec::with_capacity(layout.publishers.len());
    for i in 0..layout.publishers.len() {
        publishers.push(
            Client::connect(
                endpoints.publishers,
                &ConnectOptions::new(format!("{tag}-pub-{i}")),
            )
            .await?,
        );
    }
    await_routes(
        &mut publishers,
        &layout.publishers,
        &mut subscribers,
        &layout.subscribers,
        ROUTE_TIMEOUT,
    )
    .await?;

    let clock = Clock::start();
    let window = Window::new(timing.warmup, timing.measure);
    let mut subscriber_tasks = JoinSet::new();
    for client in subscribers {
        subscriber_tasks.spawn(subscribe_loop(client, clock, window));
    }
    let mut publisher_tasks = JoinSet::new();
    for (client, topic) in publishers.into_iter().zip(layout.publishers) {
        let publish = Publish {
            dup: false,
            qos: scenario.qos,
            retain: false,
            topic,
            packet_id: None,
            payload: payload::template(scenario.payload_size),
            properties: PublishProperties::default(),
        };
        let pace = scenario.rate_per_publisher().map(Pace::new);
        publisher_tasks.spawn_on(
            publish_loop(client, publish, pace, clock, window),
            publishers_runtime,
        );
    }

    let mut published = 0;
    while let Some(joined) = publisher_tasks.join_next().await {
        published += joined??;
    }
    let mut delivered = 0;
    let mut latency = LatencyHistogram::new();
    while let Some(joined) = subscriber_tasks.join_next().await {
        let (count, histogram) = joined??;
        delivered += count;
        latency.merge(&histogram);
    }
    Ok(Outcome {
        throughput: Throughput {
            delivered,
            window: window.length(),
        },
        published,
        latency: latency.summary(),
    })
}

/// Receives until the window closes, acknowledging QoS 1 deliveries in batches;
/// returns the deliveries counted and their latencies.
async fn subscribe_loop(
    client: Client,
    clock: Clock,
    window: Window,
) -> Result<(u64, LatencyHistogram), ClientError> {
    let (mut reader, mut writer) = client.split();
    let deadline = sleep_until(Instant::from_std(clock.at(window.end())));
    tokio::pin!(deadline);
    let mut packets = Vec::with_capacity(1024);
    let mut delivered = 0;
    let mut latency = LatencyHistogram::new();
    loop {
        tokio::select! {
            read = reader.read_batch(&mut packets) => read?,
            () = &mut deadline => break,
        }
        // One arrival time per read: the moment the bytes reached this process.
        let now = clock.nanos();
        let counted = window.contains(now);
        for packet in packets.drain(..) {
            match packet {
                Packet::Publish(publish) => {
                    if let Some(id) = publish.packet_id {
                        writer.queue(&Packet::PubAck(PubAck::success(id)))?;
                    }
                    // Only load carries a send stamp; route probes never count.
                    if let Some(sent) = payload::read_stamp(&publish.payload).filter(|_| counted) {
                        delivered += 1;
                        latency.record(now.saturating_sub(sent));
                    }
                }
                Packet::PingResp => {}
                other => {
                    return Err(ClientError::Unexpected {
                        expected: "PUBLISH",
                        got: other.name(),
                    })
                }
            }
        }
        tokio::select! {
            flushed = writer.flush() => flushed?,
            () = &mut deadline => break,
        }
    }
    Ok((delivered, latency))
}

/// Publishes until the window closes, as fast as allowed or at `pace`; QoS 1
/// publishes stay within [`PUBLISH_WINDOW`] unacknowledged messages. Returns
/// the number of messages whose write completed inside the window.
async fn publish_loop(
    client: Client,
    publish: Publish,
    mut pace: Option<Pace>,
    clock: Clock,
    window: Window,
) -> Result<u64, RunError> {
    let deadline = Instant::from_std(clock.at(window.end()));
    let (reader, mut writer) = client.split();
    let qos = publish.qos;
    let packet_len = publish.topic.len() + publish.payload.len() + 8;
    let batch_limit = (BATCH_BYTES / packet_len).clamp(1, BATCH_MESSAGES) as u64;
    let credit = Arc::new(Semaphore::new(PUBLISH_WINDOW as usize));
    let acks = tokio::spawn(count_acks(reader, Arc::clone(&credit), deadline));

    let mut packet = Packet::Publish(publish);
    let mut next_id: u16 = 0;
    let mut published = 0;
    let sending = async {
        loop {
            let mut batch = match pace.as_mut() {
                Some(pace) => pace.next_batch(batch_limit).await,
                None => batch_limit,
            };
            if qos != QoS::AtMostOnce {
                let available = (credit.available_permits() as u64).clamp(1, batch);
                // The semaphore is never closed, so acquiring only fails if it were.
                let Ok(permits) = credit.acquire_many(available as u32).await else {
                    return Ok::<(), ClientError>(());
                };
                permits.forget();
                batch = available;
            }
            let stamp = clock.nanos();
            for _ in 0..batch {
                if let Packet::Publish(publish) = &mut packet {
                    if qos != QoS::AtMostOnce {
                        next_id = next_id.checked_add(1).unwrap_or(1);
                        publish.packet_id = Some(next_id);
                    }
                }
                payload::write_stamp(writer.queue_publish(&packet)?, stamp);
            }
            writer.flush().await?;
            // Counted when the broker has taken the whole batch off the socket.
            if window.contains(clock.nanos()) {
                published += batch;
            }
        }
    };
    // At the deadline the send loop is simply dropped: a write cut short no
    // longer matters, the connection is closed right after.
    if let Ok(result) = timeout_at(deadline, sending).await {
        result?;
    }
    acks.await??;
    Ok(published)
}

/// Returns a credit to the publisher for every PUBACK, until the deadline.
async fn count_acks(
    mut reader: PacketReader,
    credit: Arc<Semaphore>,
    deadline: Instant,
) -> Result<(), ClientError> {
    let deadline = sleep_until(deadline);
    tokio::pin!(deadline);
    let mut packets = Vec::with_capacity(1024);
    loop {
        tokio::select! {
            read = reader.read_batch(&mut packets) => read?,
            () = &mut deadline => return Ok(()),
        }
        let mut acked = 0;
        for packet in packets.drain(..) {
            match packet {
                Packet::PubAck(_) => acked += 1,
                Packet::PingResp => {}
                other => {
                    return Err(ClientError::Unexpected {
                        expected: "PUBACK",
                        got: other.name(),
                    })
                }
            }
        }
        credit.add_permits(acked);
    }
}

/// Waits until the broker answers a fresh connection's PINGREQ, so that the
/// next run does not start while it is still draining the previous one.
pub async fn settle(addr: SocketAddr, tag: &str) -> Result<(), ClientError> {
    let mut probe = Client::connect(addr, &ConnectOptions::new(format!("{tag}-probe"))).await?;
    probe.ping().await
}
