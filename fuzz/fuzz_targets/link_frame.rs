//! Feeds arbitrary bytes to the link protocol's frame decoder, with the
//! handshake limit and the established-connection limit. Decoding must never
//! panic, and every frame that decodes must re-encode to bytes that decode to
//! the same frame.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use strait_broker::link::wire::{decode, encode, MAX_FRAME, MAX_HANDSHAKE_FRAME};

fuzz_target!(|data: &[u8]| {
    for limit in [MAX_HANDSHAKE_FRAME, MAX_FRAME] {
        let mut buf = BytesMut::from(data);
        while let Ok(Some(frame)) = decode(&mut buf, limit) {
            let mut again = BytesMut::new();
            encode(&frame, &mut again).expect("a decoded frame encodes");
            let back = decode(&mut again, MAX_FRAME).expect("re-decodes");
            assert_eq!(back.as_ref(), Some(&frame));
        }
    }
});
