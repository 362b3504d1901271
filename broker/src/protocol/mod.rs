//! The MQTT 3.1.1 / 5.0 codec: bytes in, packets out, never any I/O.
//!
//! [`decode`] takes one packet off the front of a buffer (or says it needs more
//! bytes); [`encode`] appends one packet to a buffer. Both are pure, so they are
//! unit-tested and fuzzed without sockets.

mod decode;
mod encode;
pub mod packet;
mod properties;
pub mod reason;
pub mod topic;
mod wire;

#[cfg(test)]
mod tests;

pub use decode::{decode, DecodeError};
pub use encode::{encode, EncodeError};
pub use packet::*;
pub use reason::ReasonCode;
