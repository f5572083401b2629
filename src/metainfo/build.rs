//! Encodes new .torrent files (v1): the dictionary `spate create` writes once the pieces
//! are hashed, and the automatic piece-size rule. Dictionary keys come out sorted, as
//! bencode requires, because serde_bencode sorts them when it serialises a map.

use serde_bencode::value::Value;
use std::collections::HashMap;

/// Smallest and largest automatic piece sizes.
const MIN_AUTO_PIECE: u64 = 16 << 10;
const MAX_AUTO_PIECE: u64 = 16 << 20;
/// Most pieces the automatic size aims for: enough to spread a swarm, few enough that the
/// .torrent stays small (20 bytes each) and per-piece overheads stay low.
const TARGET_MAX_PIECES: u64 = 2000;

/// Picks a piece size like mktorrent and libtorrent do: the smallest power of two from
/// 16 KiB to 16 MiB that keeps the piece count at or under 2,000 (so 1,000..2,000 for any
/// payload between 32 MiB and 32 GiB).
pub fn choose_piece_length(total: u64) -> u32 {
    let mut piece = MIN_AUTO_PIECE;
    while piece < MAX_AUTO_PIECE && total.div_ceil(piece) > TARGET_MAX_PIECES {
        piece *= 2;
    }
    piece as u32
}

/// One file to list: path components under the torrent's name, and its size.
#[derive(Debug, Clone)]
pub struct SpecFile {
    pub components: Vec<String>,
    pub length: u64,
}

/// Everything a new torrent says besides its piece hashes.
#[derive(Debug, Clone, Default)]
pub struct TorrentSpec {
    pub name: String,
    pub piece_length: u32,
    /// One entry with empty components for a single-file torrent.
    pub files: Vec<SpecFile>,
    pub single_file: bool,
    pub private: bool,
    /// Tracker tiers; each URL given on the command line becomes its own tier.
    pub trackers: Vec<Vec<String>>,
    pub web_seeds: Vec<String>,
    pub comment: Option<String>,
    pub created_by: Option<String>,
    pub creation_date: Option<i64>,
}

fn text(s: &str) -> Value {
    Value::Bytes(s.as_bytes().to_vec())
}

fn dict(entries: Vec<(&str, Value)>) -> Value {
    Value::Dict(
        entries
            .into_iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v))
            .collect::<HashMap<_, _>>(),
    )
}

fn size(n: u64) -> Value {
    Value::Int(i64::try_from(n).expect("sizes were checked to be under 2^53"))
}

fn info_value(spec: &TorrentSpec, pieces: &[[u8; 20]]) -> Value {
    let mut info = vec![
        ("name", text(&spec.name)),
        ("piece length", Value::Int(spec.piece_length.into())),
        ("pieces", Value::Bytes(pieces.concat())),
    ];
    if spec.single_file {
        info.push(("length", size(spec.files.first().map_or(0, |f| f.length))));
    } else {
        let files = spec
            .files
            .iter()
            .map(|f| {
                dict(vec![
                    ("length", size(f.length)),
                    (
                        "path",
                        Value::List(f.components.iter().map(|c| text(c)).collect()),
                    ),
                ])
            })
            .collect();
        info.push(("files", Value::List(files)));
    }
    if spec.private {
        info.push(("private", Value::Int(1)));
    }
    dict(info)
}

/// The bencoded .torrent for `spec` with the given piece hashes.
pub fn encode_torrent(spec: &TorrentSpec, pieces: &[[u8; 20]]) -> Vec<u8> {
    let mut root = vec![("info", info_value(spec, pieces))];
    if let Some(first) = spec.trackers.first().and_then(|t| t.first()) {
        root.push(("announce", text(first)));
    }
    let tracker_count: usize = spec.trackers.iter().map(Vec::len).sum();
    if tracker_count > 1 {
        let tiers = spec
            .trackers
            .iter()
            .map(|tier| Value::List(tier.iter().map(|u| text(u)).collect()))
            .collect();
        root.push(("announce-list", Value::List(tiers)));
    }
    if !spec.web_seeds.is_empty() {
        let seeds = spec.web_seeds.iter().map(|u| text(u)).collect();
        root.push(("url-list", Value::List(seeds)));
    }
    if let Some(c) = &spec.comment {
        root.push(("comment", text(c)));
    }
    if let Some(c) = &spec.created_by {
        root.push(("created by", text(c)));
    }
    if let Some(t) = spec.creation_date {
        root.push(("creation date", Value::Int(t)));
    }
    serde_bencode::to_bytes(&dict(root))
        .expect("serialising an in-memory bencode value cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn piece_size_keeps_count_near_two_thousand() {
        assert_eq!(choose_piece_length(1), 16 << 10);
        assert_eq!(choose_piece_length(2 << 30), 2 << 20);
        assert_eq!(choose_piece_length(4 << 30), 4 << 20);
        assert_eq!(choose_piece_length(1 << 50), 16 << 20);
        for total in [40u64 << 20, 1 << 30, 3 << 30, 20 << 30] {
            let n = total.div_ceil(choose_piece_length(total) as u64);
            assert!((1000..=2000).contains(&n), "{total}: {n}");
        }
    }
}
