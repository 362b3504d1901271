//! Where the operator reaches a broker pod: its admin endpoint (to push and
//! read links) and its link listener (for a peer in the same Kubernetes to
//! dial). Tests that run brokers on loopback in place of pods give their own.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::core::v1::Pod;

use crate::crd::MqttCluster;
use crate::resources::{names, ADMIN_PORT};

/// How to reach a broker pod.
pub trait NodeAddresses: Send + Sync + fmt::Debug {
    /// The pod's admin endpoint, once it has an address.
    fn admin(&self, pod: &Pod) -> Option<SocketAddr>;
    /// Where another cluster's link dials the pod `pod` of `cluster`.
    fn link_endpoint(&self, cluster: &MqttCluster, pod: &str) -> String;
}

/// The pod network: a pod's IP for its admin port, and its stable name under
/// the cluster's headless Service for its link listener.
#[derive(Debug, Clone, Copy, Default)]
pub struct PodNetwork;

impl NodeAddresses for PodNetwork {
    fn admin(&self, pod: &Pod) -> Option<SocketAddr> {
        let ip: IpAddr = pod.status.as_ref()?.pod_ip.as_deref()?.parse().ok()?;
        Some(SocketAddr::new(ip, u16::try_from(ADMIN_PORT).ok()?))
    }

    fn link_endpoint(&self, cluster: &MqttCluster, pod: &str) -> String {
        let name = cluster.metadata.name.as_deref().unwrap_or_default();
        let namespace = cluster.metadata.namespace.as_deref().unwrap_or_default();
        let headless = names(name).headless_service;
        let port = cluster.spec.listeners.link.port;
        format!("{pod}.{headless}.{namespace}.svc:{port}")
    }
}
