//! Strait's MQTT broker node.
//!
//! The crate is layered so that every piece with logic in it can be tested without
//! sockets: `protocol` turns bytes into packets, `session` keeps a client's QoS
//! state, `router` matches topics to subscribers, and `server` is the only place
//! where those meet the network (through `transport`) and the disk (through `store`).

pub mod admin;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod flow;
pub mod link;
pub mod metrics;
pub mod peering;
pub mod protocol;
pub mod router;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod store;
pub mod transport;
