//! TLS for a listener: loading PEM material into a rustls server configuration,
//! and reading the verified client certificate's common name.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use super::TransportError;
use crate::config::{LinkTlsConfig, PeerTlsConfig, TlsConfig};

/// Builds the server configuration for `tls`, verifying client certificates
/// against `client_ca_file` when one is given.
///
/// The ring provider is passed in explicitly, so no process-wide default
/// provider has to be installed first.
pub(crate) async fn server_config(tls: &TlsConfig) -> Result<Arc<ServerConfig>, TransportError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = load_certs(&tls.cert_file).await?;
    let key = load_key(&tls.key_file).await?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TransportError::TlsConfig(format!("protocol versions: {e}")))?;
    let builder = match &tls.client_ca_file {
        Some(ca_file) => {
            let verifier = client_verifier(ca_file, tls.require_client_cert, provider).await?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder.with_single_cert(certs, key).map_err(|e| {
        TransportError::TlsConfig(format!(
            "certificate {} with key {}: {e}",
            tls.cert_file.display(),
            tls.key_file.display()
        ))
    })?;
    Ok(Arc::new(config))
}

/// Both ends of mutual TLS between cluster nodes: the acceptor requires a
/// certificate signed by the cluster CA, and the dialer presents its own and
/// checks the peer's against the same CA.
pub async fn peer_configs(
    tls: &PeerTlsConfig,
) -> Result<(Arc<ServerConfig>, Arc<ClientConfig>), TransportError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = load_certs(&tls.cert_file).await?;
    let key = load_key(&tls.key_file).await?;
    let bad_pair = |e: rustls::Error| {
        TransportError::TlsConfig(format!(
            "certificate {} with key {}: {e}",
            tls.cert_file.display(),
            tls.key_file.display()
        ))
    };
    let versions = |e: rustls::Error| TransportError::TlsConfig(format!("protocol versions: {e}"));
    let verifier = client_verifier(&tls.ca_file, true, provider.clone()).await?;
    let server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(versions)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs.clone(), key.clone_key())
        .map_err(bad_pair)?;
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(versions)?
        .with_root_certificates(load_roots(&tls.ca_file).await?)
        .with_client_auth_cert(certs, key)
        .map_err(bad_pair)?;
    Ok((Arc::new(server), Arc::new(client)))
}

/// The dialling side of a link over TLS: the remote's certificate must
/// chain to `caFile`; a client certificate is presented when configured.
pub async fn link_client_config(tls: &LinkTlsConfig) -> Result<Arc<ClientConfig>, TransportError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TransportError::TlsConfig(format!("protocol versions: {e}")))?
        .with_root_certificates(load_roots(&tls.ca_file).await?);
    let config = match (&tls.cert_file, &tls.key_file) {
        (Some(cert_file), Some(key_file)) => builder
            .with_client_auth_cert(load_certs(cert_file).await?, load_key(key_file).await?)
            .map_err(|e| {
                TransportError::TlsConfig(format!(
                    "certificate {} with key {}: {e}",
                    cert_file.display(),
                    key_file.display()
                ))
            })?,
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

async fn load_roots(ca_file: &Path) -> Result<RootCertStore, TransportError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(ca_file).await? {
        roots
            .add(cert)
            .map_err(|e| TransportError::TlsConfig(format!("CA in {}: {e}", ca_file.display())))?;
    }
    Ok(roots)
}

/// A verifier for client certificates signed by a CA in `ca_file`. Unless
/// `required`, a client may also connect without any certificate.
async fn client_verifier(
    ca_file: &Path,
    required: bool,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TransportError> {
    let roots = load_roots(ca_file).await?;
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
    let builder = if required {
        builder
    } else {
        builder.allow_unauthenticated()
    };
    builder
        .build()
        .map_err(|e| TransportError::TlsConfig(format!("client CA in {}: {e}", ca_file.display())))
}

async fn read_pem(path: &Path) -> Result<Vec<u8>, TransportError> {
    tokio::fs::read(path)
        .await
        .map_err(|e| TransportError::TlsConfig(format!("cannot read {}: {e}", path.display())))
}

/// Every certificate in a PEM file; an empty file is an error.
async fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let pem = read_pem(path).await?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TransportError::TlsConfig(format!("bad PEM in {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TransportError::TlsConfig(format!(
            "no certificate in {}",
            path.display()
        )));
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file. Errors never
/// quote the file's content.
async fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TransportError> {
    let pem = read_pem(path).await?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| TransportError::TlsConfig(format!("bad PEM in {}: {e}", path.display())))?
        .ok_or_else(|| TransportError::TlsConfig(format!("no private key in {}", path.display())))
}

/// The subject common name of a DER certificate: `None` when the certificate
/// cannot be parsed or has no CN, or has several (which one names the client
/// would be a guess).
pub(super) fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let mut names = parsed.subject().iter_common_name();
    let first = names.next()?;
    if names.next().is_some() {
        return None;
    }
    first.as_str().ok().map(str::to_owned)
}
