//! A container's probes, as a kubelet runs them: an HTTP GET to the pod's
//! address, succeeding on a status from 200 to 399 within the timeout.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A probe resolved against its container.
#[derive(Debug, Clone)]
pub struct HttpProbe {
    /// Port on the pod's address.
    pub port: u16,
    /// Path requested.
    pub path: String,
    /// Time between probes.
    pub period: Duration,
    /// Time one probe may take.
    pub timeout: Duration,
    /// Consecutive failures that count as failed.
    pub failure_threshold: u32,
}

impl HttpProbe {
    /// The container's HTTP probe, with Kubernetes' defaults; `None` for no
    /// probe, or one of a kind this agent does not run (which then never fails).
    pub fn of(container: &Container, probe: Option<&Probe>) -> Option<HttpProbe> {
        let probe = probe?;
        let get = probe.http_get.as_ref()?;
        let port = match &get.port {
            IntOrString::Int(n) => u16::try_from(*n).ok()?,
            IntOrString::String(name) => container
                .ports
                .as_deref()?
                .iter()
                .find(|p| p.name.as_deref() == Some(name))
                .and_then(|p| u16::try_from(p.container_port).ok())?,
        };
        let secs = |v: Option<i32>, default: u64| {
            Duration::from_secs(v.and_then(|v| u64::try_from(v).ok()).unwrap_or(default))
        };
        Some(HttpProbe {
            port,
            path: get.path.clone().unwrap_or_else(|| "/".to_owned()),
            period: secs(probe.period_seconds, 10),
            timeout: secs(probe.timeout_seconds, 1),
            failure_threshold: probe
                .failure_threshold
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or(3),
        })
    }

    /// Probes the pod at `ip` once.
    pub async fn check(&self, ip: IpAddr) -> bool {
        tokio::time::timeout(self.timeout, self.get(SocketAddr::new(ip, self.port)))
            .await
            .is_ok_and(|ok| ok.unwrap_or(false))
    }

    async fn get(&self, address: SocketAddr) -> std::io::Result<bool> {
        let mut stream = TcpStream::connect(address).await?;
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {address}\r\nUser-Agent: strait-node-agent\r\nConnection: close\r\n\r\n",
            self.path
        );
        stream.write_all(request.as_bytes()).await?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await?;
        // "HTTP/1.1 200"
        let code: u16 = std::str::from_utf8(&head[9..12])
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        Ok((200..400).contains(&code))
    }
}
