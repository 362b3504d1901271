//! What every connection between brokers shares, whether it joins two nodes
//! of one cluster (`cluster/`) or two clusters (`link/`): length-prefixed
//! frames of any message type, reading them off a stream with limits that
//! depend on whether the other end is authenticated yet, keyed proofs over
//! a challenge, redialling with capped, jittered backoff, and the sequenced
//! queue that lets a stream resume after a cut.

pub mod backoff;
pub mod frame;
pub mod io;
pub mod outbox;
pub mod proof;

pub use backoff::Backoff;
pub use frame::FrameError;
pub use io::{PeerError, PeerIo, Reader, Writer};
pub use outbox::{Bounds, Forgotten, Outbox, PushError, Resume};
