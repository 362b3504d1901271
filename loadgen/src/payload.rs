//! The benchmark payload: a send timestamp followed by padding.
//!
//! The first eight bytes carry the publisher's send time (big-endian
//! nanoseconds on the run's [`Clock`](crate::clock::Clock)); the rest pads the
//! payload to the scenario's size.

use bytes::Bytes;

/// Bytes taken by the timestamp; the smallest payload the benchmark sends.
pub const STAMP_LEN: usize = 8;

/// A payload of `size` bytes (at least [`STAMP_LEN`]) to be stamped per message.
pub fn template(size: usize) -> Bytes {
    Bytes::from(vec![b'.'; size.max(STAMP_LEN)])
}

/// Writes the send time into a payload; payloads too short to hold it are left alone.
pub fn write_stamp(payload: &mut [u8], nanos: u64) {
    if let Some(head) = payload.get_mut(..STAMP_LEN) {
        head.copy_from_slice(&nanos.to_be_bytes());
    }
}

/// Reads the send time back; `None` for a payload that cannot hold one.
pub fn read_stamp(payload: &[u8]) -> Option<u64> {
    let head: [u8; STAMP_LEN] = payload.get(..STAMP_LEN)?.try_into().ok()?;
    Some(u64::from_be_bytes(head))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_round_trips_and_keeps_the_payload_size() {
        let mut payload = template(64).to_vec();
        write_stamp(&mut payload, 0x0102_0304_0506_0708);
        assert_eq!(payload.len(), 64);
        assert_eq!(read_stamp(&payload), Some(0x0102_0304_0506_0708));
        assert_eq!(&payload[..2], &[1, 2]);
        assert!(payload[STAMP_LEN..].iter().all(|&b| b == b'.'));
    }

    #[test]
    fn templates_are_never_too_short_for_a_stamp() {
        assert_eq!(template(3).len(), STAMP_LEN);
        assert_eq!(template(1024).len(), 1024);
    }

    #[test]
    fn short_payloads_have_no_stamp() {
        let mut short = [0u8; 4];
        write_stamp(&mut short, 42);
        assert_eq!(short, [0; 4]);
        assert_eq!(read_stamp(&short), None);
    }
}
