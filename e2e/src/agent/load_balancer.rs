//! The node's load balancer, as minikube's tunnel or a bare-metal one gives
//! it: a `LoadBalancer` Service's ingress address is its cluster IP, which
//! the service proxy already serves, and which another node's pods reach
//! through their route to this node's service range
//! ([`super::Agent::route_to`]). Whatever waits for a load balancer's
//! address (a link endpoint in a status, an issued Secret) gets one.

use k8s_openapi::api::core::v1::Service;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::{Api, Client, ResourceExt};
use serde_json::json;

/// Writes each `LoadBalancer` Service's cluster IP as its ingress address,
/// where it is not written yet.
pub async fn announce(client: &Client, services: &Store<Service>) {
    for service in services.state() {
        let spec = service.spec.clone().unwrap_or_default();
        if spec.type_.as_deref() != Some("LoadBalancer") {
            continue;
        }
        let Some(cluster_ip) = spec
            .cluster_ip
            .filter(|ip| ip.parse::<std::net::Ipv4Addr>().is_ok())
        else {
            continue;
        };
        let announced = service
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .and_then(|ingress| ingress.first())
            .and_then(|ingress| ingress.ip.as_deref());
        if announced == Some(cluster_ip.as_str()) {
            continue;
        }
        let namespace = service.namespace().unwrap_or_default();
        let api: Api<Service> = Api::namespaced(client.clone(), &namespace);
        let patch = json!({"status": {"loadBalancer": {"ingress": [{"ip": cluster_ip}]}}});
        if let Err(error) = api
            .patch_status(
                &service.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            tracing::debug!(%error, service = %service.name_any(), "announcing a load balancer address");
        }
    }
}
