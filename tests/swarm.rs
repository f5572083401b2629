//! Swarms of several spate processes found through `spate tracker`: peers discover each
//! other by HTTP and UDP announces, and leechers that can each get only part of the data
//! from the seed finish by trading pieces among themselves (they upload while downloading).

mod common;

use common::fake_peer::{Behaviour, FakePeer};
use common::swarm::{free_port, report_of, Proc};
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
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(
            report["uploaded_bytes"].as_u64().unwrap() > 0,
            "leecher {i} uploaded nothing: {report}"
        );
        let got = std::fs::read(dir.path().join(format!("leech{i}/f.bin"))).unwrap();
        assert!(got == payload, "leecher {i} differs");
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
