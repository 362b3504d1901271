//! Broker metrics: lock-free counters on the hot path, Prometheus text on demand.
//!
//! Counters are plain atomics indexed by small enums, so counting a message costs
//! one relaxed add and no hashing; [`Metrics::render`] writes the text exposition
//! format that `/metrics` serves.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::protocol::{QoS, ReasonCode};

/// Why a message was dropped instead of delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The session's queue was at `limits.maxQueuedMessages`.
    QueueFull,
    /// The message expiry interval ran out before delivery.
    Expired,
    /// Larger than the receiving client's maximum packet size.
    TooLargeForClient,
    /// QoS 0 message for a client that is offline.
    Qos0Offline,
    /// Refused by the publisher's ACL.
    NotAuthorized,
    /// Forwarded by a peer node for subscribers that had left this node by
    /// the time it arrived (a session moving between nodes, an unsubscribe
    /// crossing the message).
    NoLongerSubscribed,
}

impl DropReason {
    const ALL: [DropReason; 6] = [
        DropReason::QueueFull,
        DropReason::Expired,
        DropReason::TooLargeForClient,
        DropReason::Qos0Offline,
        DropReason::NotAuthorized,
        DropReason::NoLongerSubscribed,
    ];

    fn label(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::Expired => "expired",
            DropReason::TooLargeForClient => "too_large_for_client",
            DropReason::Qos0Offline => "qos0_offline",
            DropReason::NotAuthorized => "not_authorized",
            DropReason::NoLongerSubscribed => "no_longer_subscribed",
        }
    }
}

/// Why a connection was refused or closed by the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalReason {
    /// At `limits.maxConnections`.
    TooManyConnections,
    /// Wrong username or password, or none where one is required.
    BadCredentials,
    /// Unsupported protocol level or invalid client identifier.
    BadConnect,
    /// No CONNECT within `limits.connectTimeoutSecs`.
    ConnectTimeout,
    /// Keepalive elapsed 1.5 times without a packet.
    KeepAliveTimeout,
    /// TLS handshake or WebSocket upgrade failed.
    Handshake,
    /// The client id's session belongs to another identity.
    NotSessionOwner,
}

impl RefusalReason {
    const ALL: [RefusalReason; 7] = [
        RefusalReason::TooManyConnections,
        RefusalReason::BadCredentials,
        RefusalReason::BadConnect,
        RefusalReason::ConnectTimeout,
        RefusalReason::KeepAliveTimeout,
        RefusalReason::Handshake,
        RefusalReason::NotSessionOwner,
    ];

    fn label(self) -> &'static str {
        match self {
            RefusalReason::TooManyConnections => "too_many_connections",
            RefusalReason::BadCredentials => "bad_credentials",
            RefusalReason::BadConnect => "bad_connect",
            RefusalReason::ConnectTimeout => "connect_timeout",
            RefusalReason::KeepAliveTimeout => "keep_alive_timeout",
            RefusalReason::Handshake => "handshake",
            RefusalReason::NotSessionOwner => "not_session_owner",
        }
    }
}

/// Gauges the broker computes when metrics are rendered.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    pub sessions: usize,
    pub subscriptions: usize,
    pub retained: usize,
}

/// All counters of one broker node.
#[derive(Debug)]
pub struct Metrics {
    connections_accepted: AtomicU64,
    connections_current: AtomicI64,
    refusals: [AtomicU64; RefusalReason::ALL.len()],
    /// Indexed by reason code value.
    protocol_errors: Box<[AtomicU64]>,
    messages_in: [AtomicU64; 3],
    messages_out: [AtomicU64; 3],
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    drops: [AtomicU64; DropReason::ALL.len()],
    acl_denials: AtomicU64,
    backpressure_holds: AtomicU64,
    backpressure_timeouts: AtomicU64,
    queue_overshoot_peak: AtomicU64,
    store_flushes: AtomicU64,
    store_failures: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            connections_accepted: AtomicU64::new(0),
            connections_current: AtomicI64::new(0),
            refusals: Default::default(),
            protocol_errors: (0..256).map(|_| AtomicU64::new(0)).collect(),
            messages_in: Default::default(),
            messages_out: Default::default(),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            drops: Default::default(),
            acl_denials: AtomicU64::new(0),
            backpressure_holds: AtomicU64::new(0),
            backpressure_timeouts: AtomicU64::new(0),
            queue_overshoot_peak: AtomicU64::new(0),
            store_flushes: AtomicU64::new(0),
            store_failures: AtomicU64::new(0),
        }
    }
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

impl Metrics {
    /// A connection was accepted at the transport level.
    pub fn connection_opened(&self) {
        add(&self.connections_accepted, 1);
        self.connections_current.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection accepted by [`Metrics::connection_opened`] ended.
    pub fn connection_closed(&self) {
        self.connections_current.fetch_sub(1, Ordering::Relaxed);
    }

    /// Open connections right now.
    pub fn connections_current(&self) -> i64 {
        self.connections_current.load(Ordering::Relaxed)
    }

    pub fn refused(&self, reason: RefusalReason) {
        add(&self.refusals[reason as usize], 1);
    }

    /// A connection ended because of a protocol violation with this reason code.
    pub fn protocol_error(&self, code: ReasonCode) {
        add(&self.protocol_errors[code.as_u8() as usize], 1);
    }

    /// A PUBLISH arrived from a client.
    pub fn message_in(&self, qos: QoS) {
        add(&self.messages_in[qos as usize], 1);
    }

    /// A PUBLISH was written for a client.
    pub fn message_out(&self, qos: QoS) {
        add(&self.messages_out[qos as usize], 1);
    }

    /// Bytes read from client connections.
    pub fn bytes_in(&self, bytes: usize) {
        add(&self.bytes_in, bytes as u64);
    }

    /// Bytes written to client connections.
    pub fn bytes_out(&self, bytes: usize) {
        add(&self.bytes_out, bytes as u64);
    }

    pub fn dropped(&self, reason: DropReason) {
        add(&self.drops[reason as usize], 1);
    }

    pub fn acl_denied(&self) {
        add(&self.acl_denials, 1);
    }

    /// A publisher (or a peer's stream) was held for receivers with full
    /// queues; `timed_out` when they made no room within the wait.
    pub fn backpressure_hold(&self, timed_out: bool) {
        add(&self.backpressure_holds, 1);
        if timed_out {
            add(&self.backpressure_timeouts, 1);
        }
    }

    /// A session's queue holds `beyond` messages past its bound (one per
    /// publisher held for it); the peak is kept.
    pub fn queue_overshoot(&self, beyond: usize) {
        self.queue_overshoot_peak
            .fetch_max(beyond as u64, Ordering::Relaxed);
    }

    /// The most messages any session queue held past its bound.
    pub fn queue_overshoot_peak(&self) -> u64 {
        get(&self.queue_overshoot_peak)
    }

    pub fn backpressure_holds_total(&self) -> u64 {
        get(&self.backpressure_holds)
    }

    pub fn backpressure_timeouts_total(&self) -> u64 {
        get(&self.backpressure_timeouts)
    }

    /// A flush cycle completed (or its commit failed).
    pub fn store_flushed(&self, ok: bool) {
        add(
            if ok {
                &self.store_flushes
            } else {
                &self.store_failures
            },
            1,
        );
    }

    /// Messages received from clients, all QoS.
    pub fn messages_in_total(&self) -> u64 {
        self.messages_in.iter().map(get).sum()
    }

    /// Messages sent to clients, all QoS.
    pub fn messages_out_total(&self) -> u64 {
        self.messages_out.iter().map(get).sum()
    }

    pub fn bytes_in_total(&self) -> u64 {
        get(&self.bytes_in)
    }

    pub fn bytes_out_total(&self) -> u64 {
        get(&self.bytes_out)
    }

    pub fn drops_total(&self, reason: DropReason) -> u64 {
        get(&self.drops[reason as usize])
    }

    pub fn protocol_errors_total(&self, code: ReasonCode) -> u64 {
        get(&self.protocol_errors[code.as_u8() as usize])
    }

    pub fn refusals_total(&self, reason: RefusalReason) -> u64 {
        get(&self.refusals[reason as usize])
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self, gauges: Gauges) -> String {
        let mut out = String::with_capacity(4096);
        let mut family = |name: &str, kind: &str, help: &str| {
            let _ = writeln!(
                out,
                "# HELP strait_{name} {help}\n# TYPE strait_{name} {kind}"
            );
        };
        family("connections", "gauge", "Open client connections.");
        family(
            "connections_accepted_total",
            "counter",
            "Client connections accepted.",
        );
        family(
            "connections_refused_total",
            "counter",
            "Connections refused or closed by the broker, by reason.",
        );
        family(
            "protocol_errors_total",
            "counter",
            "Connections ended for a protocol violation, by MQTT reason code.",
        );
        family("sessions", "gauge", "Sessions, connected or not.");
        family(
            "subscriptions",
            "gauge",
            "Subscriptions across all sessions.",
        );
        family("retained_messages", "gauge", "Retained messages stored.");
        family(
            "messages_received_total",
            "counter",
            "PUBLISH packets received from clients, by QoS.",
        );
        family(
            "messages_sent_total",
            "counter",
            "PUBLISH packets sent to clients, by QoS.",
        );
        family(
            "bytes_received_total",
            "counter",
            "Bytes read from client connections (MQTT packets).",
        );
        family(
            "bytes_sent_total",
            "counter",
            "Bytes written to client connections (MQTT packets).",
        );
        family(
            "messages_dropped_total",
            "counter",
            "Messages not delivered, by reason.",
        );
        family(
            "acl_denials_total",
            "counter",
            "Publishes and subscriptions refused by access rules.",
        );
        family(
            "backpressure_holds_total",
            "counter",
            "Times a publisher was held until full subscriber queues had room.",
        );
        family(
            "backpressure_timeouts_total",
            "counter",
            "Holds that ended at limits.backpressureMaxWaitMs with a queue still full (its subscriber counts as stalled).",
        );
        family(
            "session_queue_overshoot_peak",
            "gauge",
            "The most messages a connected session's queue held past limits.maxQueuedMessages (at most one per publisher held for it).",
        );
        family(
            "store_flushes_total",
            "counter",
            "Flush cycles completed (each commits the changes since the previous one).",
        );
        family(
            "store_flush_failures_total",
            "counter",
            "Batches of changes the store failed to commit.",
        );
        // HELP/TYPE lines first keeps the code short; Prometheus accepts them anywhere
        // before the samples of their family.
        let mut line = |s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        line(format!("strait_connections {}", self.connections_current()));
        line(format!(
            "strait_connections_accepted_total {}",
            get(&self.connections_accepted)
        ));
        for reason in RefusalReason::ALL {
            line(format!(
                "strait_connections_refused_total{{reason=\"{}\"}} {}",
                reason.label(),
                self.refusals_total(reason)
            ));
        }
        for (code, counter) in self.protocol_errors.iter().enumerate() {
            let n = get(counter);
            if n > 0 {
                line(format!(
                    "strait_protocol_errors_total{{code=\"0x{code:02X}\"}} {n}"
                ));
            }
        }
        line(format!("strait_sessions {}", gauges.sessions));
        line(format!("strait_subscriptions {}", gauges.subscriptions));
        line(format!("strait_retained_messages {}", gauges.retained));
        for qos in 0..3 {
            line(format!(
                "strait_messages_received_total{{qos=\"{qos}\"}} {}",
                get(&self.messages_in[qos])
            ));
            line(format!(
                "strait_messages_sent_total{{qos=\"{qos}\"}} {}",
                get(&self.messages_out[qos])
            ));
        }
        line(format!(
            "strait_bytes_received_total {}",
            get(&self.bytes_in)
        ));
        line(format!("strait_bytes_sent_total {}", get(&self.bytes_out)));
        for reason in DropReason::ALL {
            line(format!(
                "strait_messages_dropped_total{{reason=\"{}\"}} {}",
                reason.label(),
                self.drops_total(reason)
            ));
        }
        line(format!(
            "strait_acl_denials_total {}",
            get(&self.acl_denials)
        ));
        line(format!(
            "strait_backpressure_holds_total {}",
            get(&self.backpressure_holds)
        ));
        line(format!(
            "strait_backpressure_timeouts_total {}",
            get(&self.backpressure_timeouts)
        ));
        line(format!(
            "strait_session_queue_overshoot_peak {}",
            get(&self.queue_overshoot_peak)
        ));
        line(format!(
            "strait_store_flushes_total {}",
            get(&self.store_flushes)
        ));
        line(format!(
            "strait_store_flush_failures_total {}",
            get(&self.store_failures)
        ));
        out
    }
}
