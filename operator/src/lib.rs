//! Strait's Kubernetes operator: two controllers, one per resource.
//!
//! A `ClusterLink` is reconciled by [`links`]. An `MqttCluster` is reconciled in five steps, each in its own module:
//! [`controller::dereference`] does every API read, [`validate`] checks the
//! spec (pure), [`resources`] builds the children (pure), the controller's
//! apply step writes them with server-side apply, and its status step
//! reports back through [`conditions`].

pub mod conditions;
pub mod controller;
pub mod crd;
pub mod http;
pub mod leader;
pub mod links;
pub mod operator;
pub mod resources;
pub mod settings;
pub mod telemetry;
pub mod validate;
