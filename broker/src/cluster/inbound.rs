//! Peers' connections to this node: challenge them, then apply the op stream
//! each one sends (routes, forwarded messages), acknowledge it, and answer
//! its requests.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use parking_lot::MutexGuard;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use super::directory::ClaimOutcome;
use super::handshake::{self, Claim};
use super::host::Host;
use super::peer::{InboundState, Peer};
use super::stream::{self, read_frame, read_handshake_frame, PeerError, PeerTls, Reader, Writer};
use super::wire::{self, Forward, Frame, Op, PROTOCOL_VERSION};
use super::MeshHost;
use crate::flow::Pushback;
use crate::peering::io::read_available;

/// Accepts peer connections until shutdown.
pub(super) async fn accept_loop<H: Host>(
    host: MeshHost<H>,
    listener: TcpListener,
    tls: Option<Arc<PeerTls>>,
) {
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
            _ = shutdown.recv() => return,
        };
        let host = host.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match serve(&host, stream, address, tls.as_ref()).await {
                Err(err) if err.is_protocol_fault() => {
                    tracing::warn!(%address, error = %err, "closed a peer connection that broke the cluster protocol");
                }
                Err(err) => tracing::debug!(%address, error = %err, "peer connection ended"),
                Ok(()) => {}
            }
        });
    }
}

/// Why a peer's hello is refused; the text goes to the peer and the log.
fn refusal<H: Host>(
    host: &MeshHost<H>,
    version: u16,
    claim: &Claim<'_>,
    proof_ok: bool,
) -> Option<String> {
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
    host: &MeshHost<H>,
    stream: TcpStream,
    address: SocketAddr,
    tls: Option<&Arc<PeerTls>>,
) -> Result<(), PeerError> {
    let mesh = host.mesh();
    let deadline = mesh.peer_timeout();
    let accepted = tokio::time::timeout(deadline, stream::accepted(stream, tls))
        .await
        .map_err(|_| PeerError::Timeout)?;
    let (mut reader, mut writer) = match accepted {
        Ok(halves) => halves,
        Err(err) => {
            // A failed TLS handshake: no certificate, or one the cluster CA did not sign.
            mesh.metrics().handshake_refused();
            tracing::warn!(%address, error = %err, "refused a peer connection at the TLS handshake");
            return Err(err.into());
        }
    };
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
    } = read_handshake_frame(&mut reader, &mut buf, deadline).await?
    else {
        return Err(PeerError::Unexpected("expected a hello"));
    };
    let claim = Claim {
        cluster: &cluster,
        node: &node,
        incarnation,
    };
    let proof_ok = mesh.secret().verify(&nonce, &claim, &proof);
    if let Some(reason) = refusal(host, version, &claim, proof_ok) {
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
    let resume_after = open_stream(host, &peer, incarnation);
    let welcome = Frame::Welcome {
        node: me.node.clone(),
        incarnation: me.incarnation,
        resume_after,
    };
    let mut shutdown = host.shutdown_signal();
    let result = async {
        writer.write_all(&wire::encode_to_bytes(&welcome)?).await?;
        tracing::info!(peer = %node, %address, ?resume_after, "peer connected");
        tokio::select! {
            result = apply_stream(host, &peer, incarnation, &mut reader, &mut writer, buf) => result,
            // A node that stops stops acknowledging too: its peers must see
            // it gone, not have their messages applied by a stopped node.
            _ = shutdown.recv() => Ok(()),
        }
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
fn open_stream<H: Host>(host: &MeshHost<H>, peer: &Arc<Peer>, incarnation: u64) -> Option<u64> {
    let mut inbound = peer.inbound();
    inbound.connections += 1;
    inbound.lost_at = None;
    if inbound.incarnation == Some(incarnation) {
        return Some(inbound.applied);
    }
    // A new incarnation starts from scratch: what the old one said is void.
    forget_routes(host, peer, &mut inbound.routes);
    inbound.incarnation = Some(incarnation);
    inbound.applied = 0;
    None
}

/// Ops applied between two acknowledgements, at most, while the peer keeps
/// sending: acknowledging in bulk saves a write per batch on both ends.
const ACK_EVERY: u64 = 256;

/// Forwarded messages in a batch from which delivery is spread over lanes.
const MIN_PARALLEL: usize = 16;

/// What handling a run of frames left to send back and to do.
#[derive(Debug, Default)]
struct Batch {
    /// The last op applied, to acknowledge.
    applied: Option<u64>,
    /// Forwarded messages read but not delivered yet, in stream order, and
    /// the sequence number of the last one: they are delivered together,
    /// spread over lanes, before anything else is applied or acknowledged.
    publishes: Vec<Forward>,
    publishes_upto: Option<u64>,
    /// What local subscribers with full queues ask of the stream.
    pushback: Pushback,
    replies: BytesMut,
}

/// Applies the peer's ops in order, acknowledging them in bulk: after
/// everything already received is handled, or every [`ACK_EVERY`] ops.
async fn apply_stream<H: Host>(
    host: &MeshHost<H>,
    peer: &Arc<Peer>,
    incarnation: u64,
    reader: &mut Reader,
    writer: &mut Writer,
    mut buf: BytesMut,
) -> Result<(), PeerError> {
    let deadline = host.mesh().peer_timeout();
    let mut batch = Batch::default();
    loop {
        let frame = read_frame(reader, &mut buf, deadline).await?;
        next_frame(host, peer, incarnation, frame, &mut batch).await?;
        let mut handled = 1;
        loop {
            while let Some(frame) = wire::decode(&mut buf, wire::MAX_FRAME)? {
                next_frame(host, peer, incarnation, frame, &mut batch).await?;
                handled += 1;
            }
            if handled >= ACK_EVERY || !read_available(reader, &mut buf)? {
                break;
            }
        }
        deliver_publishes(host, peer, incarnation, &mut batch).await;
        if let Some(seq) = batch.applied.take() {
            wire::encode(&Frame::Ack { seq }, &mut batch.replies)?;
        }
        writer.write_all(&batch.replies).await?;
        batch.replies.clear();
        // A subscriber here is slower than the peer's publishers: read no
        // more until it has room, as a local publisher would be held. The
        // peer's queue fills up meanwhile, and a backlog there holds its
        // publishers in turn.
        let pushback = std::mem::take(&mut batch.pushback);
        if let Some(release) = pushback.hold_reader(host.backpressure_wait()).await {
            host.held(release);
        }
    }
}

/// Handles one frame: a forwarded message joins the batch's deliveries;
/// anything else is applied in stream order, once the messages before it
/// are delivered (a takeover must find them in the session it hands over).
async fn next_frame<H: Host>(
    host: &MeshHost<H>,
    peer: &Arc<Peer>,
    incarnation: u64,
    frame: Frame,
    batch: &mut Batch,
) -> Result<(), PeerError> {
    match frame {
        Frame::Op {
            seq,
            op: Op::Publish(forward),
        } => {
            let inbound = current_stream(peer, incarnation)?;
            if seq > inbound.applied.max(batch.publishes_upto.unwrap_or(0)) {
                batch.publishes.push(forward);
                batch.publishes_upto = Some(seq);
            }
            batch.applied = Some(seq.max(inbound.applied));
            Ok(())
        }
        Frame::Ping => handle(host, peer, incarnation, Frame::Ping, batch),
        other => {
            deliver_publishes(host, peer, incarnation, batch).await;
            handle(host, peer, incarnation, other, batch)
        }
    }
}

/// Delivers the batch's forwarded messages, spread over the delivery lanes by their
/// publisher's lane (each lane in stream order), then records them applied.
async fn deliver_publishes<H: Host>(
    host: &MeshHost<H>,
    peer: &Arc<Peer>,
    incarnation: u64,
    batch: &mut Batch,
) {
    let publishes = std::mem::take(&mut batch.publishes);
    let Some(upto) = batch.publishes_upto.take() else {
        return;
    };
    let lanes = host.mesh().delivery_lanes();
    let pushback = if lanes == 1 || publishes.len() < MIN_PARALLEL {
        deliver_lane(host, publishes)
    } else {
        let mut split: Vec<Vec<Forward>> = (0..lanes).map(|_| Vec::new()).collect();
        for forward in publishes {
            let lane = usize::try_from(forward.lane % lanes as u64).unwrap_or(0);
            split[lane].push(forward);
        }
        // Lane 0 here, the others in tasks of their own.
        let first = std::mem::take(&mut split[0]);
        let others: Vec<_> = split
            .into_iter()
            .filter(|lane| !lane.is_empty())
            .map(|lane| {
                let host = host.clone();
                tokio::spawn(async move { deliver_lane(&host, lane) })
            })
            .collect();
        let mut pushback = deliver_lane(host, first);
        for joined in futures::future::join_all(others).await {
            match joined {
                Ok(lane) => pushback.merge(lane),
                Err(err) => {
                    tracing::error!(peer = %peer.name, error = %err, "a delivery lane failed")
                }
            }
        }
        pushback
    };
    batch.pushback.merge(pushback);
    let mut inbound = peer.inbound();
    if inbound.incarnation == Some(incarnation) && upto > inbound.applied {
        inbound.applied = upto;
    }
}

/// The peer's inbound state, if this connection still carries the stream of
/// its current incarnation (a newer one ends it).
fn current_stream(
    peer: &Peer,
    incarnation: u64,
) -> Result<MutexGuard<'_, InboundState>, PeerError> {
    let inbound = peer.inbound();
    if inbound.incarnation != Some(incarnation) {
        return Err(PeerError::Unexpected("a stale incarnation's connection"));
    }
    Ok(inbound)
}

/// Delivers one lane's forwarded messages, in order.
fn deliver_lane<H: Host>(host: &MeshHost<H>, lane: Vec<Forward>) -> Pushback {
    let mut pushback = Pushback::default();
    for forward in lane {
        host.mesh()
            .metrics()
            .received(forward.message.payload.len());
        pushback.merge(host.deliver_forwarded(forward));
    }
    pushback
}

/// Applies a frame other than a forwarded message.
fn handle<H: Host>(
    host: &MeshHost<H>,
    peer: &Arc<Peer>,
    incarnation: u64,
    frame: Frame,
    batch: &mut Batch,
) -> Result<(), PeerError> {
    match frame {
        Frame::Op { seq, op } => {
            let mut inbound = current_stream(peer, incarnation)?;
            if seq > inbound.applied {
                let pushback = apply(host, peer, &mut inbound.routes, op);
                batch.pushback.merge(pushback);
                inbound.applied = seq;
            }
            batch.applied = Some(inbound.applied);
        }
        Frame::Ping => wire::encode(&Frame::Pong, &mut batch.replies)?,
        Frame::TakeSession {
            request,
            client_id,
            clean_start,
            clock,
            owner,
        } => {
            let mesh = host.mesh();
            mesh.observe(clock);
            let surrendered = host.surrender_session(&client_id, clean_start, &owner);
            let clock = mesh.clock();
            wire::encode(
                &Frame::SessionTaken {
                    request,
                    refused: surrendered.is_err(),
                    session: surrendered.unwrap_or_default(),
                    clock,
                },
                &mut batch.replies,
            )?;
        }
        _ => {
            return Err(PeerError::Unexpected(
                "a dialer sends ops, pings and requests",
            ))
        }
    }
    Ok(())
}

/// One op of a peer's stream (the peer's inbound lock is held by the caller,
/// so route changes and their bookkeeping stay together). Returns what local
/// subscribers with full queues ask of the stream.
fn apply<H: Host>(
    host: &MeshHost<H>,
    peer: &Arc<Peer>,
    routes: &mut HashSet<String>,
    op: Op,
) -> Pushback {
    match op {
        Op::Reset => forget_routes(host, peer, routes),
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
            return deliver_lane(host, vec![forward]);
        }
        Op::Retained { message, version } => host.retain_versioned(message, version),
        Op::Claim { client_id, stamp } => {
            let mesh = host.mesh();
            let outcome = mesh.peer_claims(peer, &client_id, stamp);
            if let Some(link) = super::link_of(&client_id) {
                if outcome != ClaimOutcome::Stale {
                    host.link_moved(link);
                }
            } else if outcome == ClaimOutcome::Supersedes {
                mesh.metrics().session_superseded();
                host.session_superseded(&client_id);
            }
        }
        Op::Release { client_id, stamp } => {
            host.mesh().peer_releases(peer, &client_id, stamp);
            if let Some(link) = super::link_of(&client_id) {
                host.link_moved(link);
            }
        }
        Op::Link { link, op } => return host.link_op(&link, op),
    }
    Pushback::default()
}

/// Takes every route `peer` advertised out of the router, and forgets the
/// sessions it claimed (a snapshot follows a reset; a dead peer holds none).
fn forget_routes<H: Host>(host: &MeshHost<H>, peer: &Arc<Peer>, routes: &mut HashSet<String>) {
    for filter in routes.drain() {
        host.remove_peer_route(peer, &filter);
    }
    // The links it held have no holder now: their messages queue here
    // until another node claims them.
    for link in host.mesh().forget_claims(peer) {
        host.link_moved(&link);
    }
}

/// Declares dead the peers this node has neither heard from nor reached for
/// a peer timeout: their routes go (nothing more is forwarded to them), what
/// was queued for them is counted lost, and they are forgotten. A peer still
/// reachable one way is alive: a one-way cut heals by resuming its streams.
pub(super) async fn sweep_loop<H: Host>(host: MeshHost<H>) {
    let mut shutdown = host.shutdown_signal();
    let mesh = host.mesh();
    let timeout = mesh.peer_timeout();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(mesh.heartbeat()) => {}
            _ = shutdown.recv() => return,
        }
        let now = Instant::now();
        let silent_since =
            |at: Option<Instant>| at.is_some_and(|at| now.duration_since(at) >= timeout);
        for peer in mesh.peers() {
            if !silent_since(
                peer.outbound_lost_at()
                    .or_else(|| peer.never_reached_since()),
            ) {
                continue;
            }
            let mut inbound = peer.inbound();
            let heard = inbound.connections > 0
                || !silent_since(inbound.lost_at.or(Some(peer.created_at())));
            if heard {
                continue;
            }
            forget_routes(&host, &peer, &mut inbound.routes);
            let known = inbound.incarnation.take().is_some();
            inbound.applied = 0;
            drop(inbound);
            mesh.metrics().forward_lost(peer.outbox().abandon());
            mesh.remove_peer(&peer);
            if known {
                mesh.metrics().peer_declared_dead();
                tracing::warn!(peer = %peer.name, "peer declared dead: no connection either way for the peer timeout; its routes are removed");
            }
        }
    }
}
