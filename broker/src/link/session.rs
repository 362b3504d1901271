//! Link connections: dialling a remote's endpoints, accepting remotes on the
//! link listener, the handshake both ways (see `credential.rs`), and running
//! an established connection: this side's stream out, the remote's in, each
//! acknowledged, heartbeats while idle.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rustls::pki_types::ServerName;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::credential::{CredentialsFile, Transcript};
use super::state::{Link, LinkDrop};
use super::wire::{self, LinkFrame, LinkOp, MAX_FRAME, MAX_HANDSHAKE_FRAME, PROTOCOL_VERSION};
use super::{retained_for, LinkHost, Links, HEARTBEAT, TIMEOUT};
use crate::flow::Pushback;
use crate::peering::io::{read_available, read_frame};
use crate::peering::proof;
use crate::peering::{Backoff, PeerError, PeerIo, Reader, Resume, Writer};

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Ops applied between two acknowledgements, at most.
const ACK_EVERY: u64 = 256;

/// Dials the link's endpoints in turn until the node stops (or the link is
/// removed and this task aborted), keeping one connection up.
pub(super) async fn dial_loop<H: LinkHost>(host: Arc<H>, links: Arc<Links>, link: Arc<Link>) {
    let mut shutdown = host.shutdown_signal();
    let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
    loop {
        // One node of the cluster dials: the one holding the link (it
        // redials after a cut), or when none does, the first live node by
        // name. The others wait, ready to take over.
        let holds = link.claim().is_some();
        let free = link.holder().is_none();
        if !(holds || (free && host.dials_links())) {
            tokio::select! {
                _ = tokio::time::sleep(HEARTBEAT / 2) => continue,
                _ = shutdown.recv() => return,
            }
        }
        let endpoints = link.config().endpoints;
        for endpoint in &endpoints {
            let started = tokio::time::Instant::now();
            let result = tokio::select! {
                result = dial(&host, &links, &link, endpoint) => result,
                _ = shutdown.recv() => return,
            };
            match result {
                Ok(()) => {}
                Err(err) => {
                    if err.is_protocol_fault() || matches!(err, PeerError::Refused(_)) {
                        tracing::warn!(link = %link.name, %endpoint, error = %err, "link connection failed");
                    } else {
                        tracing::debug!(link = %link.name, %endpoint, error = %err, "link connection ended");
                    }
                    link.failed(format!("{endpoint}: {err}"));
                }
            }
            if started.elapsed() > TIMEOUT {
                backoff.reset();
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_pause()) => {}
            _ = shutdown.recv() => return,
        }
    }
}

/// Resolves `endpoint` (again at every dial) and connects to the first address that answers.
async fn connect(endpoint: &str) -> Result<TcpStream, PeerError> {
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host(endpoint).await?.collect();
    let mut last = PeerError::Closed;
    for address in addresses {
        match timeout(TIMEOUT, TcpStream::connect(address)).await {
            Ok(Ok(tcp)) => return Ok(tcp),
            Ok(Err(err)) => last = err.into(),
            Err(_) => last = PeerError::Timeout,
        }
    }
    Err(last)
}

/// One dialled connection: handshake, then run it until it ends.
async fn dial<H: LinkHost>(
    host: &Arc<H>,
    links: &Arc<Links>,
    link: &Arc<Link>,
    endpoint: &str,
) -> Result<(), PeerError> {
    let config = link.config();
    let tcp = connect(endpoint).await?;
    tcp.set_nodelay(true)?;
    let stream: Box<dyn PeerIo> = match &config.tls {
        Some(tls) => {
            let client = crate::transport::link_client_config(tls)
                .await
                .map_err(|e| PeerError::Io(std::io::Error::other(e.to_string())))?;
            let name = ServerName::try_from(tls.server_name.clone()).map_err(|e| {
                PeerError::Io(std::io::Error::other(format!("tls.serverName: {e}")))
            })?;
            Box::new(
                timeout(TIMEOUT, TlsConnector::from(client).connect(name, tcp))
                    .await
                    .map_err(|_| PeerError::Timeout)??,
            )
        }
        None => Box::new(tcp),
    };
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut buf = BytesMut::with_capacity(1024);
    let nonce = proof::nonce();
    send(
        &mut writer,
        &LinkFrame::Hello {
            version: PROTOCOL_VERSION,
            cluster: links.me.clone(),
            to: link.name.clone(),
            incarnation: link.incarnation,
            nonce,
        },
    )
    .await?;
    let (salt, acceptor_nonce) =
        match read_frame(&mut reader, &mut buf, TIMEOUT, MAX_HANDSHAKE_FRAME).await? {
            LinkFrame::Challenge { salt, nonce } => (salt, nonce),
            LinkFrame::Refused { reason } => return Err(PeerError::Refused(reason)),
            _ => return Err(PeerError::Unexpected("expected a challenge")),
        };
    let keys = link.salted_keys(salt).await.map_err(PeerError::Secret)?;
    let transcript = Transcript {
        acceptor_nonce: &acceptor_nonce,
        dialer_nonce: &nonce,
        dialer_cluster: &links.me,
        acceptor_cluster: &link.name,
        incarnation: link.incarnation,
    };
    send(
        &mut writer,
        &LinkFrame::Proof {
            proof: keys.client_proof(&transcript),
            resume: link.applied_remote(),
        },
    )
    .await?;
    let (signature, incarnation, resume_after) =
        match read_frame(&mut reader, &mut buf, TIMEOUT, MAX_HANDSHAKE_FRAME).await? {
            LinkFrame::Welcome {
                signature,
                incarnation,
                resume_after,
            } => (signature, incarnation, resume_after),
            LinkFrame::Refused { reason } => return Err(PeerError::Refused(reason)),
            _ => return Err(PeerError::Unexpected("expected a welcome or a refusal")),
        };
    if !keys.verify_server(&transcript, &signature) {
        return Err(PeerError::Unauthenticated(
            "the remote did not prove it was given this link's credential",
        ));
    }
    link.resume_remote(incarnation);
    let generation = link
        .attach(&links.me, endpoint.to_owned())
        .map_err(PeerError::Refused)?;
    claim(host.as_ref(), link);
    tracing::info!(link = %link.name, %endpoint, "link connected (dialled)");
    let result = run(
        host,
        links,
        link,
        generation,
        resume_after,
        reader,
        writer,
        buf,
    )
    .await;
    link.detach(generation, result.as_ref().err().map(ToString::to_string));
    tracing::info!(link = %link.name, %endpoint, "link connection lost");
    result
}

/// Accepts remote clusters' link connections until shutdown.
pub(super) async fn accept_loop<H: LinkHost>(
    host: Arc<H>,
    links: Arc<Links>,
    listener: TcpListener,
    tls: Option<Arc<TlsAcceptor>>,
) {
    let mut shutdown = host.shutdown_signal();
    loop {
        let (tcp, address) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "accepting a link connection failed");
                    continue;
                }
            },
            _ = shutdown.recv() => return,
        };
        let (host, links, tls) = (host.clone(), links.clone(), tls.clone());
        tokio::spawn(async move {
            if let Err(err) = accept(&host, &links, tcp, address, tls).await {
                if err.is_protocol_fault() {
                    tracing::warn!(%address, error = %err, "closed a link connection that broke the protocol");
                } else {
                    tracing::debug!(%address, error = %err, "link connection ended");
                }
            }
        });
    }
}

async fn accept<H: LinkHost>(
    host: &Arc<H>,
    links: &Arc<Links>,
    tcp: TcpStream,
    address: SocketAddr,
    tls: Option<Arc<TlsAcceptor>>,
) -> Result<(), PeerError> {
    tcp.set_nodelay(true)?;
    let stream: Box<dyn PeerIo> = match tls {
        Some(acceptor) => match timeout(TIMEOUT, acceptor.accept(tcp)).await {
            Ok(Ok(stream)) => Box::new(stream),
            Ok(Err(err)) => {
                links.handshake_refused();
                tracing::warn!(%address, error = %err, "refused a link connection at the TLS handshake");
                return Err(err.into());
            }
            Err(_) => return Err(PeerError::Timeout),
        },
        None => Box::new(tcp),
    };
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut buf = BytesMut::with_capacity(1024);
    let LinkFrame::Hello {
        version,
        cluster,
        to,
        incarnation,
        nonce: dialer_nonce,
    } = read_frame(&mut reader, &mut buf, TIMEOUT, MAX_HANDSHAKE_FRAME).await?
    else {
        return Err(PeerError::Unexpected("expected a hello"));
    };
    let refuse = |reason: String| {
        links.handshake_refused();
        tracing::warn!(%address, remote = %cluster, %reason, "refused a link connection");
        LinkFrame::Refused { reason }
    };
    if version != PROTOCOL_VERSION {
        let reason = format!("link protocol version {version} is not supported (this cluster speaks {PROTOCOL_VERSION})");
        return send(&mut writer, &refuse(reason)).await;
    }
    if to != links.me {
        let reason = format!("this is cluster {:?}, not {to:?}", links.me);
        return send(&mut writer, &refuse(reason)).await;
    }
    let Some(credentials) = links.credentials.as_ref().map(CredentialsFile::current) else {
        return send(&mut writer, &refuse("this node accepts no links".into())).await;
    };
    let (credential, known) = credentials.for_cluster(&cluster);
    let nonce = proof::nonce();
    send(
        &mut writer,
        &LinkFrame::Challenge {
            salt: credential.salt,
            nonce,
        },
    )
    .await?;
    let LinkFrame::Proof {
        proof: client_proof,
        resume,
    } = read_frame(&mut reader, &mut buf, TIMEOUT, MAX_HANDSHAKE_FRAME).await?
    else {
        return Err(PeerError::Unexpected("expected a proof"));
    };
    let transcript = Transcript {
        acceptor_nonce: &nonce,
        dialer_nonce: &dialer_nonce,
        dialer_cluster: &cluster,
        acceptor_cluster: &links.me,
        incarnation,
    };
    // Unknown clusters and wrong secrets get the same answer.
    let link = links.get(&cluster);
    let (Some(link), true, true) = (
        link,
        known,
        credential.verify_client(&transcript, &client_proof),
    ) else {
        let reason = format!("cluster {cluster:?} failed authentication");
        return send(&mut writer, &refuse(reason)).await;
    };
    let generation = match link.attach(&cluster, address.to_string()) {
        Ok(generation) => generation,
        Err(reason) => return send(&mut writer, &LinkFrame::Refused { reason }).await,
    };
    claim(host.as_ref(), &link);
    let resume_after = link.resume_remote(incarnation);
    let ours = resume.and_then(|(ours, applied)| (ours == link.incarnation).then_some(applied));
    let welcome = LinkFrame::Welcome {
        signature: credential.server_signature(&transcript),
        incarnation: link.incarnation,
        resume_after,
    };
    let result = async {
        send(&mut writer, &welcome).await?;
        tracing::info!(link = %link.name, %address, "link connected (accepted)");
        run(host, links, &link, generation, ours, reader, writer, buf).await
    }
    .await;
    link.detach(generation, result.as_ref().err().map(ToString::to_string));
    tracing::info!(link = %link.name, %address, "link connection lost");
    result
}

/// This node holds the link now: the rest of its cluster hears of it, and
/// hands it the messages they queued for the link.
fn claim(host: &impl LinkHost, link: &Link) {
    link.set_holder(None);
    let mut claim = link.claim();
    if let Some(old) = claim.take() {
        host.release_link(&link.name, old);
    }
    *claim = host.claim_link(&link.name);
}

async fn send(writer: &mut Writer, frame: &LinkFrame) -> Result<(), PeerError> {
    writer.write_all(&wire::encode_to_bytes(frame)?).await?;
    Ok(())
}

/// Runs an established connection until it fails, the node stops, or
/// another connection takes the link over.
#[allow(clippy::too_many_arguments)]
async fn run<H: LinkHost>(
    host: &Arc<H>,
    links: &Arc<Links>,
    link: &Arc<Link>,
    generation: u64,
    resume_after: Option<u64>,
    mut reader: Reader,
    mut writer: Writer,
    buf: BytesMut,
) -> Result<(), PeerError> {
    if let Resume::Resync { .. } = link.resume_local(resume_after) {
        let snapshot = links.interest.read().snapshot(&link.name);
        for op in snapshot {
            super::push_op(link, &op);
        }
    }
    let mut generations = link.generations();
    let mut shutdown = host.shutdown_signal();
    tokio::select! {
        result = write_loop(link, &mut writer) => result,
        result = read_loop(host, links, link, generation, &mut reader, buf) => result,
        _ = generations.wait_for(|g| *g != generation) => Err(PeerError::Refused("another connection took the link over".into())),
        _ = shutdown.recv() => Ok(()),
    }
}

/// Sends the stream and replies as they are queued, a heartbeat when idle.
async fn write_loop(link: &Link, writer: &mut Writer) -> Result<(), PeerError> {
    let ping = wire::encode_to_bytes(&LinkFrame::Ping)?;
    let mut batch = Vec::with_capacity(64 * 1024);
    loop {
        batch.clear();
        if !link.write_unsent(&mut batch) {
            tokio::select! {
                _ = link.wake.notified() => continue,
                _ = tokio::time::sleep(HEARTBEAT) => batch.extend_from_slice(&ping),
            }
        }
        writer.write_all(&batch).await?;
    }
}

/// What one connection applies the remote's stream for.
struct Applier<'a, H> {
    host: &'a Arc<H>,
    links: &'a Links,
    link: &'a Arc<Link>,
    generation: u64,
}

/// What a run of frames left to do: acknowledge up to `applied`, and hold
/// the stream for `pushback`.
#[derive(Default)]
struct Batch {
    pushback: Pushback,
    applied: Option<u64>,
}

/// Applies the remote's stream in order and acknowledges it in bulk.
async fn read_loop<H: LinkHost>(
    host: &Arc<H>,
    links: &Links,
    link: &Arc<Link>,
    generation: u64,
    reader: &mut Reader,
    mut buf: BytesMut,
) -> Result<(), PeerError> {
    let applier = Applier {
        host,
        links,
        link,
        generation,
    };
    loop {
        let frame = read_frame(reader, &mut buf, TIMEOUT, MAX_FRAME).await?;
        let mut batch = Batch::default();
        applier.handle(frame, &mut batch)?;
        let mut handled = 1;
        loop {
            while let Some(frame) = wire::decode(&mut buf, MAX_FRAME)? {
                applier.handle(frame, &mut batch)?;
                handled += 1;
            }
            if handled >= ACK_EVERY || !read_available(reader, &mut buf)? {
                break;
            }
        }
        if let Some(seq) = batch.applied {
            link.push_reply(&wire::encode_to_bytes(&LinkFrame::Ack { seq })?);
            // The rest of the cluster learns the position, so a node taking
            // the link over resumes the remote's stream there.
            if let Some((incarnation, applied)) = link.applied_remote() {
                if let Ok(body) = wire::encode_op(&LinkOp::Position {
                    incarnation,
                    applied,
                }) {
                    host.send_link_op(None, &link.name, body);
                }
            }
        }
        // Subscribers here are slower than the remote's publishers: read no
        // more until they have room; the remote's queue holds the rest.
        if let Some(release) = batch.pushback.hold_reader(host.backpressure_wait()).await {
            host.held(release);
        }
    }
}

impl<H: LinkHost> Applier<'_, H> {
    fn handle(&self, frame: LinkFrame, batch: &mut Batch) -> Result<(), PeerError> {
        let link = self.link;
        match frame {
            LinkFrame::Op { seq, op } => {
                let mut inbound = link.inbound();
                if !link.is_current(self.generation) {
                    return Err(PeerError::Refused(
                        "another connection took the link over".into(),
                    ));
                }
                if seq > inbound.applied {
                    inbound.applied = seq;
                    let duplicate = match &op {
                        LinkOp::Publish(m) if !inbound.first_sight(m.id) => {
                            Some(m.message.payload.len())
                        }
                        _ => None,
                    };
                    drop(inbound);
                    if let Some(bytes) = duplicate {
                        link.stats.dropped(LinkDrop::Duplicate, 1, bytes);
                    } else {
                        apply(self.host, self.links, link, op, &mut batch.pushback);
                    }
                }
                batch.applied = Some(seq.max(batch.applied.unwrap_or(0)));
            }
            LinkFrame::Ack { seq } => link.acknowledged(seq),
            LinkFrame::Ping => link.push_reply(&wire::encode_to_bytes(&LinkFrame::Pong)?),
            LinkFrame::Pong => {}
            _ => {
                return Err(PeerError::Unexpected(
                    "after the handshake only ops, acks and heartbeats flow",
                ))
            }
        }
        Ok(())
    }
}

/// One op of the remote's stream.
fn apply<H: LinkHost>(
    host: &Arc<H>,
    links: &Links,
    link: &Arc<Link>,
    op: LinkOp,
    pushback: &mut Pushback,
) {
    use std::sync::atomic::Ordering::Relaxed;
    match op {
        LinkOp::Publish(message) => {
            link.stats.received.fetch_add(1, Relaxed);
            link.stats
                .received_bytes
                .fetch_add(message.message.payload.len() as u64, Relaxed);
            // Back where it has been, or further than the hop limit allows.
            if message.path.contains(&links.me) || message.path.len() > usize::from(link.max_hops())
            {
                link.stats
                    .dropped(LinkDrop::Loop, 1, message.message.payload.len());
                return;
            }
            if !links.imports(&link.name, &message.message.topic) {
                link.stats
                    .dropped(LinkDrop::OutsideImport, 1, message.message.payload.len());
                return;
            }
            pushback.merge(host.deliver_linked(link, message));
        }
        LinkOp::Position { .. } => {
            link.stats.interest_refused.fetch_add(1, Relaxed);
            tracing::debug!(link = %link.name, "the remote sent a position op, which only a cluster's own nodes exchange");
        }
        interest => {
            // The other nodes of this cluster keep the same table.
            if let Ok(body) = wire::encode_op(&interest) {
                host.send_link_op(None, &link.name, body);
            }
            if let Some((origin, effective)) = links.learned(link, interest) {
                retained_for(host.as_ref(), links, link, &origin, &effective);
            }
        }
    }
}
