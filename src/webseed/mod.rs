//! Web seeds (BEP 19, the torrent's `url-list`): HTTP servers that hold the torrent's files.
//! Each joins the swarm as a local peer: a bridge (`bridge`) listens on 127.0.0.1, speaks the
//! peer wire protocol to our own session and turns its REQUESTs into HTTP range requests, so
//! picking, pipelining, endgame, verification and the ban of a source of bad data work as
//! for any peer. This file is pure: each file's URL, and which requests make one fetch.

pub mod bridge;

use crate::metainfo::Info;
use crate::types::BlockRef;
use std::collections::HashMap;

/// The most one fetch asks the server for: consecutive requested blocks up to this much go
/// as one range request per file they touch.
pub const MAX_FETCH: u64 = 1 << 20;

/// The URL of every file of the torrent (padding files included, never fetched) on the web
/// seed at `base`, as BEP 19 builds them: a single-file torrent's URL is `base` itself,
/// or `base` + name when it ends in `/`; a multi-file torrent's files are under
/// `base`/name/path.
pub fn file_urls(base: &str, info: &Info) -> Vec<String> {
    if info.single_file {
        let url = if base.ends_with('/') {
            format!("{base}{}", percent_encode(&info.name))
        } else {
            base.to_owned()
        };
        return vec![url];
    }
    let dir = base.trim_end_matches('/');
    info.files
        .iter()
        .map(|f| {
            let mut url = dir.to_owned();
            for part in f.path.iter() {
                url.push('/');
                url.push_str(&percent_encode(&part.to_string_lossy()));
            }
            url
        })
        .collect()
}

/// `text` with every byte but the unreserved ones (RFC 3986: letters, digits, `-._~`)
/// written as `%XX`.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The requests that go in the next fetch, as indices into `queued` (requests in arrival
/// order; `offset_of` gives a block's place in the torrent) in torrent order: the first
/// request and the queued ones that continue it without a gap, up to `MAX_FETCH` bytes. A
/// piece's run may continue into a piece asked for later.
pub fn fetch_run(queued: &[BlockRef], offset_of: impl Fn(&BlockRef) -> u64) -> Vec<usize> {
    let Some(first) = queued.first() else {
        return Vec::new();
    };
    let by_offset: HashMap<u64, usize> = (queued.iter().enumerate().skip(1))
        .map(|(i, b)| (offset_of(b), i))
        .collect();
    let start = offset_of(first);
    let mut end = start + u64::from(first.len);
    let mut run = vec![0];
    while let Some(&i) = by_offset.get(&end) {
        let len = u64::from(queued[i].len);
        if end + len - start > MAX_FETCH {
            break;
        }
        run.push(i);
        end += len;
    }
    run
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metainfo::FileEntry;
    use crate::types::PieceIndex;
    use std::path::PathBuf;

    fn info(single: bool, paths: &[&str]) -> Info {
        Info {
            name: "my data".into(),
            piece_length: 16384,
            pieces: vec![[0; 20]],
            files: paths
                .iter()
                .map(|p| FileEntry {
                    path: PathBuf::from(p),
                    length: 1,
                    offset: 0,
                    pad: false,
                })
                .collect(),
            total_length: paths.len() as u64,
            private: false,
            single_file: single,
        }
    }

    #[test]
    fn urls_follow_bep_19() {
        let single = info(true, &["my data"]);
        assert_eq!(file_urls("http://h/f.iso", &single), ["http://h/f.iso"]);
        assert_eq!(file_urls("http://h/d/", &single), ["http://h/d/my%20data"]);
        let multi = info(false, &["my data/a b/c#1.txt", "my data/ü"]);
        let want = [
            "http://h/d/my%20data/a%20b/c%231.txt",
            "http://h/d/my%20data/%C3%BC",
        ];
        assert_eq!(file_urls("http://h/d/", &multi), want);
        assert_eq!(file_urls("http://h/d", &multi), want);
    }

    #[test]
    fn a_fetch_takes_consecutive_requests_up_to_the_limit() {
        let block = |piece: u32, offset: u32| BlockRef {
            piece: PieceIndex(piece),
            offset,
            len: 16384,
        };
        let at = |b: &BlockRef| u64::from(b.piece.0) * 65536 + u64::from(b.offset);
        let queued = [block(0, 0), block(0, 16384), block(0, 49152), block(1, 0)];
        assert_eq!(fetch_run(&queued, at), [0, 1]);
        assert_eq!(
            fetch_run(&queued[2..], at),
            [0, 1],
            "across a piece boundary"
        );
        assert_eq!(fetch_run(&[], at), Vec::<usize>::new());
        // Piece 1 asked for before piece 0: piece 0's run goes on into it.
        let later = [
            block(3, 0),
            block(0, 49152),
            block(9, 0),
            block(1, 0),
            block(1, 16384),
        ];
        assert_eq!(fetch_run(&later[1..], at), [0, 2, 3]);
        assert_eq!(fetch_run(&later, at), [0]);
        let long: Vec<BlockRef> = (0..100).map(|i| block(i / 4, (i % 4) * 16384)).collect();
        assert_eq!(fetch_run(&long, at), (0..64).collect::<Vec<_>>(), "1 MiB");
    }
}
