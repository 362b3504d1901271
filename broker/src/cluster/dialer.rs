//! This node's connection to one peer address: dial, prove the secret, then
//! send the peer's op stream and heartbeats while reading its acknowledgements,
//! and redial with capped exponential backoff whenever the connection ends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

use super::handshake::Claim;
use super::host::Host;
use super::peer::Peer;
use super::stream::{self, read_frame, read_handshake_frame, PeerError, PeerTls, Reader, Writer};
use super::wire::{self, Frame, Op, PROTOCOL_VERSION};
use super::MeshHost;
use crate::peering::{Backoff, Resume};

/// The first pause between attempts; it doubles up to the configured cap.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);

/// What a dial found at the address.
enum Reached {
    /// This node itself (its own address is in the peer list): stop dialling.
    Myself,
    /// A peer; the connection ran until it ended.
    Peer,
}

/// Dials `address` until the node shuts down (or the caller aborts the task,
/// when discovery no longer lists it).
pub(super) async fn dial_loop<H: Host>(
    host: MeshHost<H>,
    address: SocketAddr,
    tls: Option<Arc<PeerTls>>,
) {
    let mut shutdown = host.shutdown_signal();
    let max_backoff = Duration::from_millis(host.mesh().config().max_backoff_ms);
    let mut backoff = Backoff::new(FIRST_BACKOFF, max_backoff);
    loop {
        let started = Instant::now();
        let outcome = tokio::select! {
            outcome = connect(&host, address, tls.as_ref()) => outcome,
            _ = shutdown.recv() => return,
        };
        match outcome {
            Ok(Reached::Myself) => {
                tracing::debug!(%address, "this address is this node; not dialling it");
                return;
            }
            Ok(Reached::Peer) => {}
            Err(PeerError::Refused(reason)) => {
                tracing::warn!(%address, %reason, "peer refused this node's connection");
            }
            Err(err) if err.is_protocol_fault() => {
                tracing::warn!(%address, error = %err, "peer broke the cluster protocol; redialling");
            }
            Err(err) => tracing::debug!(%address, error = %err, "peer connection ended"),
        }
        // A connection that lived a while was healthy: start backing off afresh.
        if started.elapsed() > host.mesh().peer_timeout() {
            backoff.reset();
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_pause()) => {}
            _ = shutdown.recv() => return,
        }
    }
}

/// One connection: handshake, then serve it until it ends.
async fn connect<H: Host>(
    host: &MeshHost<H>,
    address: SocketAddr,
    tls: Option<&Arc<PeerTls>>,
) -> Result<Reached, PeerError> {
    let mesh = host.mesh();
    let deadline = mesh.peer_timeout();
    let (mut reader, mut writer) = timeout(deadline, async {
        stream::dialled(TcpStream::connect(address).await?, tls).await
    })
    .await
    .map_err(|_| PeerError::Timeout)??;
    let mut buf = BytesMut::with_capacity(4096);

    let Frame::Challenge { version, nonce } =
        read_handshake_frame(&mut reader, &mut buf, deadline).await?
    else {
        return Err(PeerError::Unexpected("expected a challenge"));
    };
    if version != PROTOCOL_VERSION {
        return Err(PeerError::Version {
            theirs: version,
            ours: PROTOCOL_VERSION,
        });
    }
    let me = mesh.identity();
    let claim = Claim {
        cluster: &me.cluster,
        node: &me.node,
        incarnation: me.incarnation,
    };
    let hello = Frame::Hello {
        version: PROTOCOL_VERSION,
        cluster: me.cluster.clone(),
        node: me.node.clone(),
        incarnation: me.incarnation,
        proof: mesh.secret().prove(&nonce, &claim),
    };
    writer.write_all(&wire::encode_to_bytes(&hello)?).await?;
    let (name, incarnation, resume_after) =
        match read_handshake_frame(&mut reader, &mut buf, deadline).await? {
            Frame::Welcome {
                node,
                incarnation,
                resume_after,
            } => (node, incarnation, resume_after),
            Frame::Refused { reason } => return Err(PeerError::Refused(reason)),
            _ => return Err(PeerError::Unexpected("expected welcome or refusal")),
        };
    if name == me.node && incarnation == me.incarnation {
        return Ok(Reached::Myself);
    }

    let peer = mesh.peer(&name);
    if !peer.claim_outbound(address, incarnation) {
        // Already reached through another address (listed twice, or a pod
        // that moved): one connection per peer keeps the stream in order.
        return Err(PeerError::Refused(format!(
            "{name} is already connected through another address"
        )));
    }
    let _up = OutboundUp(peer.clone());
    let resume = peer.outbox().resume(resume_after);
    if let Resume::Resync { lost } = resume {
        mesh.metrics().forward_lost(lost);
        mesh.resync_routes(&peer);
        for (message, version) in host.retained_for_peer() {
            peer.send(Op::Retained { message, version }, mesh.metrics());
        }
        for (link, op) in host.links_for_peer() {
            peer.send(Op::Link { link, op }, mesh.metrics());
        }
    }
    tracing::info!(peer = %name, %address, ?resume, "connected to peer");
    let result = tokio::select! {
        result = write_loop(host, &peer, &mut writer) => result,
        result = read_loop(&peer, &mut reader, buf, deadline) => result,
    };
    tracing::info!(peer = %name, %address, "connection to peer lost");
    result.map(|()| Reached::Peer)
}

/// Marks the peer's outbound connection down however the connection ends,
/// the dialer task being aborted included.
struct OutboundUp(Arc<Peer>);

impl Drop for OutboundUp {
    fn drop(&mut self) {
        self.0.outbound_down();
    }
}

/// Sends whatever the peer's queues hold as it arrives, in batches, and a
/// heartbeat when idle.
async fn write_loop<H: Host>(
    host: &MeshHost<H>,
    peer: &Arc<Peer>,
    writer: &mut Writer,
) -> Result<(), PeerError> {
    let heartbeat = host.mesh().heartbeat();
    let ping = wire::encode_to_bytes(&Frame::Ping)?;
    let mut batch = Vec::with_capacity(64 * 1024);
    loop {
        batch.clear();
        if !peer.write_unsent(&mut batch) {
            tokio::select! {
                _ = peer.wake.notified() => continue,
                _ = tokio::time::sleep(heartbeat) => batch.extend_from_slice(&ping),
            }
        }
        writer.write_all(&batch).await?;
    }
}

/// Applies what the peer sends back: acknowledgements, answers, heartbeats.
async fn read_loop(
    peer: &Arc<Peer>,
    reader: &mut Reader,
    mut buf: BytesMut,
    deadline: Duration,
) -> Result<(), PeerError> {
    loop {
        match read_frame(reader, &mut buf, deadline).await? {
            Frame::Ack { seq } => peer.acknowledged(seq),
            Frame::Pong => {}
            Frame::SessionTaken {
                request,
                session,
                clock,
                refused,
            } => peer.answer(request, (!refused).then_some(session), clock),
            _ => {
                return Err(PeerError::Unexpected(
                    "only acks, pongs and answers flow back",
                ))
            }
        }
    }
}
