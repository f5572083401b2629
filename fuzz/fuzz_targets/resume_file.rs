//! Fuzz target: reading a resume file, `resume::parse` (what `resume::load` runs on the bytes
//! of `DIR/.spate/<infohash>.resume`, given the stamps of the files on disk). The input is the
//! file's bytes, read for a fixed two-file torrent of 10 pieces, file `t/a` present and `t/b`
//! missing. It must never panic, and it must return None or a bitfield of exactly
//! ceil(10 / 8) = 2 bytes (the caller turns it into the have-set). A bitfield it trusts must
//! survive a save and load (`encode` then `parse`) unchanged, and must not be trusted for
//! other file stamps or for another torrent. Saving any bitfield of the right length, taken
//! from the input, must load back as written.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spate::metainfo::build::{encode_torrent, SpecFile, TorrentSpec};
use spate::metainfo::Metainfo;
use spate::session::resume::{encode, parse};
use std::sync::OnceLock;

/// Size, mtime seconds and mtime nanoseconds of `t/a`; `t/b` is missing (size -1).
const STAMPS: [(i64, i64, i64); 2] = [(100, 1_700_000_000, 123_456_789), (-1, 0, 0)];
const BITFIELD_LEN: usize = 2;

/// The torrent (its info-hash is in fuzz/seed-corpus), and one that differs only by name.
fn torrents() -> &'static (Metainfo, Metainfo) {
    static TORRENTS: OnceLock<(Metainfo, Metainfo)> = OnceLock::new();
    TORRENTS.get_or_init(|| (torrent("t"), torrent("u")))
}

fn torrent(name: &str) -> Metainfo {
    let file = |n: &str, length| SpecFile {
        components: vec![n.into()],
        length,
    };
    let spec = TorrentSpec {
        name: name.into(),
        piece_length: 16,
        files: vec![file("a", 100), file("b", 60)],
        ..TorrentSpec::default()
    };
    let m = Metainfo::from_bytes(&encode_torrent(&spec, &[[b'A'; 20]; 10])).unwrap();
    assert_eq!(m.info.pieces.len().div_ceil(8), BITFIELD_LEN);
    m
}

fuzz_target!(|data: &[u8]| {
    let (m, other) = torrents();

    if let Some(bits) = parse(data, m, &STAMPS) {
        assert_eq!(bits.len(), BITFIELD_LEN, "a bitfield of the wrong length");
        let saved = encode(m, &bits, &STAMPS);
        assert_eq!(parse(&saved, m, &STAMPS).as_ref(), Some(&bits));
        // Trusted only for these very files and this very torrent.
        let mut touched = STAMPS;
        touched[0].2 += 1;
        assert_eq!(
            parse(data, m, &touched),
            None,
            "trusted after a file changed"
        );
        assert_eq!(
            parse(data, m, &STAMPS[..1]),
            None,
            "trusted with a file fewer"
        );
        assert_eq!(
            parse(data, other, &STAMPS),
            None,
            "trusted for another torrent"
        );
    }

    // Whatever bitfield is saved loads back as it was.
    let mut have = [0u8; BITFIELD_LEN];
    let n = data.len().min(BITFIELD_LEN);
    have[..n].copy_from_slice(&data[..n]);
    assert_eq!(
        parse(&encode(m, &have, &STAMPS), m, &STAMPS).as_deref(),
        Some(&have[..])
    );
});
