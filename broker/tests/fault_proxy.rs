//! The fault-injection proxy of the test support crate, against a plain echo
//! server: it must carry bytes faithfully, and a cut must look like a network
//! partition (live connections closed, new ones dropped) until healed.

mod support;

use std::io::ErrorKind;
use std::net::SocketAddr;

use support::proxy::FaultProxy;
use support::within;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An echo server on a free loopback port; it runs until the test's runtime ends.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
    let addr = listener.local_addr().expect("echo address");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut reader, mut writer) = stream.split();
                let _ = tokio::io::copy(&mut reader, &mut writer).await;
            });
        }
    });
    addr
}

/// Sends `message` and reads back as many bytes.
async fn round_trip(stream: &mut TcpStream, message: &[u8]) -> Vec<u8> {
    stream.write_all(message).await.expect("write");
    let mut echoed = vec![0; message.len()];
    within("the echo", stream.read_exact(&mut echoed))
        .await
        .expect("read the echo");
    echoed
}

/// Whether the peer has closed `stream`: end of file or a reset, never data.
async fn is_closed(stream: &mut TcpStream) -> bool {
    let mut buf = [0; 16];
    match within("the connection to close", stream.read(&mut buf)).await {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => matches!(
            e.kind(),
            ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
        ),
    }
}

#[tokio::test]
async fn bytes_pass_both_ways_and_connections_are_counted() {
    let proxy = FaultProxy::start(echo_server().await).await;
    assert_eq!(proxy.connections(), 0);
    let mut first = TcpStream::connect(proxy.addr()).await.expect("connect");
    let mut second = TcpStream::connect(proxy.addr()).await.expect("connect");
    let large: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(round_trip(&mut first, &large).await, large);
    assert_eq!(round_trip(&mut second, b"hello").await, b"hello");
    assert_eq!(proxy.connections(), 2);
}

#[tokio::test]
async fn a_cut_closes_live_connections() {
    let proxy = FaultProxy::start(echo_server().await).await;
    let mut stream = TcpStream::connect(proxy.addr()).await.expect("connect");
    assert_eq!(round_trip(&mut stream, b"before").await, b"before");
    proxy.cut().await;
    assert!(is_closed(&mut stream).await, "the cut left the link open");
}

#[tokio::test]
async fn connections_are_refused_while_cut_and_carried_again_after_healing() {
    let proxy = FaultProxy::start(echo_server().await).await;
    proxy.cut().await;
    let mut refused = TcpStream::connect(proxy.addr())
        .await
        .expect("the proxy accepts, then closes");
    // The write may land before the close; the echo must never come back.
    let _ = refused.write_all(b"lost").await;
    assert!(is_closed(&mut refused).await, "a connection passed the cut");
    assert_eq!(proxy.connections(), 0);

    proxy.heal();
    let mut healed = TcpStream::connect(proxy.addr()).await.expect("connect");
    assert_eq!(round_trip(&mut healed, b"after").await, b"after");
    assert_eq!(proxy.connections(), 1);
}
