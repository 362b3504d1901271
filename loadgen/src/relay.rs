//! A TCP relay put between two linked brokers: it counts every byte that
//! crosses, both ways, and can delay each direction by a fixed time, as a
//! link between distant regions would (a pure delay: no bandwidth limit).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// A running relay to one target, on a thread of its own (so it neither
/// slows the load generator's clients nor is slowed by them); dropping it
/// stops the thread and every connection it carries.
#[derive(Debug)]
pub struct Relay {
    addr: SocketAddr,
    bytes: Arc<AtomicU64>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Relay {
    /// Listens on a free loopback port and relays every connection to
    /// `target`, each direction delayed by `one_way`.
    pub async fn start(target: SocketAddr, one_way: Duration) -> std::io::Result<Relay> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let bytes = Arc::new(AtomicU64::new(0));
        let counted = bytes.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("relay".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = TcpListener::from_std(listener) else {
                        return;
                    };
                    tokio::select! {
                        () = accept_loop(listener, target, one_way, counted) => {}
                        _ = stopped => {}
                    }
                });
            })?;
        Ok(Relay {
            addr,
            bytes,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Where to connect instead of the target.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Bytes relayed so far, both directions together.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Accepts connections and relays each to `target`.
async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    one_way: Duration,
    counted: Arc<AtomicU64>,
) {
    while let Ok((inbound, _)) = listener.accept().await {
        let counted = counted.clone();
        tokio::spawn(async move {
            let Ok(outbound) = TcpStream::connect(target).await else {
                return;
            };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let (in_read, in_write) = inbound.into_split();
            let (out_read, out_write) = outbound.into_split();
            tokio::join!(
                pipe(in_read, out_write, one_way, counted.clone()),
                pipe(out_read, in_write, one_way, counted),
            );
        });
    }
}

/// Copies `from` to `to`, each chunk written `delay` after it was read.
async fn pipe(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    delay: Duration,
    counted: Arc<AtomicU64>,
) {
    if delay.is_zero() {
        // Straight through: no timer (tokio's has a millisecond grain) and
        // no copy, so the relay costs the link as little as it can.
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    counted.fetch_add(n as u64, Ordering::Relaxed);
                    if to.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown().await;
        return;
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Bytes)>();
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    counted.fetch_add(n as u64, Ordering::Relaxed);
                    if tx
                        .send((Instant::now() + delay, Bytes::copy_from_slice(&buf[..n])))
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server for one connection.
    async fn echo() -> SocketAddr {
        let echo = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let target = echo.local_addr().expect("addr");
        tokio::spawn(async move {
            let (mut stream, _) = echo.accept().await.expect("accept");
            let (mut r, mut w) = stream.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
        });
        target
    }

    #[tokio::test]
    async fn without_delay_bytes_pass_straight_through_and_are_counted() {
        let relay = Relay::start(echo().await, Duration::ZERO)
            .await
            .expect("relay");
        let mut client = TcpStream::connect(relay.addr()).await.expect("connect");
        client.write_all(b"abc").await.expect("write");
        let mut back = [0u8; 3];
        client.read_exact(&mut back).await.expect("read");
        assert_eq!((&back, relay.bytes()), (b"abc", 6));
    }

    #[tokio::test]
    async fn bytes_are_relayed_counted_and_delayed() {
        let relay = Relay::start(echo().await, Duration::from_millis(30))
            .await
            .expect("relay");
        let mut client = TcpStream::connect(relay.addr()).await.expect("connect");
        let started = Instant::now();
        client.write_all(b"hello").await.expect("write");
        let mut back = [0u8; 5];
        client.read_exact(&mut back).await.expect("read");
        assert_eq!(&back, b"hello");
        assert!(
            started.elapsed() >= Duration::from_millis(60),
            "both ways delayed"
        );
        assert_eq!(relay.bytes(), 10);
    }
}
