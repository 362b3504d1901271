//! Links between clusters.

pub mod credential;
pub mod interest;
pub mod wire;
