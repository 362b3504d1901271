//! Replaying a protocol's seed corpus (also the seeds of its fuzz target)
//! through its frame decoder: the files are exactly what the seeds write,
//! `valid-*` files hold one frame that re-encodes to the same bytes, and
//! `malformed-*` files are refused under every limit.

use std::path::Path;

use bytes::BytesMut;

/// A frame decoder and encoder under test.
pub struct Codec<F, E> {
    pub decode: fn(&mut BytesMut, usize) -> Result<Option<F>, E>,
    pub encode: fn(&F, &mut BytesMut),
    /// The limits a malformed input must be refused under (before and after the handshake).
    pub limits: [usize; 2],
}

/// Writes the corpus afresh when `STRAIT_WRITE_CORPUS` is set, then replays it.
pub fn replay<F: std::fmt::Debug, E: std::fmt::Display>(
    dir: &Path,
    seeds: &[(&str, Vec<u8>)],
    codec: &Codec<F, E>,
) {
    if std::env::var_os("STRAIT_WRITE_CORPUS").is_some() {
        std::fs::create_dir_all(dir).expect("corpus directory");
        for (name, bytes) in seeds {
            std::fs::write(dir.join(format!("{name}.bin")), bytes).expect("write seed");
        }
    }
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("corpus directory")
        .map(|entry| entry.expect("entry").path())
        .collect();
    files.sort();
    assert_eq!(
        files.len(),
        seeds.len(),
        "the corpus is what `seeds` writes"
    );
    for path in files {
        let name = path
            .file_stem()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let bytes = std::fs::read(&path).expect("seed");
        assert!(
            seeds
                .iter()
                .any(|(seed, written)| *seed == name && *written == bytes),
            "{name} differs from its seed: run with STRAIT_WRITE_CORPUS=1"
        );
        if name.starts_with("valid-") {
            let mut buf = BytesMut::from(&bytes[..]);
            let frame = (codec.decode)(&mut buf, codec.limits[1])
                .unwrap_or_else(|e| panic!("{name}: {e}"))
                .unwrap_or_else(|| panic!("{name}: not a whole frame"));
            assert!(buf.is_empty(), "{name}: exactly one frame");
            let mut again = BytesMut::new();
            (codec.encode)(&frame, &mut again);
            assert_eq!(
                &again[..],
                &bytes[..],
                "{name}: re-encodes to the same bytes"
            );
        } else {
            for limit in codec.limits {
                let mut buf = BytesMut::from(&bytes[..]);
                assert!(
                    (codec.decode)(&mut buf, limit).is_err(),
                    "{name}: refused under {limit}"
                );
            }
        }
    }
}
