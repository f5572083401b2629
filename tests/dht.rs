//! The DHT end to end, on loopback only: a spate node that seeds another torrent is the
//! bootstrap node (every process is given it with `--dht-bootstrap`, so nobody ever asks
//! the public routers); a seeder announces itself through it, and leechers with neither
//! trackers nor peer addresses find the seeder there, from a .torrent or from a bare magnet
//! link, over IPv4 and over IPv6 (BEP 32); a later session joins through the nodes the last
//! one saved. A private torrent (BEP 27) is never looked up or announced in the DHT.

mod common;

use common::fixture::Fixture;
use common::swarm::{
    free_port, report_of, spawn_listening, spawn_on, start_seeder_on, wait_listening, Proc,
};
use common::*;
use std::path::Path;
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

/// `spate download SOURCE -o OUT --json --dht-bootstrap BOOT` plus `extra`.
fn leech_via_dht(source: &str, out: &std::path::Path, boot: &str, extra: &[&str]) -> Proc {
    let args = [
        "download",
        source,
        "-o",
        path_str(out),
        "--json",
        "--dht-bootstrap",
        boot,
    ];
    spawn_on(free_port(), &[&args[..], extra].concat())
}

/// A seeder of `torrent` (data in `dir`) that joins the DHT through `boot`.
fn dht_seeder(torrent: &Path, dir: &Path, boot: &str) -> Proc {
    start_seeder_on(free_port(), torrent, dir, &["--dht-bootstrap", boot])
}

/// Seeds `fx` into the DHT, downloads `source` (its .torrent or a link) through the DHT
/// alone, and checks the files.
fn download_through_dht(fx: &Fixture, source: &str, extra: &[&str]) {
    let (_node, _other, boot) = bootstrap_node();
    let _seeder = dht_seeder(&fx.torrent, &fx.seed_dir(), &boot);
    let out = fx.out_dir("leech");
    let report = report_of(&leech_via_dht(source, &out, &boot, extra).wait(LIMIT));
    assert_eq!(report["complete"], true);
    fx.assert_same_files(&out);
}

#[test]
fn a_leecher_finds_the_seeder_through_the_dht_alone() {
    let fx = Fixture::single(3 << 20);
    download_through_dht(&fx, path_str(&fx.torrent), &["--no-trackers"]);
}

#[test]
fn a_bare_magnet_link_is_fetched_through_the_dht() {
    let fx = Fixture::multi();
    let link = format!("magnet:?xt=urn:btih:{}", fx.meta.info_hash.to_hex());
    download_through_dht(&fx, &link, &[]);
}

/// BEP 32 end to end: the bootstrap node listens on every address (so it runs an IPv4 and
/// an IPv6 DHT node on its port); a seeder and a leecher that listen on ::1 alone find each
/// other through its IPv6 node, from a bare magnet link.
#[test]
fn a_bare_magnet_link_is_fetched_through_the_ipv6_dht() {
    let other = Fixture::single(100_000);
    let port = free_port();
    let boot = format!("[::1]:{port}");
    let serve = |ip: Option<&str>, port: u16, fx: &Fixture| {
        let (torrent, dir) = (path_str(&fx.torrent), fx.seed_dir());
        let args = ["seed", torrent, path_str(&dir), "--no-trackers"];
        let p = spawn_listening(ip, port, &[&args[..], &["--dht-bootstrap", &boot]].concat());
        wait_listening(format!("[::1]:{port}").parse().unwrap(), LIMIT);
        p
    };
    let _node = serve(None, port, &other);
    let fx = Fixture::multi();
    let _seeder = serve(Some("::1"), free_port(), &fx);
    let out = fx.out_dir("leech");
    let link = format!("magnet:?xt=urn:btih:{}", fx.meta.info_hash.to_hex());
    let args = ["download", &link, "-o", path_str(&out), "--json"];
    let leecher = spawn_listening(
        Some("::1"),
        free_port(),
        &[&args[..], &["--dht-bootstrap", &boot]].concat(),
    );
    let report = report_of(&leecher.wait(LIMIT));
    assert_eq!(report["complete"], true);
    fx.assert_same_files(&out);
}

/// The nodes a session knew are kept in DIR/.spate/dht.nodes; the next session in DIR joins
/// the DHT through them when its bootstrap node is gone.
#[test]
fn a_later_session_joins_through_the_nodes_the_last_one_knew() {
    let (_node, _other, boot) = bootstrap_node();
    let first = Fixture::single(1 << 20);
    let _seeder = dht_seeder(&first.torrent, &first.seed_dir(), &boot);
    let out = first.out_dir("leech");
    let report = report_of(&leech_via_dht(path_str(&first.torrent), &out, &boot, &[]).wait(LIMIT));
    assert_eq!(report["complete"], true);
    let saved = std::fs::read_to_string(out.join(".spate/dht.nodes")).unwrap();
    assert!(saved.lines().any(|l| l == boot), "{saved}");
    // Another torrent, into the same directory, with a bootstrap address nobody answers at.
    let second = Fixture::single(2 << 20);
    let _seeder2 = dht_seeder(&second.torrent, &second.seed_dir(), &boot);
    let dead = format!("127.0.0.1:{}", free_port());
    let leecher = leech_via_dht(path_str(&second.torrent), &out, &dead, &[]);
    let report = report_of(&leecher.wait(LIMIT));
    assert_eq!(report["complete"], true);
    second.assert_same_files(&out);
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
    let _seeder = dht_seeder(&torrent, &dir.path().join("seed"), &boot);
    let out = dir.path().join("leech");
    let leecher = leech_via_dht(path_str(&torrent), &out, &boot, &["--no-trackers"]);
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
