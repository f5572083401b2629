//! `spate create`: make a .torrent from a file or directory, hashing on every core.

use super::progress::bytes_bar;
use super::units::parse_size;
use super::BadInput;
use crate::creator::{hash_and_encode, scan, CreateError, CreateOptions};
use crate::hash::HashPool;
use crate::metainfo::Metainfo;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct CreateArgs {
    /// The file or directory to share.
    path: PathBuf,
    /// Where to write the .torrent.
    #[arg(short, long)]
    output: PathBuf,
    /// Piece size (e.g. 256K, 1M); default: a power of two giving 1,000-2,000 pieces.
    #[arg(long, value_parser = parse_piece_size)]
    piece_size: Option<u32>,
    /// Tracker announce URL; repeat for more (each becomes its own tier).
    #[arg(long = "tracker", short = 't')]
    trackers: Vec<String>,
    /// Web seed URL (BEP 19); repeatable.
    #[arg(long = "web-seed")]
    web_seeds: Vec<String>,
    /// Mark the torrent private (BEP 27: trackers only, no DHT or PEX).
    #[arg(long)]
    private: bool,
    #[arg(long)]
    comment: Option<String>,
    /// Leave out the creation date, so the same files always give the same .torrent.
    #[arg(long)]
    no_date: bool,
    /// Follow symbolic links instead of skipping them.
    #[arg(long)]
    follow_symlinks: bool,
}

fn parse_piece_size(text: &str) -> Result<u32, String> {
    let n = parse_size(text)?;
    if !(16 << 10..=256 << 20).contains(&n) {
        return Err(format!(
            "{text}: the piece size must be between 16K and 256M"
        ));
    }
    Ok(n as u32)
}

pub fn run(args: CreateArgs) -> anyhow::Result<i32> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let opts = CreateOptions {
        piece_length: args.piece_size,
        trackers: args.trackers,
        web_seeds: args.web_seeds,
        private: args.private,
        comment: args.comment,
        creation_date: (!args.no_date).then_some(now),
        follow_symlinks: args.follow_symlinks,
    };
    let tree = scan(&args.path, &opts).map_err(|e| match e {
        CreateError::Io { .. } | CreateError::Empty(_) | CreateError::NotUtf8(_) => {
            anyhow::Error::from(BadInput(e.to_string()))
        }
        other => other.into(),
    })?;
    for skipped in &tree.skipped {
        eprintln!(
            "spate: skipped {} (a link or special file)",
            skipped.display()
        );
    }
    let total: u64 = tree.spec.files.iter().map(|f| f.length).sum();
    let bar = bytes_bar(total, "hashing");
    let pool = HashPool::per_core();
    let torrent =
        crate::runtime::start(async { hash_and_encode(&tree, &pool, |n| bar.inc(n)).await })?;
    bar.finish_and_clear();
    // Parse what we made before writing it, so a tree no client could use is never saved.
    let m = Metainfo::from_bytes(&torrent).map_err(|e| BadInput(e.to_string()))?;
    std::fs::write(&args.output, &torrent)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", args.output.display()))?;
    println!("{}", m.info_hash);
    Ok(0)
}
