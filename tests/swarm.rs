//! Swarms of several spate processes found through `spate tracker`: peers discover each
//! other by HTTP and UDP announces, and leechers that can each get only part of the data
//! from the seed finish by trading pieces among themselves (they upload while downloading).

mod common;

use common::fake_peer::{Behaviour, FakePeer};
use common::swarm::{final_report, free_port, report_of, Proc};
use common::tracker_clients::SpateTracker;
use common::*;
use spate::metainfo::Metainfo;
use std::path::Path;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(90);

/// `spate seed` or `spate download` that announces to the torrent's trackers.
fn spate_with_trackers(args: &[&str]) -> Proc {
    common::swarm::spawn_on(free_port(), args)
}

fn leech(torrent: &Path, out: &Path) -> Proc {
    spate_with_trackers(&["download", path_str(torrent), "-o", path_str(out), "--json"])
}

fn download_through(scheme: &str) {
    let tracker = SpateTracker::start(&[
        "--listen",
        "127.0.0.1:0",
        "--udp",
        "127.0.0.1:0",
        "--interval",
        "5",
    ]);
    let url = match scheme {
        "udp" => format!("udp://{}", tracker.udp.unwrap()),
        _ => tracker.announce_url(),
    };
    let dir = tempdir();
    write_tree(&dir.path().join("seed"), &[("f.bin", 5 << 20)]);
    let torrent = dir.path().join("t.torrent");
    create_torrent(
        &dir.path().join("seed/f.bin"),
        &torrent,
        &["-t", &url, "--piece-size", "256K"],
    );
    let _seeder = spate_with_trackers(&[
        "seed",
        path_str(&torrent),
        path_str(&dir.path().join("seed")),
    ]);
    let out = dir.path().join("leech");
    let report = report_of(&leech(&torrent, &out).wait(LIMIT));
    assert_eq!(report["complete"], true);
    assert_eq!(
        std::fs::read(out.join("f.bin")).unwrap(),
        std::fs::read(dir.path().join("seed/f.bin")).unwrap()
    );
}

#[test]
fn peers_are_found_through_an_http_tracker() {
    download_through("http");
}

#[test]
fn peers_are_found_through_a_udp_tracker() {
    download_through("udp");
}

#[test]
fn leechers_finish_by_trading_what_each_got_from_a_partial_seed() {
    let tracker = SpateTracker::start(&["--listen", "127.0.0.1:0", "--interval", "2"]);
    let dir = tempdir();
    write_tree(&dir.path().join("seed"), &[("f.bin", 48 * (256 << 10))]);
    let torrent = dir.path().join("t.torrent");
    create_torrent(
        &dir.path().join("seed/f.bin"),
        &torrent,
        &["-t", &tracker.announce_url(), "--piece-size", "256K"],
    );
    let meta = Metainfo::from_bytes(&std::fs::read(&torrent).unwrap()).unwrap();
    let payload = std::fs::read(dir.path().join("seed/f.bin")).unwrap();
    // The seed shows each of its three connections a different third of the pieces.
    let seed = FakePeer::start(&meta, payload.clone(), Behaviour::ThirdPerConnection);
    // Leechers keep seeding (--seed): one that finishes first must stay to serve its third.
    let leechers: Vec<Proc> = (0..3)
        .map(|i| {
            let out = dir.path().join(format!("leech{i}"));
            let args = [
                "download",
                path_str(&torrent),
                "-o",
                path_str(&out),
                "--json",
                "--seed",
            ];
            let l = spate_with_trackers(&[&args[..], &["--peer", &seed.addr.to_string()]].concat());
            // Connect to the seed one at a time, so each gets its own third.
            std::thread::sleep(Duration::from_millis(300));
            l
        })
        .collect();
    for i in 0..3 {
        wait_until_complete(&torrent, &dir.path().join(format!("leech{i}")));
    }
    drop(seed);
    for (i, l) in leechers.into_iter().enumerate() {
        l.signal("TERM");
        let out = l.wait(Duration::from_secs(10));
        let report = final_report(&out.stdout);
        assert!(
            report["uploaded_bytes"].as_u64().unwrap() > 0,
            "leecher {i} uploaded nothing: {report}"
        );
        let got = std::fs::read(dir.path().join(format!("leech{i}/f.bin"))).unwrap();
        assert!(got == payload, "leecher {i} differs");
    }
}

#[test]
fn when_the_only_seed_leaves_early_the_leechers_finish_from_each_other() {
    let tracker = SpateTracker::start(&["--listen", "127.0.0.1:0", "--interval", "2"]);
    let dir = tempdir();
    write_tree(&dir.path().join("seed"), &[("f.bin", 4 << 20)]);
    let torrent = dir.path().join("t.torrent");
    create_torrent(
        &dir.path().join("seed/f.bin"),
        &torrent,
        &["-t", &tracker.announce_url(), "--piece-size", "64K"],
    );
    let meta = Metainfo::from_bytes(&std::fs::read(&torrent).unwrap()).unwrap();
    let payload = std::fs::read(dir.path().join("seed/f.bin")).unwrap();
    // The seed sends a copy in about 4 s while the leechers trade slowly; it leaves as soon
    // as the swarm as a whole holds every piece. Each leecher then has only part of them
    // (about 50-60% from the seed: rarest-first cannot see the pieces the others have in
    // flight, so the seed sends more than one copy; 80-85% in all, measured).
    let seed = spate_with_trackers(&[
        "seed",
        path_str(&torrent),
        path_str(&dir.path().join("seed")),
        "--upload-limit",
        "1M",
    ]);
    let outs: Vec<_> = (0..3)
        .map(|i| dir.path().join(format!("leech{i}")))
        .collect();
    let leechers: Vec<Proc> = outs
        .iter()
        .map(|out| {
            let args = ["download", path_str(&torrent), "-o", path_str(out)];
            spate_with_trackers(
                &[&args[..], &["--json", "--seed", "--upload-limit", "100K"]].concat(),
            )
        })
        .collect();
    let deadline = std::time::Instant::now() + LIMIT;
    let held = loop {
        let held: Vec<Vec<bool>> = outs.iter().map(|o| good_pieces(&meta, o)).collect();
        let union_complete = (0..held[0].len()).all(|p| held.iter().any(|leecher| leecher[p]));
        if union_complete {
            break held;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the swarm never held every piece"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    seed.signal("TERM");
    seed.wait(Duration::from_secs(10));
    let shares: Vec<f64> = held
        .iter()
        .map(|h| h.iter().filter(|&&b| b).count() as f64 / h.len() as f64)
        .collect();
    eprintln!("the seed left with the leechers at {shares:.2?} of the pieces");
    assert!(
        shares.iter().all(|&s| s < 1.0),
        "a leecher had everything before the seed left: {shares:?}"
    );
    for out in &outs {
        wait_until_complete(&torrent, out);
    }
    for (i, l) in leechers.into_iter().enumerate() {
        l.signal("TERM");
        let report = report_of(&l.wait(Duration::from_secs(10)));
        assert!(
            report["uploaded_bytes"].as_u64().unwrap() > 0,
            "leecher {i} uploaded nothing: {report}"
        );
        assert!(
            std::fs::read(outs[i].join("f.bin")).unwrap() == payload,
            "leecher {i} differs"
        );
    }
}

/// Polls `spate verify` until every piece in `out` is good.
fn wait_until_complete(torrent: &Path, out: &Path) {
    let deadline = std::time::Instant::now() + LIMIT;
    loop {
        let o = run_spate(&["verify", path_str(torrent), path_str(out)]);
        if o.status.success() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} never completed",
            out.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
