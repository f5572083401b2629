//! Making a new torrent from files on disk: walk a file or directory tree (sorted, symlinks
//! skipped unless asked), lay its files end to end, hash every piece through `check`, and
//! encode the .torrent with `metainfo::build`.

use crate::check::{check_pieces, PieceCheck};
use crate::hash::HashPool;
use crate::layout::Layout;
use crate::metainfo::build::{choose_piece_length, encode_torrent, SpecFile, TorrentSpec};
use crate::storage::{Storage, StorageConfig};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Why a torrent could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{0}: no files to add (empty directory, or only links and special files)")]
    Empty(PathBuf),
    #[error("{0}: the name is not valid UTF-8")]
    NotUtf8(PathBuf),
    #[error("{path}: {source} while hashing piece {piece}")]
    Read {
        path: PathBuf,
        piece: u32,
        source: io::Error,
    },
    #[error("the total size is past 2^53 bytes")]
    TooLarge,
}

/// Options for `create`, mirroring the command line.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub piece_length: Option<u32>,
    pub trackers: Vec<String>,
    pub web_seeds: Vec<String>,
    pub private: bool,
    pub comment: Option<String>,
    /// Seconds since the epoch; None writes no creation date.
    pub creation_date: Option<i64>,
    pub follow_symlinks: bool,
}

/// The files found under a path, ready to hash.
#[derive(Debug)]
pub struct FileTree {
    pub spec: TorrentSpec,
    pub paths: Vec<PathBuf>,
    /// Links and special files left out, for the user to be told.
    pub skipped: Vec<PathBuf>,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CreateError + '_ {
    move |source| CreateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn utf8_name(path: &Path) -> Result<String, CreateError> {
    let name = path.file_name().unwrap_or(path.as_os_str());
    name.to_str()
        .map(str::to_owned)
        .ok_or_else(|| CreateError::NotUtf8(path.to_path_buf()))
}

/// Walks `root` (a file or a directory) into a torrent spec.
pub fn scan(root: &Path, opts: &CreateOptions) -> Result<FileTree, CreateError> {
    let root = fs::canonicalize(root).map_err(io_err(root))?;
    let meta = fs::metadata(&root).map_err(io_err(&root))?;
    let name = utf8_name(&root)?;
    let mut tree = FileTree {
        spec: TorrentSpec::default(),
        paths: Vec::new(),
        skipped: Vec::new(),
    };
    if meta.is_file() {
        fs::File::open(&root).map_err(io_err(&root))?;
        tree.spec.files.push(SpecFile {
            components: Vec::new(),
            length: meta.len(),
        });
        tree.paths.push(root.clone());
        tree.spec.single_file = true;
    } else {
        walk_dir(&root, &mut Vec::new(), opts.follow_symlinks, &mut tree)?;
        if tree.paths.is_empty() {
            return Err(CreateError::Empty(root));
        }
    }
    let total: u64 = tree.spec.files.iter().map(|f| f.length).sum();
    if total > crate::metainfo::MAX_TOTAL_LENGTH {
        return Err(CreateError::TooLarge);
    }
    let spec = &mut tree.spec;
    spec.name = name;
    spec.piece_length = opts
        .piece_length
        .unwrap_or_else(|| choose_piece_length(total));
    spec.private = opts.private;
    spec.trackers = opts.trackers.iter().map(|t| vec![t.clone()]).collect();
    spec.web_seeds = opts.web_seeds.clone();
    spec.comment = opts.comment.clone();
    spec.created_by = Some(format!("spate/{}", env!("CARGO_PKG_VERSION")));
    spec.creation_date = opts.creation_date;
    Ok(tree)
}

/// Adds the files under `dir` in byte order of their names, depth first.
fn walk_dir(
    dir: &Path,
    prefix: &mut Vec<String>,
    follow: bool,
    tree: &mut FileTree,
) -> Result<(), CreateError> {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .map_err(io_err(dir))?
        .collect::<Result<_, _>>()
        .map_err(io_err(dir))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let link_meta = fs::symlink_metadata(&path).map_err(io_err(&path))?;
        let meta = if link_meta.file_type().is_symlink() && follow {
            fs::metadata(&path).map_err(io_err(&path))?
        } else {
            link_meta
        };
        prefix.push(utf8_name(&path)?);
        if meta.is_dir() && prefix.len() < 64 {
            walk_dir(&path, prefix, follow, tree)?;
        } else if meta.is_file() {
            fs::File::open(&path).map_err(io_err(&path))?;
            tree.spec.files.push(SpecFile {
                components: prefix.clone(),
                length: meta.len(),
            });
            tree.paths.push(path);
        } else {
            tree.skipped.push(path);
        }
        prefix.pop();
    }
    Ok(())
}

/// Hashes every piece of `tree` and returns the encoded .torrent. `on_bytes` is called with
/// the size of each piece as it is hashed (for progress).
pub async fn hash_and_encode(
    tree: &FileTree,
    pool: &HashPool,
    mut on_bytes: impl FnMut(u64),
) -> Result<Vec<u8>, CreateError> {
    let layout = Layout::from_lengths(
        tree.spec.piece_length,
        tree.spec.files.iter().map(|f| f.length),
    );
    let config = StorageConfig {
        writable: false,
        ..StorageConfig::default()
    };
    let storage = Storage::from_parts(layout.clone(), tree.paths.clone(), config);
    let mut pieces = vec![[0u8; 20]; layout.piece_count() as usize];
    let mut failure = None;
    check_pieces(
        &storage,
        pool,
        0..layout.piece_count(),
        None,
        |piece, check| {
            match check {
                PieceCheck::Digest(d) => pieces[piece.as_usize()] = d,
                PieceCheck::Unreadable(kind) if failure.is_none() => {
                    let file = layout
                        .segments(piece, 0, layout.piece_len(piece))
                        .next()
                        .map_or(0, |s| s.file);
                    failure = Some(CreateError::Read {
                        path: tree.paths[file].clone(),
                        piece: piece.0,
                        source: io::Error::from(kind),
                    });
                }
                _ => {}
            }
            on_bytes(layout.piece_len(piece).into());
        },
    )
    .await;
    match failure {
        Some(e) => Err(e),
        None => Ok(encode_torrent(&tree.spec, &pieces)),
    }
}
