//! Strait's MQTT load generator.
//!
//! It drives any MQTT broker with identical scenarios (1:1 pairs, fan-in,
//! fan-out; QoS 0 and 1; small and 1 KiB payloads), measures delivered
//! throughput, end-to-end latency at a fixed load and memory use, and reports
//! Strait against its peers as ratios, and Strait across a two-node
//! cluster against Strait on one node. Its MQTT client is built on Strait's own
//! codec and kept minimal so the load generator is never the bottleneck.

pub mod admin;
pub mod bench;
pub mod broker;
pub mod client;
pub mod clock;
pub mod cluster;
pub mod cross_link;
pub mod cross_node;
pub mod delivery;
pub mod idle;
pub mod linked;
pub mod pace;
pub mod payload;
pub mod relay;
pub mod report;
pub mod routes;
pub mod run;
pub mod scenario;
pub mod stats;
