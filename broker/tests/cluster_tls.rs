//! Mutual TLS between cluster nodes: nodes with certificates from the cluster
//! CA mesh and carry messages; a node whose certificate another CA signed is
//! refused at the TLS handshake, whatever secret it knows.

mod support;

use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use strait_broker::cluster::Discover;
use strait_broker::config::PeerTlsConfig;
use strait_broker::server::Server;
use support::cluster::{eventually, node_config, secret_dir, TestDiscovery};
use support::v4;

/// The name every node certificate carries, since peers are dialled by address.
const SERVER_NAME: &str = "nodes.strait.test";

fn authority(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA cert")
}

/// Writes a node certificate (server and client use) issued by `ca`, plus
/// the CA the node trusts, and returns the node's TLS configuration.
fn node_tls(
    dir: &Path,
    name: &str,
    ca: &CertifiedIssuer<'static, KeyPair>,
    trusted: &CertifiedIssuer<'static, KeyPair>,
) -> PeerTlsConfig {
    let mut params = CertificateParams::new(vec![SERVER_NAME.to_owned()]).expect("params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, ca).expect("cert");
    let path = |file: &str| dir.join(format!("{name}-{file}"));
    std::fs::write(path("cert.pem"), cert.pem()).expect("write cert");
    std::fs::write(path("key.pem"), key.serialize_pem()).expect("write key");
    std::fs::write(path("ca.pem"), trusted.pem()).expect("write CA");
    PeerTlsConfig {
        cert_file: path("cert.pem"),
        key_file: path("key.pem"),
        ca_file: path("ca.pem"),
        server_name: SERVER_NAME.into(),
    }
}

async fn start_node(
    name: &str,
    secret: &tempfile::TempDir,
    tls: PeerTlsConfig,
    discovery: &Arc<TestDiscovery>,
) -> Server {
    let mut config = node_config("tls", name, secret);
    config.cluster.tls = Some(tls);
    let discover: Arc<dyn Discover> = discovery.clone();
    let server = Server::start_with_discovery(config, Some(discover))
        .await
        .expect("node starts");
    discovery.add(server.cluster_addr().expect("clustered"));
    server
}

fn connected_peers(server: &Server) -> Vec<String> {
    let status = server.broker().cluster().expect("clustered").status();
    status
        .peers
        .into_iter()
        .filter(|p| p.state == "connected")
        .map(|p| p.name)
        .collect()
}

#[tokio::test]
async fn nodes_mesh_over_mutual_tls_and_a_foreign_certificate_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = secret_dir("the-tls-cluster-secret-0123456789");
    let ca = authority("Strait cluster CA");
    let rogue_ca = authority("Rogue CA");
    let discovery = Arc::new(TestDiscovery::default());
    let a = start_node(
        "a",
        &secret,
        node_tls(dir.path(), "a", &ca, &ca),
        &discovery,
    )
    .await;
    let b = start_node(
        "b",
        &secret,
        node_tls(dir.path(), "b", &ca, &ca),
        &discovery,
    )
    .await;
    eventually("a and b to mesh over TLS", || {
        connected_peers(&a) == ["b"] && connected_peers(&b) == ["a"]
    })
    .await;

    let mut subscriber = v4::connect(v4::options(b.mqtt_addrs()[0], "s")).await;
    subscriber.subscribe("secure/#", v4::QoS::AtLeastOnce).await;
    eventually("a to learn b's route", || {
        a.broker().cluster().expect("clustered").status().peers[0].routes == 1
    })
    .await;
    let mut publisher = v4::connect(v4::options(a.mqtt_addrs()[0], "p")).await;
    publisher.publish_acked("secure/x", false, b"sealed").await;
    assert_eq!(&subscriber.publish_received().await.payload[..], b"sealed");

    // Same secret, same cluster name, but a certificate the cluster CA did
    // not sign (and it does not trust the cluster CA either).
    let rogue_tls = node_tls(dir.path(), "rogue", &rogue_ca, &rogue_ca);
    let rogue = start_node("rogue", &secret, rogue_tls, &discovery).await;
    let refusals = |s: &Server| {
        s.broker()
            .cluster()
            .expect("clustered")
            .metrics()
            .handshakes_refused_total()
    };
    eventually("a and b to refuse the rogue node", || {
        refusals(&a) > 0 && refusals(&b) > 0
    })
    .await;
    assert_eq!(connected_peers(&a), ["b"]);
    assert_eq!(connected_peers(&b), ["a"]);
    assert!(connected_peers(&rogue).is_empty());
    for node in [a, b, rogue] {
        node.shutdown().await;
    }
}
