//! Frames: a 4-byte big-endian length, then the postcard encoding of one
//! message. Generic over the message type, so the mesh and links share the
//! framing and its limits while each keeps its own vocabulary.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Why bytes from a peer could not be read (or a message written) as a frame.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("a frame of {size} bytes exceeds the {limit}-byte limit")]
    TooLarge { size: usize, limit: usize },
    #[error("malformed frame: {0}")]
    Malformed(#[from] postcard::Error),
}

/// Appends `message`, length-prefixed, to `out`; refused (and nothing
/// appended) when its encoding is longer than `limit`.
pub fn encode<T: Serialize>(
    message: &T,
    out: &mut BytesMut,
    limit: usize,
) -> Result<(), FrameError> {
    let start = out.len();
    out.put_u32(0);
    if let Err(err) = postcard::to_io(message, out.writer()) {
        out.truncate(start);
        return Err(err.into());
    }
    let len = out.len() - start - 4;
    if len > limit || u32::try_from(len).is_err() {
        out.truncate(start);
        return Err(FrameError::TooLarge { size: len, limit });
    }
    out[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// One frame as its own buffer, for queues that keep frames until acknowledged.
pub fn encode_to_bytes<T: Serialize>(message: &T, limit: usize) -> Result<Bytes, FrameError> {
    let mut out = BytesMut::new();
    encode(message, &mut out, limit)?;
    Ok(out.freeze())
}

/// Takes the next whole frame off the front of `buf`, or `None` when more
/// bytes are needed. A frame longer than `limit` is refused as soon as its
/// length is read, before anything is reserved for it: the buffer grows as
/// bytes arrive, so a bare prefix (from anyone, before the handshake) cannot
/// make a node allocate up to the limit.
pub fn decode<T: DeserializeOwned>(
    buf: &mut BytesMut,
    limit: usize,
) -> Result<Option<T>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > limit {
        return Err(FrameError::TooLarge { size: len, limit });
    }
    if buf.len() < 4 + len {
        return Ok(None);
    }
    buf.advance(4);
    let body = buf.split_to(len);
    Ok(Some(postcard::from_bytes(&body)?))
}

/// Writes `value` as an unsigned LEB128 varint (postcard's integer encoding)
/// at `at`; returns the end.
pub(crate) fn put_varint(out: &mut [u8; 20], mut at: usize, mut value: u64) -> usize {
    loop {
        let low = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out[at] = low;
            return at + 1;
        }
        out[at] = low | 0x80;
        at += 1;
    }
}
