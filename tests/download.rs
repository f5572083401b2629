//! End-to-end downloads over real sockets and files: spate seeding to spate, resuming after
//! SIGKILL and SIGTERM, and staying correct next to peers that misbehave in every way the
//! download engine must survive.

mod common;

use common::fake_peer::{Behaviour, FakePeer};
use common::fixture::Fixture;
use common::swarm::{
    free_port, report_of, spawn_listening, start_leecher, start_seeder, wait_listening, Proc,
};
use common::*;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const PIECE: usize = 256 << 10;
const LIMIT: Duration = Duration::from_secs(60);

/// Both write modes: `auto` picks buffered writes for torrents this small, so each test
/// runs once with O_DIRECT forced and once through the page cache.
const WRITE_MODES: [&str; 2] = ["direct", "buffered"];

/// A spate seeder of `fx` and a spate leecher into `leech/` dialling it with `extra` flags;
/// the seeder lives as long as the returned guard.
fn leech_from_seeder(fx: &Fixture, extra: &[&str]) -> (Proc, PathBuf, Proc) {
    let seeder = start_seeder(&fx.torrent, &fx.seed_dir(), &[]);
    let out = fx.out_dir("leech");
    let peer = seeder.addr().to_string();
    let leecher = start_leecher(&fx.torrent, &out, &[&["--peer", &peer][..], extra].concat());
    (seeder, out, leecher)
}

#[test]
fn spate_to_spate_single_file() {
    for mode in WRITE_MODES {
        let fx = Fixture::single(20 * PIECE + 1);
        let (_seeder, out, leecher) = leech_from_seeder(&fx, &["--write-mode", mode]);
        let report = report_of(&leecher.wait(LIMIT));
        fx.assert_same_files(&out);
        assert_eq!(report["complete"], true, "{mode}");
        assert_eq!(report["hash_failures"], 0, "{mode}");
    }
}

/// `--seed-ratio` and `--seed-time` end a seeding download by themselves, with exit 0
/// (plain `--seed` serves until interrupted, and these waits would time out): one leecher
/// stops once a second leecher that knows only it has taken at least half the torrent from
/// it; another stops two seconds after it completed; and `spate seed --seed-ratio 1` stops
/// once it has uploaded the torrent's size.
#[test]
fn seed_limits_end_a_seeding_download() {
    let fx = Fixture::single(16 * PIECE);
    let size = fx.meta.info.total_length;
    let (_seeder, _out, by_ratio) = leech_from_seeder(&fx, &["--seed-ratio", "0.5", "--no-pex"]);
    wait_listening(by_ratio.addr(), LIMIT);
    let peer = by_ratio.addr().to_string();
    let _second = start_leecher(&fx.torrent, &fx.out_dir("second"), &["--peer", &peer]);
    let report = report_of(&by_ratio.wait(LIMIT));
    let uploaded = report["uploaded_bytes"].as_u64().unwrap();
    assert!(uploaded >= size / 2, "uploaded {uploaded} of {size}");

    let other = Fixture::single(4 * PIECE);
    let (_seeder, _out, by_time) = leech_from_seeder(&other, &["--seed-time", "2s"]);
    let done = by_time.wait(LIMIT);
    let report = report_of(&done);
    let stdout = String::from_utf8_lossy(&done.stdout);
    let verified: serde_json::Value = stdout
        .lines()
        .find(|l| l.contains("\"verified\""))
        .map(|l| serde_json::from_str(l).unwrap())
        .expect("a verified event");
    let seeded = report["wall_s"].as_f64().unwrap() - verified["wall_s"].as_f64().unwrap();
    assert!((2.0..30.0).contains(&seeded), "seeded {seeded} s");

    let seed = start_seeder(&other.torrent, &other.seed_dir(), &["--seed-ratio", "1"]);
    let out = other.out_dir("from-seed");
    let peer = seed.addr().to_string();
    let leecher = start_leecher(&other.torrent, &out, &["--peer", &peer]);
    assert_eq!(report_of(&leecher.wait(LIMIT))["complete"], true);
    let done = seed.wait(LIMIT);
    assert_eq!(done.status.code(), Some(0), "{}", stderr(&done));
}

/// `--sequential` fetches pieces first to last: stopped part way (a download limit keeps it
/// slow), what is on disk is the torrent's first pieces and nothing after them.
#[test]
fn a_sequential_download_fetches_pieces_first_to_last() {
    let fx = Fixture::single(12 * PIECE);
    let slow = ["--sequential", "--download-limit", "512K"];
    let (_seeder, out, leecher) = leech_from_seeder(&fx, &slow);
    let deadline = Instant::now() + LIMIT;
    let mut good = good_pieces(&fx.meta, &out);
    while good.iter().filter(|&&g| g).count() < 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        good = good_pieces(&fx.meta, &out);
    }
    drop(leecher);
    let count = good.iter().filter(|&&g| g).count();
    assert!((4..12).contains(&count), "{good:?}");
    assert!(
        good[..count].iter().all(|&g| g),
        "not the first pieces: {good:?}"
    );
}

/// Without `--listen-ip` spate listens on every address: one seeder serves a leecher that
/// dials it over IPv4 and one that dials it over IPv6.
#[test]
fn a_seeder_on_its_default_address_serves_ipv4_and_ipv6_peers() {
    let fx = Fixture::single(8 * PIECE + 5);
    let port = free_port();
    let seed_dir = fx.seed_dir();
    let seed = [
        "seed",
        path_str(&fx.torrent),
        path_str(&seed_dir),
        "--no-trackers",
    ];
    let _seeder = spawn_listening(None, port, &seed);
    wait_listening(SocketAddr::from(([127, 0, 0, 1], port)), LIMIT);
    for (name, peer) in [
        ("v4", format!("127.0.0.1:{port}")),
        ("v6", format!("[::1]:{port}")),
    ] {
        let out = fx.out_dir(name);
        let leecher = start_leecher(&fx.torrent, &out, &["--peer", &peer]);
        let report = report_of(&leecher.wait(LIMIT));
        assert_eq!(report["complete"], true, "{name}");
        fx.assert_same_files(&out);
    }
}

/// Files of odd sizes: their boundaries fall mid-page, so direct writes split into direct
/// middles and buffered partial pages.
#[test]
fn spate_to_spate_multi_file() {
    for mode in WRITE_MODES {
        let fx = Fixture::multi();
        let (_seeder, out, leecher) = leech_from_seeder(&fx, &["--write-mode", mode]);
        report_of(&leecher.wait(LIMIT));
        fx.assert_same_files(&out);
        assert_eq!(std::fs::metadata(out.join("tree/empty")).unwrap().len(), 0);
    }
}

/// `--write-mode adaptive` over 160 MiB: a 64 MiB trial through the page cache, one with
/// O_DIRECT, then the faster path; both paths carry bytes and the files come out whole.
#[test]
fn adaptive_writes_take_both_paths() {
    let fx = Fixture::single(640 * PIECE);
    let (_seeder, out, leecher) = leech_from_seeder(&fx, &["--write-mode", "adaptive"]);
    let report = report_of(&leecher.wait(LIMIT));
    fx.assert_same_files(&out);
    let direct = report["direct_bytes"].as_u64().unwrap();
    let total = report["total_bytes"].as_u64().unwrap();
    // /tmp is ext4 here (O_DIRECT works): each trial is 64 MiB (less the partial pages that
    // go through the page cache whatever the path).
    assert!(
        direct >= 48 << 20 && direct <= total - (48 << 20),
        "{direct} of {total} bytes went direct"
    );
}

/// Waits until `spate verify` finds at least `pieces` complete pieces in `out`.
fn wait_for_pieces(torrent: &Path, out: &Path, pieces: u64) {
    let deadline = Instant::now() + LIMIT;
    while Instant::now() < deadline {
        let o = run_spate(&["verify", path_str(torrent), path_str(out), "--json"]);
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&o.stdout) {
            if v["pieces"]["complete"].as_u64().unwrap_or(0) >= pieces {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{pieces} pieces never arrived");
}

fn resume_after(signal: &str) {
    let fx = Fixture::single(40 * PIECE);
    let half = FakePeer::start(&fx.meta, fx.payload(), Behaviour::HalfSeed);
    let out = fx.out_dir("leech");
    let first = start_leecher(&fx.torrent, &out, &["--peer", &half.addr.to_string()]);
    wait_for_pieces(&fx.torrent, &out, 20);
    first.signal(signal);
    let first_out = first.wait(Duration::from_secs(10));
    if signal == "TERM" {
        assert_eq!(first_out.status.code(), Some(130), "{}", stderr(&first_out));
        assert!(
            out.join(".spate").read_dir().unwrap().count() == 1,
            "resume data saved on SIGTERM"
        );
    }
    drop(half);
    let seeder = start_seeder(&fx.torrent, &fx.seed_dir(), &[]);
    let second = start_leecher(&fx.torrent, &out, &["--peer", &seeder.addr().to_string()]);
    let report = report_of(&second.wait(LIMIT));
    fx.assert_same_files(&out);
    let downloaded = report["downloaded_bytes"].as_u64().unwrap();
    assert!(
        downloaded <= 20 * PIECE as u64,
        "fetched {downloaded} bytes again; the first half was verified"
    );
}

/// A download waiting for its first peer creates its files at their full size meanwhile (a
/// thread of its own uses the wait, so the transfer does not stall on it); interrupted and
/// run again with a seeder, it completes byte-exact over those files.
#[test]
fn a_download_waiting_for_peers_creates_its_files_meanwhile() {
    let fx = Fixture::multi();
    let out = fx.out_dir("leech");
    let waiting = start_leecher(&fx.torrent, &out, &[]);
    for f in &fx.meta.info.files {
        let path = out.join(&f.path);
        let created = common::clients::poll_until(Duration::from_secs(10), || {
            let len = std::fs::metadata(&path).ok()?.len();
            (len == f.length).then_some(())
        });
        assert!(
            created.is_some(),
            "{} was not created at {} bytes",
            f.path.display(),
            f.length
        );
    }
    waiting.signal("TERM");
    let stopped = waiting.wait(Duration::from_secs(10));
    assert_eq!(stopped.status.code(), Some(130), "{}", stderr(&stopped));
    let (_seeder, out, leecher) = leech_from_seeder(&fx, &[]);
    let report = report_of(&leecher.wait(LIMIT));
    fx.assert_same_files(&out);
    assert_eq!(report["hash_failures"], 0);
}

#[test]
fn resumes_after_sigkill_without_refetching_verified_pieces() {
    resume_after("KILL");
}

#[test]
fn resumes_after_sigterm_from_saved_resume_data() {
    resume_after("TERM");
}

/// Downloads next to a misbehaving peer listed first; returns the leecher's report.
fn download_beside(behaviour: Behaviour) -> serde_json::Value {
    let fx = Fixture::single(24 * PIECE + 7);
    let bad = FakePeer::start(&fx.meta, fx.payload(), behaviour);
    let seeder = start_seeder(&fx.torrent, &fx.seed_dir(), &[]);
    let out = fx.out_dir("leech");
    let peers = [
        "--peer",
        &bad.addr.to_string(),
        "--peer",
        &seeder.addr().to_string(),
    ];
    let leecher = start_leecher(
        &fx.torrent,
        &out,
        &[&peers[..], &["--memory-limit", "16M"]].concat(),
    );
    let report = report_of(&leecher.wait(LIMIT));
    fx.assert_same_files(&out);
    let rss = report["peak_rss_mib"].as_f64().unwrap();
    assert!(rss < 120.0, "{behaviour:?}: peak RSS {rss} MiB");
    report
}

#[test]
fn peers_that_break_the_protocol_are_dropped() {
    for behaviour in [
        Behaviour::Unrequested,
        Behaviour::WrongLength,
        Behaviour::HugeFrame,
        Behaviour::BitfieldTooLong,
        Behaviour::BitfieldSpareBits,
        Behaviour::HaveOutOfRange,
        Behaviour::WrongInfoHash,
    ] {
        let report = download_beside(behaviour);
        assert!(
            report["peers_dropped"].as_u64().unwrap() >= 1,
            "{behaviour:?} was not dropped: {report}"
        );
    }
}

/// A seeder that sends each piece's blocks last to first: the blocks ahead of the hash are
/// held in memory and hashed once the first arrives, so nothing is read back from disk, also
/// when each read holds a single block (those are copied rather than pinning a receive
/// buffer each). With the smallest memory limit the hold may give up and pieces are finished
/// from disk instead; either way every byte is right.
#[test]
fn blocks_that_arrive_out_of_order_are_hashed_without_reading_them_back() {
    let fx = Fixture::single(24 * PIECE + 7);
    for (behaviour, limit, reread) in [
        (Behaviour::Reversed, "32M", false),
        (Behaviour::ReversedTrickle, "32M", false),
        (Behaviour::Reversed, "1M", true),
    ] {
        let peer = FakePeer::start(&fx.meta, fx.payload(), behaviour);
        let out = fx.out_dir(&format!("leech-{behaviour:?}-{limit}"));
        let args = ["--peer", &peer.addr.to_string(), "--memory-limit", limit];
        let report = report_of(&start_leecher(&fx.torrent, &out, &args).wait(LIMIT));
        fx.assert_same_files(&out);
        assert_eq!(
            report["hash_failures"], 0,
            "{behaviour:?} {limit}: {report}"
        );
        let reread_bytes = report["reread_bytes"].as_u64().unwrap();
        if reread {
            eprintln!("with a {limit} memory limit {reread_bytes} bytes were read back");
        } else {
            assert_eq!(reread_bytes, 0, "{behaviour:?} {limit}: {report}");
        }
    }
}

#[test]
fn a_silent_peer_does_not_stall_the_download() {
    download_beside(Behaviour::Silent);
}

#[test]
fn corrupt_data_is_never_kept_and_its_sender_is_banned() {
    let fx = Fixture::single(24 * PIECE);
    let bad = FakePeer::start(&fx.meta, fx.payload(), Behaviour::Corrupt);
    // The honest seeder's port is given now but it starts only after the ban, so every
    // early request goes to the corrupt peer.
    let port = common::swarm::free_port();
    let out = fx.out_dir("leech");
    let honest = format!("127.0.0.1:{port}");
    let leecher = start_leecher(
        &fx.torrent,
        &out,
        &["--peer", &bad.addr.to_string(), "--peer", &honest],
    );
    let deadline = Instant::now() + LIMIT;
    while bad.disconnects.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "the corrupt peer was never dropped"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _seeder = common::swarm::start_seeder_on(port, &fx.torrent, &fx.seed_dir(), &[]);
    let report = report_of(&leecher.wait(LIMIT));
    fx.assert_same_files(&out);
    assert!(report["hash_failures"].as_u64().unwrap() >= 3, "{report}");
    assert_eq!(report["peers_banned"], 1, "{report}");
}
