//! Memory per idle connection: the broker's resident memory before and after
//! thousands of clients that connect and then say nothing.

use std::net::SocketAddr;

use tokio::task::JoinSet;

use crate::client::{Client, ConnectOptions};
use crate::run::RunError;

/// Handshakes in progress at once: enough to be quick, few enough not to
/// overflow a broker's listen backlog.
const CONCURRENT_HANDSHAKES: usize = 64;

/// Read buffer of an idle client: it only ever reads a CONNACK.
const IDLE_READ_BUFFER: usize = 64;

/// Bytes of broker memory per connection, from resident sizes in KiB. Negative
/// when the broker shrank (then the figure is noise, and shown as such).
pub fn bytes_per_connection(before_kib: u64, after_kib: u64, connections: usize) -> f64 {
    if connections == 0 {
        return 0.0;
    }
    let delta_bytes = (after_kib as f64 - before_kib as f64) * 1024.0;
    delta_bytes / connections as f64
}

/// Opens `count` MQTT connections (CONNECT + CONNACK, keepalive 60 s) and
/// keeps them open for as long as the returned clients live.
pub async fn open_idle(addr: SocketAddr, count: usize, tag: &str) -> Result<Vec<Client>, RunError> {
    let mut clients = Vec::with_capacity(count);
    let mut handshakes = JoinSet::new();
    for i in 0..count {
        if handshakes.len() >= CONCURRENT_HANDSHAKES {
            if let Some(joined) = handshakes.join_next().await {
                clients.push(joined??);
            }
        }
        let options = ConnectOptions {
            read_buffer_bytes: IDLE_READ_BUFFER,
            ..ConnectOptions::new(format!("{tag}-idle-{i}"))
        };
        handshakes.spawn(async move { Client::connect(addr, &options).await });
    }
    while let Some(joined) = handshakes.join_next().await {
        clients.push(joined??);
    }
    Ok(clients)
}

/// Connections per second that `addrs` accept together: `count` clients,
/// spread evenly over them, each completing CONNECT and CONNACK (fresh
/// client ids, so a cluster finds no session to move). The clients are
/// closed again before this returns.
pub async fn connection_rate(
    addrs: &[SocketAddr],
    count: usize,
    tag: &str,
) -> Result<f64, RunError> {
    let per_node = count / addrs.len().max(1);
    let started = std::time::Instant::now();
    let tags: Vec<String> = (0..addrs.len()).map(|i| format!("{tag}-{i}")).collect();
    let opened = futures::future::join_all(
        addrs
            .iter()
            .zip(&tags)
            .map(|(addr, tag)| open_idle(*addr, per_node, tag)),
    )
    .await;
    let elapsed = started.elapsed();
    let mut total = 0;
    for clients in opened {
        total += clients?.len();
    }
    Ok(total as f64 / elapsed.as_secs_f64().max(f64::EPSILON))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_is_spread_over_the_connections() {
        // 10,000 connections that grew the broker by 50,000 KiB: 5,120 bytes each.
        assert_eq!(bytes_per_connection(10_000, 60_000, 10_000), 5_120.0);
    }

    #[test]
    fn shrinking_shows_as_negative_and_zero_connections_as_zero() {
        assert_eq!(bytes_per_connection(2_000, 1_000, 1_024), -1_000.0);
        assert_eq!(bytes_per_connection(1, 2, 0), 0.0);
    }
}
