//! Metainfo: a .torrent file parsed into checked values (BEP 3 single and multi-file,
//! announce-list BEP 12, url-list BEP 19, private BEP 27, padding files BEP 47). The
//! info-hash is the SHA-1 of the info dictionary's exact bytes as they appear in the file.
//! Everything a torrent says is validated here, once, so later layers can trust it: piece
//! count matches the total length, sizes are bounded, and every path is safe to create.
//! Encoding new torrents lives in `build`; path checks in `paths`.

pub mod build;
pub mod paths;

use crate::bencode;
use crate::types::InfoHash;
use serde_bencode::value::Value;
use sha1::{Digest, Sha1};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

pub use paths::PathError;

/// Largest .torrent accepted: the biggest public ones are a few tens of MiB.
pub const MAX_TORRENT_FILE_BYTES: usize = 64 << 20;
/// Largest total size accepted: offsets must stay exact in an f64 (2^53), as other clients'.
pub const MAX_TOTAL_LENGTH: u64 = 1 << 53;
/// Largest piece accepted; no client makes pieces over 128 MiB.
pub const MAX_PIECE_LENGTH: u64 = 256 << 20;

/// A .torrent that was refused, with what was wrong and where.
#[derive(Debug, thiserror::Error)]
pub enum MetainfoError {
    #[error(transparent)]
    Bencode(#[from] bencode::BencodeError),
    #[error("the file is {size} bytes; the cap for a .torrent is 64 MiB")]
    TooBig { size: usize },
    #[error("{field} is missing")]
    Missing { field: &'static str },
    #[error(
        "this is a BitTorrent v2-only torrent (BEP 52, no info.pieces); spate reads v1 and \
         hybrid torrents"
    )]
    V2Only,
    #[error("{field} is not {expected}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
    #[error("info.pieces is {len} bytes, not a multiple of 20")]
    PiecesLength { len: usize },
    #[error("info.piece length is {value}; it must be between 1 and 256 MiB")]
    PieceLength { value: i64 },
    #[error("{field} is {value}; it must be between 0 and 2^53")]
    BadSize { field: &'static str, value: i64 },
    #[error("the total size is past 2^53 bytes")]
    TotalTooLarge,
    #[error(
        "info.pieces holds {have} hashes but {total} bytes in pieces of {piece_len} need {want}"
    )]
    PieceCount {
        have: usize,
        want: u64,
        total: u64,
        piece_len: u64,
    },
    #[error("info.files is empty")]
    NoFiles,
    #[error("two files would be written at {path:?}")]
    PathClash { path: String },
    #[error(transparent)]
    Path(#[from] PathError),
}

/// One file of the torrent, in torrent order (padding files included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Relative path under the download directory, the torrent name included for
    /// multi-file torrents. Checked safe.
    pub path: PathBuf,
    pub length: u64,
    /// Byte offset of the file's first byte in the torrent's concatenated data.
    pub offset: u64,
    /// A BEP 47 padding file: zeros that are hashed but never written to disk.
    pub pad: bool,
}

/// The info dictionary, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    pub name: String,
    pub piece_length: u32,
    pub pieces: Vec<[u8; 20]>,
    pub files: Vec<FileEntry>,
    pub total_length: u64,
    pub private: bool,
    /// True for a single-file torrent (info.length), false for info.files.
    pub single_file: bool,
}

impl Info {
    pub fn piece_count(&self) -> u32 {
        self.pieces.len() as u32
    }

    /// Length of piece `index`; the last one may be shorter.
    pub fn piece_len(&self, index: u32) -> u32 {
        let start = u64::from(index) * u64::from(self.piece_length);
        let end = (start + u64::from(self.piece_length)).min(self.total_length);
        (end.saturating_sub(start)) as u32
    }
}

/// A parsed, validated .torrent.
#[derive(Debug, Clone)]
pub struct Metainfo {
    pub info_hash: InfoHash,
    pub info: Info,
    /// Tracker tiers: announce-list when present (BEP 12), else the single announce URL.
    pub trackers: Vec<Vec<String>>,
    /// Web seeds (BEP 19 url-list).
    pub web_seeds: Vec<String>,
    pub comment: Option<String>,
    pub created_by: Option<String>,
    pub creation_date: Option<i64>,
    /// The info dictionary exactly as it appears in the file.
    pub info_bytes: Vec<u8>,
}

impl Metainfo {
    /// Parses and validates the bytes of a .torrent file.
    pub fn from_bytes(bytes: &[u8]) -> Result<Metainfo, MetainfoError> {
        if bytes.len() > MAX_TORRENT_FILE_BYTES {
            return Err(MetainfoError::TooBig { size: bytes.len() });
        }
        bencode::validate(bytes)?;
        let span = bencode::dict_value_span(bytes, b"info")?
            .ok_or(MetainfoError::Missing { field: "info" })?;
        let info_bytes = bytes[span].to_vec();
        let root: Value =
            serde_bencode::from_bytes(bytes).map_err(|_| MetainfoError::WrongType {
                field: "the file",
                expected: "a bencoded dictionary",
            })?;
        let root = as_dict(&root, "the file")?;
        let info = parse_info(
            root.get(&b"info"[..])
                .ok_or(MetainfoError::Missing { field: "info" })?,
        )?;
        Ok(Metainfo {
            info_hash: InfoHash(Sha1::digest(&info_bytes).into()),
            info,
            trackers: parse_trackers(root),
            web_seeds: parse_web_seeds(root),
            comment: opt_text(root, "comment"),
            created_by: opt_text(root, "created by"),
            creation_date: match root.get(&b"creation date"[..]) {
                Some(Value::Int(t)) => Some(*t),
                _ => None,
            },
            info_bytes,
        })
    }
}

type Dict = HashMap<Vec<u8>, Value>;

fn as_dict<'a>(v: &'a Value, field: &'static str) -> Result<&'a Dict, MetainfoError> {
    match v {
        Value::Dict(d) => Ok(d),
        _ => Err(MetainfoError::WrongType {
            field,
            expected: "a dictionary",
        }),
    }
}

fn get_int(d: &Dict, key: &str, field: &'static str) -> Result<Option<i64>, MetainfoError> {
    match d.get(key.as_bytes()) {
        None => Ok(None),
        Some(Value::Int(i)) => Ok(Some(*i)),
        Some(_) => Err(MetainfoError::WrongType {
            field,
            expected: "an integer",
        }),
    }
}

fn get_bytes<'a>(
    d: &'a Dict,
    key: &str,
    field: &'static str,
) -> Result<Option<&'a [u8]>, MetainfoError> {
    match d.get(key.as_bytes()) {
        None => Ok(None),
        Some(Value::Bytes(b)) => Ok(Some(b)),
        Some(_) => Err(MetainfoError::WrongType {
            field,
            expected: "a string",
        }),
    }
}

/// Text fields are shown to people: invalid UTF-8 is replaced, not refused.
fn opt_text(d: &Dict, key: &str) -> Option<String> {
    match d.get(key.as_bytes()) {
        Some(Value::Bytes(b)) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

fn size_field(value: i64, field: &'static str) -> Result<u64, MetainfoError> {
    u64::try_from(value)
        .ok()
        .filter(|v| *v <= MAX_TOTAL_LENGTH)
        .ok_or(MetainfoError::BadSize { field, value })
}

fn parse_info(value: &Value) -> Result<Info, MetainfoError> {
    let d = as_dict(value, "info")?;
    let name_bytes = get_bytes(d, "name.utf-8", "info.name.utf-8")?
        .or(get_bytes(d, "name", "info.name")?)
        .ok_or(MetainfoError::Missing { field: "info.name" })?;
    let name = String::from_utf8_lossy(name_bytes).into_owned();
    let piece_length =
        get_int(d, "piece length", "info.piece length")?.ok_or(MetainfoError::Missing {
            field: "info.piece length",
        })?;
    if piece_length < 1 || piece_length as u64 > MAX_PIECE_LENGTH {
        return Err(MetainfoError::PieceLength {
            value: piece_length,
        });
    }
    let pieces_raw = match get_bytes(d, "pieces", "info.pieces")? {
        Some(raw) => raw,
        None if get_int(d, "meta version", "info.meta version")? == Some(2) => {
            return Err(MetainfoError::V2Only)
        }
        None => {
            return Err(MetainfoError::Missing {
                field: "info.pieces",
            })
        }
    };
    if pieces_raw.len() % 20 != 0 {
        return Err(MetainfoError::PiecesLength {
            len: pieces_raw.len(),
        });
    }
    let pieces: Vec<[u8; 20]> = pieces_raw
        .chunks_exact(20)
        .map(|c| c.try_into().expect("chunks_exact yields 20-byte chunks"))
        .collect();
    let name_path = paths::safe_relative_path(std::slice::from_ref(&name))?;
    let (files, single_file) = match get_int(d, "length", "info.length")? {
        Some(len) => {
            let length = size_field(len, "info.length")?;
            let file = FileEntry {
                path: name_path,
                length,
                offset: 0,
                pad: false,
            };
            (vec![file], true)
        }
        None => (parse_file_list(d, &name_path)?, false),
    };
    let total_length = files.last().map_or(0, |f| f.offset + f.length);
    if total_length > MAX_TOTAL_LENGTH {
        return Err(MetainfoError::TotalTooLarge);
    }
    let piece_len = piece_length as u64;
    let want = total_length.div_ceil(piece_len);
    if want != pieces.len() as u64 {
        return Err(MetainfoError::PieceCount {
            have: pieces.len(),
            want,
            total: total_length,
            piece_len,
        });
    }
    Ok(Info {
        name,
        piece_length: piece_length as u32,
        pieces,
        files,
        total_length,
        private: matches!(get_int(d, "private", "info.private"), Ok(Some(1))),
        single_file,
    })
}

fn parse_file_list(d: &Dict, root: &std::path::Path) -> Result<Vec<FileEntry>, MetainfoError> {
    let list = match d.get(&b"files"[..]) {
        None => {
            return Err(MetainfoError::Missing {
                field: "info.length or info.files",
            })
        }
        Some(Value::List(l)) => l,
        Some(_) => {
            return Err(MetainfoError::WrongType {
                field: "info.files",
                expected: "a list",
            })
        }
    };
    if list.is_empty() {
        return Err(MetainfoError::NoFiles);
    }
    let mut files = Vec::with_capacity(list.len());
    let mut offset = 0u64;
    let mut seen = HashSet::new();
    for entry in list {
        let f = as_dict(entry, "an entry of info.files")?;
        let length = size_field(
            get_int(f, "length", "info.files[].length")?.ok_or(MetainfoError::Missing {
                field: "info.files[].length",
            })?,
            "info.files[].length",
        )?;
        let pad = get_bytes(f, "attr", "info.files[].attr")?.is_some_and(|a| a.contains(&b'p'));
        let components = path_components(f)?;
        let path = root.join(paths::safe_relative_path(&components)?);
        if !pad && !seen.insert(path.clone()) {
            return Err(MetainfoError::PathClash {
                path: path.display().to_string(),
            });
        }
        files.push(FileEntry {
            path,
            length,
            offset,
            pad,
        });
        offset = offset
            .checked_add(length)
            .ok_or(MetainfoError::TotalTooLarge)?;
        if offset > MAX_TOTAL_LENGTH {
            return Err(MetainfoError::TotalTooLarge);
        }
    }
    refuse_file_dir_clashes(&files)?;
    Ok(files)
}

/// A file at `a/b` and another at `a/b/c` cannot both exist.
fn refuse_file_dir_clashes(files: &[FileEntry]) -> Result<(), MetainfoError> {
    let file_paths: HashSet<&std::path::Path> = files
        .iter()
        .filter(|f| !f.pad)
        .map(|f| f.path.as_path())
        .collect();
    for f in files.iter().filter(|f| !f.pad) {
        for ancestor in f.path.ancestors().skip(1) {
            if file_paths.contains(ancestor) {
                return Err(MetainfoError::PathClash {
                    path: ancestor.display().to_string(),
                });
            }
        }
    }
    Ok(())
}

fn path_components(f: &Dict) -> Result<Vec<String>, MetainfoError> {
    let raw = f
        .get(&b"path.utf-8"[..])
        .or(f.get(&b"path"[..]))
        .ok_or(MetainfoError::Missing {
            field: "info.files[].path",
        })?;
    let Value::List(parts) = raw else {
        return Err(MetainfoError::WrongType {
            field: "info.files[].path",
            expected: "a list of strings",
        });
    };
    parts
        .iter()
        .map(|p| match p {
            Value::Bytes(b) => Ok(String::from_utf8_lossy(b).into_owned()),
            _ => Err(MetainfoError::WrongType {
                field: "info.files[].path",
                expected: "a list of strings",
            }),
        })
        .collect()
}

/// Tracker tiers. Malformed entries are skipped: a bad tracker list should not make the
/// torrent unusable, since peers can come from elsewhere.
fn parse_trackers(root: &Dict) -> Vec<Vec<String>> {
    let mut tiers: Vec<Vec<String>> = Vec::new();
    if let Some(Value::List(list)) = root.get(&b"announce-list"[..]) {
        for tier in list {
            if let Value::List(urls) = tier {
                let urls: Vec<String> = urls.iter().filter_map(url_text).collect();
                if !urls.is_empty() {
                    tiers.push(urls);
                }
            }
        }
    }
    if tiers.is_empty() {
        if let Some(url) = root.get(&b"announce"[..]).and_then(url_text) {
            tiers.push(vec![url]);
        }
    }
    tiers
}

fn parse_web_seeds(root: &Dict) -> Vec<String> {
    match root.get(&b"url-list"[..]) {
        Some(Value::List(list)) => list.iter().filter_map(url_text).collect(),
        Some(v) => url_text(v).into_iter().collect(),
        None => Vec::new(),
    }
}

fn url_text(v: &Value) -> Option<String> {
    match v {
        Value::Bytes(b) if !b.is_empty() => std::str::from_utf8(b).ok().map(str::to_owned),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
