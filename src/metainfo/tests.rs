//! Unit tests for metainfo parsing: round trips through `build`, and every refusal.

use super::build::{encode_torrent, SpecFile, TorrentSpec};
use super::*;

fn spec(files: &[(&[&str], u64)], piece_length: u32) -> TorrentSpec {
    TorrentSpec {
        name: "root".into(),
        piece_length,
        files: files
            .iter()
            .map(|(c, l)| SpecFile {
                components: c.iter().map(|s| s.to_string()).collect(),
                length: *l,
            })
            .collect(),
        single_file: files.len() == 1 && files[0].0.is_empty(),
        trackers: vec![vec!["http://a/announce".into()], vec!["udp://b:1".into()]],
        web_seeds: vec!["http://w/".into()],
        comment: Some("hi".into()),
        ..TorrentSpec::default()
    }
}

fn hashes(total: u64, piece: u32) -> Vec<[u8; 20]> {
    vec![[7u8; 20]; total.div_ceil(piece as u64) as usize]
}

#[test]
fn multi_file_round_trip() {
    let s = spec(&[(&["a", "b c.txt"], 5), (&["empty"], 0), (&["z"], 20)], 16);
    let bytes = encode_torrent(&s, &hashes(25, 16));
    let m = Metainfo::from_bytes(&bytes).unwrap();
    assert_eq!(m.info.name, "root");
    assert_eq!(m.info.total_length, 25);
    assert_eq!(m.info.piece_count(), 2);
    assert_eq!(m.info.piece_len(1), 9);
    assert_eq!(m.info.files[0].path, PathBuf::from("root/a/b c.txt"));
    assert_eq!(m.info.files[2].offset, 5);
    assert_eq!(
        m.trackers,
        vec![
            vec!["http://a/announce".to_string()],
            vec!["udp://b:1".into()]
        ]
    );
    assert_eq!(m.web_seeds, vec!["http://w/".to_string()]);
    assert_eq!(m.comment.as_deref(), Some("hi"));
    assert!(!m.info.single_file);
}

#[test]
fn info_hash_is_over_the_exact_info_bytes() {
    let mut s = spec(&[(&[], 20)], 16);
    s.web_seeds.clear();
    let bytes = encode_torrent(&s, &hashes(20, 16));
    let m = Metainfo::from_bytes(&bytes).unwrap();
    let start = bytes.windows(6).position(|w| w == b"4:info").unwrap() + 6;
    let info = &bytes[start..bytes.len() - 1];
    assert_eq!(m.info_bytes, info);
    assert_eq!(m.info_hash.0, <[u8; 20]>::from(Sha1::digest(info)));
    assert!(m.info.single_file);
}

fn error_of(bytes: &[u8]) -> String {
    Metainfo::from_bytes(bytes).unwrap_err().to_string()
}

#[test]
fn refusals_name_the_problem() {
    assert_eq!(
        error_of(b"d4:infod9:file treede12:meta versioni2e4:name1:x12:piece lengthi16384eee"),
        "this is a BitTorrent v2-only torrent (BEP 52, no info.pieces); spate reads v1 and \
         hybrid torrents"
    );
    assert_eq!(
        error_of(b"d4:infod6:lengthi1e4:name1:x12:piece lengthi16eee"),
        "info.pieces is missing"
    );
    assert_eq!(
        error_of(b"d4:infod6:lengthi1e4:name1:x12:piece lengthi16e6:pieces41:xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxee"),
        "info.pieces is 41 bytes, not a multiple of 20"
    );
    assert_eq!(
        error_of(b"d4:infod6:lengthi1e4:name1:x12:piece lengthi0e6:pieces0:ee"),
        "info.piece length is 0; it must be between 1 and 256 MiB"
    );
    assert_eq!(
        error_of(
            b"d4:infod6:lengthi40e4:name1:x12:piece lengthi16e6:pieces20:xxxxxxxxxxxxxxxxxxxxee"
        ),
        "info.pieces holds 1 hashes but 40 bytes in pieces of 16 need 3"
    );
    assert_eq!(
        error_of(b"d4:infod6:length3:abc4:name1:x12:piece lengthi16e6:pieces0:ee"),
        "info.length is not an integer"
    );
    assert_eq!(
        error_of(b"d4:infod6:lengthi9007199254740993e4:name1:x12:piece lengthi16e6:pieces0:ee"),
        "info.length is 9007199254740993; it must be between 0 and 2^53"
    );
    assert_eq!(error_of(b"d3:fooi1ee"), "info is missing");
    assert!(error_of(b"d4:info").starts_with("not valid bencode"));
    assert!(error_of(b"").starts_with("not valid bencode"));
}

#[test]
fn refuses_escaping_and_clashing_paths() {
    let bad = spec(&[(&["..", "x"], 1)], 16);
    let e = Metainfo::from_bytes(&encode_torrent(&bad, &hashes(1, 16))).unwrap_err();
    assert_eq!(
        e.to_string(),
        "refused path \"../x\": '.' or '..' component"
    );
    let clash = spec(&[(&["a"], 1), (&["a"], 1)], 16);
    let e = Metainfo::from_bytes(&encode_torrent(&clash, &hashes(2, 16))).unwrap_err();
    assert!(e.to_string().contains("two files would be written"));
    let nested = spec(&[(&["a"], 1), (&["a", "b"], 1)], 16);
    assert!(Metainfo::from_bytes(&encode_torrent(&nested, &hashes(2, 16))).is_err());
    let mut abs = spec(&[(&[], 1)], 16);
    abs.name = "/etc".into();
    assert!(Metainfo::from_bytes(&encode_torrent(&abs, &hashes(1, 16))).is_err());
}

#[test]
fn padding_files_are_marked() {
    let raw = b"d4:infod5:filesld6:lengthi3e4:pathl1:aeed4:attr1:p6:lengthi13e4:pathl4:.pad2:13eed6:lengthi4e4:pathl1:beee4:name1:r12:piece lengthi16e6:pieces40:0123456789012345678901234567890123456789ee";
    let m = Metainfo::from_bytes(raw).unwrap();
    assert!(m.info.files[1].pad);
    assert!(!m.info.files[0].pad);
    assert_eq!(m.info.files[2].offset, 16);
}

proptest::proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
        let _ = Metainfo::from_bytes(&bytes);
    }

    #[test]
    fn mutated_torrents_never_panic(pos in 0usize..200, byte in proptest::prelude::any::<u8>()) {
        let s = spec(&[(&["a"], 5), (&["b"], 30)], 16);
        let mut bytes = encode_torrent(&s, &hashes(35, 16));
        let at = pos % bytes.len();
        bytes[at] = byte;
        let _ = Metainfo::from_bytes(&bytes);
    }
}
