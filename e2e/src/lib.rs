//! Strait as a whole on one machine: a real Kubernetes control plane
//! ([`control_plane`]), a node agent that runs the pods the operator's
//! StatefulSets create as real processes in network namespaces of their own
//! ([`agent`]), and one Kubernetes with the operator installed by its Helm
//! chart, as `make run` brings up and the end-to-end scenarios drive
//! ([`system`]).

pub mod agent;
pub mod control_plane;
pub mod system;
pub mod wait;
