//! MQTT's primitive data types (OASIS MQTT 5.0 section 1.5): integers,
//! variable byte integers, UTF-8 strings and binary data, read from a packet
//! body and written through a [`Sink`].
//!
//! Reading works on the frozen [`Bytes`] of one whole packet, so binary data and
//! payloads come out as zero-copy slices of the input.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::decode::DecodeError;
use super::encode::EncodeError;

/// The largest value a variable byte integer can carry (four bytes of seven bits).
pub(super) const MAX_VARINT: u32 = 268_435_455;

/// The error for a packet whose declared fields run past its end.
const SHORT: DecodeError = DecodeError::Malformed("packet ends inside a field");

/// Parses a variable byte integer from the front of `bytes`.
///
/// Returns `Ok(None)` when `bytes` ends before the integer does, otherwise the
/// value and the number of bytes it took. More than four bytes, or a
/// non-minimal encoding (a trailing zero byte), is malformed.
pub(super) fn parse_varint(bytes: &[u8]) -> Result<Option<(u32, usize)>, DecodeError> {
    let mut value: u32 = 0;
    for (i, &byte) in bytes.iter().enumerate().take(4) {
        value |= u32::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            if byte == 0 && i > 0 {
                return Err(DecodeError::Malformed(
                    "variable byte integer is not minimal",
                ));
            }
            return Ok(Some((value, i + 1)));
        }
    }
    if bytes.len() >= 4 {
        Err(DecodeError::Malformed(
            "variable byte integer longer than 4 bytes",
        ))
    } else {
        Ok(None)
    }
}

/// How many bytes `value` takes as a variable byte integer.
pub(super) fn varint_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Reads one byte.
pub(super) fn read_u8(buf: &mut Bytes) -> Result<u8, DecodeError> {
    if buf.is_empty() {
        return Err(SHORT);
    }
    Ok(buf.get_u8())
}

/// Reads a big-endian two byte integer.
pub(super) fn read_u16(buf: &mut Bytes) -> Result<u16, DecodeError> {
    if buf.len() < 2 {
        return Err(SHORT);
    }
    Ok(buf.get_u16())
}

/// Reads a big-endian four byte integer.
pub(super) fn read_u32(buf: &mut Bytes) -> Result<u32, DecodeError> {
    if buf.len() < 4 {
        return Err(SHORT);
    }
    Ok(buf.get_u32())
}

/// Reads a variable byte integer that must lie wholly inside the packet.
pub(super) fn read_varint(buf: &mut Bytes) -> Result<u32, DecodeError> {
    let (value, len) = parse_varint(buf)?.ok_or(SHORT)?;
    buf.advance(len);
    Ok(value)
}

/// Reads two-byte-length-prefixed binary data as a slice of the packet.
pub(super) fn read_binary(buf: &mut Bytes) -> Result<Bytes, DecodeError> {
    let len = usize::from(read_u16(buf)?);
    if buf.len() < len {
        return Err(SHORT);
    }
    Ok(buf.split_to(len))
}

/// Reads a UTF-8 encoded string: valid UTF-8 with no U+0000 (MQTT-1.5.4-1/2).
///
/// Copies straight from the packet into the `String` the packet owns, without
/// an intermediate `Bytes` handle.
pub(super) fn read_string(buf: &mut Bytes) -> Result<String, DecodeError> {
    let len = usize::from(read_u16(buf)?);
    let raw = buf.get(..len).ok_or(SHORT)?;
    let text = std::str::from_utf8(raw)
        .map_err(|_| DecodeError::Malformed("string is not valid UTF-8"))?;
    if raw.contains(&0) {
        return Err(DecodeError::Malformed("string contains U+0000"));
    }
    let text = text.to_owned();
    buf.advance(len);
    Ok(text)
}

/// Reads a UTF-8 string pair (a user property).
pub(super) fn read_string_pair(buf: &mut Bytes) -> Result<(String, String), DecodeError> {
    let name = read_string(buf)?;
    let value = read_string(buf)?;
    Ok((name, value))
}

/// Reads a packet identifier, which may never be 0 (MQTT-2.2.1-3).
pub(super) fn read_packet_id(buf: &mut Bytes) -> Result<u16, DecodeError> {
    match read_u16(buf)? {
        0 => Err(DecodeError::Protocol("packet identifier 0")),
        id => Ok(id),
    }
}

/// Where encoded bytes go. The encoder runs every packet through a [`Counter`]
/// first (to learn its length and catch every error) and then through a
/// [`Writer`], so the same code both sizes and writes a packet.
pub(super) trait Sink {
    /// Appends one byte.
    fn put_u8(&mut self, value: u8);
    /// Appends a big-endian two byte integer.
    fn put_u16(&mut self, value: u16);
    /// Appends a big-endian four byte integer.
    fn put_u32(&mut self, value: u32);
    /// Appends raw bytes.
    fn put_slice(&mut self, bytes: &[u8]);

    /// Appends a variable byte integer; `field` names it in the error.
    fn put_varint(&mut self, field: &'static str, value: u32) -> Result<(), EncodeError> {
        if value > MAX_VARINT {
            return Err(EncodeError::Invalid(field));
        }
        let mut rest = value;
        loop {
            let byte = (rest & 0x7F) as u8;
            rest >>= 7;
            if rest == 0 {
                self.put_u8(byte);
                return Ok(());
            }
            self.put_u8(byte | 0x80);
        }
    }

    /// Appends two-byte-length-prefixed binary data; `field` names it in the error.
    fn put_binary(&mut self, field: &'static str, bytes: &[u8]) -> Result<(), EncodeError> {
        let len = u16::try_from(bytes.len()).map_err(|_| EncodeError::StringTooLong(field))?;
        self.put_u16(len);
        self.put_slice(bytes);
        Ok(())
    }

    /// Appends a UTF-8 encoded string.
    fn put_str(&mut self, field: &'static str, text: &str) -> Result<(), EncodeError> {
        self.put_binary(field, text.as_bytes())
    }
}

/// A [`Sink`] that only counts bytes.
#[derive(Debug, Default)]
pub(super) struct Counter(pub(super) usize);

impl Sink for Counter {
    fn put_u8(&mut self, _: u8) {
        self.0 += 1;
    }
    fn put_u16(&mut self, _: u16) {
        self.0 += 2;
    }
    fn put_u32(&mut self, _: u32) {
        self.0 += 4;
    }
    fn put_slice(&mut self, bytes: &[u8]) {
        self.0 += bytes.len();
    }
}

/// A [`Sink`] that appends to a buffer.
#[derive(Debug)]
pub(super) struct Writer<'a>(pub(super) &'a mut BytesMut);

impl Sink for Writer<'_> {
    fn put_u8(&mut self, value: u8) {
        self.0.put_u8(value);
    }
    fn put_u16(&mut self, value: u16) {
        self.0.put_u16(value);
    }
    fn put_u32(&mut self, value: u32) {
        self.0.put_u32(value);
    }
    fn put_slice(&mut self, bytes: &[u8]) {
        self.0.put_slice(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode_varint(value: u32) -> Vec<u8> {
        let mut buf = BytesMut::new();
        Writer(&mut buf)
            .put_varint("test", value)
            .expect("in range");
        buf.to_vec()
    }

    #[test]
    fn varint_boundaries_round_trip() {
        for (value, len) in [
            (0, 1),
            (127, 1),
            (128, 2),
            (16_383, 2),
            (16_384, 3),
            (2_097_151, 3),
            (2_097_152, 4),
            (MAX_VARINT, 4),
        ] {
            let bytes = encode_varint(value);
            assert_eq!(bytes.len(), len, "length of {value}");
            assert_eq!(varint_len(value as usize), len);
            assert_eq!(parse_varint(&bytes), Ok(Some((value, len))));
        }
    }

    #[test]
    fn varint_spec_examples() {
        assert_eq!(encode_varint(321), [0xC1, 0x02]);
        assert_eq!(encode_varint(MAX_VARINT), [0xFF, 0xFF, 0xFF, 0x7F]);
    }

    #[test]
    fn varint_too_long_is_malformed() {
        assert!(matches!(
            parse_varint(&[0xFF, 0xFF, 0xFF, 0xFF, 0x01]),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            parse_varint(&[0x80, 0x80, 0x80, 0x80]),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn varint_non_minimal_is_malformed() {
        assert!(matches!(
            parse_varint(&[0x80, 0x00]),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn varint_incomplete_needs_more() {
        assert_eq!(parse_varint(&[]), Ok(None));
        assert_eq!(parse_varint(&[0x80, 0x80, 0x80]), Ok(None));
    }

    #[test]
    fn varint_out_of_range_is_refused() {
        let mut buf = BytesMut::new();
        assert_eq!(
            Writer(&mut buf).put_varint("x", MAX_VARINT + 1),
            Err(EncodeError::Invalid("x"))
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn strings_reject_nul_and_bad_utf8() {
        let mut nul = Bytes::from_static(&[0, 3, b'a', 0, b'b']);
        assert_eq!(
            read_string(&mut nul),
            Err(DecodeError::Malformed("string contains U+0000"))
        );
        let mut bad = Bytes::from_static(&[0, 2, 0xC3, 0x28]);
        assert_eq!(
            read_string(&mut bad),
            Err(DecodeError::Malformed("string is not valid UTF-8"))
        );
        let mut short = Bytes::from_static(&[0, 5, b'a']);
        assert_eq!(read_string(&mut short), Err(SHORT));
    }

    #[test]
    fn binary_is_a_slice_of_the_input() {
        let input = Bytes::from_static(&[0, 2, 7, 8, 9]);
        let mut buf = input.clone();
        let data = read_binary(&mut buf).expect("valid");
        assert_eq!(&data[..], [7, 8]);
        assert_eq!(data.as_ptr(), input[2..].as_ptr());
        assert_eq!(&buf[..], [9]);
    }
}
