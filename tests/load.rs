//! Load: one spate seeder serving twenty spate leechers of a 512 MiB torrent at once, each
//! leecher a process of its own that exits only once every piece is verified and fsynced.

mod common;

use common::swarm::{report_of, start_leecher, start_seeder};
use common::*;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

const LEECHERS: usize = 20;
const SIZE: usize = 512 << 20;

/// True when the file at `path` holds exactly `expected`, read in 8 MiB chunks.
fn same_bytes(path: &Path, expected: &[u8]) -> bool {
    let mut file = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; 8 << 20];
    let mut at = 0;
    loop {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            return at == expected.len();
        }
        if expected.get(at..at + n) != Some(&buf[..n]) {
            return false;
        }
        at += n;
    }
}

#[test]
fn one_seeder_serves_twenty_leechers_of_512_mib() {
    let dir = tempdir();
    write_tree(&dir.path().join("seed"), &[("f.bin", SIZE)]);
    let torrent = dir.path().join("t.torrent");
    create_torrent(
        &dir.path().join("seed/f.bin"),
        &torrent,
        &["--piece-size", "512K"],
    );
    let seeder = start_seeder(&torrent, &dir.path().join("seed"), &[]);
    let seed_addr = seeder.addr().to_string();
    let started = Instant::now();
    // Only the seeder is given to each leecher (no tracker): it alone serves all twenty.
    let leechers: Vec<_> = (0..LEECHERS)
        .map(|i| {
            let out = dir.path().join(format!("leech{i}"));
            (start_leecher(&torrent, &out, &["--peer", &seed_addr]), out)
        })
        .collect();
    let payload = std::fs::read(dir.path().join("seed/f.bin")).unwrap();
    for (i, (leecher, out)) in leechers.into_iter().enumerate() {
        let report = report_of(&leecher.wait(Duration::from_secs(240)));
        assert_eq!(report["complete"], true, "leecher {i}: {report}");
        assert!(
            same_bytes(&out.join("f.bin"), &payload),
            "leecher {i} differs"
        );
        // Done with this copy: free the space before the next check.
        std::fs::remove_dir_all(&out).unwrap();
    }
    eprintln!(
        "{LEECHERS} leechers x {} MiB served in {:.1} s",
        SIZE >> 20,
        started.elapsed().as_secs_f64()
    );
}
