//! Link security from outside: a peer driven frame by frame through the link
//! protocol. No credential, a wrong one, one issued to another cluster, a
//! wrong target cluster, an old protocol version, oversized frames before
//! the handshake, and an authenticated remote sending what it may not: each
//! is refused or dropped, counted, and never reaches a subscriber.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use strait_broker::cluster::wire::WireMessage;
use strait_broker::link::credential::Transcript;
use strait_broker::link::wire::{
    self, LinkFrame, LinkMessage, LinkOp, MAX_FRAME, PROTOCOL_VERSION,
};
use strait_broker::link::LinkSecret;
use strait_broker::peering::proof;
use support::linked::{edge, Linked};
use support::{v4, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A remote cluster played by hand.
struct Rogue {
    stream: TcpStream,
    buf: BytesMut,
}

impl Rogue {
    async fn connect(addr: SocketAddr) -> Rogue {
        Rogue {
            stream: TcpStream::connect(addr).await.expect("connect"),
            buf: BytesMut::new(),
        }
    }

    async fn send(&mut self, frame: &LinkFrame) {
        self.stream
            .write_all(&wire::encode_to_bytes(frame).expect("encode"))
            .await
            .expect("send");
    }

    /// The next frame, or `None` when the broker closed the connection.
    async fn recv(&mut self) -> Option<LinkFrame> {
        within("a link frame", async {
            loop {
                if let Some(frame) = wire::decode(&mut self.buf, MAX_FRAME).expect("a valid frame")
                {
                    return Some(frame);
                }
                if self.stream.read_buf(&mut self.buf).await.unwrap_or(0) == 0 {
                    return None;
                }
            }
        })
        .await
    }

    /// Runs the handshake as cluster `me` towards `to` with `secret`; returns
    /// the broker's last handshake frame.
    async fn handshake(
        addr: SocketAddr,
        me: &str,
        to: &str,
        secret: &str,
    ) -> (Rogue, Option<LinkFrame>) {
        let mut rogue = Rogue::connect(addr).await;
        let nonce = proof::nonce();
        rogue
            .send(&LinkFrame::Hello {
                version: PROTOCOL_VERSION,
                cluster: me.into(),
                to: to.into(),
                incarnation: 1,
                nonce,
            })
            .await;
        let (salt, acceptor_nonce) = match rogue.recv().await {
            Some(LinkFrame::Challenge { salt, nonce }) => (salt, nonce),
            other => return (rogue, other),
        };
        let keys = LinkSecret::new(secret.as_bytes())
            .expect("long enough")
            .salted(&salt)
            .expect("derive");
        let transcript = Transcript {
            acceptor_nonce: &acceptor_nonce,
            dialer_nonce: &nonce,
            dialer_cluster: me,
            acceptor_cluster: to,
            incarnation: 1,
        };
        rogue
            .send(&LinkFrame::Proof {
                proof: keys.client_proof(&transcript),
                resume: None,
            })
            .await;
        let answer = rogue.recv().await;
        (rogue, answer)
    }
}

fn refusal(frame: Option<LinkFrame>) -> String {
    match frame {
        Some(LinkFrame::Refused { reason }) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// The secret the test topology gave `dialer` for its link to `acceptor`.
fn secret(dialer: &str, acceptor: &str) -> String {
    format!("link-secret-{dialer}-to-{acceptor}-0123456789")
}

#[tokio::test]
async fn strangers_wrong_secrets_borrowed_credentials_and_wrong_targets_are_refused() {
    // The cloud accepts two edges, each with its own credential.
    let net = Linked::configure(
        &[edge("edge-a", "cloud"), edge("edge-b", "cloud")],
        |_, _| {},
    )
    .start()
    .await;
    let listener = net.link_listener("cloud");
    let refused_before = metric(&net, "strait_link_handshakes_refused_total").await;

    let (_, answer) =
        Rogue::handshake(listener, "stranger", "cloud", "a-secret-nobody-issued").await;
    assert!(refusal(answer).contains("failed authentication"));
    let (_, answer) =
        Rogue::handshake(listener, "edge-a", "cloud", "a-guess-at-edge-a-secret").await;
    assert!(refusal(answer).contains("failed authentication"));
    // edge-a's own credential, claiming to be edge-b.
    let (_, answer) =
        Rogue::handshake(listener, "edge-b", "cloud", &secret("edge-a", "cloud")).await;
    assert!(refusal(answer).contains("failed authentication"));
    let (_, answer) =
        Rogue::handshake(listener, "edge-a", "elsewhere", &secret("edge-a", "cloud")).await;
    assert!(refusal(answer).contains("this is cluster \"cloud\""));

    let mut old = Rogue::connect(listener).await;
    old.send(&LinkFrame::Hello {
        version: PROTOCOL_VERSION + 1,
        cluster: "edge-a".into(),
        to: "cloud".into(),
        incarnation: 1,
        nonce: [0; 32],
    })
    .await;
    assert!(refusal(old.recv().await).contains("version"));

    // A frame longer than the handshake allows is not even read.
    let mut big = Rogue::connect(listener).await;
    big.stream
        .write_all(&(64 * 1024u32).to_be_bytes())
        .await
        .expect("send");
    assert_eq!(big.recv().await, None, "closed");

    assert_eq!(
        metric(&net, "strait_link_handshakes_refused_total").await,
        refused_before + 5
    );
    // The real edges are still linked, untouched.
    assert!(net.status("cloud", "edge-a").state == "connected");
    net.shutdown().await;
}

#[tokio::test]
async fn an_authenticated_remote_gets_only_what_is_exported_and_sends_only_what_is_imported() {
    // The cloud accepts "edge" (played by hand), exports fleet/# and imports
    // telemetry/# from it.
    let mut configured = Linked::configure(&[edge("edge", "cloud")], |cluster, link| {
        if cluster == "cloud" {
            link.export = vec!["fleet/#".into()];
            link.import = vec!["telemetry/#".into()];
        }
    });
    configured.configs.remove("edge");
    let net = configured.launch().await;
    let listener = net.link_listener("cloud");
    let (mut rogue, welcome) =
        Rogue::handshake(listener, "edge", "cloud", &secret("edge", "cloud")).await;
    assert!(
        matches!(welcome, Some(LinkFrame::Welcome { .. })),
        "{welcome:?}"
    );

    let mut cloud_sub = v4::connect(v4::options(net.mqtt("cloud"), "cloud-sub")).await;
    cloud_sub.subscribe("#", v4::QoS::AtLeastOnce).await;
    let op = |seq, op| LinkFrame::Op { seq, op };
    // Interest in everything, and one whose path already holds the cloud.
    rogue
        .send(&op(
            1,
            LinkOp::Interest {
                origin: "edge".into(),
                filter: "#".into(),
                path: vec!["edge".into()],
            },
        ))
        .await;
    rogue
        .send(&op(
            2,
            LinkOp::Interest {
                origin: "far".into(),
                filter: "x".into(),
                path: vec!["far".into(), "cloud".into(), "edge".into()],
            },
        ))
        .await;
    let message = |topic: &str| {
        LinkOp::Publish(LinkMessage {
            id: rand::random(),
            message: WireMessage {
                topic: topic.into(),
                payload: Bytes::from_static(b"p"),
                qos: 1,
                ..WireMessage::default()
            },
            path: vec!["edge".into()],
            to: vec!["cloud".into()],
            replay: false,
        })
    };
    rogue.send(&op(3, message("private/1"))).await;
    rogue.send(&op(4, message("telemetry/1"))).await;
    let looped = LinkOp::Publish(LinkMessage {
        id: rand::random(),
        message: WireMessage {
            topic: "telemetry/2".into(),
            payload: Bytes::from_static(b"p"),
            qos: 1,
            ..WireMessage::default()
        },
        path: vec!["cloud".into(), "edge".into()],
        to: vec!["cloud".into()],
        replay: false,
    });
    rogue.send(&op(5, looped)).await;
    let got = cloud_sub.publish_received().await;
    assert_eq!(
        got.topic, "telemetry/1",
        "only the imported topic was delivered"
    );

    // The cloud acknowledges all five, and counts what it refused.
    let mut acked = 0;
    while acked < 5 {
        match rogue.recv().await.expect("connection open") {
            LinkFrame::Ack { seq } => acked = seq,
            _ => continue,
        }
    }
    let status = net.status("cloud", "edge");
    assert_eq!(status.dropped.get("outside_import"), Some(&1));
    assert_eq!(status.dropped.get("loop"), Some(&1));
    assert_eq!(status.interest_refused, 1);
    assert_eq!(status.routes_received, 1);

    // The cloud sends only exported topics to the edge, for all its interest.
    let mut publisher = v4::connect(v4::options(net.mqtt("cloud"), "cloud-pub")).await;
    publisher
        .publish_acked("secret/1", false, b"not exported")
        .await;
    publisher.publish_acked("fleet/1", false, b"exported").await;
    let forwarded = within("the exported message", async {
        loop {
            if let Some(LinkFrame::Op {
                op: LinkOp::Publish(m),
                ..
            }) = rogue.recv().await
            {
                return m;
            }
        }
    })
    .await;
    assert_eq!(forwarded.message.topic, "fleet/1");
    assert_eq!(forwarded.path, vec!["cloud".to_owned()]);
    assert_eq!(forwarded.to, vec!["edge".to_owned()]);
    assert_eq!(net.status("cloud", "edge").forwarded_messages, 1);
    net.shutdown().await;
}

#[tokio::test]
async fn a_dialler_refuses_an_acceptor_that_cannot_prove_it_holds_the_credential() {
    // A fake "cloud" that answers the handshake without the credential's hash.
    let fake = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let fake_addr = fake.local_addr().expect("addr");
    let mut configured = Linked::configure(&[edge("edge", "cloud")], |_, _| {});
    configured.configs.remove("cloud");
    configured.configs.get_mut("edge").expect("edge").links[0].endpoints =
        vec![fake_addr.to_string()];
    let edge_config = configured.configs["edge"].clone();
    let server = strait_broker::server::Server::start(edge_config)
        .await
        .expect("start");
    let (stream, _) = within("the edge to dial", fake.accept())
        .await
        .expect("accept");
    let mut rogue = Rogue {
        stream,
        buf: BytesMut::new(),
    };
    let Some(LinkFrame::Hello { cluster, to, .. }) = rogue.recv().await else {
        panic!("expected a hello")
    };
    assert_eq!((cluster.as_str(), to.as_str()), ("edge", "cloud"));
    rogue
        .send(&LinkFrame::Challenge {
            salt: [1; 16],
            nonce: [2; 32],
        })
        .await;
    assert!(matches!(rogue.recv().await, Some(LinkFrame::Proof { .. })));
    rogue
        .send(&LinkFrame::Welcome {
            signature: [0; 32],
            incarnation: 9,
            resume_after: None,
        })
        .await;
    let links = server.broker().links().clone();
    support::cluster::eventually("the edge to give up on the fake", || {
        links.status()[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("did not prove"))
    })
    .await;
    assert!(!links.get("cloud").expect("link").is_connected());
    tokio::time::sleep(Duration::from_millis(0)).await;
    server.shutdown().await;
}

async fn metric(net: &Linked, name: &str) -> u64 {
    let text = support::http_get(net.server("cloud").admin_addr(), "/metrics").await;
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} in {text}"))
}

/// A CA and a server certificate for `name` it signed, written under `dir`;
/// returns (CA file, certificate file, key file).
fn tls_files(
    dir: &std::path::Path,
    label: &str,
    name: &str,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, format!("{label} CA"));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("CA key")).expect("CA");
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec![name.to_owned()])
        .expect("params")
        .signed_by(&key, &ca)
        .expect("cert");
    let path = |file: &str| dir.join(format!("{label}-{file}"));
    std::fs::write(path("ca.pem"), ca.pem()).expect("write CA");
    std::fs::write(path("cert.pem"), cert.pem()).expect("write cert");
    std::fs::write(path("key.pem"), key.serialize_pem()).expect("write key");
    (path("ca.pem"), path("cert.pem"), path("key.pem"))
}

#[tokio::test]
async fn a_link_over_tls_carries_messages_and_a_certificate_from_another_ca_is_refused() {
    use strait_broker::config::{LinkTlsConfig, TlsConfig};
    let mut configured = Linked::configure(&[edge("edge", "cloud")], |_, _| {});
    let dir = configured.dir.path().to_owned();
    let (ca, cert, key) = tls_files(&dir, "cloud", "links.cloud.test");
    let (other_ca, _, _) = tls_files(&dir, "impostor", "links.cloud.test");
    let listener = configured
        .configs
        .get_mut("cloud")
        .expect("cloud")
        .link_listener
        .as_mut()
        .expect("listener");
    listener.tls = Some(TlsConfig {
        cert_file: cert,
        key_file: key,
        client_ca_file: None,
        require_client_cert: false,
        use_cert_cn_as_username: false,
    });
    let edge_link = &mut configured.configs.get_mut("edge").expect("edge").links[0];
    edge_link.tls = Some(LinkTlsConfig {
        ca_file: ca,
        server_name: "links.cloud.test".into(),
        cert_file: None,
        key_file: None,
    });
    let mut misconfigured = configured.configs["edge"].clone();
    let net = configured.start().await;
    let mut subscriber = v4::connect(v4::options(net.mqtt("edge"), "edge-sub")).await;
    subscriber.subscribe("t/#", v4::QoS::AtLeastOnce).await;
    net.wait_routes("cloud", "edge", 1).await;
    let mut publisher = v4::connect(v4::options(net.mqtt("cloud"), "cloud-pub")).await;
    publisher.publish_acked("t/1", false, b"over tls").await;
    assert_eq!(
        subscriber.publish_received().await.payload.as_ref(),
        b"over tls"
    );

    // An edge that trusts another CA does not link, and says why.
    misconfigured.node.name = "edge-1".into();
    misconfigured.links[0].tls.as_mut().expect("tls").ca_file = other_ca;
    let impostor = strait_broker::server::Server::start(misconfigured)
        .await
        .expect("start");
    let links = impostor.broker().links().clone();
    support::cluster::eventually("the TLS handshake to fail", || {
        links.status()[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.to_lowercase().contains("certificate"))
    })
    .await;
    assert!(!links.get("cloud").expect("link").is_connected());
    impostor.shutdown().await;
    net.shutdown().await;
}

/// Secrets never reach the logs: not on a link that works, not when a
/// wrong one is tried (debug level, both ends).
#[tokio::test]
async fn link_secrets_never_reach_the_logs() {
    let logs = support::logs::Logs::default();
    let _capture = logs.capture();
    let net = Linked::configure(&[edge("edge", "cloud")], |_, _| {})
        .start()
        .await;
    let listener = net.link_listener("cloud");
    let wrong = "a-wrong-secret-for-the-edge-0123";
    let (_, answer) = Rogue::handshake(listener, "edge", "cloud", wrong).await;
    assert!(refusal(answer).contains("failed authentication"));
    net.shutdown().await;
    let text = logs.text();
    assert!(
        text.contains("refused a link connection"),
        "the refusal is logged"
    );
    for secret in [secret("edge", "cloud"), wrong.to_owned()] {
        assert!(!text.contains(&secret), "a secret leaked into the logs");
    }
}

/// A dialler reads its secret file at every dial and an acceptor reads its
/// credentials file again when it changes (a Secret the kubelet updates in
/// place): a link whose secret is missing reports it and connects once the
/// file appears, and a secret rotated on both ends is used from the next
/// connection on, with what was queued meanwhile delivered.
#[tokio::test]
async fn a_missing_secret_is_reported_and_a_rotated_one_is_used_without_a_restart() {
    let mut configured = Linked::configure(&[edge("west", "east")], |_, _| {});
    let proxy = configured.through_proxy("west", "east").await;
    let secret_file = configured.configs["west"].links[0]
        .secret_file
        .clone()
        .expect("west dials with a secret");
    let credentials_file = configured.configs["east"]
        .link_listener
        .as_ref()
        .expect("east accepts")
        .credentials_file
        .clone();
    let original = std::fs::read(&secret_file).expect("read secret");
    std::fs::remove_file(&secret_file).expect("remove secret");
    let net = configured.launch().await;
    support::cluster::eventually("west to report its missing secret", || {
        net.status("west", "east")
            .last_error
            .is_some_and(|e| e.contains("link secret") && e.contains("cannot read"))
    })
    .await;
    std::fs::write(&secret_file, original).expect("restore secret");
    net.wait_connected().await;

    let mut subscriber = net.subscriber("west", "t/#", "east").await;
    let rotated = "a-rotated-link-secret-0123456789";
    let hashed = LinkSecret::new(rotated.as_bytes())
        .expect("long enough")
        .hash()
        .expect("hash");
    std::fs::write(&secret_file, rotated).expect("rotate the secret");
    std::fs::write(&credentials_file, format!("west:{}\n", hashed.encode()))
        .expect("rotate the credential");
    assert!(
        net.server("west")
            .broker()
            .links()
            .get("east")
            .expect("link")
            .is_connected(),
        "a rotation alone drops nothing"
    );
    net.cut(&proxy, "east", "west").await;
    let connects = net.status("west", "east").connects;
    let _publisher = net.publish_numbers("east", "t/n", 0..20).await;
    proxy.heal();
    for expected in 0..20 {
        assert_eq!(
            support::linked::next_number(&mut subscriber).await,
            expected
        );
    }
    assert!(
        net.status("west", "east").connects > connects,
        "it reconnected with the rotated secret"
    );
    net.shutdown().await;
}
