//! Load: one spate seeder serving twenty spate leechers of a 512 MiB torrent at once, each
//! leecher a process of its own that exits only once every piece is verified and fsynced;
//! 200 peers connected to one seeder at once, which leave no descriptor behind; and one
//! seeding session of 50 torrents on one port, each downloaded in full through it.

mod common;

use common::swarm::{report_of, start_leecher, start_seeder};
use common::*;
use spate::metainfo::Metainfo;
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

fn descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        / 1024
}

/// Descriptors and sockets of `pid` once the count has not changed for 300 ms (at most 5 s).
fn settled(pid: u32) -> (usize, usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = (descriptors(pid), sockets(pid));
    let mut since = Instant::now();
    while Instant::now() < deadline && since.elapsed() < Duration::from_millis(300) {
        std::thread::sleep(Duration::from_millis(50));
        let now = (descriptors(pid), sockets(pid));
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
    last
}

/// Waits (at most 15 s) for `pid`'s sockets to fall back to `sockets_before`, asserts they
/// did, and returns its descriptors and sockets then.
fn after_peers_left(pid: u32, sockets_before: usize) -> (usize, usize) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while sockets(pid) > sockets_before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let now = (descriptors(pid), sockets(pid));
    assert_eq!(now.1, sockets_before, "peer sockets left open");
    now
}

#[test]
fn two_hundred_peers_at_once_leave_no_descriptor_behind() {
    let dir = tempdir();
    write_tree(&dir.path().join("seed"), &[("f.bin", 16 << 20)]);
    let torrent = dir.path().join("t.torrent");
    create_torrent(
        &dir.path().join("seed/f.bin"),
        &torrent,
        &["--piece-size", "256K"],
    );
    let meta = Metainfo::from_bytes(&std::fs::read(&torrent).unwrap()).unwrap();
    let seeder = start_seeder(&torrent, &dir.path().join("seed"), &["--max-peers", "250"]);
    let pid = seeder.child.id();
    // Sockets are counted apart from files: the data file is opened and closed on its own
    // schedule (verification at start, serving), which is not what this test is about. The
    // probe connection of `start_seeder` is let go first.
    let (baseline, baseline_sockets) = settled(pid);
    let peers: Vec<_> = (0..200)
        .map(|_| handshaken(seeder.addr(), meta.info_hash))
        .collect();
    let (held, held_sockets) = (descriptors(pid), sockets(pid));
    assert!(
        held_sockets >= baseline_sockets + 200,
        "only {held_sockets} sockets for 200 peers (baseline {baseline_sockets})"
    );
    // An honest leecher is still served in full beside them, and memory stays bounded.
    let out = dir.path().join("leech");
    let leecher = start_leecher(&torrent, &out, &["--peer", &seeder.addr().to_string()]);
    report_of(&leecher.wait(Duration::from_secs(60)));
    assert!(same_bytes(
        &out.join("f.bin"),
        &std::fs::read(dir.path().join("seed/f.bin")).unwrap()
    ));
    let rss = rss_mib(pid);
    assert!(rss < 100, "seeder RSS {rss} MiB with 201 peers");
    drop(peers);
    let (after, after_sockets) = after_peers_left(pid, baseline_sockets);
    // The data file may stay open for the next reader: one descriptor, not a leak.
    assert!(
        after <= baseline + 1,
        "{after} descriptors after the peers left (baseline {baseline})"
    );
    eprintln!(
        "200 peers: descriptors {baseline} -> {held} -> {after}, sockets {baseline_sockets} -> {held_sockets} -> {after_sockets}, seeder RSS {rss} MiB"
    );
}

fn sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("socket:"))
        .count()
}

#[test]
fn fifty_torrents_in_one_session_are_all_served_and_leave_no_descriptor_behind() {
    const TORRENTS: usize = 50;
    const AT_ONCE: usize = 10;
    let dir = tempdir();
    let seed_dir = dir.path().join("seed");
    // Sizes differ so that no two torrents share an info-hash or a piece boundary.
    let files: Vec<(String, usize)> = (0..TORRENTS)
        .map(|i| (format!("t{i:02}.bin"), (1 << 20) + i * 37_000))
        .collect();
    let tree: Vec<(&str, usize)> = files.iter().map(|(n, s)| (n.as_str(), *s)).collect();
    write_tree(&seed_dir, &tree);
    let torrents: Vec<_> = files
        .iter()
        .map(|(name, _)| {
            let t = dir.path().join(format!("{name}.torrent"));
            create_torrent(&seed_dir.join(name), &t, &["--piece-size", "64K"]);
            t
        })
        .collect();
    let mut args = vec!["seed"];
    args.extend(torrents.iter().map(|t| path_str(t)));
    args.extend([path_str(&seed_dir), "--no-trackers"]);
    let seeder = common::swarm::spawn_on(common::swarm::free_port(), &args);
    common::swarm::wait_listening(seeder.addr(), Duration::from_secs(30));
    let pid = seeder.child.id();
    let (fds_before, sockets_before) = settled(pid);
    let seed_addr = seeder.addr().to_string();
    for batch in (0..TORRENTS).collect::<Vec<_>>().chunks(AT_ONCE) {
        let leechers: Vec<_> = batch
            .iter()
            .map(|&i| {
                let out = dir.path().join(format!("leech{i}"));
                (
                    i,
                    start_leecher(&torrents[i], &out, &["--peer", &seed_addr]),
                    out,
                )
            })
            .collect();
        for (i, leecher, out) in leechers {
            let report = report_of(&leecher.wait(Duration::from_secs(60)));
            assert_eq!(report["complete"], true, "torrent {i}: {report}");
            let name = &files[i].0;
            assert!(
                same_bytes(
                    &out.join(name),
                    &std::fs::read(seed_dir.join(name)).unwrap()
                ),
                "torrent {i} differs"
            );
        }
    }
    let rss = rss_mib(pid);
    assert!(rss < 100, "seeder RSS {rss} MiB for {TORRENTS} torrents");
    let (fds_after, sockets_after) = after_peers_left(pid, sockets_before);
    // Besides sockets, only data files opened to serve may stay (one per torrent here).
    assert!(
        fds_after <= fds_before + TORRENTS,
        "{fds_after} descriptors after serving {TORRENTS} torrents (before: {fds_before})"
    );
    eprintln!(
        "{TORRENTS} torrents: descriptors {fds_before} -> {fds_after} (sockets {sockets_before} -> {sockets_after}), seeder RSS {rss} MiB"
    );
}
