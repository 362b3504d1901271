//! Peers' connections to this node: challenge them, then apply the op stream
//! each one sends (routes, forwarded messages), acknowledge it, and answer
//! its requests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use super::dialer::{read_frame, DialError};
use super::handshake::{self, Claim};
use super::host::Host;
use super::peer::Peer;
use super::wire::{self, Frame, Op, PROTOCOL_VERSION};

/// Accepts peer connections until shutdown.
pub(super) async fn accept_loop<H: Host>(host: Arc<H>, listener: TcpListener) {
    let mut shutdown = host.shutdown_signal();
    loop {
        let (stream, address) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "accepting a peer connection failed");
                    continue;
                }
            },
            _ = crate::server::stopped(&mut shutdown) => return,
        };
        let host = host.clone();
        tokio::spawn(async move {
            if let Err(err) = serve(&host, stream, address).await {
                tracing::debug!(%address, error = %err, "peer connection ended");
            }
        });
    }
}

/// Why a peer's hello is refused; the text goes to the peer and the log.
fn refusal<H: Host>(host: &H, version: u16, claim: &Claim<'_>, proof_ok: bool) -> Option<String> {
    let me = host.mesh().identity();
    if version != PROTOCOL_VERSION {
        return Some(format!(
            "protocol version {version} is not supported (this node speaks {PROTOCOL_VERSION})"
        ));
    }
    if claim.cluster != me.cluster {
        return Some(format!(
            "node {} belongs to cluster {:?}, this is cluster {:?}",
            claim.node, claim.cluster, me.cluster
        ));
    }
    if !proof_ok {
        return Some(format!(
            "node {} did not prove the cluster secret",
            claim.node
        ));
    }
    if claim.node == me.node && claim.incarnation != me.incarnation {
        return Some(format!("another node is already called {}", me.node));
    }
    None
}

async fn serve<H: Host>(
    host: &Arc<H>,
    stream: TcpStream,
    address: SocketAddr,
) -> Result<(), DialError> {
    let mesh = host.mesh();
    let deadline = mesh.peer_timeout();
    stream.set_nodelay(true)?;
    let (mut reader, mut writer) = stream.into_split();
    let mut buf = BytesMut::with_capacity(4096);
    let nonce = handshake::challenge();
    let challenge = Frame::Challenge {
        version: PROTOCOL_VERSION,
        nonce,
    };
    writer
        .write_all(&wire::encode_to_bytes(&challenge)?)
        .await?;
    let Frame::Hello {
        version,
        cluster,
        node,
        incarnation,
        proof,
    } = read_frame(&mut reader, &mut buf, deadline).await?
    else {
        return Err(DialError::Unexpected("expected a hello"));
    };
    let claim = Claim {
        cluster: &cluster,
        node: &node,
        incarnation,
    };
    let proof_ok = mesh.secret().verify(&nonce, &claim, &proof);
    if let Some(reason) = refusal(host.as_ref(), version, &claim, proof_ok) {
        mesh.metrics().handshake_refused();
        tracing::warn!(%address, node = %node, %reason, "refused a peer connection");
        let refused = Frame::Refused { reason };
        writer.write_all(&wire::encode_to_bytes(&refused)?).await?;
        return Ok(());
    }
    let me = mesh.identity();
    if node == me.node {
        // Our own dial: say so, and the dialer stops.
        let welcome = Frame::Welcome {
            node: me.node.clone(),
            incarnation: me.incarnation,
            resume_after: None,
        };
        writer.write_all(&wire::encode_to_bytes(&welcome)?).await?;
        return Ok(());
    }

    let peer = mesh.peer(&node);
    let resume_after = open_stream(host.as_ref(), &peer, incarnation);
    let welcome = Frame::Welcome {
        node: me.node.clone(),
        incarnation: me.incarnation,
        resume_after,
    };
    let result = async {
        writer.write_all(&wire::encode_to_bytes(&welcome)?).await?;
        tracing::info!(peer = %node, %address, ?resume_after, "peer connected");
        apply_stream(host, &peer, incarnation, &mut reader, &mut writer, buf).await
    }
    .await;
    let mut inbound = peer.inbound();
    inbound.connections -= 1;
    if inbound.connections == 0 {
        inbound.lost_at = Some(Instant::now());
    }
    drop(inbound);
    tracing::info!(peer = %node, %address, "peer disconnected");
    result
}

/// Counts a new connection from `peer` and says where its stream resumes:
/// `None` when it is new, restarted, or was declared dead meanwhile.
fn open_stream<H: Host>(host: &H, peer: &Arc<Peer>, incarnation: u64) -> Option<u64> {
    let mut inbound = peer.inbound();
    inbound.connections += 1;
    inbound.lost_at = None;
    if inbound.incarnation == Some(incarnation) {
        return Some(inbound.applied);
    }
    // A new incarnation starts from scratch: what the old one said is void.
    for filter in std::mem::take(&mut inbound.routes) {
        host.remove_peer_route(peer, &filter);
    }
    inbound.incarnation = Some(incarnation);
    inbound.applied = 0;
    None
}

/// Applies the peer's ops in order, acknowledging each batch read.
async fn apply_stream<H: Host>(
    host: &Arc<H>,
    peer: &Arc<Peer>,
    incarnation: u64,
    reader: &mut tokio::net::tcp::OwnedReadHalf,
    writer: &mut tokio::net::tcp::OwnedWriteHalf,
    mut buf: BytesMut,
) -> Result<(), DialError> {
    let deadline = host.mesh().peer_timeout();
    let mut replies = BytesMut::new();
    loop {
        let frame = read_frame(reader, &mut buf, deadline).await?;
        let mut applied = None;
        handle(host, peer, incarnation, frame, &mut applied, &mut replies)?;
        // Everything already read is handled before one acknowledgement.
        while let Some(frame) = wire::decode(&mut buf)? {
            handle(host, peer, incarnation, frame, &mut applied, &mut replies)?;
        }
        if let Some(seq) = applied {
            wire::encode(&Frame::Ack { seq }, &mut replies)?;
        }
        if !replies.is_empty() {
            writer.write_all(&replies).await?;
            replies.clear();
        }
    }
}

fn handle<H: Host>(
    host: &Arc<H>,
    peer: &Arc<Peer>,
    incarnation: u64,
    frame: Frame,
    applied: &mut Option<u64>,
    replies: &mut BytesMut,
) -> Result<(), DialError> {
    match frame {
        Frame::Op { seq, op } => {
            let mut inbound = peer.inbound();
            if inbound.incarnation != Some(incarnation) {
                return Err(DialError::Unexpected("a stale incarnation's connection"));
            }
            if seq > inbound.applied {
                apply(host.as_ref(), peer, &mut inbound.routes, op);
                inbound.applied = seq;
            }
            *applied = Some(inbound.applied);
        }
        Frame::Ping => wire::encode(&Frame::Pong, replies)?,
        Frame::TakeSession {
            request,
            client_id,
            clean_start,
        } => {
            let session = host.surrender_session(&client_id, clean_start);
            wire::encode(&Frame::SessionTaken { request, session }, replies)?;
        }
        _ => {
            return Err(DialError::Unexpected(
                "a dialer sends ops, pings and requests",
            ))
        }
    }
    Ok(())
}

/// One op of a peer's stream (the peer's inbound lock is held by the caller,
/// so route changes and their bookkeeping stay together).
fn apply<H: Host>(
    host: &H,
    peer: &Arc<Peer>,
    routes: &mut std::collections::HashSet<String>,
    op: Op,
) {
    match op {
        Op::Reset => {
            for filter in routes.drain() {
                host.remove_peer_route(peer, &filter);
            }
        }
        Op::RouteAdd(filter) => {
            if routes.insert(filter.clone()) {
                host.add_peer_route(peer, &filter);
            }
        }
        Op::RouteRemove(filter) => {
            if routes.remove(&filter) {
                host.remove_peer_route(peer, &filter);
            }
        }
        Op::Publish(forward) => {
            host.mesh()
                .metrics()
                .received(forward.message.payload.len());
            host.deliver_forwarded(forward);
        }
        Op::Retained(message) => host.retain_if_absent(message),
    }
}

/// Declares dead the peers that had no connection to this node for a peer
/// timeout: their routes go, and so does what was queued for them once our
/// own connection to them is down as long.
pub(super) async fn sweep_loop<H: Host>(host: Arc<H>) {
    let mut shutdown = host.shutdown_signal();
    let mesh = host.mesh();
    let timeout = mesh.peer_timeout();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(mesh.heartbeat()) => {}
            _ = crate::server::stopped(&mut shutdown) => return,
        }
        let now = Instant::now();
        for peer in mesh.peers() {
            let silent_in = {
                let mut inbound = peer.inbound();
                let silent = inbound
                    .lost_at
                    .is_some_and(|at| now.duration_since(at) >= timeout);
                if silent && inbound.incarnation.is_some() {
                    for filter in std::mem::take(&mut inbound.routes) {
                        host.remove_peer_route(&peer, &filter);
                    }
                    inbound.incarnation = None;
                    inbound.applied = 0;
                    mesh.metrics().peer_declared_dead();
                    tracing::warn!(peer = %peer.name, "peer declared dead: no connection for the peer timeout; its routes are removed");
                }
                silent || (inbound.connections == 0 && inbound.lost_at.is_none())
            };
            let silent_out = peer
                .outbound_lost_at()
                .is_some_and(|at| now.duration_since(at) >= timeout);
            if silent_in && silent_out {
                mesh.metrics().forward_lost(peer.outbox().abandon());
                mesh.remove_peer(&peer);
            }
        }
    }
}
