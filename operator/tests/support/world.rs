//! One region for a link test: an API server namespace, the brokers its
//! pods stand for ([`Nodes`]), and an operator reconciling it; plus MQTT
//! clients and the reads a user makes with `kubectl`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::PostParams;
use kube::{Api, Client};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::json;
use strait_operator::crd::{ClusterLink, MqttCluster};
use strait_operator::links::admin::{AdminClient, AdminToken, NodeLinks};
use strait_operator::settings::Settings;
use tokio::sync::mpsc;

use super::nodes::Nodes;
use super::{eventually, namespace, RunningOperator};

/// How long a test waits for what should happen.
pub const WAIT: Duration = Duration::from_secs(90);

/// A namespace with brokers for its pods and an operator.
pub struct World {
    pub client: Client,
    pub ns: String,
    pub nodes: Nodes,
    pub op: RunningOperator,
}

impl World {
    /// A region on the shared API server; `None` when STRAIT_SKIP_K8S=1.
    pub async fn start(test: &str) -> Option<World> {
        if super::control_plane::skipped() {
            eprintln!("STRAIT_SKIP_K8S=1: skipping {test}");
            return None;
        }
        let client = super::client().await;
        Some(World::on(client, test).await)
    }

    /// A region on the API server `client` talks to.
    pub async fn on(client: Client, test: &str) -> World {
        let ns = namespace(&client, test).await;
        let nodes = Nodes::start(&client, &[&ns]);
        let op = RunningOperator::start_with(
            &client,
            Settings {
                namespace: Some(ns.clone()),
                link_health_interval: Duration::from_millis(500),
                addresses: Arc::new(nodes.clone()),
                ..Settings::new(test, "ghcr.io/strait/broker:test")
            },
            None,
        );
        World {
            client,
            ns,
            nodes,
            op,
        }
    }

    pub async fn stop(self) {
        self.op.stop().await.expect("the operator stops cleanly");
        self.nodes.stop().await;
    }

    /// Creates a cluster of `replicas` nodes that lets MQTT clients in without credentials.
    pub async fn cluster(&self, name: &str, replicas: i32) {
        let cluster: MqttCluster = serde_json::from_value(json!({
            "apiVersion": "strait.dev/v1alpha1",
            "kind": "MqttCluster",
            "metadata": {"name": name},
            "spec": {"replicas": replicas, "auth": {"allowAnonymous": true}},
        }))
        .expect("cluster");
        self.clusters()
            .create(&PostParams::default(), &cluster)
            .await
            .expect("create cluster");
    }

    /// Creates a link with `spec`.
    pub async fn link(&self, name: &str, spec: serde_json::Value) {
        let link: ClusterLink = serde_json::from_value(json!({
            "apiVersion": "strait.dev/v1alpha1",
            "kind": "ClusterLink",
            "metadata": {"name": name},
            "spec": spec,
        }))
        .expect("link");
        self.links()
            .create(&PostParams::default(), &link)
            .await
            .expect("create link");
    }

    /// Two clusters of one node, `east` and `west`, and the link `name`
    /// from east to west letting everything through, once it is Ready.
    pub async fn east_west(&self, name: &str) {
        self.cluster("east", 1).await;
        self.cluster("west", 1).await;
        self.link(
            name,
            json!({"cluster": "east", "peer": {"clusterRef": {"name": "west"}}, "export": ["#"]}),
        )
        .await;
        self.wait_for(name, "Ready", "True").await;
    }

    pub fn clusters(&self) -> Api<MqttCluster> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub fn links(&self) -> Api<ClusterLink> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub async fn get_link(&self, name: &str) -> Option<ClusterLink> {
        self.links().get_opt(name).await.expect("get link")
    }

    /// The link's condition of `type_`, as `kubectl get -o yaml` shows it.
    pub async fn condition(&self, link: &str, type_: &str) -> Option<Condition> {
        self.get_link(link)
            .await?
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == type_)
    }

    /// Waits until the link's `type_` condition is `status` (what `kubectl
    /// wait --for=condition=...` does), and returns it.
    pub async fn wait_for(&self, link: &str, type_: &str, status: &str) -> Condition {
        self.wait_condition(
            link,
            type_,
            |c| c.status == status,
            &format!("{type_}={status}"),
        )
        .await
    }

    /// Waits until the link's `type_` condition has `reason`, and returns it.
    pub async fn wait_reason(&self, link: &str, type_: &str, reason: &str) -> Condition {
        self.wait_condition(
            link,
            type_,
            |c| c.reason == reason,
            &format!("{type_} {reason}"),
        )
        .await
    }

    /// Waits until the link's `type_` condition passes `check`; a timeout
    /// shows the link's whole status.
    async fn wait_condition(
        &self,
        link: &str,
        type_: &str,
        check: impl Fn(&Condition) -> bool,
        what: &str,
    ) -> Condition {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let current = self.get_link(link).await.and_then(|l| l.status);
            let found = current
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_));
            if let Some(condition) = found.filter(|c| check(c)) {
                return condition.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting until {link} {what}; its status: {current:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Warning Events with `reason` about the link `link`.
    pub async fn warnings(&self, link: &str, reason: &str) -> usize {
        let events: Api<k8s_openapi::api::events::v1::Event> =
            Api::namespaced(self.client.clone(), &self.ns);
        events
            .list(&Default::default())
            .await
            .expect("events")
            .items
            .iter()
            .filter(|e| {
                e.type_.as_deref() == Some("Warning")
                    && e.reason.as_deref() == Some(reason)
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(link)
            })
            .count()
    }

    /// What the pod's broker says of its links (through its admin API, with
    /// the cluster's admin token).
    pub async fn node_links(&self, cluster: &str, pod: &str) -> Option<NodeLinks> {
        let secret = self
            .secrets()
            .get_opt(&format!("{cluster}-credentials"))
            .await
            .ok()??;
        let token = String::from_utf8(secret.data?.remove("admin-token")?.0).ok()?;
        let admin = self.nodes.admin_of(&self.ns, pod);
        AdminClient::default()
            .links(admin, &AdminToken(token))
            .await
            .ok()
    }

    /// Waits until the pod's broker has learned `routes` filters from `remote`.
    pub async fn wait_routes(&self, cluster: &str, pod: &str, remote: &str, routes: u64) {
        let what = format!("{pod} learns {routes} filters from {remote}");
        eventually(WAIT, &what, || async {
            self.node_links(cluster, pod).await.is_some_and(|l| {
                l.link(remote)
                    .is_some_and(|l| l.routes_received == routes && l.state != "absent")
            })
        })
        .await;
    }

    /// An MQTT client of the pod's broker.
    pub async fn mqtt(&self, pod: &str, id: &str) -> Mqtt {
        Mqtt::connect(self.nodes.mqtt(&self.ns, pod), id).await
    }
}

/// An MQTT client (rumqttc) that collects what it receives.
pub struct Mqtt {
    pub client: AsyncClient,
    received: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    acks: mpsc::UnboundedReceiver<()>,
}

impl Mqtt {
    pub async fn connect(addr: SocketAddr, id: &str) -> Mqtt {
        let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        options.set_keep_alive(Duration::from_secs(5));
        let (client, mut events) = AsyncClient::new(options, 100);
        let (tx, received) = mpsc::unbounded_channel();
        let (ack_tx, acks) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if tx.send((p.topic.clone(), p.payload.to_vec())).is_err() {
                            return;
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_) | Packet::PubAck(_))) => {
                        let _ = ack_tx.send(());
                    }
                    Ok(_) => {}
                    Err(_) => {
                        if tx.is_closed() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        Mqtt {
            client,
            received,
            acks,
        }
    }

    /// Subscribes at QoS 1 and waits for the broker's acknowledgement.
    pub async fn subscribe(&mut self, filter: &str) {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .expect("subscribe");
        self.ack().await;
    }

    /// Publishes at QoS 1 and waits for the broker's acknowledgement.
    pub async fn publish(&mut self, topic: &str, payload: &[u8]) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.to_vec())
            .await
            .expect("publish");
        self.ack().await;
    }

    async fn ack(&mut self) {
        tokio::time::timeout(WAIT, self.acks.recv())
            .await
            .expect("the broker acknowledges")
            .expect("the client runs");
    }

    /// The next message received.
    pub async fn next(&mut self) -> (String, Vec<u8>) {
        tokio::time::timeout(WAIT, self.received.recv())
            .await
            .expect("a message arrives")
            .expect("the client runs")
    }

    /// Whatever arrived so far, without waiting.
    pub fn drain(&mut self) -> Vec<(String, Vec<u8>)> {
        let mut all = Vec::new();
        while let Ok(message) = self.received.try_recv() {
            all.push(message);
        }
        all
    }
}
