//! `--download-limit` and `--upload-limit` over loopback: a 4 MiB download limited to 1 MiB/s
//! in either direction cannot finish in much under 4 s (the buckets save at most a tenth of
//! a second for a burst), and still delivers every byte.

mod common;

use common::fixture::Fixture;
use common::swarm::{report_of, start_leecher, start_seeder};
use std::time::{Duration, Instant};

const SIZE: usize = 4 << 20;
/// 4 MiB at 1 MiB/s, less the 0.1 s burst and some slack for the clocks.
const AT_LEAST: Duration = Duration::from_millis(3500);
const LIMIT: Duration = Duration::from_secs(60);

/// Downloads the fixture with the given seeder and leecher flags; returns how long it took.
fn timed_download(seeder_flags: &[&str], leecher_flags: &[&str]) -> Duration {
    let fx = Fixture::single(SIZE);
    let seeder = start_seeder(&fx.torrent, &fx.seed_dir(), seeder_flags);
    let out = fx.out_dir("leech");
    let peer = seeder.addr().to_string();
    let started = Instant::now();
    let leecher = start_leecher(
        &fx.torrent,
        &out,
        &[&["--peer", peer.as_str()], leecher_flags].concat(),
    );
    let report = report_of(&leecher.wait(LIMIT));
    let took = started.elapsed();
    assert_eq!(report["complete"], true, "{report}");
    fx.assert_same_files(&out);
    took
}

#[test]
fn a_download_limit_holds_the_leecher_to_its_rate() {
    let took = timed_download(&[], &["--download-limit", "1M"]);
    assert!(took >= AT_LEAST, "4 MiB at 1 MiB/s took only {took:?}");
}

#[test]
fn an_upload_limit_holds_the_seeder_to_its_rate() {
    let took = timed_download(&["--upload-limit", "1M"], &[]);
    assert!(took >= AT_LEAST, "4 MiB at 1 MiB/s took only {took:?}");
}
