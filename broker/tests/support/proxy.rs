//! A loopback TCP proxy that a test puts between two nodes to cut and heal the
//! link between them on demand, without killing either process.
//!
//! Cutting closes every connection the proxy carries and, until healed, accepts
//! new ones only to close them at once: to both ends this looks like a network
//! partition that resets connections, which is what the mesh must survive.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A running proxy to one target; dropping it closes everything it carries.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    /// `true` while cut. Dropping it (with the proxy) ends every carried connection.
    cut: watch::Sender<bool>,
    /// Connections currently carried, so [`FaultProxy::cut`] can wait for all to close.
    live: watch::Receiver<usize>,
    carried: Arc<AtomicUsize>,
    accept: JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards every connection to `target`.
    pub async fn start(target: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port for the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (cut, cut_rx) = watch::channel(false);
        let (live_tx, live) = watch::channel(0);
        let carried = Arc::new(AtomicUsize::new(0));
        let accept = tokio::spawn(accept_loop(
            listener,
            target,
            cut_rx,
            Arc::new(live_tx),
            Arc::clone(&carried),
        ));
        FaultProxy {
            addr,
            cut,
            live,
            carried,
            accept,
        }
    }

    /// Where to connect instead of the target.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every carried connection and refuses new ones until [`heal`](Self::heal).
    /// Returns once every connection carried before the cut is closed.
    pub async fn cut(&self) {
        self.cut.send_replace(true);
        let mut live = self.live.clone();
        // The sender lives in the accept task, which only ends when the proxy is dropped.
        let _ = live.wait_for(|n| *n == 0).await;
    }

    /// Lets new connections through again.
    pub fn heal(&self) {
        self.cut.send_replace(false);
    }

    /// Connections carried to the target since the proxy started (refused ones excluded).
    pub fn connections(&self) -> usize {
        self.carried.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Accepts until aborted: each connection is either closed at once (while cut)
/// or carried to `target` by its own task.
async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    cut: watch::Receiver<bool>,
    live: Arc<watch::Sender<usize>>,
    carried: Arc<AtomicUsize>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            // Accept errors are transient (an aborted handshake, a full fd table):
            // let other tasks run, then try again.
            tokio::task::yield_now().await;
            continue;
        };
        if *cut.borrow() {
            drop(client);
            continue;
        }
        live.send_modify(|n| *n += 1);
        let guard = LiveGuard(Arc::clone(&live));
        tokio::spawn(carry(
            client,
            target,
            cut.clone(),
            Arc::clone(&carried),
            guard,
        ));
    }
}

/// Decrements the live count when a carried connection's task ends, however it ends.
struct LiveGuard(Arc<watch::Sender<usize>>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

/// Copies bytes both ways until either side closes or the proxy is cut (or dropped).
async fn carry(
    mut client: TcpStream,
    target: SocketAddr,
    mut cut: watch::Receiver<bool>,
    carried: Arc<AtomicUsize>,
    _live: LiveGuard,
) {
    let Ok(mut upstream) = TcpStream::connect(target).await else {
        return;
    };
    // Nagle would add delay that the nodes behind the proxy never see otherwise.
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    carried.fetch_add(1, Ordering::SeqCst);
    tokio::select! {
        // An error here means the proxy was dropped: close as for a cut.
        _ = cut.wait_for(|cut| *cut) => {}
        _ = copy_bidirectional(&mut client, &mut upstream) => {}
    }
}
