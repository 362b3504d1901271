//! Shared helpers for the broker's integration tests: an in-process broker on
//! loopback ports, rumqttc clients whose events arrive on a channel, and a raw
//! client that speaks packets through the broker's own codec.

#![allow(dead_code, unused_imports)] // each test binary uses a different subset

pub mod cluster;
pub mod corpus;
pub mod linked;
pub mod logs;
pub mod mosquitto;
pub mod proxy;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use strait_broker::config::Config;
use strait_broker::protocol::{
    decode, encode, ConnAck, Connect, ConnectProperties, Packet, ProtocolVersion, QoS, SubAck,
    Subscribe, SubscribeFilter, SubscriptionOptions,
};
use strait_broker::server::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// The broker binary cargo built for these tests.
pub const BROKER_BIN: &str = env!("CARGO_BIN_EXE_strait-broker");

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Upper bound for anything a test waits for; reaching it fails the test.
pub const WAIT: Duration = Duration::from_secs(10);

/// A broker on free loopback ports, with `$SYS` off unless `adjust` turns it on.
pub async fn start_broker(adjust: impl FnOnce(&mut Config)) -> Server {
    let mut config = Config::default();
    config.listeners[0].bind = "127.0.0.1:0".parse().expect("addr");
    config.admin.bind = "127.0.0.1:0".parse().expect("addr");
    config.sys.interval_secs = 0;
    adjust(&mut config);
    Server::start(config).await.expect("broker starts")
}

/// Starts the broker binary with the configuration file at `config`, its
/// output discarded (a test killing it mid-stream needs a real process).
pub fn spawn_broker_process(config: &std::path::Path) -> std::process::Child {
    std::process::Command::new(BROKER_BIN)
        .arg("--config")
        .arg(config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn strait-broker")
}

/// The Prometheus text of the admin endpoint at `admin`; `None` while it
/// does not answer (another process, still starting or gone).
pub async fn fetch_metrics(admin: SocketAddr) -> Option<String> {
    let mut stream = TcpStream::connect(admin).await.ok()?;
    let request = "GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n";
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    Some(response)
}

/// One HTTP/1.1 GET to an admin endpoint, which must answer 200; returns the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.expect("read");
    let (head, body) = raw.split_once("\r\n\r\n").expect("head and body");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

/// One HTTP/1.1 request with a body to an admin endpoint; returns the
/// status code and the body.
pub async fn http_send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.expect("read");
    let (head, body) = raw.split_once("\r\n\r\n").expect("head and body");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status code");
    (status, body.to_owned())
}

/// Awaits `future`, failing the test if it takes longer than [`WAIT`].
pub async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// rumqttc MQTT 3.1.1 client with its event loop running in a task.
pub mod v4 {
    use super::*;
    pub use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, Publish, QoS};

    pub struct Client {
        pub client: AsyncClient,
        pub events: mpsc::UnboundedReceiver<Packet>,
        task: tokio::task::JoinHandle<()>,
    }

    /// Dropping a client drops its connection without DISCONNECT.
    impl Drop for Client {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    pub fn options(addr: SocketAddr, id: &str) -> MqttOptions {
        let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        options.set_keep_alive(Duration::from_secs(30));
        options
    }

    /// Connects and waits for CONNACK.
    pub async fn connect(options: MqttOptions) -> Client {
        let (client, mut eventloop) = AsyncClient::new(options, 1000);
        let (tx, mut events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Ok(event) = eventloop.poll().await {
                if let Event::Incoming(packet) = event {
                    if tx.send(packet).is_err() {
                        return;
                    }
                }
            }
        });
        within("CONNACK", async {
            loop {
                match events.recv().await {
                    Some(Packet::ConnAck(_)) => break,
                    Some(_) => continue,
                    None => panic!("connection closed before CONNACK"),
                }
            }
        })
        .await;
        Client {
            client,
            events,
            task,
        }
    }

    impl Client {
        /// The next incoming packet matching `pick`.
        pub async fn next<T>(
            &mut self,
            what: &str,
            mut pick: impl FnMut(Packet) -> Option<T>,
        ) -> T {
            within(what, async {
                loop {
                    match self.events.recv().await {
                        Some(packet) => {
                            if let Some(found) = pick(packet) {
                                return found;
                            }
                        }
                        None => panic!("connection closed while waiting for {what}"),
                    }
                }
            })
            .await
        }

        pub async fn publish_received(&mut self) -> Publish {
            self.next("PUBLISH", |p| match p {
                Packet::Publish(publish) => Some(publish),
                _ => None,
            })
            .await
        }

        pub async fn subscribe(&mut self, filter: &str, qos: QoS) {
            self.client
                .subscribe(filter, qos)
                .await
                .expect("queue SUBSCRIBE");
            self.next("SUBACK", |p| matches!(p, Packet::SubAck(_)).then_some(()))
                .await;
        }

        /// Publishes at QoS 1 and waits for PUBACK: the broker has routed it by then.
        pub async fn publish_acked(&mut self, topic: &str, retain: bool, payload: &[u8]) {
            self.client
                .publish(topic, QoS::AtLeastOnce, retain, payload.to_vec())
                .await
                .expect("queue PUBLISH");
            self.next("PUBACK", |p| matches!(p, Packet::PubAck(_)).then_some(()))
                .await;
        }
    }
}

/// rumqttc MQTT 5 client with its event loop running in a task.
pub mod v5 {
    use super::*;
    pub use rumqttc::v5::mqttbytes::v5::{
        ConnectProperties, Filter, LastWill, LastWillProperties, Packet, Publish,
        PublishProperties, SubscribeProperties,
    };
    pub use rumqttc::v5::mqttbytes::QoS;
    pub use rumqttc::v5::{AsyncClient, Event, MqttOptions};

    pub struct Client {
        pub client: AsyncClient,
        pub events: mpsc::UnboundedReceiver<Packet>,
        pub connack: rumqttc::v5::mqttbytes::v5::ConnAck,
        task: tokio::task::JoinHandle<()>,
    }

    /// Dropping a client drops its connection without DISCONNECT.
    impl Drop for Client {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    pub fn options(addr: SocketAddr, id: &str) -> MqttOptions {
        let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        options.set_keep_alive(Duration::from_secs(30));
        options
    }

    /// Connects and waits for CONNACK.
    pub async fn connect(options: MqttOptions) -> Client {
        let (client, mut eventloop) = AsyncClient::new(options, 1000);
        let (tx, mut events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(packet)) => {
                        if tx.send(packet).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(rumqttc::v5::ConnectionError::MqttState(
                        rumqttc::v5::StateError::ServerDisconnect { reason_code, .. },
                    )) => {
                        let _ =
                            tx.send(Packet::Disconnect(rumqttc::v5::mqttbytes::v5::Disconnect {
                                reason_code,
                                properties: None,
                            }));
                        return;
                    }
                    Err(err) => {
                        eprintln!("client connection ended: {err:?}");
                        return;
                    }
                }
            }
        });
        let connack = within("CONNACK", async {
            loop {
                match events.recv().await {
                    Some(Packet::ConnAck(connack)) => break connack,
                    Some(_) => continue,
                    None => panic!("connection closed before CONNACK"),
                }
            }
        })
        .await;
        Client {
            client,
            events,
            connack,
            task,
        }
    }

    impl Client {
        /// The next incoming packet matching `pick`.
        pub async fn next<T>(
            &mut self,
            what: &str,
            mut pick: impl FnMut(Packet) -> Option<T>,
        ) -> T {
            within(what, async {
                loop {
                    match self.events.recv().await {
                        Some(packet) => {
                            if let Some(found) = pick(packet) {
                                return found;
                            }
                        }
                        None => panic!("connection closed while waiting for {what}"),
                    }
                }
            })
            .await
        }

        pub async fn publish_received(&mut self) -> Publish {
            self.next("PUBLISH", |p| match p {
                Packet::Publish(publish) => Some(publish),
                _ => None,
            })
            .await
        }

        pub async fn subscribe(&mut self, filter: &str, qos: QoS) {
            self.client
                .subscribe(filter, qos)
                .await
                .expect("queue SUBSCRIBE");
            self.next("SUBACK", |p| matches!(p, Packet::SubAck(_)).then_some(()))
                .await;
        }

        /// Publishes at QoS 1 and waits for PUBACK, returning its reason code.
        pub async fn publish_acked(
            &mut self,
            topic: &str,
            retain: bool,
            payload: &[u8],
        ) -> rumqttc::v5::mqttbytes::v5::PubAckReason {
            self.client
                .publish(topic, QoS::AtLeastOnce, retain, payload.to_vec())
                .await
                .expect("queue PUBLISH");
            self.next("PUBACK", |p| match p {
                Packet::PubAck(ack) => Some(ack.reason),
                _ => None,
            })
            .await
        }
    }
}

/// A CONNECT as `client_id`, keepalive 30 s, no will and no credentials.
pub fn connect_packet(
    version: ProtocolVersion,
    client_id: &str,
    clean_start: bool,
    properties: ConnectProperties,
) -> Packet {
    Packet::Connect(Box::new(Connect {
        protocol: version,
        clean_start,
        keep_alive: 30,
        client_id: client_id.into(),
        will: None,
        username: None,
        password: None,
        properties,
    }))
}

/// A PUBLISH of `payload` to `topic` at `qos` (`packet_id` set for QoS 1/2),
/// not retained, without properties.
pub fn publish(
    topic: &str,
    qos: QoS,
    packet_id: Option<u16>,
    payload: impl Into<bytes::Bytes>,
) -> strait_broker::protocol::Publish {
    strait_broker::protocol::Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        packet_id,
        payload: payload.into(),
        properties: Default::default(),
    }
}

/// SUBSCRIBE with id `packet_id` to one filter at `qos`.
pub fn subscribe_packet(packet_id: u16, filter: &str, qos: QoS) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id,
        filters: vec![SubscribeFilter {
            filter: filter.into(),
            options: SubscriptionOptions {
                qos,
                ..Default::default()
            },
        }],
        properties: Default::default(),
    })
}

/// A client that writes and reads raw packets, for protocol-level tests.
pub struct RawClient {
    pub stream: TcpStream,
    buf: BytesMut,
    pub version: ProtocolVersion,
}

impl RawClient {
    pub async fn connect(addr: SocketAddr, version: ProtocolVersion) -> RawClient {
        let stream = TcpStream::connect(addr).await.expect("TCP connect");
        stream.set_nodelay(true).expect("nodelay");
        RawClient {
            stream,
            buf: BytesMut::new(),
            version,
        }
    }

    /// Connects and completes CONNECT/CONNACK as `client_id`; returns the
    /// client and the broker's CONNACK, whatever its code.
    pub async fn open(
        addr: SocketAddr,
        version: ProtocolVersion,
        client_id: &str,
        clean_start: bool,
        properties: ConnectProperties,
    ) -> (RawClient, ConnAck) {
        let mut client = RawClient::connect(addr, version).await;
        client
            .send(&connect_packet(version, client_id, clean_start, properties))
            .await;
        match client.recv().await {
            Some(Packet::ConnAck(ack)) => (client, ack),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// A clean-start connection as `client_id` that the broker accepted.
    pub async fn connected(
        addr: SocketAddr,
        version: ProtocolVersion,
        client_id: &str,
    ) -> RawClient {
        let (client, ack) =
            RawClient::open(addr, version, client_id, true, ConnectProperties::default()).await;
        assert_eq!(ack.code, strait_broker::protocol::ReasonCode::Success);
        client
    }

    /// A v5 connection as `client_id` keeping its session for an hour,
    /// logged in as `user` with `password`; returns the client and the
    /// CONNACK's code, whatever it is.
    pub async fn login(
        addr: SocketAddr,
        client_id: &str,
        user: &str,
        password: &str,
    ) -> (RawClient, strait_broker::protocol::ReasonCode) {
        let properties = ConnectProperties {
            session_expiry_interval: Some(3600),
            ..Default::default()
        };
        let mut connect = connect_packet(ProtocolVersion::V5, client_id, false, properties);
        if let Packet::Connect(c) = &mut connect {
            c.username = Some(user.into());
            c.password = Some(bytes::Bytes::copy_from_slice(password.as_bytes()));
        }
        let mut client = RawClient::connect(addr, ProtocolVersion::V5).await;
        client.send(&connect).await;
        match client.recv().await {
            Some(Packet::ConnAck(ack)) => (client, ack.code),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// Subscribes to one filter (packet id 1) and returns the SUBACK.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> SubAck {
        self.send(&subscribe_packet(1, filter, qos)).await;
        match self.recv().await {
            Some(Packet::SubAck(ack)) => ack,
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    pub async fn send(&mut self, packet: &Packet) {
        let mut out = BytesMut::new();
        encode(packet, self.version, &mut out).expect("encode");
        self.stream.write_all(&out).await.expect("write");
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// The next packet, or `None` when the broker closed the connection.
    pub async fn recv(&mut self) -> Option<Packet> {
        within("a packet or close", async {
            loop {
                match decode(&mut self.buf, Some(self.version), u32::MAX) {
                    Ok(Some(packet)) => return Some(packet),
                    Ok(None) => {}
                    Err(err) => panic!("broker sent an invalid packet: {err}"),
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
    }

    /// Reads until the broker closes the connection, returning what it sent.
    pub async fn recv_until_closed(&mut self) -> Vec<Packet> {
        let mut packets = Vec::new();
        while let Some(packet) = self.recv().await {
            packets.push(packet);
        }
        packets
    }
}
