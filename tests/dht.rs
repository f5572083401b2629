//! The DHT end to end, on loopback only: a spate node that seeds another torrent is the
//! bootstrap node (every process is given it with `--dht-bootstrap`, so nobody ever asks
//! the public routers); a seeder announces itself through it, and leechers with neither
//! trackers nor peer addresses find the seeder there, from a .torrent or from a bare magnet
//! link. A private torrent (BEP 27) is never looked up or announced in the DHT.

mod common;

use common::fixture::Fixture;
use common::swarm::{free_port, report_of, spawn_on, start_seeder_on, Proc};
use common::*;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(60);

/// A spate seeding an unrelated torrent, serving as the DHT's bootstrap node; returns it
/// and its HOST:PORT.
fn bootstrap_node() -> (Proc, Fixture, String) {
    let other = Fixture::single(100_000);
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    // Its own address as its bootstrap node: it never looks further than loopback.
    let node = start_seeder_on(
        port,
        &other.torrent,
        &other.seed_dir(),
        &["--dht-bootstrap", &addr],
    );
    (node, other, addr)
}

#[test]
fn a_leecher_finds_the_seeder_through_the_dht_alone() {
    let (_node, _other, boot) = bootstrap_node();
    let fx = Fixture::single(3 << 20);
    let _seeder = start_seeder_on(
        free_port(),
        &fx.torrent,
        &fx.seed_dir(),
        &["--dht-bootstrap", &boot],
    );
    let out = fx.out_dir("leech");
    let leecher = spawn_on(
        free_port(),
        &[
            "download",
            path_str(&fx.torrent),
            "-o",
            path_str(&out),
            "--json",
            "--no-trackers",
            "--dht-bootstrap",
            &boot,
        ],
    );
    let report = report_of(&leecher.wait(LIMIT));
    assert_eq!(report["complete"], true);
    fx.assert_same_files(&out);
}

#[test]
fn a_bare_magnet_link_is_fetched_through_the_dht() {
    let (_node, _other, boot) = bootstrap_node();
    let fx = Fixture::multi();
    let _seeder = start_seeder_on(
        free_port(),
        &fx.torrent,
        &fx.seed_dir(),
        &["--dht-bootstrap", &boot],
    );
    let out = fx.out_dir("leech");
    let link = format!("magnet:?xt=urn:btih:{}", fx.meta.info_hash.to_hex());
    let leecher = spawn_on(
        free_port(),
        &[
            "download",
            &link,
            "-o",
            path_str(&out),
            "--json",
            "--dht-bootstrap",
            &boot,
        ],
    );
    let report = report_of(&leecher.wait(LIMIT));
    assert_eq!(report["complete"], true);
    fx.assert_same_files(&out);
}

#[test]
fn a_private_torrent_is_never_found_through_the_dht() {
    let (_node, _other, boot) = bootstrap_node();
    let dir = tempdir();
    write_tree(&dir.path().join("seed"), &[("p.bin", 1 << 20)]);
    let torrent = dir.path().join("p.torrent");
    create_torrent(
        &dir.path().join("seed/p.bin"),
        &torrent,
        &["--piece-size", "256K", "--private"],
    );
    let _seeder = start_seeder_on(
        free_port(),
        &torrent,
        &dir.path().join("seed"),
        &["--dht-bootstrap", &boot],
    );
    let out = dir.path().join("leech");
    let leecher = spawn_on(
        free_port(),
        &[
            "download",
            path_str(&torrent),
            "-o",
            path_str(&out),
            "--json",
            "--no-trackers",
            "--dht-bootstrap",
            &boot,
        ],
    );
    // Public torrents are found within a second here; give it several.
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(4));
    leecher.signal("TERM");
    let done = leecher.wait(Duration::from_secs(10));
    assert_eq!(done.status.code(), Some(130), "{}", stderr(&done));
    let report = common::swarm::final_report(&done.stdout);
    assert_eq!(
        report["downloaded_bytes"],
        0,
        "after {:?}",
        started.elapsed()
    );
}
