//! Resume data: which pieces were verified, written atomically (temp file, fsync, rename)
//! after the data itself was fsynced, so a crash or power loss can never leave it claiming a
//! piece that is not on disk. It also records each file's size and modification time; if any
//! differ when it is read back, it is stale and the caller rechecks the data instead of
//! trusting it. Unknown, corrupt or foreign resume files are likewise never trusted.

use crate::metainfo::Metainfo;
use serde_bencode::value::Value;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

const VERSION: i64 = 1;

/// Where the resume file of `m` lives under the download directory.
pub fn resume_path(out_dir: &Path, m: &Metainfo) -> PathBuf {
    out_dir
        .join(".spate")
        .join(format!("{}.resume", m.info_hash.to_hex()))
}

/// (size, mtime seconds, mtime nanoseconds) of each non-padding file; missing files are
/// recorded as size -1.
fn file_stamps(out_dir: &Path, m: &Metainfo) -> Vec<(i64, i64, i64)> {
    m.info
        .files
        .iter()
        .filter(|f| !f.pad)
        .map(|f| match std::fs::metadata(out_dir.join(&f.path)) {
            Ok(meta) => {
                let t = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .unwrap_or_default();
                (
                    meta.len() as i64,
                    t.as_secs() as i64,
                    i64::from(t.subsec_nanos()),
                )
            }
            Err(_) => (-1, 0, 0),
        })
        .collect()
}

/// The bytes of a resume file recording `have` (a bitfield, MSB first) and the file stamps
/// `stamps` (see [`parse`]): what `save` writes and `parse` reads back.
pub fn encode(m: &Metainfo, have: &[u8], stamps: &[(i64, i64, i64)]) -> Vec<u8> {
    let files = stamps
        .iter()
        .map(|&(s, a, b)| Value::List(vec![Value::Int(s), Value::Int(a), Value::Int(b)]))
        .collect();
    let mut d = HashMap::new();
    d.insert(b"version".to_vec(), Value::Int(VERSION));
    d.insert(b"info-hash".to_vec(), Value::Bytes(m.info_hash.0.to_vec()));
    d.insert(b"pieces".to_vec(), Value::Bytes(have.to_vec()));
    d.insert(b"files".to_vec(), Value::List(files));
    serde_bencode::to_bytes(&Value::Dict(d)).expect("encoding an in-memory dict cannot fail")
}

/// Writes resume data for `have` (a bitfield, MSB first). The caller has fsynced the data.
pub fn save(out_dir: &Path, m: &Metainfo, have: &[u8]) -> std::io::Result<()> {
    let path = resume_path(out_dir, m);
    let dir = path.parent().expect("resume path has a parent");
    std::fs::create_dir_all(dir)?;
    let bytes = encode(m, have, &file_stamps(out_dir, m));
    let tmp = path.with_extension("resume.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// The verified-piece bitfield from fresh resume data, or None when there is none, it is
/// unreadable, it belongs to another torrent, or the files changed since it was written.
pub fn load(out_dir: &Path, m: &Metainfo) -> Option<Vec<u8>> {
    let bytes = std::fs::read(resume_path(out_dir, m)).ok()?;
    parse(&bytes, m, &file_stamps(out_dir, m))
}

/// `load` without the file system: the bitfield recorded in the resume file `bytes` if it is
/// well-formed, written by this version for `m`'s info-hash, exactly ceil(pieces / 8) bytes
/// long, and its file stamps equal `stamps` (the files as they are now: size, mtime seconds,
/// mtime nanoseconds of each non-padding file, size -1 if missing). Otherwise None.
pub fn parse(bytes: &[u8], m: &Metainfo, stamps: &[(i64, i64, i64)]) -> Option<Vec<u8>> {
    crate::bencode::validate(bytes).ok()?;
    let Value::Dict(d) = serde_bencode::from_bytes::<Value>(bytes).ok()? else {
        return None;
    };
    let version = matches!(d.get(&b"version"[..]), Some(Value::Int(VERSION)));
    let hash_ok =
        matches!(d.get(&b"info-hash"[..]), Some(Value::Bytes(h)) if h[..] == m.info_hash.0);
    let Some(Value::Bytes(pieces)) = d.get(&b"pieces"[..]) else {
        return None;
    };
    let Some(Value::List(files)) = d.get(&b"files"[..]) else {
        return None;
    };
    let recorded: Vec<Option<(i64, i64, i64)>> = files
        .iter()
        .map(|f| match f {
            Value::List(v) => match v.as_slice() {
                [Value::Int(s), Value::Int(a), Value::Int(b)] => Some((*s, *a, *b)),
                _ => None,
            },
            _ => None,
        })
        .collect();
    let now: Vec<Option<(i64, i64, i64)>> = stamps.iter().copied().map(Some).collect();
    let right_len = pieces.len() == (m.info.pieces.len()).div_ceil(8);
    (version && hash_ok && right_len && recorded == now).then(|| pieces.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metainfo::build::{encode_torrent, SpecFile, TorrentSpec};

    fn torrent() -> Metainfo {
        let spec = TorrentSpec {
            name: "f".into(),
            piece_length: 16,
            files: vec![SpecFile {
                components: vec![],
                length: 40,
            }],
            single_file: true,
            ..TorrentSpec::default()
        };
        Metainfo::from_bytes(&encode_torrent(&spec, &[[0; 20]; 3])).unwrap()
    }

    #[test]
    fn fresh_data_loads_and_stale_or_corrupt_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let m = torrent();
        std::fs::write(dir.path().join("f"), [0u8; 40]).unwrap();
        save(dir.path(), &m, &[0b1010_0000]).unwrap();
        assert_eq!(load(dir.path(), &m), Some(vec![0b1010_0000]));
        // The file changed after the save: stale.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(dir.path().join("f"), [1u8; 40]).unwrap();
        assert_eq!(load(dir.path(), &m), None);
        std::fs::write(resume_path(dir.path(), &m), b"d7:versioni1ee").unwrap();
        assert_eq!(load(dir.path(), &m), None);
        std::fs::write(resume_path(dir.path(), &m), b"garbage").unwrap();
        assert_eq!(load(dir.path(), &m), None);
    }

    #[test]
    fn parse_trusts_only_matching_stamps_hash_version_and_length() {
        let m = torrent();
        let stamps = [(40, 1_700_000_000, 5)];
        let good = encode(&m, &[0b1110_0000], &stamps);
        assert_eq!(parse(&good, &m, &stamps), Some(vec![0b1110_0000]));
        assert_eq!(parse(&good, &m, &[(40, 1_700_000_000, 6)]), None);
        assert_eq!(parse(&good, &m, &[]), None);
        assert_eq!(parse(&good, &m, &[stamps[0], stamps[0]]), None);
        // Three pieces need exactly one byte.
        assert_eq!(parse(&encode(&m, &[], &stamps), &m, &stamps), None);
        assert_eq!(parse(&encode(&m, &[0, 0], &stamps), &m, &stamps), None);
        let mut newer = good.clone();
        let at = newer.windows(10).position(|w| w == b"versioni1e").unwrap();
        newer[at + 8] = b'2';
        assert_eq!(parse(&newer, &m, &stamps), None);
        let mut foreign = good.clone();
        let at = foreign
            .windows(20)
            .position(|w| w == m.info_hash.0)
            .unwrap();
        foreign[at] ^= 1;
        assert_eq!(parse(&foreign, &m, &stamps), None);
        assert_eq!(parse(&good[..good.len() - 1], &m, &stamps), None);
    }
}
