//! One client connection: CONNECT, then packets in and deliveries out, in a
//! single task that owns the socket.
//!
//! The task reads and decodes whatever has arrived, handles each packet
//! (routing publishes straight to the subscribers' session queues), then drains
//! its own session queue into one write. Idle, it holds a small read buffer and
//! no write buffer, which keeps memory per connection low.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::broker::Broker;
use super::message::{Message, Outgoing};
use super::registry::{SessionHandle, SessionRef};
use super::target::Target;
use crate::auth::Verdict;
use crate::cluster::Host;
use crate::config::{ListenerConfig, QueueFullPolicy};
use crate::flow::{Hold, Release};
use crate::metrics::{DropReason, RefusalReason};
use crate::protocol::topic::{parse_shared, validate_topic_filter};
use crate::protocol::{
    decode, encode, AckProperties, ConnAck, ConnAckProperties, Connect, DecodeError, Disconnect,
    LastWill, Packet, ProtocolVersion, PubAck, Publish, PublishProperties, QoS, ReasonCode, SubAck,
    Subscribe, UnsubAck, Unsubscribe,
};
use crate::router::Delivery;
use crate::session::{AckError, Next, Resend};
use crate::shutdown::Shutdown;
use crate::store::SessionOwner;
use crate::transport::{ClientStream, Listener};

/// Smallest read reservation; an idle connection holds about this much.
const MIN_READ: usize = 512;
/// Largest read reservation, reached only under sustained load.
const MAX_READ: usize = 64 * 1024;
/// Write in batches of about this size while draining a long queue.
const WRITE_BATCH: usize = 64 * 1024;
/// Deliveries taken out of the session per lock in `pump`.
const PUMP_BATCH: usize = 64;
/// Packets handled before the task yields to others (see `handle_input`).
const PACKETS_PER_TURN: usize = 64;
/// Packets read ahead and kept while the connection is held (see
/// [`Connection::screen_input`]); reading stops when this many wait.
const MAX_HELD_PACKETS: usize = 64;
/// How long a last DISCONNECT may take to write before the socket is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Accepts connections on one listener until shutdown.
pub(super) async fn accept_loop(
    broker: Arc<Broker>,
    listener: Arc<Listener>,
    config: Arc<ListenerConfig>,
    mut shutdown: Shutdown,
) {
    // Past twice the limit, connections are closed without reading CONNECT at
    // all, so a flood cannot exhaust memory; below that they get a CONNACK with a reason.
    let hard_limit = broker.config().limits.max_connections.saturating_mul(2);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.recv() => return,
        };
        match accepted {
            Ok((tcp, peer)) => {
                if usize::try_from(broker.metrics().connections_current()).unwrap_or(0)
                    >= hard_limit
                {
                    broker.metrics().refused(RefusalReason::TooManyConnections);
                    drop(tcp);
                    continue;
                }
                broker.metrics().connection_opened();
                tokio::spawn(set_up(
                    broker.clone(),
                    listener.clone(),
                    config.clone(),
                    tcp,
                    peer,
                ));
            }
            Err(err) => {
                // Typically EMFILE: back off briefly instead of spinning.
                tracing::warn!(listener = %config.name, error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Writes `bytes` and flushes: TLS and WebSocket streams hold written data
/// in a buffer until flushed (a no-op on plain TCP).
async fn write_flushed(stream: &mut Box<dyn ClientStream>, bytes: &[u8]) -> std::io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await
}

/// Counts the connection as finished however it ends; travels with the
/// connection from the set-up task into the serving task.
struct FinishGuard(Arc<Broker>);

impl Drop for FinishGuard {
    fn drop(&mut self) {
        self.0.connection_finished();
    }
}

/// Sets a connection up (handshake, CONNECT, authentication, CONNACK), then
/// serves it in a task of its own.
///
/// A task's future is as large as its largest state, for as long as the task
/// lives: running the long-lived part in a fresh task keeps the TLS handshake
/// and CONNECT checks out of every idle connection's memory.
async fn set_up(
    broker: Arc<Broker>,
    listener: Arc<Listener>,
    config: Arc<ListenerConfig>,
    tcp: TcpStream,
    peer: SocketAddr,
) {
    let finish = FinishGuard(broker.clone());
    let accepted = match listener.handshake(tcp).await {
        Ok(accepted) => accepted,
        Err(err) => {
            broker.metrics().refused(RefusalReason::Handshake);
            tracing::debug!(%peer, listener = %config.name, error = %err, "handshake failed");
            return;
        }
    };
    let cert_username = config
        .tls
        .as_ref()
        .filter(|tls| tls.use_cert_cn_as_username)
        .and(accepted.cert_common_name);
    let mut reader = Reader::new(accepted.stream);
    let Some(connect) = read_connect(&broker, &mut reader, peer).await else {
        return;
    };
    let policy = config
        .queue_full_policy
        .unwrap_or(broker.config().limits.queue_full_policy);
    let established = Connection::establish(
        broker,
        reader,
        peer,
        *connect,
        cert_username,
        policy,
        finish,
    )
    .await;
    if let Some(connection) = established {
        tokio::spawn(connection.run());
    }
}

/// The socket plus its read buffer, which grows only under load.
struct Reader {
    stream: Box<dyn ClientStream>,
    buf: BytesMut,
    chunk: usize,
}

impl Reader {
    fn new(stream: Box<dyn ClientStream>) -> Reader {
        Reader {
            stream,
            buf: BytesMut::new(),
            chunk: MIN_READ,
        }
    }

    /// Reads once; returns the bytes read, 0 at end of stream.
    async fn fill(&mut self) -> std::io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < self.chunk / 2 {
            self.buf.reserve(self.chunk);
        }
        let room = self.buf.capacity() - self.buf.len();
        let n = self.stream.read_buf(&mut self.buf).await?;
        if n == room && self.chunk < MAX_READ {
            self.chunk *= 2;
        }
        Ok(n)
    }
}

/// Reads CONNECT within the connect timeout; answers and closes on anything else.
async fn read_connect(
    broker: &Broker,
    reader: &mut Reader,
    peer: SocketAddr,
) -> Option<Box<Connect>> {
    let limits = &broker.config().limits;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(limits.connect_timeout_secs);
    loop {
        match decode(&mut reader.buf, None, limits.max_packet_size) {
            Ok(Some(Packet::Connect(connect))) => return Some(connect),
            Ok(Some(other)) => {
                broker.metrics().protocol_error(ReasonCode::ProtocolError);
                tracing::debug!(%peer, packet = other.name(), "packet before CONNECT");
                return None;
            }
            Ok(None) => {}
            Err(DecodeError::UnsupportedProtocolVersion(level)) => {
                broker.metrics().refused(RefusalReason::BadConnect);
                tracing::debug!(%peer, level, "unsupported protocol level");
                // A client newer than 5.0 is answered in 5.0's format (0x84,
                // as [MQTT-3.1.2-2] allows); an older one (3.1) in 3.1.1's
                // (return code 1), which it can read.
                let format = if level > 5 {
                    ProtocolVersion::V5
                } else {
                    ProtocolVersion::V311
                };
                send_refusal(reader, ReasonCode::UnsupportedProtocolVersion, format).await;
                return None;
            }
            Err(err) => {
                broker.metrics().protocol_error(err.reason_code());
                tracing::debug!(%peer, error = %err, "invalid CONNECT");
                return None;
            }
        }
        match tokio::time::timeout_at(deadline, reader.fill()).await {
            Ok(Ok(n)) if n > 0 => broker.metrics().bytes_in(n),
            Ok(_) => return None,
            Err(_) => {
                broker.metrics().refused(RefusalReason::ConnectTimeout);
                tracing::debug!(%peer, "no CONNECT in time");
                return None;
            }
        }
    }
}

/// How a connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Close {
    /// The client sent DISCONNECT; `will` says whether to publish the will anyway (0x04).
    ClientDisconnect { will: bool },
    /// End of stream or an I/O error.
    Lost,
    /// The broker ends it with this reason (sent in DISCONNECT to v5 clients).
    Server(ReasonCode),
}

/// What woke the connection task.
enum Event {
    /// Bytes read; 0 at end of stream.
    Read(std::io::Result<usize>),
    Wake,
    Kick,
    Shutdown,
    KeepAlive,
    /// The hold on this connection's input ended.
    Released(Release),
}

/// An established connection, attached to its session.
struct Connection {
    broker: Arc<Broker>,
    reader: Reader,
    wbuf: BytesMut,
    peer: SocketAddr,
    version: ProtocolVersion,
    client_id: String,
    username: Option<String>,
    handle: Arc<SessionHandle>,
    key: Target,
    epoch: u64,
    will: Option<LastWill>,
    /// 1.5 x the keepalive; `None` when keepalive is off.
    keep_alive: Option<Duration>,
    last_activity: Instant,
    /// Largest packet the client accepts.
    client_max_packet: u32,
    /// Topic aliases the client set towards us.
    inbound_aliases: HashMap<u16, String>,
    /// Topic aliases we set towards the client, and how many it allows.
    outbound_aliases: HashMap<String, u16>,
    client_alias_max: u16,
    /// The last publish found a subscriber's queue full.
    congested: bool,
    /// What this connection's publishers meet when a subscriber's queue is full.
    policy: QueueFullPolicy,
    /// Subscribers that took this client's last message beyond their bound:
    /// no PUBLISH is handled until they have room (back-pressure).
    hold: Option<Hold>,
    /// Packets read while held that must wait for the hold to end, in order.
    held_packets: VecDeque<Packet>,
    /// The client closed its side while packets were still held.
    input_closed: bool,
    /// Reused for routing, to avoid an allocation per publish.
    scratch: Vec<(Target, Delivery)>,
    shutdown: Shutdown,
    _finish: FinishGuard,
}

impl Connection {
    /// Checks CONNECT, authenticates, attaches the session and sends CONNACK.
    async fn establish(
        broker: Arc<Broker>,
        mut reader: Reader,
        peer: SocketAddr,
        connect: Connect,
        cert_username: Option<String>,
        policy: QueueFullPolicy,
        finish: FinishGuard,
    ) -> Option<Connection> {
        let version = connect.protocol;
        let limits = broker.config().limits.clone();
        let username = match Self::check_connect(&broker, &connect, cert_username).await {
            Ok(identity) => identity,
            Err(refusal) => {
                refuse(&broker, &mut reader, peer, &connect, refusal).await;
                return None;
            }
        };

        let mut properties = ConnAckProperties::default();
        let client_id = if connect.client_id.is_empty() {
            let assigned = format!("strait-{:016x}", rand::random::<u64>());
            properties.assigned_client_identifier = Some(assigned.clone());
            assigned
        } else {
            connect.client_id.clone()
        };
        let requested_expiry = match version {
            ProtocolVersion::V5 => connect.properties.session_expiry_interval.unwrap_or(0),
            ProtocolVersion::V311 if connect.clean_start => 0,
            ProtocolVersion::V311 => u32::MAX,
        };
        let expiry = requested_expiry.min(limits.max_session_expiry_secs);
        if expiry != requested_expiry && version.is_v5() {
            properties.session_expiry_interval = Some(expiry);
        }
        let mut keep_alive = connect.keep_alive;
        if keep_alive > limits.max_keep_alive_secs
            || (keep_alive == 0 && limits.max_keep_alive_secs < u16::MAX)
        {
            keep_alive = limits.max_keep_alive_secs;
            properties.server_keep_alive = Some(keep_alive);
        }
        let window = connect
            .properties
            .receive_maximum
            .unwrap_or(u16::MAX)
            .min(limits.max_inflight);

        // A client id is only a claim: a session is resumed (or replaced)
        // only by the identity that owns it, here or on a peer node.
        let owner = SessionOwner::of(username.as_deref());
        let not_owner = (ReasonCode::NotAuthorized, RefusalReason::NotSessionOwner);
        if !broker.admits(&client_id, &owner) {
            refuse(&broker, &mut reader, peer, &connect, not_owner).await;
            return None;
        }
        // Client ids are unique cluster-wide: a peer holding this client's
        // session gives it up (and tells its connection 0x8E) before we attach.
        let taken_over = match broker.cluster() {
            Some(cluster) => {
                cluster
                    .take_over(&client_id, connect.clean_start, &owner)
                    .await
            }
            None => Ok(None),
        };
        let Ok(taken_over) = taken_over else {
            refuse(&broker, &mut reader, peer, &connect, not_owner).await;
            return None;
        };
        let attached = broker.attach(&client_id, connect.clean_start, expiry, taken_over);
        let handle = attached.handle;
        {
            let mut state = handle.lock();
            state.owner = owner;
            state.expiry_interval = expiry;
            state.session.set_window(window);
        }
        broker.session_changed(&handle);

        if version.is_v5() {
            properties.receive_maximum = Some(limits.max_inflight);
            properties.maximum_packet_size = Some(limits.max_packet_size);
            properties.topic_alias_maximum = Some(limits.topic_alias_maximum);
            properties.retain_available = Some(1);
            properties.wildcard_subscription_available = Some(1);
            properties.subscription_identifiers_available = Some(1);
            properties.shared_subscription_available = Some(1);
        }
        let client_max_packet = connect.properties.maximum_packet_size.unwrap_or(u32::MAX);
        let connack = Packet::ConnAck(fit_connack(
            ConnAck {
                session_present: attached.session_present,
                code: ReasonCode::Success,
                properties,
            },
            version,
            client_max_packet,
        ));
        let mut connection = Connection {
            key: Target::Session(SessionRef(handle.clone())),
            shutdown: broker.shutdown_signal(),
            broker,
            reader,
            wbuf: BytesMut::new(),
            peer,
            version,
            client_id,
            username,
            handle,
            epoch: attached.epoch,
            will: connect.will,
            keep_alive: (keep_alive > 0)
                .then(|| Duration::from_millis(u64::from(keep_alive) * 1500)),
            last_activity: Instant::now(),
            client_max_packet,
            inbound_aliases: HashMap::new(),
            outbound_aliases: HashMap::new(),
            client_alias_max: connect.properties.topic_alias_maximum.unwrap_or(0),
            congested: false,
            policy,
            hold: None,
            held_packets: VecDeque::new(),
            input_closed: false,
            scratch: Vec::new(),
            _finish: finish,
        };
        connection.send(&connack);
        if attached.session_present {
            connection.resend_inflight();
        }
        tracing::debug!(%peer, client_id = %connection.client_id, ?version, session_present = attached.session_present, "client connected");
        Some(connection)
    }

    /// The identity CONNECT authenticates (`None`: anonymous), or why it must
    /// be refused. `cert_username` is the certificate's CN on a listener that
    /// authenticates clients by certificate.
    async fn check_connect(
        broker: &Arc<Broker>,
        connect: &Connect,
        cert_username: Option<String>,
    ) -> Result<Option<String>, (ReasonCode, RefusalReason)> {
        let limits = &broker.config().limits;
        if usize::try_from(broker.metrics().connections_current()).unwrap_or(0)
            > limits.max_connections
        {
            return Err((ReasonCode::QuotaExceeded, RefusalReason::TooManyConnections));
        }
        if connect.client_id.is_empty()
            && connect.protocol == ProtocolVersion::V311
            && !connect.clean_start
        {
            return Err((
                ReasonCode::ClientIdentifierNotValid,
                RefusalReason::BadConnect,
            ));
        }
        if connect.properties.authentication_method.is_some() {
            return Err((
                ReasonCode::BadAuthenticationMethod,
                RefusalReason::BadCredentials,
            ));
        }
        let identity = match cert_username {
            // The certificate authenticated the client: its CN is the username.
            Some(cn) => Some(cn),
            None => Self::authenticate(broker, connect).await?,
        };
        // Everything from here on is decided on the authenticated identity,
        // never on the username the client merely claimed.
        if let (Some(will), Some(acl)) = (&connect.will, broker.acl()) {
            if !acl.can_publish(identity.as_deref(), &connect.client_id, &will.topic) {
                broker.metrics().acl_denied();
                return Err((ReasonCode::NotAuthorized, RefusalReason::BadCredentials));
            }
        }
        Ok(identity)
    }

    /// Checks the CONNECT credentials (Argon2 on a blocking thread when a
    /// credentials file is loaded): the proven username, or `None` for an
    /// anonymous client.
    async fn authenticate(
        broker: &Arc<Broker>,
        connect: &Connect,
    ) -> Result<Option<String>, (ReasonCode, RefusalReason)> {
        let username = connect.username.clone();
        let verdict = if username.is_some() && broker.authenticator().checks_passwords() {
            let checking = broker.clone();
            let (name, password) = (username.clone(), connect.password.clone());
            tokio::task::spawn_blocking(move || {
                checking
                    .authenticator()
                    .authenticate(name.as_deref(), password.as_deref())
            })
            .await
            .unwrap_or(Verdict::Refused)
        } else {
            broker
                .authenticator()
                .authenticate(username.as_deref(), None)
        };
        match verdict {
            Verdict::User => Ok(username),
            Verdict::Anonymous => Ok(None),
            Verdict::Refused => Err((
                ReasonCode::BadUserNameOrPassword,
                RefusalReason::BadCredentials,
            )),
        }
    }

    /// Serves the connection until it ends, then settles the session and the will.
    async fn run(mut self) {
        let close = self.serve().await;
        // Boxed: the closing writes and their timeouts are needed once, at the end.
        Box::pin(self.finish(close)).await;
    }

    async fn serve(&mut self) -> Close {
        let handle = self.handle.clone();
        let keep_alive_sleep =
            tokio::time::sleep(self.keep_alive.unwrap_or(Duration::from_secs(86400)));
        tokio::pin!(keep_alive_sleep);
        // A client may send packets right behind CONNECT [MQTT-3.1.4-7]; they
        // may already sit in the buffer that CONNECT was read from.
        let mut input_pending = !self.reader.buf.is_empty();
        loop {
            self.pump();
            if !self.wbuf.is_empty() {
                if let Err(close) = self.flush().await {
                    return close;
                }
            }
            if input_pending {
                tokio::task::yield_now().await;
                match self.handle_input() {
                    Ok(more) => input_pending = more,
                    Err(close) => return close,
                }
                continue;
            }
            if handle.lock().session.has_sendable() {
                continue;
            }
            if self.input_closed && self.hold.is_none() && self.held_packets.is_empty() {
                return Close::Lost;
            }
            let can_read = !self.input_closed && self.held_packets.len() < MAX_HELD_PACKETS;
            let event = tokio::select! {
                read = self.reader.fill(), if can_read => Event::Read(read),
                release = released(self.hold.as_ref()), if self.hold.is_some() => Event::Released(release),
                _ = handle.wake.notified() => Event::Wake,
                _ = handle.kick.notified() => Event::Kick,
                _ = self.shutdown.recv() => Event::Shutdown,
                _ = &mut keep_alive_sleep, if self.keep_alive.is_some() => Event::KeepAlive,
            };
            match event {
                Event::Read(Ok(n)) if n > 0 => {
                    self.broker.metrics().bytes_in(n);
                    self.last_activity = Instant::now();
                    match self.handle_input() {
                        Ok(more) => input_pending = more,
                        Err(close) => return close,
                    }
                }
                // Held packets still count: handle them once the hold ends.
                Event::Read(_) if !self.held_packets.is_empty() => self.input_closed = true,
                Event::Read(_) => return Close::Lost,
                Event::Released(release) => {
                    self.broker.held(release);
                    self.hold = None;
                    input_pending = true;
                }
                Event::Wake => {}
                Event::Kick if handle.epoch() != self.epoch => {
                    return Close::Server(ReasonCode::SessionTakenOver)
                }
                Event::Kick => {}
                Event::Shutdown => return Close::Server(ReasonCode::ServerShuttingDown),
                Event::KeepAlive => {
                    let limit = self.keep_alive.unwrap_or_default();
                    if self.hold.is_some() {
                        // The client may be waiting on us, not we on it.
                        self.last_activity = Instant::now();
                    }
                    let deadline = self.last_activity + limit;
                    if Instant::now() >= deadline {
                        self.broker
                            .metrics()
                            .refused(RefusalReason::KeepAliveTimeout);
                        return Close::Server(ReasonCode::KeepAliveTimeout);
                    }
                    keep_alive_sleep
                        .as_mut()
                        .reset(tokio::time::Instant::from_std(deadline));
                }
            }
        }
    }

    /// Handles held packets, then the whole packets in the read buffer, at
    /// most [`PACKETS_PER_TURN`] of them. Returns true when more remain: the
    /// task then yields before going on, so a flood from one publisher cannot
    /// starve the subscribers that must drain it.
    fn handle_input(&mut self) -> Result<bool, Close> {
        let max = self.broker.config().limits.max_packet_size;
        for _ in 0..PACKETS_PER_TURN {
            if self.hold.is_some() {
                return self.screen_input();
            }
            let packet = match self.held_packets.pop_front() {
                Some(packet) => packet,
                None => match decode(&mut self.reader.buf, Some(self.version), max) {
                    Ok(Some(packet)) => packet,
                    Ok(None) => return Ok(false),
                    Err(err) => return Err(self.violation(err)),
                },
            };
            self.handle_packet(packet)?;
            if std::mem::take(&mut self.congested) {
                // A subscriber is not keeping up: end this turn early so
                // it gets the CPU.
                return Ok(true);
            }
        }
        Ok(true)
    }

    /// While held: handles at once what only completes this client's own
    /// flows (acknowledgements of its deliveries, PUBREL, PINGREQ), so its
    /// own queue keeps draining and two clients held on each other's queues
    /// cannot deadlock, and keeps every other packet, in order, for when the
    /// hold ends. At [`MAX_HELD_PACKETS`] reading stops and TCP pushes back.
    fn screen_input(&mut self) -> Result<bool, Close> {
        let max = self.broker.config().limits.max_packet_size;
        while self.held_packets.len() < MAX_HELD_PACKETS {
            match decode(&mut self.reader.buf, Some(self.version), max) {
                Ok(Some(
                    packet @ (Packet::PubAck(_)
                    | Packet::PubRec(_)
                    | Packet::PubComp(_)
                    | Packet::PubRel(_)
                    | Packet::PingReq),
                )) => self.handle_packet(packet)?,
                Ok(Some(packet)) => self.held_packets.push_back(packet),
                Ok(None) => break,
                Err(err) => return Err(self.violation(err)),
            }
        }
        Ok(false)
    }

    fn violation(&self, err: DecodeError) -> Close {
        tracing::debug!(peer = %self.peer, client_id = %self.client_id, error = %err, "protocol violation");
        Close::Server(err.reason_code())
    }

    fn handle_packet(&mut self, packet: Packet) -> Result<(), Close> {
        match packet {
            Packet::Publish(publish) => self.handle_publish(publish),
            Packet::PubAck(ack) => {
                let acked = self.handle.lock().session.on_puback(ack.packet_id);
                match acked {
                    Ok(_) => self.broker.session_changed(&self.handle),
                    Err(err) => self.unexpected_ack(err)?,
                }
                Ok(())
            }
            Packet::PubRec(ack) => {
                let failed = ack.reason.is_error();
                let release = self.handle.lock().session.on_pubrec(ack.packet_id, failed);
                match release {
                    Ok(true) => self.send(&Packet::PubRel(PubAck::success(ack.packet_id))),
                    Ok(false) => self.broker.session_changed(&self.handle),
                    Err(err) => {
                        self.unexpected_ack(err)?;
                        let mut rel = PubAck::success(ack.packet_id);
                        rel.reason = ReasonCode::PacketIdentifierNotFound;
                        self.send(&Packet::PubRel(rel));
                    }
                }
                Ok(())
            }
            Packet::PubComp(ack) => {
                let completed = self.handle.lock().session.on_pubcomp(ack.packet_id);
                match completed {
                    Ok(()) => self.broker.session_changed(&self.handle),
                    Err(err) => self.unexpected_ack(err)?,
                }
                Ok(())
            }
            Packet::PubRel(rel) => {
                let known = self
                    .handle
                    .lock()
                    .session
                    .release_incoming_qos2(rel.packet_id);
                let mut comp = PubAck::success(rel.packet_id);
                if !known {
                    comp.reason = ReasonCode::PacketIdentifierNotFound;
                }
                self.send(&Packet::PubComp(comp));
                Ok(())
            }
            Packet::Subscribe(subscribe) => self.handle_subscribe(subscribe),
            Packet::Unsubscribe(unsubscribe) => self.handle_unsubscribe(unsubscribe),
            Packet::PingReq => {
                self.send(&Packet::PingResp);
                Ok(())
            }
            Packet::Disconnect(disconnect) => self.handle_disconnect(disconnect),
            other => {
                tracing::debug!(client_id = %self.client_id, packet = other.name(), "unexpected packet from a client");
                Err(Close::Server(ReasonCode::ProtocolError))
            }
        }
    }

    /// An acknowledgement for a packet id in another QoS flow closes the
    /// connection (0x82); one for an id not in flight is let pass (a late
    /// duplicate after a resend).
    fn unexpected_ack(&self, err: AckError) -> Result<(), Close> {
        tracing::debug!(client_id = %self.client_id, error = %err, "unexpected acknowledgement");
        match err {
            AckError::WrongFlow(_) => Err(Close::Server(ReasonCode::ProtocolError)),
            AckError::Unknown(_) => Ok(()),
        }
    }

    fn handle_disconnect(&mut self, disconnect: Disconnect) -> Result<(), Close> {
        if let Some(expiry) = disconnect.properties.session_expiry_interval {
            let mut state = self.handle.lock();
            if state.expiry_interval == 0 && expiry != 0 {
                return Err(Close::Server(ReasonCode::ProtocolError));
            }
            state.expiry_interval = expiry.min(self.broker.config().limits.max_session_expiry_secs);
        }
        Err(Close::ClientDisconnect {
            will: disconnect.reason == ReasonCode::DisconnectWithWillMessage,
        })
    }

    fn topic_within_limits(&self, topic: &str) -> bool {
        let limits = &self.broker.config().limits;
        topic.len() <= limits.max_topic_length
            && topic.bytes().filter(|b| *b == b'/').count() < limits.max_topic_levels
    }

    fn handle_publish(&mut self, mut publish: Publish) -> Result<(), Close> {
        if !publish.properties.subscription_identifiers.is_empty() {
            // Only the server sets it [MQTT-3.3.4-6].
            return Err(Close::Server(ReasonCode::ProtocolError));
        }
        if let Some(alias) = publish.properties.topic_alias {
            if alias == 0 || alias > self.broker.config().limits.topic_alias_maximum {
                return Err(Close::Server(ReasonCode::TopicAliasInvalid));
            }
            if publish.topic.is_empty() {
                match self.inbound_aliases.get(&alias) {
                    Some(topic) => publish.topic = topic.clone(),
                    None => return Err(Close::Server(ReasonCode::ProtocolError)),
                }
            } else {
                self.inbound_aliases.insert(alias, publish.topic.clone());
            }
        }
        if !self.topic_within_limits(&publish.topic) {
            self.broker
                .metrics()
                .protocol_error(ReasonCode::TopicNameInvalid);
            return Err(Close::Server(ReasonCode::TopicNameInvalid));
        }
        let qos = publish.qos;
        let packet_id = publish.packet_id.unwrap_or(0);
        self.broker.metrics().message_in(qos);

        let refusal = self.publish_refusal(&publish);
        if qos == QoS::ExactlyOnce {
            let mut state = self.handle.lock();
            if !state.session.begin_incoming_qos2(packet_id) {
                drop(state);
                self.ack(qos, packet_id, ReasonCode::Success);
                return Ok(());
            }
            if state.session.incoming_qos2_len()
                > usize::from(self.broker.config().limits.max_inflight)
            {
                return Err(Close::Server(ReasonCode::ReceiveMaximumExceeded));
            }
        }
        let code = match refusal {
            Some(code) => {
                if qos == QoS::AtMostOnce
                    && self.version.is_v5()
                    && code == ReasonCode::PayloadFormatInvalid
                {
                    return Err(Close::Server(code));
                }
                code
            }
            None => {
                let message = Message::from_publish(publish, Instant::now());
                let routed =
                    self.broker
                        .publish(message, Some(&self.key), self.policy, &mut self.scratch);
                let pushback = routed.pushback;
                self.congested |= pushback.congested;
                if !pushback.gates.is_empty() {
                    let wait = self.broker.config().limits.backpressure_max_wait_ms;
                    self.hold = Some(Hold::new(pushback.gates, Duration::from_millis(wait)));
                }
                if routed.queued == 0 && pushback.congested {
                    // Every matching subscriber's queue was full: tell a v5
                    // publisher the message was not taken, so it can retry.
                    ReasonCode::QuotaExceeded
                } else if routed.queued == 0 {
                    ReasonCode::NoMatchingSubscribers
                } else {
                    ReasonCode::Success
                }
            }
        };
        self.ack(qos, packet_id, code);
        Ok(())
    }

    /// Why a publish must not be routed: ACL, `$`-topics, payload format.
    fn publish_refusal(&self, publish: &Publish) -> Option<ReasonCode> {
        if publish.topic.starts_with('$') {
            self.broker.metrics().acl_denied();
            return Some(ReasonCode::NotAuthorized);
        }
        if let Some(acl) = self.broker.acl() {
            if !acl.can_publish(self.username.as_deref(), &self.client_id, &publish.topic) {
                self.broker.metrics().acl_denied();
                self.broker.metrics().dropped(DropReason::NotAuthorized);
                tracing::debug!(client_id = %self.client_id, topic = %publish.topic, "publish denied by ACL");
                return Some(ReasonCode::NotAuthorized);
            }
        }
        if publish.properties.payload_format_indicator == Some(1)
            && std::str::from_utf8(&publish.payload).is_err()
        {
            return Some(ReasonCode::PayloadFormatInvalid);
        }
        None
    }

    /// PUBACK or PUBREC for a received publish (nothing for QoS 0).
    fn ack(&mut self, qos: QoS, packet_id: u16, code: ReasonCode) {
        let mut ack = PubAck::success(packet_id);
        ack.reason = code;
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.send(&Packet::PubAck(ack)),
            QoS::ExactlyOnce => {
                if code.is_error() {
                    // The flow ends here; the client will not send PUBREL.
                    self.handle.lock().session.release_incoming_qos2(packet_id);
                }
                self.send(&Packet::PubRec(ack));
            }
        }
    }

    fn handle_subscribe(&mut self, subscribe: Subscribe) -> Result<(), Close> {
        let identifier = subscribe.properties.subscription_identifier;
        let mut reasons = Vec::with_capacity(subscribe.filters.len());
        let mut granted = Vec::new();
        for entry in &subscribe.filters {
            let shared = parse_shared(&entry.filter);
            if matches!(shared, Ok(Some(_))) && entry.options.no_local && self.version.is_v5() {
                return Err(Close::Server(ReasonCode::ProtocolError));
            }
            let valid = validate_topic_filter(&entry.filter).is_ok();
            if !valid && !self.version.is_v5() {
                // 3.1.1 has no reason code for a malformed filter (`a/#/b`,
                // `$share/g/` with nothing after it): the connection closes.
                // 5.0 answers 0x8F for that filter alone.
                return Err(Close::Server(ReasonCode::ProtocolError));
            }
            let code = if !valid || !self.topic_within_limits(&entry.filter) {
                ReasonCode::TopicFilterInvalid
            } else if self.broker.acl().is_some_and(|acl| {
                !acl.can_subscribe(self.username.as_deref(), &self.client_id, &entry.filter)
            }) {
                self.broker.metrics().acl_denied();
                tracing::debug!(client_id = %self.client_id, filter = %entry.filter, "subscribe denied by ACL");
                ReasonCode::NotAuthorized
            } else {
                let outcome =
                    self.broker
                        .subscribe(&self.handle, &entry.filter, entry.options, identifier);
                granted.push((entry, outcome));
                ReasonCode::granted(entry.options.qos)
            };
            reasons.push(code);
        }
        self.send(&Packet::SubAck(SubAck {
            packet_id: subscribe.packet_id,
            reasons,
            properties: AckProperties::default(),
        }));
        for (entry, outcome) in granted {
            self.broker.send_retained(
                &self.handle,
                &entry.filter,
                entry.options,
                identifier,
                outcome,
            );
        }
        Ok(())
    }

    fn handle_unsubscribe(&mut self, unsubscribe: Unsubscribe) -> Result<(), Close> {
        let mut reasons = Vec::with_capacity(unsubscribe.filters.len());
        for filter in &unsubscribe.filters {
            let code = if validate_topic_filter(filter).is_err() {
                if !self.version.is_v5() {
                    return Err(Close::Server(ReasonCode::ProtocolError));
                }
                ReasonCode::TopicFilterInvalid
            } else if self.broker.unsubscribe(&self.handle, filter) {
                ReasonCode::Success
            } else {
                ReasonCode::NoSubscriptionExisted
            };
            reasons.push(code);
        }
        self.send(&Packet::UnsubAck(UnsubAck {
            packet_id: unsubscribe.packet_id,
            reasons,
            properties: AckProperties::default(),
        }));
        Ok(())
    }

    /// Encodes a control packet into the write buffer.
    fn send(&mut self, packet: &Packet) {
        if let Err(err) = encode(packet, self.version, &mut self.wbuf) {
            tracing::warn!(client_id = %self.client_id, packet = packet.name(), error = %err, "cannot encode packet");
        }
    }

    /// Resends unacknowledged messages after the session was resumed.
    fn resend_inflight(&mut self) {
        let handle = self.handle.clone();
        let state = handle.lock();
        let now = Instant::now();
        for item in state.session.resend() {
            match item {
                Resend::Publish { packet_id, message } => {
                    self.write_delivery(Some(packet_id), message, true, now);
                }
                Resend::PubRel { packet_id } => {
                    self.send(&Packet::PubRel(PubAck::success(packet_id)))
                }
            }
        }
    }

    /// Moves queued deliveries into the write buffer, as far as the inflight
    /// window and the batch size allow.
    ///
    /// Deliveries are taken out of the session in small batches and encoded
    /// with the session unlocked, so publishers routing to this session are not
    /// held up while a large write is prepared.
    fn pump(&mut self) {
        let handle = self.handle.clone();
        let now = Instant::now();
        let mut batch = Vec::new();
        while self.wbuf.len() < WRITE_BATCH {
            {
                let mut state = handle.lock();
                while batch.len() < PUMP_BATCH {
                    match state.session.next_to_send(now) {
                        None => break,
                        Some(Next::Expired(_)) => {
                            self.broker.metrics().dropped(DropReason::Expired)
                        }
                        Some(Next::Send { packet_id, message }) => batch.push((packet_id, message)),
                    }
                }
                handle.queue_changed(&state);
            }
            if batch.is_empty() {
                break;
            }
            let mut undeliverable = Vec::new();
            for (packet_id, message) in batch.drain(..) {
                if !self.may_receive(&message)
                    || !self.write_delivery(packet_id, &message, false, now)
                {
                    if let Some(pid) = packet_id {
                        undeliverable.push((pid, message.qos));
                    }
                }
            }
            if !undeliverable.is_empty() {
                // Too large for this client (the spec says to discard it as if
                // delivered) or denied to it: its flow is completed here.
                let mut state = handle.lock();
                for (pid, qos) in undeliverable {
                    let _ = match qos {
                        QoS::ExactlyOnce => state.session.on_pubrec(pid, true).map(|_| ()),
                        _ => state.session.on_puback(pid).map(|_| ()),
                    };
                }
            }
        }
    }

    /// Whether the access rules let this client receive `out`: a deny rule can
    /// cover some topics of a subscription it was granted (`#` against a
    /// denied `secret/#`), and those are filtered here, against the identity the
    /// connection authenticated. A refusal is counted.
    fn may_receive(&self, out: &Outgoing) -> bool {
        let Some(acl) = self.broker.acl().filter(|acl| acl.filters_deliveries()) else {
            return true;
        };
        let allowed = acl.can_receive(
            self.username.as_deref(),
            &self.client_id,
            &out.message.topic,
        );
        if !allowed {
            self.broker.metrics().dropped(DropReason::NotAuthorized);
        }
        allowed
    }

    /// Encodes one delivery; false when it exceeds the client's maximum packet size.
    fn write_delivery(
        &mut self,
        packet_id: Option<u16>,
        out: &Outgoing,
        dup: bool,
        now: Instant,
    ) -> bool {
        let message = &out.message;
        let mut properties = if self.version.is_v5() {
            PublishProperties {
                message_expiry_interval: message.remaining_expiry(now),
                subscription_identifiers: out.subscription_ids.clone(),
                ..message.properties.clone()
            }
        } else {
            PublishProperties::default()
        };
        let mut topic = message.topic.clone();
        if self.client_alias_max > 0 && !dup {
            match self.outbound_aliases.get(&topic) {
                Some(alias) => {
                    properties.topic_alias = Some(*alias);
                    topic = String::new();
                }
                None => {
                    let next = self.outbound_aliases.len() + 1;
                    if let Ok(alias) = u16::try_from(next) {
                        if alias <= self.client_alias_max {
                            self.outbound_aliases.insert(topic.clone(), alias);
                            properties.topic_alias = Some(alias);
                        }
                    }
                }
            }
        }
        let packet = Packet::Publish(Publish {
            dup,
            qos: out.qos,
            retain: out.retain,
            topic,
            packet_id,
            payload: Bytes::clone(&message.payload),
            properties,
        });
        let before = self.wbuf.len();
        if let Err(err) = encode(&packet, self.version, &mut self.wbuf) {
            tracing::warn!(client_id = %self.client_id, error = %err, "cannot encode delivery");
            return false;
        }
        let size = self.wbuf.len() - before;
        if u32::try_from(size).map_or(true, |s| s > self.client_max_packet) {
            self.wbuf.truncate(before);
            self.broker.metrics().dropped(DropReason::TooLargeForClient);
            return false;
        }
        self.broker.metrics().message_out(out.qos);
        true
    }

    async fn flush(&mut self) -> Result<(), Close> {
        self.broker.metrics().bytes_out(self.wbuf.len());
        let result = write_flushed(&mut self.reader.stream, &self.wbuf).await;
        self.wbuf.clear();
        if self.wbuf.capacity() > 4 * WRITE_BATCH {
            self.wbuf = BytesMut::new();
        }
        result.map_err(|_| Close::Lost)
    }

    /// Tells a v5 client why it is disconnected, then settles session and will.
    async fn finish(mut self, close: Close) {
        if let Close::Server(reason) = close {
            if reason != ReasonCode::ServerShuttingDown && reason != ReasonCode::SessionTakenOver {
                self.broker.metrics().protocol_error(reason);
            }
            if self.version.is_v5() {
                self.send(&Packet::Disconnect(Disconnect::with_reason(reason)));
            }
        }
        if !self.wbuf.is_empty() {
            let _ = tokio::time::timeout(
                CLOSE_TIMEOUT,
                write_flushed(&mut self.reader.stream, &self.wbuf),
            )
            .await;
        }
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.reader.stream.shutdown()).await;

        let now = Instant::now();
        let owned = self.handle.end_connection(self.epoch, now);
        let expiry = self.handle.lock().expiry_interval;
        let publish_will = match close {
            Close::ClientDisconnect { will } => will,
            Close::Lost | Close::Server(_) => true,
        };
        tracing::debug!(peer = %self.peer, client_id = %self.client_id, ?close, "client disconnected");
        if let Some(will) = self.will.take().filter(|_| publish_will) {
            let delay = will.properties.will_delay_interval.unwrap_or(0).min(expiry);
            schedule_will(
                self.broker.clone(),
                self.handle.clone(),
                self.epoch,
                will,
                delay,
            );
        }
        if owned {
            if expiry == 0 {
                self.broker.end_session(&self.handle);
            } else {
                self.broker.session_changed(&self.handle);
                schedule_expiry(self.broker.clone(), self.handle.clone(), self.epoch);
            }
        }
        if matches!(close, Close::Server(_)) {
            // A lingering close, once session and will are settled: read (and
            // discard) until the client closes too, for a moment at most. A
            // client still writing to a socket that is gone draws a reset, and
            // its next write fails before it has read why it was closed.
            let _ =
                tokio::time::timeout(CLOSE_TIMEOUT, discard_until_closed(&mut self.reader.stream))
                    .await;
        }
    }
}

/// Answers a refused CONNECT with its reason code (counted and logged), then
/// the connection closes.
async fn refuse(
    broker: &Broker,
    reader: &mut Reader,
    peer: SocketAddr,
    connect: &Connect,
    (code, reason): (ReasonCode, RefusalReason),
) {
    broker.metrics().refused(reason);
    tracing::info!(%peer, client_id = %connect.client_id, username = ?connect.username, code = ?code, "connection refused");
    send_refusal(reader, code, connect.protocol).await;
}

/// Writes a CONNACK refusing the connection with `code`, in `version`'s format.
async fn send_refusal(reader: &mut Reader, code: ReasonCode, version: ProtocolVersion) {
    let connack = Packet::ConnAck(ConnAck {
        session_present: false,
        code,
        properties: ConnAckProperties::default(),
    });
    let mut out = BytesMut::new();
    if encode(&connack, version, &mut out).is_ok() {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, write_flushed(&mut reader.stream, &out)).await;
    }
}

/// Publishes a will now, or after `delay_secs` unless the session was resumed meanwhile.
fn schedule_will(
    broker: Arc<Broker>,
    handle: Arc<SessionHandle>,
    epoch: u64,
    will: LastWill,
    delay_secs: u32,
) {
    let publish = move |broker: &Broker| {
        let message = Message::from_will(will, Instant::now());
        tracing::debug!(topic = %message.topic, "publishing will");
        let policy = broker.config().limits.queue_full_policy;
        broker.publish(message, None, policy, &mut Vec::new());
    };
    if delay_secs == 0 {
        publish(&broker);
        return;
    }
    tokio::spawn(async move {
        // Ends with the broker: a stopped broker must let go of its state.
        let mut shutdown = broker.shutdown_signal();
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(u64::from(delay_secs))) => {}
            _ = shutdown.recv() => return,
        }
        if handle.epoch() == epoch {
            publish(&broker);
        }
    });
}

/// Ends a disconnected session when its expiry interval runs out, unless a
/// connection resumed it first.
pub(super) fn schedule_expiry(broker: Arc<Broker>, handle: Arc<SessionHandle>, epoch: u64) {
    let Some(deadline) = handle.lock().expires_at() else {
        return;
    };
    tokio::spawn(async move {
        // Ends with the broker: a stopped broker must let go of its state
        // (its store, above all), and a restart schedules expiry anew.
        let mut shutdown = broker.shutdown_signal();
        tokio::select! {
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {}
            _ = shutdown.recv() => return,
        }
        if handle.epoch() == epoch && !handle.is_connected() {
            tracing::debug!(client_id = %handle.client_id, "session expired");
            broker.end_session(&handle);
        }
    });
}

/// Completes when `hold` ends; never without one.
async fn released(hold: Option<&Hold>) -> Release {
    match hold {
        Some(hold) => hold.released().await,
        None => std::future::pending().await,
    }
}

/// Leaves out of a CONNACK what it can go without until it fits the client's
/// Maximum Packet Size [MQTT-3.1.2-24]: the reason string and user properties
/// first (as [MQTT-3.2.2-19] and [MQTT-3.2.2-20] say), then the availability
/// flags that only repeat their default (1), then the topic alias maximum (the
/// client then sends no aliases). What remains is required.
fn fit_connack(mut connack: ConnAck, version: ProtocolVersion, max: u32) -> ConnAck {
    fn reasons(p: &mut ConnAckProperties) {
        p.reason_string = None;
        p.user_properties.clear();
    }
    fn default_flags(p: &mut ConnAckProperties) {
        for flag in [
            &mut p.retain_available,
            &mut p.wildcard_subscription_available,
            &mut p.subscription_identifiers_available,
            &mut p.shared_subscription_available,
        ] {
            if *flag == Some(1) {
                *flag = None;
            }
        }
    }
    fn topic_aliases(p: &mut ConnAckProperties) {
        p.topic_alias_maximum = None;
    }
    let fits = |connack: &ConnAck| {
        let mut out = BytesMut::new();
        encode(&Packet::ConnAck(connack.clone()), version, &mut out).is_ok()
            && u32::try_from(out.len()).is_ok_and(|len| len <= max)
    };
    let strips: [fn(&mut ConnAckProperties); 3] = [reasons, default_flags, topic_aliases];
    for strip in strips {
        if fits(&connack) {
            break;
        }
        strip(&mut connack.properties);
    }
    connack
}

/// Reads and drops whatever arrives until the stream ends or fails.
async fn discard_until_closed(stream: &mut Box<dyn ClientStream>) {
    let mut scratch = [0u8; 1024];
    while let Ok(n) = stream.read(&mut scratch).await {
        if n == 0 {
            return;
        }
    }
}
