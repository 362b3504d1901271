//! Listener tests over loopback with real TLS and WebSocket clients. The PKI is
//! generated afresh for each test with rcgen.

use std::path::PathBuf;
use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::SEC_WEBSOCKET_PROTOCOL;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::*;
use crate::config::TlsConfig;

/// A CA with one server and one client certificate, written as PEM files.
struct Pki {
    dir: tempfile::TempDir,
    ca: CertificateDer<'static>,
    client_chain: Vec<CertificateDer<'static>>,
    client_key: PrivateKeyDer<'static>,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA cert")
}

/// A leaf certificate for `common_name` issued by `issuer`, with its PKCS#8 key.
fn leaf(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    common_name: &str,
    usage: ExtendedKeyUsagePurpose,
) -> (rcgen::Certificate, KeyPair) {
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).expect("leaf params");
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().expect("leaf key");
    let cert = params.signed_by(&key, issuer).expect("leaf cert");
    (cert, key)
}

fn pkcs8(key: &KeyPair) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()))
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = ca("Strait test CA");
        let (server_cert, server_key) = leaf(&ca, "broker", ExtendedKeyUsagePurpose::ServerAuth);
        let (client_cert, client_key) = leaf(&ca, "device-42", ExtendedKeyUsagePurpose::ClientAuth);
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write CA");
        std::fs::write(dir.path().join("server.pem"), server_cert.pem()).expect("write cert");
        std::fs::write(dir.path().join("server.key"), server_key.serialize_pem())
            .expect("write key");
        Pki {
            ca: ca.der().clone(),
            client_chain: vec![client_cert.der().clone()],
            client_key: pkcs8(&client_key),
            dir,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn tls_config(&self, require_client_cert: bool) -> TlsConfig {
        TlsConfig {
            cert_file: self.path("server.pem"),
            key_file: self.path("server.key"),
            client_ca_file: Some(self.path("ca.pem")),
            require_client_cert,
            use_cert_cn_as_username: true,
        }
    }

    /// A client trusting the test CA, presenting `identity` if given.
    fn connector(
        &self,
        identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    ) -> TlsConnector {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.clone()).expect("trust CA");
        let builder =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_root_certificates(roots);
        let config = match identity {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain, key)
                .expect("client identity"),
            None => builder.with_no_client_auth(),
        };
        TlsConnector::from(Arc::new(config))
    }

    fn client_identity(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        (self.client_chain.clone(), self.client_key.clone_key())
    }
}

fn listener_config(protocol: ListenerProtocol, tls: Option<TlsConfig>) -> ListenerConfig {
    ListenerConfig {
        name: "test".into(),
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        protocol,
        tls,
        ..ListenerConfig::default()
    }
}

/// Accepts one connection, checks TCP_NODELAY, and returns the handshake's outcome.
fn accept_one(listener: Listener) -> JoinHandle<Result<Accepted, TransportError>> {
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        assert!(tcp.nodelay().expect("nodelay"), "TCP_NODELAY is set");
        listener.handshake(tcp).await
    })
}

/// Echoes `len` bytes back on an accepted stream, returning the client CN.
fn echo_once(listener: Listener, len: usize) -> JoinHandle<Option<String>> {
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let mut accepted = listener.handshake(tcp).await.expect("handshake");
        let mut buf = vec![0; len];
        accepted.stream.read_exact(&mut buf).await.expect("read");
        accepted.stream.write_all(&buf).await.expect("write");
        accepted.stream.flush().await.expect("flush");
        accepted.cert_common_name
    })
}

#[tokio::test]
async fn plain_tcp_passes_bytes_through() {
    let listener = Listener::bind(&listener_config(ListenerProtocol::Mqtt, None))
        .await
        .expect("bind");
    let addr = listener.local_addr();
    assert_ne!(addr.port(), 0);
    let server = echo_once(listener, 4);
    let mut client = TcpStream::connect(addr).await.expect("connect");
    client.write_all(b"\x10\x02ab").await.expect("write");
    let mut back = [0; 4];
    client.read_exact(&mut back).await.expect("read");
    assert_eq!(&back, b"\x10\x02ab");
    assert_eq!(server.await.expect("join"), None);
}

#[tokio::test]
async fn tls_echoes_bytes_and_reports_the_client_cn() {
    let pki = Pki::new();
    let listener = Listener::bind(&listener_config(
        ListenerProtocol::Mqtt,
        Some(pki.tls_config(true)),
    ))
    .await
    .expect("bind");
    let addr = listener.local_addr();
    let server = echo_once(listener, 5);

    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("server name");
    let mut client = pki
        .connector(Some(pki.client_identity()))
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    client.write_all(b"hello").await.expect("write");
    let mut back = [0; 5];
    client.read_exact(&mut back).await.expect("read");
    assert_eq!(&back, b"hello");
    assert_eq!(server.await.expect("join").as_deref(), Some("device-42"));
}

#[tokio::test]
async fn tls_refuses_a_client_without_a_certificate_when_one_is_required() {
    let pki = Pki::new();
    let listener = Listener::bind(&listener_config(
        ListenerProtocol::Mqtt,
        Some(pki.tls_config(true)),
    ))
    .await
    .expect("bind");
    let addr = listener.local_addr();
    let server = accept_one(listener);

    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("server name");
    // With TLS 1.3 the client may finish its side before the server objects;
    // the server's verdict is what counts.
    let _client = pki.connector(None).connect(name, tcp).await;
    let err = server.await.expect("join").expect_err("must refuse");
    assert!(err.to_string().contains("TLS"), "{err}");
}

#[tokio::test]
async fn tls_refuses_a_certificate_from_another_ca() {
    let pki = Pki::new();
    let rogue_ca = ca("Rogue CA");
    let (rogue_cert, rogue_key) = leaf(&rogue_ca, "device-42", ExtendedKeyUsagePurpose::ClientAuth);
    let listener = Listener::bind(&listener_config(
        ListenerProtocol::Mqtt,
        Some(pki.tls_config(false)),
    ))
    .await
    .expect("bind");
    let addr = listener.local_addr();
    let server = accept_one(listener);

    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("server name");
    let _client = pki
        .connector(Some((vec![rogue_cert.der().clone()], pkcs8(&rogue_key))))
        .connect(name, tcp)
        .await;
    server.await.expect("join").expect_err("must refuse");
}

#[tokio::test]
async fn tls_with_optional_client_certs_admits_a_client_without_one() {
    let pki = Pki::new();
    let listener = Listener::bind(&listener_config(
        ListenerProtocol::Mqtt,
        Some(pki.tls_config(false)),
    ))
    .await
    .expect("bind");
    let addr = listener.local_addr();
    let server = echo_once(listener, 2);

    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("server name");
    let mut client = pki
        .connector(None)
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    client.write_all(b"hi").await.expect("write");
    let mut back = [0; 2];
    client.read_exact(&mut back).await.expect("read");
    assert_eq!(server.await.expect("join"), None, "no certificate, no CN");
}

#[tokio::test]
async fn bad_tls_material_or_a_taken_port_fail_at_bind() {
    let pki = Pki::new();
    let mut tls = pki.tls_config(false);
    tls.key_file = pki.path("missing.key");
    let err = Listener::bind(&listener_config(ListenerProtocol::Mqtt, Some(tls)))
        .await
        .expect_err("missing key");
    assert!(matches!(err, TransportError::TlsConfig(_)), "{err}");

    let mut tls = pki.tls_config(false);
    tls.key_file = pki.path("ca.pem");
    let err = Listener::bind(&listener_config(ListenerProtocol::Mqtt, Some(tls)))
        .await
        .expect_err("no key in file");
    assert!(err.to_string().contains("no private key"), "{err}");

    let first = Listener::bind(&listener_config(ListenerProtocol::Mqtt, None))
        .await
        .expect("bind");
    let mut taken = listener_config(ListenerProtocol::Mqtt, None);
    taken.bind = first.local_addr();
    let err = Listener::bind(&taken).await.expect_err("port taken");
    assert!(matches!(err, TransportError::Bind { .. }), "{err}");
}

/// Opens a WebSocket client on `path`, offering `protocols` if any.
async fn ws_connect(
    addr: SocketAddr,
    path: &str,
    protocols: Option<&'static str>,
) -> Result<
    (
        tokio_tungstenite::WebSocketStream<TcpStream>,
        tokio_tungstenite::tungstenite::handshake::client::Response,
    ),
    WsError,
> {
    let mut request = format!("ws://{addr}{path}")
        .into_client_request()
        .expect("request");
    if let Some(protocols) = protocols {
        request
            .headers_mut()
            .insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(protocols));
    }
    let tcp = TcpStream::connect(addr).await.expect("connect");
    tokio_tungstenite::client_async(request, tcp).await
}

#[tokio::test]
async fn websocket_frames_become_one_byte_stream_both_ways() {
    let listener = Listener::bind(&listener_config(ListenerProtocol::Websocket, None))
        .await
        .expect("bind");
    let addr = listener.local_addr();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let mut accepted = listener.handshake(tcp).await.expect("handshake");
        let mut packet = [0; 11];
        accepted.stream.read_exact(&mut packet).await.expect("read");
        // Two writes, one flush: one message.
        accepted.stream.write_all(b"ab").await.expect("write");
        accepted.stream.write_all(b"cd").await.expect("write");
        accepted.stream.flush().await.expect("flush");
        let mut rest = Vec::new();
        accepted
            .stream
            .read_to_end(&mut rest)
            .await
            .expect("read to EOF");
        (packet, rest)
    });

    let (mut client, response) = ws_connect(addr, "/mqtt", Some("mqttv3.1, mqtt"))
        .await
        .expect("upgrade");
    assert_eq!(
        response.headers().get(SEC_WEBSOCKET_PROTOCOL),
        Some(&HeaderValue::from_static("mqtt"))
    );
    for message in [
        Message::binary(&b"hel"[..]),
        Message::Ping(b"p1".to_vec().into()),
        Message::binary(&b"lo wor"[..]),
        Message::binary(&b"ld"[..]),
    ] {
        client.send(message).await.expect("send");
    }

    let mut replies = Vec::new();
    while replies.len() < 2 {
        match client.next().await.expect("open").expect("message") {
            Message::Pong(payload) => replies.push(format!("pong {:?}", payload.as_ref())),
            Message::Binary(payload) => replies.push(format!("binary {:?}", payload.as_ref())),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        replies,
        [
            format!("pong {:?}", b"p1".as_slice()),
            format!("binary {:?}", b"abcd".as_slice())
        ]
    );

    client.close(None).await.expect("close");
    let (packet, rest) = server.await.expect("join");
    assert_eq!(&packet, b"hello world");
    assert!(rest.is_empty(), "a close frame reads as end of stream");
}

#[tokio::test]
async fn websocket_text_messages_are_a_protocol_error() {
    let listener = Listener::bind(&listener_config(ListenerProtocol::Websocket, None))
        .await
        .expect("bind");
    let addr = listener.local_addr();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let mut accepted = listener.handshake(tcp).await.expect("handshake");
        let mut buf = [0; 1];
        accepted.stream.read(&mut buf).await
    });
    let (mut client, _) = ws_connect(addr, "/mqtt", Some("mqtt"))
        .await
        .expect("upgrade");
    client.send(Message::text("hello")).await.expect("send");
    let err = server.await.expect("join").expect_err("text refused");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
}

/// The HTTP status a refused upgrade got, and the server's handshake error.
async fn ws_refusal(path: &str, protocols: Option<&'static str>) -> (u16, TransportError) {
    let listener = Listener::bind(&listener_config(ListenerProtocol::Websocket, None))
        .await
        .expect("bind");
    let addr = listener.local_addr();
    let server = accept_one(listener);
    let status = match ws_connect(addr, path, protocols).await {
        Err(WsError::Http(response)) => response.status().as_u16(),
        other => panic!("expected an HTTP refusal, got {other:?}"),
    };
    let err = server.await.expect("join").expect_err("server refuses");
    (status, err)
}

#[tokio::test]
async fn websocket_refuses_a_wrong_path() {
    let (status, err) = ws_refusal("/other", Some("mqtt")).await;
    assert_eq!(status, 404);
    assert!(err.to_string().contains("WebSocket"), "{err}");
}

#[tokio::test]
async fn websocket_requires_the_mqtt_subprotocol() {
    assert_eq!(ws_refusal("/mqtt", None).await.0, 400);
    assert_eq!(ws_refusal("/mqtt", Some("wamp, mqttx")).await.0, 400);
}

#[tokio::test]
async fn a_silent_client_times_out_in_the_handshake() {
    let listener = Listener::bind(&listener_config(ListenerProtocol::Websocket, None))
        .await
        .expect("bind");
    let addr = listener.local_addr();
    let _silent = TcpStream::connect(addr).await.expect("connect");
    let (tcp, _) = listener.accept().await.expect("accept");
    let limit = std::time::Duration::from_millis(100);
    let started = std::time::Instant::now();
    let err = listener
        .handshake_within(limit, tcp)
        .await
        .expect_err("times out");
    assert!(err.to_string().contains("no handshake within"), "{err}");
    assert!(started.elapsed() >= limit);
}

#[tokio::test]
async fn websocket_over_tls_carries_bytes_and_the_client_cn() {
    let pki = Pki::new();
    let listener = Listener::bind(&listener_config(
        ListenerProtocol::Websocket,
        Some(pki.tls_config(true)),
    ))
    .await
    .expect("bind");
    let addr = listener.local_addr();
    let server = echo_once(listener, 3);

    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("server name");
    let tls = pki
        .connector(Some(pki.client_identity()))
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    let mut request = format!("wss://localhost:{}/mqtt", addr.port())
        .into_client_request()
        .expect("request");
    request
        .headers_mut()
        .insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("mqtt"));
    let (mut client, _) = tokio_tungstenite::client_async(request, tls)
        .await
        .expect("upgrade");
    client
        .send(Message::binary(&b"\xc0\x00\xd0"[..]))
        .await
        .expect("send");
    let echoed = client.next().await.expect("open").expect("message");
    assert_eq!(echoed, Message::binary(&b"\xc0\x00\xd0"[..]));
    assert_eq!(server.await.expect("join").as_deref(), Some("device-42"));
}
