//! The cluster's Services: headless (stable pod DNS), client, and link.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::meta::{selector_labels, ChildMeta};
use super::{ADMIN_PORT, CLUSTER_PORT};
use crate::crd::{LinkServiceType, MqttCluster};

/// Named ports of the broker container and of the Services, client ones first.
pub(super) fn client_ports(cluster: &MqttCluster) -> Vec<(&'static str, i32)> {
    let l = &cluster.spec.listeners;
    let mut ports = Vec::new();
    if l.mqtt.enabled {
        ports.push(("mqtt", l.mqtt.port));
    }
    if l.mqtts.enabled {
        ports.push(("mqtts", l.mqtts.port));
    }
    if l.websocket.enabled {
        ports.push(("websocket", l.websocket.port));
    }
    ports
}

fn service_ports(ports: &[(&str, i32)]) -> Option<Vec<ServicePort>> {
    Some(
        ports
            .iter()
            .map(|(name, port)| ServicePort {
                name: Some((*name).to_owned()),
                port: *port,
                target_port: Some(IntOrString::String((*name).to_owned())),
                protocol: Some("TCP".to_owned()),
                ..ServicePort::default()
            })
            .collect(),
    )
}

/// Gives every pod a stable DNS name (`<pod>.<name>-headless.<ns>.svc`), ready
/// or not, so that nodes find each other while they start: the mesh
/// discovers its peers through this Service's name.
pub(super) fn headless(meta: &ChildMeta, cluster: &MqttCluster) -> Service {
    let mut ports = client_ports(cluster);
    ports.push(("link", cluster.spec.listeners.link.port));
    ports.push(("admin", ADMIN_PORT));
    ports.push(("cluster", CLUSTER_PORT));
    Service {
        metadata: meta.object(&meta.names.headless_service),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector_labels(&meta.name)),
            ports: service_ports(&ports),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// Where MQTT clients connect: every enabled client listener, ready pods only.
pub(super) fn client(meta: &ChildMeta, cluster: &MqttCluster) -> Service {
    Service {
        metadata: meta.object(&meta.names.client_service),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(selector_labels(&meta.name)),
            ports: service_ports(&client_ports(cluster)),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// Where peer clusters' links connect: ready pods only, reachable as the
/// spec's `listeners.link.service` says.
pub(super) fn link(meta: &ChildMeta, cluster: &MqttCluster) -> Service {
    let exposure = &cluster.spec.listeners.link.service;
    let mut ports = service_ports(&[("link", cluster.spec.listeners.link.port)]);
    if exposure.type_ != LinkServiceType::ClusterIP {
        if let Some(port) = ports.as_mut().and_then(|p| p.first_mut()) {
            port.node_port = exposure.node_port;
        }
    }
    let mut metadata = meta.object(&meta.names.link_service);
    if !exposure.annotations.is_empty() {
        metadata.annotations = Some(exposure.annotations.clone());
    }
    Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some(exposure.type_.as_str().to_owned()),
            selector: Some(selector_labels(&meta.name)),
            ports,
            load_balancer_source_ranges: (exposure.type_ == LinkServiceType::LoadBalancer
                && !exposure.load_balancer_source_ranges.is_empty())
            .then(|| exposure.load_balancer_source_ranges.clone()),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// `host:port` of the client Service's first listener, for the status.
pub fn client_endpoint(cluster: &MqttCluster, namespace: &str) -> Option<String> {
    let name = cluster.metadata.name.as_deref()?;
    let (_, port) = client_ports(cluster).into_iter().next()?;
    Some(format!("{name}.{namespace}.svc:{port}"))
}

/// `host:port` where other clusters' links reach this one, from the link
/// Service as the API server holds it: the in-cluster name for
/// `ClusterIP`, the load balancer's address once it has one, and any
/// node's address (`*`) with the node port for `NodePort`.
pub fn link_endpoint(
    cluster: &MqttCluster,
    namespace: &str,
    live: Option<&Service>,
) -> Option<String> {
    let name = cluster.metadata.name.as_deref()?;
    let names = super::names(name);
    let port = cluster.spec.listeners.link.port;
    match cluster.spec.listeners.link.service.type_ {
        LinkServiceType::ClusterIP => {
            Some(format!("{}.{namespace}.svc:{port}", names.link_service))
        }
        LinkServiceType::LoadBalancer => {
            let ingress = live?
                .status
                .as_ref()?
                .load_balancer
                .as_ref()?
                .ingress
                .as_ref()?;
            let first = ingress.first()?;
            let host = first.hostname.clone().or_else(|| first.ip.clone())?;
            Some(format!("{host}:{port}"))
        }
        LinkServiceType::NodePort => {
            let ports = live?.spec.as_ref()?.ports.as_ref()?;
            let node_port = ports.first()?.node_port?;
            Some(format!("*:{node_port}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(service: serde_json::Value) -> MqttCluster {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "strait.dev/v1alpha1",
            "kind": "MqttCluster",
            "metadata": {"name": "east", "namespace": "ns", "uid": "u-1"},
            "spec": {"listeners": {"link": {"service": service}}},
        }))
        .expect("cluster")
    }

    fn service(value: serde_json::Value) -> Service {
        serde_json::from_value(value).expect("service")
    }

    #[test]
    fn the_link_endpoint_is_where_the_service_is_reached() {
        let internal = cluster(serde_json::json!({}));
        assert_eq!(
            link_endpoint(&internal, "ns", None).as_deref(),
            Some("east-link.ns.svc:7883")
        );

        let balanced = cluster(serde_json::json!({"type": "LoadBalancer"}));
        assert_eq!(link_endpoint(&balanced, "ns", None), None, "no address yet");
        let pending = service(serde_json::json!({"status": {"loadBalancer": {}}}));
        assert_eq!(link_endpoint(&balanced, "ns", Some(&pending)), None);
        let up = service(serde_json::json!({"status": {"loadBalancer": {"ingress": [
            {"hostname": "link.east.example.com"}
        ]}}}));
        assert_eq!(
            link_endpoint(&balanced, "ns", Some(&up)).as_deref(),
            Some("link.east.example.com:7883")
        );

        let node_port = cluster(serde_json::json!({"type": "NodePort"}));
        let allocated =
            service(serde_json::json!({"spec": {"ports": [{"port": 7883, "nodePort": 31883}]}}));
        assert_eq!(
            link_endpoint(&node_port, "ns", Some(&allocated)).as_deref(),
            Some("*:31883")
        );
    }
}
