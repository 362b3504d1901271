//! Strait's admin API as the benchmark reads it: just enough HTTP to ask a
//! node whether its cluster peers are connected, without an HTTP client
//! dependency for one loopback GET.

use std::net::SocketAddr;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Where a node lists its cluster peers and their state.
pub const CLUSTER_PATH: &str = "/api/v1/cluster";

/// The state of a peer with a live, authenticated connection.
const CONNECTED: &str = "connected";

/// Why an admin request failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("admin request to {addr} failed: {source}")]
    Io {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("admin endpoint {addr} sent no HTTP status line")]
    Malformed { addr: SocketAddr },
}

/// A response: status code and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// `GET path` over HTTP/1.0, so the server closes the connection after a
/// body that is neither chunked nor kept alive: the body is everything after
/// the headers.
pub async fn get(addr: SocketAddr, path: &str) -> Result<Response, AdminError> {
    let io = |source| AdminError::Io { addr, source };
    let mut stream = TcpStream::connect(addr).await.map_err(io)?;
    let request =
        format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: application/json\r\n\r\n");
    stream.write_all(request.as_bytes()).await.map_err(io)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.map_err(io)?;
    parse_response(&String::from_utf8_lossy(&raw)).ok_or(AdminError::Malformed { addr })
}

/// Splits a whole HTTP/1.x response into its status code and body.
pub fn parse_response(raw: &str) -> Option<Response> {
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head
        .lines()
        .next()?
        .strip_prefix("HTTP/1.")?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(Response {
        status,
        body: body.to_owned(),
    })
}

/// How many of the `peers` in a `/api/v1/cluster` document are `"connected"`
/// (both directions of the link up).
pub fn connected_peers(document: &str) -> Result<usize, serde_json::Error> {
    let status: Value = serde_json::from_str(document)?;
    let peers = status.get("peers").and_then(Value::as_array);
    Ok(peers.map_or(0, |peers| {
        peers
            .iter()
            .filter(|peer| peer.get("state").and_then(Value::as_str) == Some(CONNECTED))
            .count()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_splits_into_status_and_body() {
        let response = parse_response(
            "HTTP/1.0 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
        )
        .expect("parses");
        assert_eq!(response.status, 200);
        assert_eq!(response.body, "{}");
        assert_eq!(
            parse_response("HTTP/1.1 404 Not Found\r\n\r\n").map(|r| r.status),
            Some(404)
        );
        assert_eq!(parse_response("garbage"), None);
        assert_eq!(parse_response("SSH-2.0\r\n\r\n"), None);
    }

    #[test]
    fn only_connected_peers_count() {
        let document = r#"{"cluster": "bench", "node": "a", "localRoutes": 0, "peers": [
            {"name": "b", "state": "connected", "routes": 3, "lag": 0},
            {"name": "c", "state": "connecting", "routes": 0, "lag": 0},
            {"name": "d", "state": "unreachable", "routes": 0, "lag": 0}
        ]}"#;
        assert_eq!(connected_peers(document).expect("json"), 1);
        assert_eq!(connected_peers(r#"{"peers": []}"#).expect("json"), 0);
        assert_eq!(connected_peers(r#"{"node": "a"}"#).expect("json"), 0);
        assert!(connected_peers("not json").is_err());
    }
}
