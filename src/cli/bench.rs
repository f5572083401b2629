//! `spate bench`: the swarm-in-a-box benchmark (see `crate::bench`), printed as a table.

use super::units::{human_bytes, parse_size};
use crate::bench::{self, BenchConfig};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Payload size.
    #[arg(long, default_value = "1G", value_parser = parse_size)]
    size: u64,
    /// Number of leechers downloading at once.
    #[arg(long, default_value_t = 2)]
    leechers: usize,
    /// Piece size (default: automatic, as `spate create`).
    #[arg(long, value_parser = parse_size)]
    piece_size: Option<u64>,
    /// Directory for the temporary payload and downloads (default: the system temp dir).
    #[arg(long)]
    scratch: Option<PathBuf>,
}

pub fn run(args: BenchArgs) -> anyhow::Result<i32> {
    if args.leechers == 0 || args.size == 0 {
        return Err(super::BadInput("--size and --leechers must be above zero".into()).into());
    }
    let config = BenchConfig {
        size: args.size,
        leechers: args.leechers,
        piece_length: args.piece_size.map(|p| p as u32),
        scratch: args.scratch,
    };
    let report = bench::run(&config, |s| eprintln!("spate bench: {s}"))?;
    println!(
        "swarm: 1 seeder, {} leecher(s), {} payload, {} pieces, loopback (setup {:.1} s)",
        report.leechers.len(),
        human_bytes(report.payload_bytes),
        human_bytes(report.piece_length.into()),
        report.setup.as_secs_f64()
    );
    let mut total = 0.0;
    for (i, l) in report.leechers.iter().enumerate() {
        let secs = l.wall.as_secs_f64();
        let mb_s = report.payload_bytes as f64 / secs / 1e6;
        total += mb_s;
        println!(
            "leecher {i}: {:.2} s, {mb_s:.1} MB/s (uploaded {} to the other leechers, {} \
             received twice)",
            secs,
            human_bytes(l.report.progress.uploaded),
            human_bytes(l.report.wasted_bytes)
        );
        for line in &l.report.stats_lines {
            println!("  {line}");
        }
    }
    println!("aggregate: {total:.1} MB/s");
    Ok(0)
}
