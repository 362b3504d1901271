//! The brokers' admin API as the operator calls it: read a node's links
//! (`GET /api/v1/links`) and put a link set (`PUT /api/v1/links`), with the
//! cluster's admin token, each within a deadline so that an unreachable
//! node costs a reconcile little.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use strait_broker::config::LinkSet;

/// How long one call may take.
const DEADLINE: Duration = Duration::from_secs(3);

/// A cluster's admin token. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(pub String);

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// What a node says of its links.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct NodeLinks {
    /// The link-set revision the node runs.
    #[serde(default)]
    pub revision: Option<String>,
    #[serde(default)]
    pub links: Vec<NodeLink>,
}

/// One link on one node (the fields the operator reads).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeLink {
    pub name: String,
    /// `connected`, `elsewhere`, `connecting` or `waiting`.
    pub state: String,
    #[serde(default)]
    pub holder: Option<String>,
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub routes_received: u64,
    #[serde(default)]
    pub queued_messages: u64,
}

impl NodeLinks {
    /// The link to `remote`, if the node runs one.
    pub fn link(&self, remote: &str) -> Option<&NodeLink> {
        self.links.iter().find(|l| l.name == remote)
    }
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    #[error("{addr}: {reason}")]
    Unreachable { addr: SocketAddr, reason: String },
    #[error("{addr}: no answer within {}s", DEADLINE.as_secs())]
    Timeout { addr: SocketAddr },
    #[error("{addr}: HTTP {status}: {body}")]
    Refused {
        addr: SocketAddr,
        status: u16,
        body: String,
    },
    #[error("{addr}: unexpected answer: {reason}")]
    Malformed { addr: SocketAddr, reason: String },
}

/// A client of the brokers' admin endpoints (plain HTTP inside the cluster).
#[derive(Debug, Clone)]
pub struct AdminClient {
    http: Client<HttpConnector, Full<Bytes>>,
}

impl Default for AdminClient {
    fn default() -> Self {
        AdminClient {
            http: Client::builder(TokioExecutor::new()).build_http(),
        }
    }
}

impl AdminClient {
    /// The node's link-set revision and links.
    pub async fn links(
        &self,
        addr: SocketAddr,
        token: &AdminToken,
    ) -> Result<NodeLinks, AdminError> {
        self.call(addr, token, Method::GET, Bytes::new()).await
    }

    /// Makes `set` the node's link set; returns what the node then runs.
    pub async fn put_links(
        &self,
        addr: SocketAddr,
        token: &AdminToken,
        set: &LinkSet,
    ) -> Result<NodeLinks, AdminError> {
        let body = serde_json::to_vec(set).map_err(|e| AdminError::Malformed {
            addr,
            reason: e.to_string(),
        })?;
        self.call(addr, token, Method::PUT, Bytes::from(body)).await
    }

    async fn call(
        &self,
        addr: SocketAddr,
        token: &AdminToken,
        method: Method,
        body: Bytes,
    ) -> Result<NodeLinks, AdminError> {
        let request = Request::builder()
            .method(method)
            .uri(format!("http://{addr}/api/v1/links"))
            .header(AUTHORIZATION, format!("Bearer {}", token.0))
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| AdminError::Malformed {
                addr,
                reason: e.to_string(),
            })?;
        let exchange = async {
            let response =
                self.http
                    .request(request)
                    .await
                    .map_err(|e| AdminError::Unreachable {
                        addr,
                        reason: error_chain(&e),
                    })?;
            let status = response.status().as_u16();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| AdminError::Unreachable {
                    addr,
                    reason: e.to_string(),
                })?
                .to_bytes();
            Ok::<_, AdminError>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(DEADLINE, exchange)
            .await
            .map_err(|_| AdminError::Timeout { addr })??;
        if status != 200 {
            return Err(AdminError::Refused {
                addr,
                status,
                body: String::from_utf8_lossy(&bytes).trim().to_owned(),
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| AdminError::Malformed {
            addr,
            reason: e.to_string(),
        })
    }
}

/// An error with its causes (hyper's top-level message alone says little).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
