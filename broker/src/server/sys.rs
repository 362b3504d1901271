//! `$SYS/broker/...` statistics, published as retained messages so a new
//! subscriber sees the latest values at once.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::broker::Broker;
use super::message::Message;
use crate::config::QueueFullPolicy;
use crate::protocol::{PublishProperties, QoS};
use crate::shutdown::Shutdown;

/// The statistics as (topic, value) pairs.
fn statistics(broker: &Broker) -> Vec<(&'static str, String)> {
    let metrics = broker.metrics();
    let gauges = broker.gauges();
    vec![
        (
            "$SYS/broker/version",
            format!("strait {}", env!("CARGO_PKG_VERSION")),
        ),
        (
            "$SYS/broker/uptime",
            format!("{} seconds", broker.uptime().as_secs()),
        ),
        (
            "$SYS/broker/clients/connected",
            metrics.connections_current().to_string(),
        ),
        ("$SYS/broker/sessions/count", gauges.sessions.to_string()),
        (
            "$SYS/broker/subscriptions/count",
            gauges.subscriptions.to_string(),
        ),
        (
            "$SYS/broker/retained messages/count",
            gauges.retained.to_string(),
        ),
        (
            "$SYS/broker/messages/received",
            metrics.messages_in_total().to_string(),
        ),
        (
            "$SYS/broker/messages/sent",
            metrics.messages_out_total().to_string(),
        ),
        (
            "$SYS/broker/bytes/received",
            metrics.bytes_in_total().to_string(),
        ),
        (
            "$SYS/broker/bytes/sent",
            metrics.bytes_out_total().to_string(),
        ),
    ]
}

/// Publishes the statistics every `sys.intervalSecs` until shutdown.
pub async fn publish_loop(broker: Arc<Broker>, mut shutdown: Shutdown) {
    let interval = broker.config().sys.interval_secs;
    if interval == 0 {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(interval));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut scratch = Vec::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.recv() => return,
        }
        for (topic, value) in statistics(&broker) {
            let message = Message {
                topic: topic.to_owned(),
                payload: Bytes::from(value),
                qos: QoS::AtMostOnce,
                retain: true,
                properties: PublishProperties::default(),
                expires_at: None,
            };
            broker.publish(message, None, QueueFullPolicy::Drop, &mut scratch);
        }
    }
}
