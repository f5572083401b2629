//! `spate verify`: check a directory against a .torrent and report, per file, which pieces
//! are complete, missing (absent, short or never written) or corrupt.

use super::load_torrent;
use super::progress::bytes_bar;
use super::units::human_bytes;
use crate::check::{check_pieces, PieceCheck};
use crate::hash::HashPool;
use crate::layout::Layout;
use crate::storage::{Storage, StorageConfig};
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(clap::Args)]
pub struct VerifyArgs {
    /// The .torrent file.
    torrent: PathBuf,
    /// The directory that holds the torrent's file or top-level folder.
    dir: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Good,
    Missing,
    Corrupt,
}

/// Corrupt piece indices listed per file, at most; the counts are always complete.
const LISTED_CORRUPT: usize = 20;

pub fn run(args: VerifyArgs) -> anyhow::Result<i32> {
    let m = load_torrent(&args.torrent)?;
    let config = StorageConfig {
        writable: false,
        ..StorageConfig::default()
    };
    let storage = Storage::new(&args.dir, &m.info, config);
    let layout = storage.layout().clone();
    let pool = HashPool::per_core();
    let bar = bytes_bar(m.info.total_length, "verifying");
    let mut verdicts = vec![Verdict::Missing; m.info.pieces.len()];
    let expected = Arc::new(m.info.pieces.clone());
    crate::runtime::start(check_pieces(
        &storage,
        &pool,
        0..m.info.piece_count(),
        Some(expected),
        |piece, check| {
            verdicts[piece.as_usize()] = match check {
                PieceCheck::Good => Verdict::Good,
                PieceCheck::Corrupt => Verdict::Corrupt,
                _ => Verdict::Missing,
            };
            bar.inc(layout.piece_len(piece).into());
        },
    ));
    bar.finish_and_clear();
    let report = Report::new(&m, &layout, &verdicts);
    if args.json {
        println!("{:#}", report.json());
    } else {
        report.print();
    }
    Ok(if report.all_good() { 0 } else { 1 })
}

struct FileReport {
    path: String,
    length: u64,
    counts: [usize; 3],
    corrupt: Vec<u32>,
}

struct Report {
    counts: [usize; 3],
    files: Vec<FileReport>,
}

impl Report {
    fn new(m: &crate::metainfo::Metainfo, layout: &Layout, verdicts: &[Verdict]) -> Report {
        let mut counts = [0; 3];
        for v in verdicts {
            counts[*v as usize] += 1;
        }
        let files = m
            .info
            .files
            .iter()
            .enumerate()
            .filter(|(_, f)| !f.pad)
            .map(|(i, f)| {
                let mut r = FileReport {
                    path: f.path.display().to_string(),
                    length: f.length,
                    counts: [0; 3],
                    corrupt: Vec::new(),
                };
                for p in layout.pieces_of_file(i) {
                    let v = verdicts[p as usize];
                    r.counts[v as usize] += 1;
                    if v == Verdict::Corrupt && r.corrupt.len() < LISTED_CORRUPT {
                        r.corrupt.push(p);
                    }
                }
                r
            })
            .collect();
        Report { counts, files }
    }

    fn all_good(&self) -> bool {
        self.counts[Verdict::Missing as usize] == 0 && self.counts[Verdict::Corrupt as usize] == 0
    }

    fn json(&self) -> serde_json::Value {
        let files: Vec<_> = self
            .files
            .iter()
            .map(|f| {
                json!({"path": f.path, "length": f.length, "complete": f.counts[0],
                    "missing": f.counts[1], "corrupt": f.counts[2], "corrupt_pieces": f.corrupt})
            })
            .collect();
        json!({"complete": self.all_good(), "pieces": {"complete": self.counts[0],
            "missing": self.counts[1], "corrupt": self.counts[2]}, "files": files})
    }

    fn print(&self) {
        for f in &self.files {
            let [good, missing, corrupt] = f.counts;
            let state = if missing == 0 && corrupt == 0 {
                "ok"
            } else {
                "BAD"
            };
            print!("{state:>4}  {:>11}  {}", human_bytes(f.length), f.path);
            if missing + corrupt > 0 {
                print!("  ({good} complete, {missing} missing, {corrupt} corrupt");
                if !f.corrupt.is_empty() {
                    let list: Vec<String> = f.corrupt.iter().map(u32::to_string).collect();
                    print!("; corrupt pieces {}", list.join(","));
                }
                print!(")");
            }
            println!();
        }
        let [good, missing, corrupt] = self.counts;
        println!(
            "{} of {} pieces complete, {missing} missing, {corrupt} corrupt",
            good,
            good + missing + corrupt
        );
    }
}
