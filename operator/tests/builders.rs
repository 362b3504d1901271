//! The pure steps from YAML fixtures: every fixture cluster builds children
//! equal to its committed golden file, and every invalid fixture is refused
//! with an error naming the field its annotation says.
//!
//! Set `STRAIT_UPDATE_GOLDEN=1` to rewrite the golden files after an
//! intended change, then review the diff.

use std::path::{Path, PathBuf};

use strait_broker::config::Config;
use strait_operator::crd::MqttCluster;
use strait_operator::resources::{
    build, Children, Credentials, DefaultUser, DefaultUserSecret, Inputs, CONFIG_KEY,
};
use strait_operator::validate;

const DEFAULT_IMAGE: &str = "ghcr.io/strait/broker:test";

fn fixtures(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("fixture folder")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {}", dir.display());
    files
}

fn load(path: &Path) -> MqttCluster {
    let text = std::fs::read_to_string(path).expect("read fixture");
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn credentials() -> Credentials {
    Credentials::fixed(
        "admin-token-fixture",
        "internal-password-fixture",
        "$argon2id$v=19$m=4096,t=1,p=1$c2FsdA$aGFzaA",
        "cluster-secret-fixture",
    )
}

fn build_fixture(cluster: &MqttCluster) -> Children {
    let users = ["alice:$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_owned()];
    let generated = ["strait:$argon2id$v=19$m=4096,t=1,p=1$c2FsdA$aGFzaA".to_owned()];
    let default_user = DefaultUser::fixed("default-user-password-fixture");
    let no_users = cluster.spec.auth.users.is_empty();
    let inputs = Inputs {
        default_image: DEFAULT_IMAGE,
        credentials: &credentials(),
        user_lines: if no_users { &generated } else { &users },
        default_user: no_users.then_some(&default_user),
    };
    build(cluster, &inputs).expect("build")
}

fn render(children: &Children) -> String {
    let mut docs = vec![
        serde_yaml::to_string(&children.config_map),
        serde_yaml::to_string(&children.credentials),
        serde_yaml::to_string(&children.headless_service),
        serde_yaml::to_string(&children.client_service),
        serde_yaml::to_string(&children.link_service),
        serde_yaml::to_string(&children.stateful_set),
    ];
    if let Some(pdb) = &children.pdb {
        docs.push(serde_yaml::to_string(pdb));
    }
    if let DefaultUserSecret::Active(user) = &children.default_user {
        docs.push(serde_yaml::to_string(user));
    }
    docs.into_iter()
        .map(|d| format!("---\n{}", d.expect("render")))
        .collect()
}

#[test]
fn every_fixture_builds_its_golden_children() {
    let update = std::env::var_os("STRAIT_UPDATE_GOLDEN").is_some();
    for path in fixtures("clusters") {
        let cluster = load(&path);
        validate::spec(&cluster.spec).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let rendered = render(&build_fixture(&cluster));
        let golden = path
            .parent()
            .and_then(Path::parent)
            .expect("fixtures")
            .join("golden")
            .join(path.file_name().expect("name"));
        if update {
            std::fs::write(&golden, &rendered).expect("write golden");
            continue;
        }
        let expected = std::fs::read_to_string(&golden).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (run with STRAIT_UPDATE_GOLDEN=1)",
                golden.display()
            )
        });
        assert!(
            expected == rendered,
            "{} differs from its golden file {}; rerun with STRAIT_UPDATE_GOLDEN=1 and review the diff",
            path.display(),
            golden.display()
        );
    }
}

#[test]
fn every_invalid_fixture_is_refused_naming_its_field() {
    for path in fixtures("invalid") {
        let cluster = load(&path);
        let expected = cluster
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("test.strait.dev/invalid-field"))
            .unwrap_or_else(|| panic!("{} lacks its expected field", path.display()))
            .clone();
        let err = validate::spec(&cluster.spec)
            .expect_err(&format!("{} must be refused", path.display()));
        assert_eq!(err.field, expected, "{}: {err}", path.display());
        assert!(
            err.to_string().starts_with(&expected),
            "the message names the field: {err}"
        );
    }
}

#[test]
fn the_rendered_configuration_is_one_the_broker_accepts() {
    for path in fixtures("clusters") {
        let cluster = load(&path);
        let children = build_fixture(&cluster);
        let yaml = &children.config_map.data.as_ref().expect("data")[CONFIG_KEY];
        let config: Config = serde_yaml::from_str(yaml).expect("the broker parses it");
        config.validate().expect("the broker accepts it");
        assert_eq!(
            config.auth.allow_anonymous,
            Some(cluster.spec.auth.allow_anonymous)
        );
        assert!(config.auth.password_file.is_some());
        assert_eq!(config.admin.bind.port(), 8080);
        assert!(
            !config.admin.bind.ip().is_loopback(),
            "probes reach the admin port from outside"
        );
        let mesh = &config.cluster;
        assert_eq!(
            mesh.bind.map(|b| b.to_string()).as_deref(),
            Some("0.0.0.0:7946")
        );
        assert_eq!(
            mesh.secret_file.as_deref(),
            Some(Path::new("/etc/strait/credentials/cluster-secret"))
        );
        let dns = mesh.dns.as_ref().expect("peers are found by DNS");
        let name = cluster.metadata.name.as_deref().expect("name");
        let namespace = cluster.metadata.namespace.as_deref().expect("namespace");
        assert_eq!(dns.name, format!("{name}-headless.{namespace}.svc"));
        assert_eq!(dns.port, 7946);
    }
}

#[test]
fn the_mesh_port_is_declared_by_the_pods_and_the_headless_service() {
    for path in fixtures("clusters") {
        let children = build_fixture(&load(&path));
        let headless = children.headless_service.spec.expect("spec");
        assert_eq!(headless.publish_not_ready_addresses, Some(true));
        let port = headless
            .ports
            .expect("ports")
            .into_iter()
            .find(|p| p.name.as_deref() == Some("cluster"))
            .expect("a cluster port on the headless Service");
        assert_eq!(port.port, 7946);
        let pod = children
            .stateful_set
            .spec
            .expect("spec")
            .template
            .spec
            .expect("pod");
        let ports = pod.containers[0].ports.clone().expect("ports");
        assert!(ports
            .iter()
            .any(|p| p.name.as_deref() == Some("cluster") && p.container_port == 7946));
        let secret = children.credentials.data.expect("data");
        assert_eq!(secret["cluster-secret"].0, b"cluster-secret-fixture");
    }
}

#[test]
fn config_changes_roll_the_pods_and_replica_changes_do_not() {
    let path = &fixtures("clusters")[0];
    let cluster = load(path);
    let hash = |c: &MqttCluster| {
        build_fixture(c)
            .stateful_set
            .spec
            .expect("spec")
            .template
            .metadata
            .expect("meta")
            .annotations
            .expect("annotations")["strait.dev/config-hash"]
            .clone()
    };
    let mut scaled = cluster.clone();
    scaled.spec.replicas += 2;
    assert_eq!(hash(&cluster), hash(&scaled));
    let mut limited = cluster.clone();
    limited.spec.limits.max_inflight = Some(7);
    assert_ne!(hash(&cluster), hash(&limited));
}

#[test]
fn credentials_never_appear_in_the_config_map() {
    for path in fixtures("clusters") {
        let children = build_fixture(&load(&path));
        let yaml = serde_yaml::to_string(&children.config_map).expect("render");
        assert!(
            !yaml.contains("admin-token-fixture")
                && !yaml.contains("internal-password-fixture")
                && !yaml.contains("cluster-secret-fixture")
        );
    }
}
