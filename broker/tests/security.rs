//! Security: password authentication, access rules (with `%u`/`%c`), TLS with
//! client certificates, and the certificate's common name as the username.
//!
//! Reason codes on the wire are checked with the real mosquitto clients, which
//! print the CONNACK / SUBACK / PUBACK codes they receive; finer-grained flows
//! use rumqttc. Each test also checks the broker's metrics for what it refused.

mod support;

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use strait_broker::auth::hash_password;
use strait_broker::config::{AclRule, Config, TlsConfig};
use strait_broker::metrics::{DropReason, RefusalReason};
use strait_broker::server::Server;
use support::mosquitto::{args, host_port, publish, run, words, Cli};
use support::{start_broker, within};
use tempfile::TempDir;

const V311: &str = "mqttv311";
const V5: &str = "mqttv5";

/// Users in the credentials file, with their passwords.
const USERS: [(&str, &str); 3] = [
    ("alice", "alice-pw"),
    ("bob", "bob-pw"),
    ("admin", "admin-pw"),
];

fn rule(user: &str, publish: &[&str], subscribe: &[&str]) -> AclRule {
    AclRule {
        user: user.into(),
        permission: Default::default(),
        publish: args(publish),
        subscribe: args(subscribe),
    }
}

/// Writes a credentials file for [`USERS`] into `dir`.
fn credentials_file(dir: &Path) -> PathBuf {
    let path = dir.join("passwd");
    let lines: String = USERS
        .iter()
        .map(|(user, password)| {
            format!(
                "{user}:{}\n",
                hash_password(password).expect("hash password")
            )
        })
        .collect();
    std::fs::write(&path, lines).expect("write credentials");
    path
}

/// A broker that requires the users of [`USERS`] and applies `acl`.
async fn broker_with_users(
    dir: &Path,
    acl: Vec<AclRule>,
    adjust: impl FnOnce(&mut Config),
) -> Server {
    let password_file = credentials_file(dir);
    start_broker(|config| {
        config.auth.password_file = Some(password_file);
        config.auth.allow_anonymous = Some(false);
        config.auth.acl = acl;
        adjust(config);
    })
    .await
}

fn acl_denials(server: &Server) -> u64 {
    let broker = server.broker();
    let text = broker.metrics().render(broker.gauges());
    text.lines()
        .find_map(|line| line.strip_prefix("strait_acl_denials_total "))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no strait_acl_denials_total in:\n{text}"))
}

/// Waits until `condition` holds (the broker counts a refusal after the client
/// has already seen it).
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    within(what, async {
        while !condition() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// The CONNACK code mosquitto_pub reports for these credentials.
async fn connack_code(server: &Server, version: &str, credentials: &[&str]) -> u8 {
    let mut all = host_port(server.mqtt_addrs()[0]);
    all.extend(args(&["-V", version, "-t", "auth/probe", "-m", "x"]));
    all.extend(args(credentials));
    let mut cli = Cli::spawn("mosquitto_pub", &all);
    let code = cli.connack().await;
    let ended = cli.finish().await;
    assert_eq!(
        ended.status.success(),
        code == 0,
        "exit status vs CONNACK:\n{}",
        ended.output.join("\n")
    );
    code
}

#[tokio::test]
async fn password_authentication_with_real_clients() {
    let dir = TempDir::new().expect("tempdir");
    let server = broker_with_users(dir.path(), Vec::new(), |_| {}).await;

    assert_eq!(
        connack_code(&server, V5, &["-u", "alice", "-P", "alice-pw"]).await,
        0
    );
    assert_eq!(
        connack_code(&server, V311, &["-u", "alice", "-P", "alice-pw"]).await,
        0
    );
    // Wrong password: 0x86 Bad User Name or Password; 3.1.1 return code 4.
    assert_eq!(
        connack_code(&server, V5, &["-u", "alice", "-P", "bob-pw"]).await,
        0x86
    );
    assert_eq!(
        connack_code(&server, V311, &["-u", "alice", "-P", "bob-pw"]).await,
        4
    );
    // Unknown user, and no credentials at all with anonymous access off.
    assert_eq!(
        connack_code(&server, V5, &["-u", "mallory", "-P", "alice-pw"]).await,
        0x86
    );
    assert_eq!(connack_code(&server, V5, &[]).await, 0x86);
    assert_eq!(connack_code(&server, V311, &[]).await, 4);

    assert_eq!(
        server
            .broker()
            .metrics()
            .refusals_total(RefusalReason::BadCredentials),
        5
    );
    let text = server.broker().metrics().render(server.broker().gauges());
    assert!(
        !text.contains("alice-pw") && !text.contains("$argon2"),
        "metrics leak secrets"
    );
    server.shutdown().await;
}

/// Arguments that log `user` in as client `id` with protocol `version`.
fn login(version: &str, id: &str, user: &str) -> Vec<String> {
    let password = USERS
        .iter()
        .find(|(name, _)| *name == user)
        .expect("known user")
        .1;
    args(&["-V", version, "-i", id, "-u", user, "-P", password])
}

/// The PUBACK reason code mosquitto_pub receives for an MQTT 5, QoS 1 publish.
async fn puback_code(server: &Server, id: &str, user: &str, topic: &str, payload: &str) -> u8 {
    let mut all = login(V5, id, user);
    all.extend(args(&["-q", "1", "-t", topic, "-m", payload]));
    let out = publish(server.mqtt_addrs()[0], &all, None).await;
    let line = out
        .lines()
        .find(|line| line.contains("received PUBACK"))
        .unwrap_or_else(|| panic!("no PUBACK for {topic}:\n{out}"));
    let code = line
        .split("RC:")
        .nth(1)
        .and_then(|rest| rest.strip_suffix(')'));
    code.and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("unexpected PUBACK line {line:?}"))
}

/// The SUBACK codes mosquitto_sub receives when subscribing to `filters` at QoS 1.
async fn suback_codes(
    server: &Server,
    version: &str,
    id: &str,
    user: &str,
    filters: &[&str],
) -> Vec<u8> {
    let mut all = host_port(server.mqtt_addrs()[0]);
    all.extend(login(version, id, user));
    all.extend(words("-q 1 -E"));
    for filter in filters {
        all.extend(args(&["-t", filter]));
    }
    let mut sub = Cli::spawn("mosquitto_sub", &all);
    let codes = sub.subscribed().await;
    sub.finish().await.assert_success();
    codes
}

/// An admin's `mosquitto_sub` on `#`, subscribed when this returns.
async fn watch_everything(server: &Server) -> Cli {
    let mut all = login(V5, "watcher", "admin");
    all.extend(words("-t # -q 1"));
    let mut watcher = Cli::sub(server.mqtt_addrs()[0], "%t|%p", &all);
    assert_eq!(watcher.subscribed().await, [1]);
    watcher
}

#[tokio::test]
async fn acl_denied_publish_gets_0x87_and_is_not_delivered() {
    let dir = TempDir::new().expect("tempdir");
    let acl = vec![
        rule("alice", &["sensors/alice/#"], &["sensors/#"]),
        rule("admin", &["#"], &["#"]),
    ];
    let server = broker_with_users(dir.path(), acl, |_| {}).await;
    let mut watcher = watch_everything(&server).await;

    assert_eq!(
        puback_code(&server, "alice-1", "alice", "sensors/bob/temp", "forged").await,
        0x87
    );
    // MQTT 3.1.1 has no way to say no in PUBACK: the message is dropped all the same.
    let mut all = login(V311, "alice-2", "alice");
    all.extend(words("-q 1 -t sensors/bob/temp -m forged-311"));
    publish(server.mqtt_addrs()[0], &all, None).await;
    // `$` topics are never writable by clients, whatever the rules say.
    assert_eq!(
        puback_code(&server, "alice-1", "alice", "$SYS/broker/fake", "x").await,
        0x87
    );
    assert_eq!(
        puback_code(&server, "alice-1", "alice", "sensors/alice/temp", "21.5").await,
        0
    );
    assert_eq!(
        watcher.message().await,
        "sensors/alice/temp|21.5",
        "denied messages must not be delivered"
    );

    // A will on a topic the user may not publish to is refused at CONNECT.
    for (version, code) in [(V5, 0x87), (V311, 5)] {
        let mut all = host_port(server.mqtt_addrs()[0]);
        all.extend(login(version, "alice-will", "alice"));
        all.extend(words(
            "-t sensors/alice/t -E --will-topic sensors/bob/status",
        ));
        let mut cli = Cli::spawn("mosquitto_sub", &all);
        assert_eq!(
            cli.connack().await,
            code,
            "will outside the ACL ({version})"
        );
        assert!(!cli.finish().await.status.success());
    }

    assert_eq!(acl_denials(&server), 5);
    assert_eq!(
        server
            .broker()
            .metrics()
            .drops_total(DropReason::NotAuthorized),
        2
    );
    server.shutdown().await;
}

#[tokio::test]
async fn acl_denied_subscription_gets_0x87_v5_and_0x80_v311() {
    let dir = TempDir::new().expect("tempdir");
    let acl = vec![
        rule("alice", &[], &["sensors/#"]),
        rule("admin", &["#"], &["#"]),
    ];
    let server = broker_with_users(dir.path(), acl, |_| {}).await;

    let filters = ["sensors/+/temp", "admin/#", "#"];
    assert_eq!(
        suback_codes(&server, V5, "alice-1", "alice", &filters).await,
        [1, 0x87, 0x87]
    );
    assert_eq!(
        suback_codes(&server, V311, "alice-2", "alice", &filters).await,
        [1, 0x80, 0x80]
    );

    // The refused filters deliver nothing: admin/x is not seen, sensors/a/temp is.
    let mut all = login(V5, "alice-3", "alice");
    all.extend(words("-q 1 -C 1 -t sensors/+/temp -t admin/#"));
    let mut alice = Cli::sub(server.mqtt_addrs()[0], "%t|%p", &all);
    assert_eq!(alice.subscribed().await, [1, 0x87]);
    assert_eq!(
        puback_code(&server, "admin-1", "admin", "admin/x", "secret").await,
        16,
        "no matching subscribers"
    );
    assert_eq!(
        puback_code(&server, "admin-1", "admin", "sensors/a/temp", "20").await,
        0
    );
    assert_eq!(alice.message().await, "sensors/a/temp|20");
    alice.finish().await.assert_success();

    assert_eq!(acl_denials(&server), 5);
    server.shutdown().await;
}

#[tokio::test]
async fn username_and_client_id_substitution_confine_each_device() {
    let dir = TempDir::new().expect("tempdir");
    let acl = vec![
        rule("*", &["devices/%c/#", "users/%u/#"], &["devices/%c/#"]),
        rule("admin", &["#"], &["#"]),
    ];
    let server = broker_with_users(dir.path(), acl, |_| {}).await;
    let mut watcher = watch_everything(&server).await;

    assert_eq!(
        puback_code(&server, "dev-7", "bob", "devices/dev-7/temp", "1").await,
        0
    );
    assert_eq!(
        puback_code(&server, "dev-7", "bob", "users/bob/note", "2").await,
        0
    );
    assert_eq!(
        puback_code(&server, "dev-7", "bob", "devices/dev-8/temp", "x").await,
        0x87
    );
    assert_eq!(
        puback_code(&server, "dev-7", "bob", "users/alice/note", "x").await,
        0x87
    );
    // A literal `%c` in a topic is no wildcard.
    assert_eq!(
        puback_code(&server, "dev-7", "bob", "devices/%c/temp", "x").await,
        0x87
    );
    // A client id holding `/` would widen `devices/%c/#`: the rule must not apply.
    assert_eq!(
        puback_code(&server, "dev-7/x", "bob", "devices/dev-7/x/temp", "x").await,
        0x87
    );
    assert_eq!(watcher.message().await, "devices/dev-7/temp|1");
    assert_eq!(watcher.message().await, "users/bob/note|2");

    let filters = ["devices/dev-7/#", "devices/+/temp", "devices/#"];
    assert_eq!(
        suback_codes(&server, V5, "dev-7", "bob", &filters).await,
        [1, 0x87, 0x87]
    );
    assert_eq!(acl_denials(&server), 6);
    server.shutdown().await;
}

/// CA, server and client certificates (and a client certificate from an
/// unrelated CA) as PEM files in a temporary directory.
struct Pki {
    dir: TempDir,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA cert")
}

impl Pki {
    fn new() -> Pki {
        let dir = TempDir::new().expect("tempdir");
        let pki = Pki { dir };
        let authority = ca("Strait test CA");
        pki.write("ca.pem", &authority.pem());
        pki.leaf(
            &authority,
            "server",
            "localhost",
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        pki.leaf(
            &authority,
            "client",
            "sensor-1",
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        pki.leaf(
            &ca("Rogue CA"),
            "rogue",
            "sensor-1",
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        pki
    }

    /// Writes `<name>.pem` and `<name>.key`: a certificate for `common_name`
    /// (valid for localhost and 127.0.0.1) issued by `issuer`.
    fn leaf(
        &self,
        issuer: &CertifiedIssuer<'static, KeyPair>,
        name: &str,
        common_name: &str,
        usage: ExtendedKeyUsagePurpose,
    ) {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, issuer).expect("leaf cert");
        self.write(&format!("{name}.pem"), &cert.pem());
        self.write(&format!("{name}.key"), &key.serialize_pem());
    }

    fn write(&self, file: &str, pem: &str) {
        std::fs::write(self.path(file), pem).expect("write PEM");
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    fn listener_tls(&self, use_cert_cn_as_username: bool) -> TlsConfig {
        TlsConfig {
            cert_file: self.path("server.pem"),
            key_file: self.path("server.key"),
            client_ca_file: Some(self.path("ca.pem")),
            require_client_cert: true,
            use_cert_cn_as_username,
        }
    }

    /// mosquitto TLS arguments, presenting the certificate `<name>` if given.
    fn client_args(&self, name: Option<&str>) -> Vec<String> {
        let path = |file: &str| self.path(file).to_string_lossy().into_owned();
        let mut all = vec!["--cafile".to_owned(), path("ca.pem")];
        if let Some(name) = name {
            all.extend(["--cert".to_owned(), path(&format!("{name}.pem"))]);
            all.extend(["--key".to_owned(), path(&format!("{name}.key"))]);
        }
        all
    }
}

#[tokio::test]
async fn tls_listener_requires_a_client_certificate_from_its_ca() {
    let pki = Pki::new();
    let server =
        start_broker(|config| config.listeners[0].tls = Some(pki.listener_tls(false))).await;
    let addr = server.mqtt_addrs()[0];
    let with = |name: Option<&str>, rest: &str| {
        let mut all = pki.client_args(name);
        all.extend(words(rest));
        all
    };

    let mut sub = Cli::sub(
        addr,
        "%t|%p",
        &with(Some("client"), "-V mqttv5 -t secure/# -C 1"),
    );
    assert_eq!(sub.subscribed().await, [0]);
    publish(
        addr,
        &with(Some("client"), "-V mqttv311 -t secure/a -m over-tls -q 1"),
        None,
    )
    .await;
    assert_eq!(sub.message().await, "secure/a|over-tls");
    sub.finish().await.assert_success();

    let handshakes = || {
        server
            .broker()
            .metrics()
            .refusals_total(RefusalReason::Handshake)
    };
    for (client, expected_refusals) in [(None, 1), (Some("rogue"), 2)] {
        let mut all = host_port(addr);
        all.extend(with(client, "-V mqttv5 -t secure/a -m intruder"));
        let output = run("mosquitto_pub", &all, None).await;
        assert!(!output.status.success(), "{client:?} must be refused");
        eventually("the handshake refusal to be counted", || {
            handshakes() == expected_refusals
        })
        .await;
    }
    // Plain MQTT on the TLS port is no way around it either.
    let mut all = host_port(addr);
    all.extend(words("-t secure/a -m plain"));
    assert!(!run("mosquitto_pub", &all, None).await.status.success());
    eventually("the plain-text refusal to be counted", || handshakes() == 3).await;
    server.shutdown().await;
}

/// A TLS broker that takes the client certificate's name (`sensor-1` for
/// [`Pki`]'s client) as the username: sensor-1 may publish its own
/// telemetry, admin anything.
async fn sensor_broker(pki: &Pki, dir: &Path) -> Server {
    let acl = vec![
        rule("sensor-1", &["telemetry/sensor-1/#"], &["telemetry/#"]),
        rule("admin", &["#"], &["#"]),
    ];
    broker_with_users(dir, acl, |config| {
        config.listeners[0].tls = Some(pki.listener_tls(true));
    })
    .await
}

#[tokio::test]
async fn certificate_common_name_is_the_username_for_access_rules() {
    let pki = Pki::new();
    let dir = TempDir::new().expect("tempdir");
    let server = sensor_broker(&pki, dir.path()).await;
    let addr = server.mqtt_addrs()[0];
    let client = |rest: &str| {
        let mut all = pki.client_args(Some("client"));
        all.extend(words("-V mqttv5"));
        all.extend(words(rest));
        all
    };

    // No password needed: the certificate authenticates sensor-1.
    let mut sub = Cli::sub(addr, "%t|%p", &client("-t telemetry/# -t admin/# -C 1"));
    assert_eq!(sub.subscribed().await, [0, 0x87]);

    let denied = publish(
        addr,
        &client("-t telemetry/sensor-2/temp -m forged -q 1"),
        None,
    )
    .await;
    assert!(
        denied.contains("RC:135"),
        "PUBACK must carry 0x87:\n{denied}"
    );
    // Claiming another username in CONNECT does not override the certificate.
    let claimed = client("-u admin -P admin-pw -t telemetry/sensor-2/temp -m forged -q 1");
    let denied = publish(addr, &claimed, None).await;
    assert!(
        denied.contains("RC:135"),
        "PUBACK must carry 0x87:\n{denied}"
    );
    let allowed = publish(
        addr,
        &client("-t telemetry/sensor-1/temp -m 19.5 -q 1"),
        None,
    )
    .await;
    assert!(
        allowed.contains("RC:0"),
        "PUBACK must be a success:\n{allowed}"
    );

    assert_eq!(sub.message().await, "telemetry/sensor-1/temp|19.5");
    sub.finish().await.assert_success();
    assert_eq!(acl_denials(&server), 3);
    server.shutdown().await;
}

#[tokio::test]
async fn a_will_is_checked_against_the_certificate_identity_not_the_claimed_username() {
    let pki = Pki::new();
    let dir = TempDir::new().expect("tempdir");
    let server = sensor_broker(&pki, dir.path()).await;
    let connack = |rest: &str| {
        let mut all = host_port(server.mqtt_addrs()[0]);
        all.extend(pki.client_args(Some("client")));
        all.extend(words("-V mqttv5 -t telemetry/sensor-1/t -m x"));
        all.extend(words(rest));
        async move {
            let mut cli = Cli::spawn("mosquitto_pub", &all);
            let code = cli.connack().await;
            cli.finish().await;
            code
        }
    };
    // The certificate says sensor-1; claiming admin in CONNECT grants nothing.
    let forged = "-u admin -P admin-pw --will-topic admin/alarm --will-payload gone";
    assert_eq!(
        connack(forged).await,
        0x87,
        "a will sensor-1 may not publish"
    );
    assert_eq!(
        connack("--will-topic telemetry/sensor-1/status --will-payload gone").await,
        0,
        "its own will topic is fine"
    );
    assert_eq!(acl_denials(&server), 1);
    server.shutdown().await;
}

/// Logs `user` of [`USERS`] in with client id `client_id`, keeping its session.
async fn raw_login(server: &Server, client_id: &str, user: &str) -> (support::RawClient, u8) {
    let password = USERS
        .iter()
        .find(|(name, _)| *name == user)
        .expect("user")
        .1;
    let (client, code) =
        support::RawClient::login(server.mqtt_addrs()[0], client_id, user, password).await;
    (client, code.as_u8())
}

#[tokio::test]
async fn a_session_is_resumed_only_by_the_identity_that_owns_it() {
    use strait_broker::protocol::QoS;
    let dir = TempDir::new().expect("tempdir");
    let server = broker_with_users(dir.path(), Vec::new(), |_| {}).await;
    let (mut alice, code) = raw_login(&server, "shared-id", "alice").await;
    assert_eq!(code, 0);
    alice.subscribe("alice/inbox", QoS::AtLeastOnce).await;
    drop(alice);

    // Bob knows the client id; that is not enough to take alice's session
    // (its subscriptions and queued messages), nor to kick her off.
    let (_bob, code) = raw_login(&server, "shared-id", "bob").await;
    assert_eq!(code, 0x87, "not authorized");
    assert_eq!(
        server
            .broker()
            .metrics()
            .refusals_total(RefusalReason::NotSessionOwner),
        1
    );
    // Alice's session is intact: her subscription still receives.
    let (mut alice, code) = raw_login(&server, "shared-id", "alice").await;
    assert_eq!(code, 0);
    let (mut sender, _) = raw_login(&server, "sender", "bob").await;
    sender
        .send(&strait_broker::protocol::Packet::Publish(
            strait_broker::protocol::Publish {
                dup: false,
                qos: QoS::AtMostOnce,
                retain: false,
                topic: "alice/inbox".into(),
                packet_id: None,
                payload: bytes::Bytes::from_static(b"hi"),
                properties: Default::default(),
            },
        ))
        .await;
    match alice.recv().await {
        Some(strait_broker::protocol::Packet::Publish(p)) => assert_eq!(&p.payload[..], b"hi"),
        other => panic!("expected alice's message, got {other:?}"),
    }
    server.shutdown().await;
}
