//! Links to other clusters (`links:`) and the listener other clusters' links
//! connect to (`linkListener:`). The operator renders exactly these types.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::TlsConfig;
use crate::protocol::topic;

/// Where other clusters' links connect to this node. It is separate from the
/// client listeners and never admits anyone without a credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LinkListenerConfig {
    pub bind: SocketAddr,
    /// One `<cluster>:<hashed credential>` per line, for each remote cluster
    /// allowed in (`strait-broker link-credential` hashes a secret). The
    /// secrets themselves are never stored on this side.
    pub credentials_file: PathBuf,
    /// Serve the link protocol over TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
}

/// One link: which messages flow between this cluster and the cluster `name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LinkConfig {
    /// The remote cluster's name (its `node.cluster`).
    pub name: String,
    /// Where the remote cluster's link listener is, as `host:port`; names are
    /// resolved again at every dial. Empty: this side only accepts the
    /// remote's connection (an edge behind NAT dials out; the cloud lists no
    /// endpoints for it). Both directions flow over whichever side dials.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<String>,
    /// File holding the secret this side proves when it dials (the remote's
    /// credentials file holds its hash). Required with `endpoints`. In a
    /// link set from `linksFile` or `PUT /api/v1/links`, a relative path
    /// (here and in `tls`) is relative to the links file's folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<LinkTlsConfig>,
    /// Filters whose messages may go to the remote cluster.
    #[serde(default)]
    pub export: Vec<String>,
    /// Filters whose messages this cluster accepts from the remote cluster.
    #[serde(default)]
    pub import: Vec<String>,
    #[serde(default)]
    pub queue: LinkQueueConfig,
    /// Clusters a message or an advertisement may cross, at most, from its origin.
    #[serde(default = "default_max_hops")]
    pub max_hops: u8,
    /// How long the remote's interest is remembered while the link is down
    /// (messages for it keep queueing meanwhile); unset: until the link is
    /// removed from the configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interest_retention_secs: Option<u64>,
}

/// What `PUT /api/v1/links` takes: the links, and the revision its sender
/// calls them (the operator's hash of the set), which `GET /api/v1/links`
/// then shows so the sender can tell which nodes run what. A bare list of
/// links is taken too, without a revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LinkSet {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    pub links: Vec<LinkConfig>,
}

impl LinkSet {
    /// Makes the relative file paths of every link (its secret, its TLS
    /// files) relative to `base`: the folder of the links file, so that a
    /// links folder can be mounted anywhere.
    pub fn resolve_paths(&mut self, base: &std::path::Path) {
        for link in &mut self.links {
            let resolve = |path: &mut PathBuf| {
                if path.is_relative() {
                    *path = base.join(&*path);
                }
            };
            if let Some(path) = &mut link.secret_file {
                resolve(path);
            }
            if let Some(tls) = &mut link.tls {
                resolve(&mut tls.ca_file);
                if let Some(path) = &mut tls.cert_file {
                    resolve(path);
                }
                if let Some(path) = &mut tls.key_file {
                    resolve(path);
                }
            }
        }
    }

    /// Reads a link set from JSON; the error says what is wrong.
    pub fn from_json(body: serde_json::Value) -> Result<LinkSet, String> {
        if body.is_array() {
            let links =
                serde_json::from_value(body).map_err(|e| format!("not a list of links: {e}"))?;
            return Ok(LinkSet {
                revision: None,
                links,
            });
        }
        if !body.is_object() {
            return Err("expected {\"revision\": ..., \"links\": [...]} or a list of links".into());
        }
        serde_json::from_value(body).map_err(|e| format!("not a link set: {e}"))
    }
}

fn default_max_hops() -> u8 {
    8
}

/// TLS when dialling the remote cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LinkTlsConfig {
    /// CA bundle the remote's certificate must chain to.
    pub ca_file: PathBuf,
    /// The name the remote's certificate must carry.
    pub server_name: String,
    /// A client certificate, for remotes that require one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
}

/// The bounds of what a link keeps for its remote cluster while it cannot
/// take it (down, or slower than this side's publishers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct LinkQueueConfig {
    pub max_messages: usize,
    pub max_bytes: usize,
    /// How long a message may wait on the queue; older ones are dropped,
    /// counted as `expired`. Unset: no limit (a message's own expiry still applies).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_ttl_secs: Option<u64>,
    pub when_full: WhenFull,
}

impl Default for LinkQueueConfig {
    fn default() -> Self {
        LinkQueueConfig {
            max_messages: 100_000,
            max_bytes: 256 * 1024 * 1024,
            message_ttl_secs: None,
            when_full: WhenFull::DropNew,
        }
    }
}

/// What a full link queue does with another message, counted either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum WhenFull {
    /// Refuse the new message (`queue_full`).
    #[default]
    DropNew,
    /// Drop the oldest message not yet sent to make room (`queue_full`).
    DropOldest,
}

/// Checks the link section; errors name the field.
pub(super) fn validate(
    own_cluster: &str,
    listener: Option<&LinkListenerConfig>,
    links: &[LinkConfig],
) -> Result<(), String> {
    let mut names = HashSet::new();
    for (i, link) in links.iter().enumerate() {
        let field = format!("links[{i}] ({:?})", link.name);
        if link.name.is_empty() {
            return Err(format!("links[{i}].name must be set"));
        }
        if link.name == own_cluster {
            return Err(format!(
                "{field}.name is this cluster's own name; a link joins two different clusters"
            ));
        }
        if !names.insert(link.name.as_str()) {
            return Err(format!(
                "{field}.name: more than one link to the same cluster"
            ));
        }
        if link.endpoints.is_empty() && listener.is_none() {
            return Err(format!(
                "{field}: no endpoints to dial and no linkListener to accept on; the link could never connect"
            ));
        }
        if !link.endpoints.is_empty() && link.secret_file.is_none() {
            return Err(format!("{field}.secretFile is required to dial endpoints"));
        }
        for endpoint in &link.endpoints {
            let port = endpoint
                .rsplit_once(':')
                .map(|(_, port)| port.parse::<u16>());
            if !matches!(port, Some(Ok(_))) {
                return Err(format!("{field}.endpoints: {endpoint:?} is not host:port"));
            }
        }
        for (list, filters) in [("export", &link.export), ("import", &link.import)] {
            for filter in filters {
                if let Err(err) = topic::validate_topic_filter(filter) {
                    return Err(format!("{field}.{list}: {filter:?}: {}", err.describe()));
                }
                if filter.starts_with("$share/") {
                    return Err(format!(
                        "{field}.{list}: {filter:?}: a shared subscription is not a topic filter"
                    ));
                }
            }
        }
        if let Some(tls) = &link.tls {
            if tls.server_name.is_empty() {
                return Err(format!("{field}.tls.serverName must be set"));
            }
            if tls.cert_file.is_some() != tls.key_file.is_some() {
                return Err(format!("{field}.tls: certFile and keyFile go together"));
            }
        }
        let queue = &link.queue;
        if queue.max_messages == 0 || queue.max_bytes == 0 {
            return Err(format!(
                "{field}.queue.maxMessages and maxBytes must be at least 1"
            ));
        }
        if queue.message_ttl_secs == Some(0) {
            return Err(format!("{field}.queue.messageTtlSecs must be at least 1"));
        }
        if link.max_hops == 0 {
            return Err(format!("{field}.maxHops must be at least 1"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn check(yaml: &str) -> Result<(), String> {
        let config: Config = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
        config.validate().map_err(|e| e.to_string())
    }

    #[test]
    fn a_link_that_can_connect_is_valid_and_defaults_are_sane() {
        let yaml = "node: {cluster: east}\nlinks: [{name: west, endpoints: ['127.0.0.1:9950'], secretFile: /s, export: ['#'], import: ['#']}]";
        check(yaml).expect("valid");
        let config: Config = serde_yaml::from_str(yaml).expect("parse");
        assert_eq!(config.links[0].max_hops, 8);
        assert_eq!(config.links[0].queue.when_full, WhenFull::DropNew);
    }

    #[test]
    fn mistakes_are_refused_naming_the_field() {
        let listener = "linkListener: {bind: '127.0.0.1:7950', credentialsFile: /c}\n";
        for (yaml, field) in [
            ("node: {cluster: east}\nlinks: [{name: east, endpoints: ['a:1'], secretFile: /s}]", "links[0] (\"east\").name"),
            ("links: [{name: w, endpoints: ['a:1'], secretFile: /s}, {name: w, endpoints: ['a:1'], secretFile: /s}]", "links[1] (\"w\").name"),
            ("links: [{name: w}]", "no endpoints to dial and no linkListener"),
            ("links: [{name: w, endpoints: ['a:1']}]", "secretFile"),
            ("links: [{name: w, endpoints: ['nohost'], secretFile: /s}]", "endpoints"),
            (&format!("{listener}links: [{{name: w, export: ['a/#/b']}}]"), "export"),
            (&format!("{listener}links: [{{name: w, import: ['$share/g/a']}}]"), "import"),
            (&format!("{listener}links: [{{name: w, queue: {{maxMessages: 0}}}}]"), "queue.maxMessages"),
            (&format!("{listener}links: [{{name: w, maxHops: 0}}]"), "maxHops"),
            (&format!("{listener}links: [{{name: w, tls: {{caFile: /ca, serverName: ''}}}}]"), "tls.serverName"),
        ] {
            let err = check(yaml).expect_err(yaml);
            assert!(err.contains(field), "{yaml}: {err}");
        }
        check(&format!("{listener}links: [{{name: w}}]")).expect("accept-only with a listener");
    }
}

#[cfg(test)]
mod links_file_tests {
    use crate::config::Config;

    /// The operator keeps a cluster's links in a file of their own: they are
    /// read at start with their revision and paths relative to the file's
    /// folder, a missing file adds none, and a file the broker cannot parse
    /// is an error naming it.
    #[test]
    fn a_links_file_adds_its_links_and_revision_and_a_missing_one_adds_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let links = dir.path().join("links.yaml");
        let config = dir.path().join("strait.yaml");
        std::fs::write(
            &config,
            format!(
                "node: {{cluster: east, name: east-0}}\nlinksFile: {}\n\
                 linkListener: {{bind: 127.0.0.1:0, credentialsFile: {}}}\n",
                links.display(),
                dir.path().join("credentials").display()
            ),
        )
        .expect("write config");
        let loaded = Config::load(&config).expect("no links file yet is fine");
        assert!(loaded.links.is_empty());
        assert_eq!(loaded.links_revision, None);

        std::fs::write(
            &links,
            "revision: abc\nlinks:\n  - name: west\n    export: ['#']\n    endpoints: ['w:1']\n    secretFile: west.secret\n",
        )
        .expect("write links");
        let loaded = Config::load(&config).expect("load");
        assert_eq!(loaded.links.len(), 1);
        assert_eq!(loaded.links[0].name, "west");
        assert_eq!(loaded.links_revision.as_deref(), Some("abc"));
        assert_eq!(
            loaded.links[0].secret_file.as_deref(),
            Some(dir.path().join("west.secret").as_path()),
            "relative to the links file's folder"
        );

        std::fs::write(&links, "links: [{name: east}]\n").expect("write links");
        let refused = Config::load(&config).expect_err("a link to itself");
        assert!(refused.to_string().contains("own name"), "{refused}");
        std::fs::write(&links, "links: {}\n").expect("write links");
        let refused = Config::load(&config).expect_err("not a list");
        assert!(refused.to_string().contains("links.yaml"), "{refused}");
    }
}
