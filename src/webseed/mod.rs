//! Web seeds (BEP 19, the torrent's `url-list`): HTTP servers that hold the torrent's files.
//! Each joins the swarm as a local peer: a bridge (`bridge`) listens on 127.0.0.1, speaks the
//! peer wire protocol to our own session and turns its REQUESTs into HTTP range requests, so
//! picking, pipelining, endgame, verification and the ban of a source of bad data work as
//! for any peer. This file is pure: each file's URL, and which requests make one fetch.

pub mod bridge;

use crate::metainfo::Info;
use crate::types::BlockRef;

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

/// How many of `queued` (requests in arrival order; `offset_of` gives a block's place in
/// the torrent) go in the first fetch: the first and those right after it that continue it
/// without a gap, up to `MAX_FETCH` bytes.
pub fn fetch_run(queued: &[BlockRef], offset_of: impl Fn(&BlockRef) -> u64) -> usize {
    let Some(first) = queued.first() else {
        return 0;
    };
    let mut end = offset_of(first) + u64::from(first.len);
    let start = offset_of(first);
    let mut n = 1;
    for b in &queued[1..] {
        let len = u64::from(b.len);
        if offset_of(b) != end || end + len - start > MAX_FETCH {
            break;
        }
        end += len;
        n += 1;
    }
    n
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
        assert_eq!(fetch_run(&queued, at), 2);
        assert_eq!(fetch_run(&queued[2..], at), 2, "across a piece boundary");
        assert_eq!(fetch_run(&[], at), 0);
        let long: Vec<BlockRef> = (0..100).map(|i| block(i / 4, (i % 4) * 16384)).collect();
        assert_eq!(fetch_run(&long, at), 64, "1 MiB");
    }
}
