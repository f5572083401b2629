//! Fuzz target: `Metainfo::from_bytes` on arbitrary bytes. It must never panic, and a torrent
//! it accepts must keep the promises the rest of spate relies on: the piece count matches the
//! total length, files tile the data without gaps, every path is relative with only normal
//! components (no `..`, no root, no `.`), and the info-hash is the SHA-1 of `info_bytes`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sha1::{Digest, Sha1};
use spate::metainfo::{Metainfo, MAX_PIECE_LENGTH, MAX_TOTAL_LENGTH};
use std::path::{Component, Path};

fuzz_target!(|data: &[u8]| {
    let Ok(m) = Metainfo::from_bytes(data) else {
        return;
    };
    let info = &m.info;

    // Pieces: length in range, count = ceil(total / piece length), piece lengths add up.
    let piece_length = u64::from(info.piece_length);
    assert!((1..=MAX_PIECE_LENGTH).contains(&piece_length));
    assert!(info.total_length <= MAX_TOTAL_LENGTH);
    assert_eq!(
        info.pieces.len() as u64,
        info.total_length.div_ceil(piece_length),
        "piece count does not match the total length"
    );
    assert_eq!(info.piece_count() as usize, info.pieces.len());
    let mut covered = 0u64;
    for i in 0..info.piece_count() {
        let len = u64::from(info.piece_len(i));
        assert!(
            len >= 1 && len <= piece_length,
            "piece {i} has length {len}"
        );
        covered += len;
    }
    assert_eq!(covered, info.total_length);

    // Files: at least one, contiguous offsets, ending at the total length.
    assert!(!info.files.is_empty());
    if info.single_file {
        assert_eq!(info.files.len(), 1);
        assert_eq!(info.files[0].path, Path::new(&info.name));
    }
    let mut offset = 0u64;
    for f in &info.files {
        assert_eq!(
            f.offset, offset,
            "file {:?} does not start where the last ended",
            f.path
        );
        offset += f.length;
        check_path(&f.path);
        if !info.single_file {
            assert!(
                f.path.starts_with(&info.name),
                "{:?} is outside the torrent's directory",
                f.path
            );
        }
    }
    assert_eq!(offset, info.total_length);

    // The info-hash is the SHA-1 of the info dictionary's exact bytes, as they are in the input.
    let digest: [u8; 20] = Sha1::digest(&m.info_bytes).into();
    assert_eq!(m.info_hash.0, digest);
    let span = spate::bencode::dict_value_span(data, b"info")
        .expect("accepted input is valid bencode")
        .expect("accepted input has an info dictionary");
    assert_eq!(&data[span], m.info_bytes.as_slice());
});

/// A path safe to join onto the download directory: relative, only normal components.
fn check_path(path: &Path) {
    assert!(path.is_relative(), "absolute path {path:?}");
    assert!(path.components().next().is_some(), "empty path");
    for c in path.components() {
        match c {
            Component::Normal(part) => {
                let bytes = part.as_encoded_bytes();
                assert!(
                    !bytes.is_empty() && !bytes.contains(&0),
                    "bad component in {path:?}"
                );
                assert!(part != "..", "'..' in {path:?}");
            }
            other => panic!("component {other:?} in {path:?}"),
        }
    }
}
