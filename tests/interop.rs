//! Interoperability: spate downloads from and seeds to libtorrent, Transmission, aria2,
//! qBittorrent and rqbit over loopback, and the bytes must come out identical.
//!
//! Every client binds to 127.0.0.1, TCP only, with DHT, PEX, LSD, UPnP, NAT-PMP and uTP
//! off (see `common::clients`); spate runs with `--no-trackers` and dials its peer through
//! `--peer`, or (the `dials_in` tests) the other client dials spate. Each test owns its processes through guards that stop their process groups on
//! success and on panic. A missing client binary fails the test.
//!
//! Needs (Debian): python3-libtorrent, transmission-daemon, transmission-cli, aria2,
//! qbittorrent-nox; rqbit (`cargo install rqbit --locked`). Run with `--test-threads=1`: each test runs two clients at once and the
//! timeouts assume they do not compete with other tests for the CPU.

mod common;

use common::clients::*;
use common::*;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const PIECE: usize = 256 << 10;
/// A transfer (spate's exit, or the other client's completion) must happen within this.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(60);
/// After a leecher says it is done, its files may lag its own write cache a little.
const FLUSH_GRACE: Duration = Duration::from_secs(10);

/// A torrent, its seeder's complete data and an empty directory for the leecher.
struct Swarm {
    _root: tempfile::TempDir,
    torrent: PathBuf,
    info_hash: String,
    files: Vec<(String, usize)>,
    seed_dir: PathBuf,
    leech_dir: PathBuf,
}

impl Swarm {
    fn new(files: &[(&str, usize)], top: &str) -> Swarm {
        Swarm::made_by(files, top, |src, torrent| {
            create_torrent(src, torrent, &["--piece-size", "256K"])
        })
    }

    /// Writes `files` for the seeder; `make(top folder or file, torrent path)` writes the
    /// torrent and returns its v1 info-hash.
    fn made_by(
        files: &[(&str, usize)],
        top: &str,
        make: impl FnOnce(&std::path::Path, &std::path::Path) -> String,
    ) -> Swarm {
        let root = tempdir();
        let seed_dir = root.path().join("seed");
        let leech_dir = root.path().join("leech");
        std::fs::create_dir_all(&seed_dir).unwrap();
        std::fs::create_dir_all(&leech_dir).unwrap();
        write_tree(&seed_dir, files);
        let torrent = root.path().join("t.torrent");
        let info_hash = make(&seed_dir.join(top), &torrent);
        Swarm {
            torrent,
            info_hash,
            files: files.iter().map(|(p, n)| (p.to_string(), *n)).collect(),
            seed_dir,
            leech_dir,
            _root: root,
        }
    }

    /// One ~20 MiB file with a short last piece.
    fn single_file() -> Swarm {
        Swarm::new(&[("single.bin", 20 * (1 << 20) + 12_345)], "single.bin")
    }

    /// A folder with zero-length files (one nested) whose last piece is one byte long.
    fn multi_file() -> Swarm {
        let first = 9 * PIECE + 17;
        let middle = 1000;
        let last = 4 * PIECE - first % PIECE - middle + 1; // total = 14 pieces + 1 byte
        let s = Swarm::new(
            &[
                ("multi/a first.bin", first),
                ("multi/empty", 0),
                ("multi/sub dir/middle.txt", middle),
                ("multi/sub dir/zero too", 0),
                ("multi/z last.bin", last),
            ],
            "multi",
        );
        let total: usize = s.files.iter().map(|f| f.1).sum();
        assert_eq!(total % PIECE, 1, "the last piece must be one byte");
        s
    }

    /// The payload's size in bytes.
    fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.1 as u64).sum()
    }

    fn job(&self, role: Role) -> Job {
        Job {
            role,
            torrent: self.torrent.clone(),
            info_hash: self.info_hash.clone(),
            dir: match role {
                Role::Seed => self.seed_dir.clone(),
                Role::Leech => self.leech_dir.clone(),
            },
            port: free_port(),
        }
    }

    /// None if the leecher's files equal the seeder's, else what differs first.
    fn difference(&self) -> Option<String> {
        self.files.iter().find_map(|(rel, size)| {
            let want = std::fs::read(self.seed_dir.join(rel)).expect("reading seed data");
            assert_eq!(want.len(), *size, "the seed's {rel} changed size");
            match std::fs::read(self.leech_dir.join(rel)) {
                Err(e) => Some(format!("{rel}: {e}")),
                Ok(got) if got == want => None,
                Ok(got) => {
                    let at = got.iter().zip(&want).position(|(a, b)| a != b);
                    Some(format!(
                        "{rel}: {} bytes, want {}; first difference at {:?}",
                        got.len(),
                        want.len(),
                        at.unwrap_or(got.len().min(want.len()))
                    ))
                }
            }
        })
    }

    /// Panics unless the leecher's files equal the seeder's within `grace`.
    fn assert_identical(&self, grace: Duration, logs: &[&str]) {
        let mut last = None;
        let same = poll_until(grace, || {
            last = self.difference();
            last.is_none().then_some(())
        });
        if same.is_none() {
            panic!(
                "downloaded data differs: {}\n{}",
                last.unwrap_or_default(),
                logs.join("\n")
            );
        }
    }
}

/// `start` runs client X as the seeder; spate downloads from it (dialling X's port).
/// Returns spate's JSON report.
fn x_seeds_spate_downloads<C: Client>(
    swarm: &Swarm,
    start: impl FnOnce(&Job) -> C,
) -> serde_json::Value {
    let began = Instant::now();
    let seed = swarm.job(Role::Seed);
    let seeder = start(&seed);
    let ready_after = began.elapsed();
    let leech = swarm.job(Role::Leech);
    let t = Instant::now();
    let (exit, spate_log) = spate_download(&leech, &[local(seed.port)], TRANSFER_TIMEOUT);
    let took = t.elapsed();
    if exit != Some(Exit::Code(0)) {
        panic!(
            "spate download: {} after {took:?} (seeder {} ready after {ready_after:?})\n{spate_log}\n{}",
            match exit {
                None => "timed out".to_string(),
                Some(e) => format!("ended with {e:?}"),
            },
            seeder.group().name,
            seeder.log_tail()
        );
    }
    // spate exits only after the data is verified and fsynced: no grace needed.
    swarm.assert_identical(Duration::ZERO, &[&spate_log, &seeder.log_tail()]);
    eprintln!(
        "{} seeded, spate downloaded in {took:?} (seeder ready after {ready_after:?})",
        seeder.group().name
    );
    drop(seeder);
    let report = spate_log
        .lines()
        .find(|l| l.starts_with('{') && l.contains("\"request_messages\""))
        .and_then(|l| serde_json::from_str(l).ok());
    report.unwrap_or_else(|| panic!("no JSON report in spate's output:\n{spate_log}"))
}

/// Blocks (16 KiB) in the swarm's payload.
fn blocks_in(swarm: &Swarm) -> u64 {
    swarm
        .files
        .iter()
        .map(|(_, len)| *len as u64)
        .sum::<u64>()
        .div_ceil(16 << 10)
}

/// `start` runs client X as the leecher; then spate seeds and dials X (`--peer`), the one
/// way to meet a client that never dials loopback peers (Transmission) or cannot be told to
/// dial a peer (aria2).
fn spate_seeds_x_downloads<C: Client>(swarm: Swarm, start: impl FnOnce(&Job) -> C) {
    let leech = swarm.job(Role::Leech);
    spate_dials_x(swarm, leech, start);
}

/// Starts client X as the leecher of `leech`, then spate seeds and dials it.
fn spate_dials_x<C: Client>(swarm: Swarm, leech: Job, start: impl FnOnce(&Job) -> C) {
    let leecher = start(&leech);
    let seed = swarm.job(Role::Seed);
    let t = Instant::now();
    let seeder = SpateSeeder::start(&seed, &[local(leech.port)]);
    wait_for_leecher(&swarm, leecher, seeder, t);
}

/// spate seeds without dialling anyone; `start` runs client X as the leecher and makes it
/// dial spate's port, so spate's side of the connection is the accepted one.
fn spate_seeds_x_dials_in<C: Client>(swarm: Swarm, start: impl FnOnce(&Job, SocketAddr) -> C) {
    let seed = swarm.job(Role::Seed);
    let t = Instant::now();
    let seeder = SpateSeeder::start(&seed, &[]);
    let leech = swarm.job(Role::Leech);
    let leecher = start(&leech, local(seed.port));
    wait_for_leecher(&swarm, leecher, seeder, t);
}

fn wait_for_leecher<C: Client>(swarm: &Swarm, mut leecher: C, seeder: SpateSeeder, t: Instant) {
    if !leecher.wait_finished(TRANSFER_TIMEOUT) {
        panic!(
            "{} did not finish within {TRANSFER_TIMEOUT:?}\n{}\n{}",
            leecher.group().name,
            leecher.log_tail(),
            seeder.group().log_tail()
        );
    }
    let took = t.elapsed();
    swarm.assert_identical(
        FLUSH_GRACE,
        &[&leecher.log_tail(), &seeder.group().log_tail()],
    );
    seeder.group().check_alive();
    eprintln!(
        "spate seeded, {} downloaded in {took:?} (from spate's start, its data check included)",
        leecher.group().name
    );
}

// ---- libtorrent ------------------------------------------------------------------------

/// libtorrent refuses requests over 16 KiB: spate asks it for one block per request.
#[test]
fn libtorrent_seeds_spate_downloads() {
    let swarm = Swarm::single_file();
    let blocks = blocks_in(&swarm);
    let report = x_seeds_spate_downloads(&swarm, |job| Libtorrent::start(job, &[]));
    let requests = report["request_messages"].as_u64().unwrap();
    assert!(
        requests >= blocks,
        "{requests} requests for {blocks} blocks"
    );
}

#[test]
fn libtorrent_seeds_spate_downloads_multi_file() {
    let swarm = Swarm::multi_file();
    x_seeds_spate_downloads(&swarm, |job| Libtorrent::start(job, &[]));
}

#[test]
fn spate_seeds_libtorrent_downloads() {
    spate_seeds_x_downloads(Swarm::single_file(), |job| Libtorrent::start(job, &[]));
}

#[test]
fn spate_seeds_libtorrent_downloads_multi_file() {
    spate_seeds_x_downloads(Swarm::multi_file(), |job| Libtorrent::start(job, &[]));
}

#[test]
fn spate_seeds_libtorrent_dials_in() {
    spate_seeds_x_dials_in(Swarm::single_file(), |job, spate| {
        Libtorrent::start(job, &[spate])
    });
}

/// libtorrent with `out_enc_policy` forced dials only with the MSE/PE handshake: spate must
/// answer it (and select plaintext) or the download never starts.
#[test]
fn spate_seeds_libtorrent_dials_in_with_mse() {
    spate_seeds_x_dials_in(Swarm::single_file(), |job, spate| {
        Libtorrent::start_with(job, &[spate], &["--encryption", "forced"])
    });
}

/// A magnet link naming libtorrent's address: spate fetches the info dictionary from it
/// (BEP 9 `ut_metadata`), keeps it, and downloads.
#[test]
fn libtorrent_seeds_spate_downloads_from_a_magnet_link() {
    let swarm =
        x_serves_spate_the_metadata(|job| Libtorrent::start_with(job, &[], &["--metadata", "on"]));
    let kept = swarm
        .leech_dir
        .join(".spate")
        .join(format!("{}.torrent", swarm.info_hash));
    assert!(
        kept.exists(),
        "the fetched metadata is kept for the next run"
    );
}

/// `start` runs client X as the seeder of a multi-file torrent; spate gets only a magnet
/// link naming X's address, fetches the info dictionary from X, then the data.
fn x_serves_spate_the_metadata<C: Client>(start: impl FnOnce(&Job) -> C) -> Swarm {
    let swarm = Swarm::multi_file();
    let seed = swarm.job(Role::Seed);
    let seeder = start(&seed);
    let mut leech = swarm.job(Role::Leech);
    leech.torrent = magnet_link(&swarm, seed.port);
    let (exit, log) = spate_download(&leech, &[], TRANSFER_TIMEOUT);
    if exit != Some(Exit::Code(0)) {
        panic!("spate download: {exit:?}\n{log}\n{}", seeder.log_tail());
    }
    swarm.assert_identical(Duration::ZERO, &[&log, &seeder.log_tail()]);
    swarm
}

#[test]
fn qbittorrent_seeds_spate_downloads_from_a_magnet_link() {
    x_serves_spate_the_metadata(Qbittorrent::start);
}

#[test]
fn transmission_seeds_spate_downloads_from_a_magnet_link() {
    x_serves_spate_the_metadata(Transmission::start);
}

#[test]
fn aria2_seeds_spate_downloads_from_a_magnet_link() {
    x_serves_spate_the_metadata(Aria2::start);
}

#[test]
fn rqbit_seeds_spate_downloads_from_a_magnet_link() {
    x_serves_spate_the_metadata(|job| Rqbit::start(job, &[]));
}

/// A spate seeder of the multi-file swarm; `start` runs client X as the leecher, given a
/// magnet link naming spate's address (and that address, for clients that take peers
/// apart): X fetches the info dictionary from spate, then the data.
fn spate_seeds_x_fetches_from_a_link<C: Client>(start: impl FnOnce(&Job, SocketAddr) -> C) {
    let swarm = Swarm::multi_file();
    let seed = swarm.job(Role::Seed);
    let t = Instant::now();
    let seeder = SpateSeeder::start(&seed, &[]);
    let mut leech = swarm.job(Role::Leech);
    leech.torrent = magnet_link(&swarm, seed.port);
    let leecher = start(&leech, local(seed.port));
    wait_for_leecher(&swarm, leecher, seeder, t);
}

/// libtorrent given a magnet link naming spate's address: it fetches the info dictionary
/// from spate, then the data.
#[test]
fn spate_seeds_libtorrent_downloads_from_a_magnet_link() {
    spate_seeds_x_fetches_from_a_link(|job, _| {
        Libtorrent::start_with(job, &[], &["--metadata", "on"])
    });
}

/// rqbit given a magnet link and spate's address (`--initial-peers`): it fetches the info
/// dictionary from spate, then the data.
#[test]
fn spate_seeds_rqbit_downloads_from_a_magnet_link() {
    spate_seeds_x_fetches_from_a_link(|job, spate| Rqbit::start(job, &[spate]));
}

/// libtorrent with its DHT bootstrapped from spate's node, given a magnet link with only the
/// info-hash: it finds spate through the DHT (spate announces to it), fetches the metadata
/// and the data.
#[test]
fn libtorrent_finds_spate_through_the_dht() {
    let swarm = Swarm::multi_file();
    let seed = swarm.job(Role::Seed);
    let t = Instant::now();
    let own = format!("127.0.0.1:{}", seed.port);
    let seeder = SpateSeeder::start_with(&seed, &[], &["--dht-bootstrap", &own]);
    let mut leech = swarm.job(Role::Leech);
    leech.torrent = PathBuf::from(format!("magnet:?xt=urn:btih:{}", swarm.info_hash));
    let leecher =
        Libtorrent::start_with(&leech, &[], &["--metadata", "on", "--dht-bootstrap", &own]);
    wait_for_leecher(&swarm, leecher, seeder, t);
}

/// libtorrent seeds and announces itself in the DHT through a spate node (seeding another
/// torrent); spate, given only the info-hash, finds libtorrent there.
#[test]
fn spate_finds_libtorrent_through_the_dht() {
    let other = common::fixture::Fixture::single(100_000);
    let node_port = free_port();
    let node_addr = format!("127.0.0.1:{node_port}");
    let _node = common::swarm::start_seeder_on(
        node_port,
        &other.torrent,
        &other.seed_dir(),
        &["--dht-bootstrap", &node_addr],
    );
    let swarm = Swarm::multi_file();
    let seed = swarm.job(Role::Seed);
    let seeder = Libtorrent::start_with(
        &seed,
        &[],
        &["--metadata", "on", "--dht-bootstrap", &node_addr],
    );
    let mut leech = swarm.job(Role::Leech);
    leech.torrent = PathBuf::from(format!("magnet:?xt=urn:btih:{}", swarm.info_hash));
    let (exit, log) = spate_download_with(
        &leech,
        &[],
        TRANSFER_TIMEOUT,
        &["--dht-bootstrap", &node_addr],
    );
    if exit != Some(Exit::Code(0)) {
        panic!("spate download: {exit:?}\n{log}\n{}", seeder.log_tail());
    }
    swarm.assert_identical(Duration::ZERO, &[&log, &seeder.log_tail()]);
}

/// A spate seeder slow enough (256 KiB/s for the 20 MiB swarm) that its leechers are still
/// connected, and downloading, for as long as a peer-exchange test runs.
fn slow_spate_seeder(swarm: &Swarm) -> (SpateSeeder, SocketAddr) {
    let seed = swarm.job(Role::Seed);
    let seeder = SpateSeeder::start_with(&seed, &[], &["--upload-limit", "256K"]);
    (seeder, local(seed.port))
}

/// `spate download` of the swarm's torrent into a directory of its own, dialling `peer`.
fn spate_leecher_of(swarm: &Swarm, out: &std::path::Path, peer: SocketAddr) -> common::swarm::Proc {
    let torrent = path_str(&swarm.torrent);
    let peer = peer.to_string();
    let args = [
        "download",
        torrent,
        "-o",
        path_str(out),
        "--no-trackers",
        "--json",
        "--peer",
        &peer,
    ];
    common::swarm::spawn_on(free_port(), &args)
}

/// libtorrent (with `ut_pex`) dials only a spate seeder, which serves another spate leecher:
/// spate's peer exchange (the only source of addresses here: no trackers, no DHT) must give
/// libtorrent a peer whose source it lists as PEX. Which side dials first varies (the
/// spate leecher hears of libtorrent too, and a duplicate connection is closed), so the
/// check is on libtorrent's peer sources, not on one connection.
#[test]
fn libtorrent_learns_a_peer_through_spate_pex() {
    let swarm = Swarm::single_file();
    let (seeder, seeder_addr) = slow_spate_seeder(&swarm);
    let other_out = tempdir();
    let _other = spate_leecher_of(&swarm, other_out.path(), seeder_addr);
    let lt = Libtorrent::start_with(&swarm.job(Role::Leech), &[seeder_addr], &["--pex", "on"]);
    let found = poll_until(TRANSFER_TIMEOUT, || {
        let peers = lt.state_text("peers")?;
        peers.lines().any(|l| l.ends_with(" pex")).then_some(())
    });
    if found.is_none() {
        panic!(
            "libtorrent learned no peer through PEX: {:?}\n{}\n{}",
            lt.state_text("peers"),
            lt.log_tail(),
            seeder.group().log_tail()
        );
    }
}

/// spate dials only a libtorrent leecher (with `ut_pex`); libtorrent's peer exchange names
/// the spate seeder it downloads from, and spate takes that address.
#[test]
fn spate_learns_a_peer_through_libtorrent_pex() {
    let swarm = Swarm::single_file();
    let (seeder, seeder_addr) = slow_spate_seeder(&swarm);
    let leech = swarm.job(Role::Leech);
    let lt = Libtorrent::start_with(&leech, &[seeder_addr], &["--pex", "on"]);
    let lt_addr = local(leech.port);
    let spate_out = tempdir();
    let spate = spate_leecher_of(&swarm, spate_out.path(), lt_addr);
    // libtorrent sees both peers, then sends its first PEX message at a tick of its own
    // (once a second, at most one PEX message in the session per 3 s while it has few peers).
    let both = poll_until(TRANSFER_TIMEOUT, || {
        lt.state_text("peers").filter(|p| p.lines().count() >= 2)
    });
    assert!(
        both.is_some(),
        "spate never reached libtorrent\n{}",
        lt.log_tail()
    );
    std::thread::sleep(Duration::from_secs(10));
    spate.signal("INT");
    let out = spate.wait(TRANSFER_TIMEOUT);
    let report = common::swarm::final_report(&out.stdout);
    assert!(
        report["peers_from_pex"].as_u64() >= Some(1),
        "spate learned no peer from libtorrent: {report}\n{}\n{}",
        lt.log_tail(),
        seeder.group().log_tail()
    );
}

/// A magnet link with the swarm's info-hash and one peer, 127.0.0.1:`port`.
fn magnet_link(swarm: &Swarm, port: u16) -> PathBuf {
    PathBuf::from(format!(
        "magnet:?xt=urn:btih:{}&dn=multi&x.pe=127.0.0.1:{port}",
        swarm.info_hash
    ))
}

/// libtorrent seeding with encryption forced closes spate's plain handshake: spate must dial
/// it again with MSE and download.
#[test]
fn libtorrent_seeds_with_mse_forced_spate_downloads() {
    x_seeds_spate_downloads(&Swarm::single_file(), |job| {
        Libtorrent::start_with(job, &[], &["--encryption", "forced"])
    });
}

// ---- Transmission ----------------------------------------------------------------------

#[test]
fn transmission_seeds_spate_downloads() {
    x_seeds_spate_downloads(&Swarm::single_file(), Transmission::start);
}

#[test]
fn spate_seeds_transmission_downloads() {
    // Transmission never dials 127.0.0.1: spate's --peer is the only way they meet.
    spate_seeds_x_downloads(Swarm::single_file(), Transmission::start);
}

// ---- aria2 -----------------------------------------------------------------------------

/// aria2 serves requests of up to 64 KiB, and spate asks it for four blocks at a time.
#[test]
fn aria2_seeds_spate_downloads() {
    let swarm = Swarm::single_file();
    let blocks = blocks_in(&swarm);
    let report = x_seeds_spate_downloads(&swarm, Aria2::start);
    let requests = report["request_messages"].as_u64().unwrap();
    assert!(
        requests * 3 <= blocks,
        "{requests} requests for {blocks} blocks: {report}"
    );
}

/// aria2 1.36 sends a BITFIELD in mid-connection in place of HAVEs whenever that is
/// shorter (`DefaultBtInteractive::checkHave`); spate must take it as HAVEs.
#[test]
fn spate_seeds_aria2_downloads() {
    spate_seeds_x_downloads(Swarm::single_file(), Aria2::start);
}

// ---- qBittorrent -----------------------------------------------------------------------

#[test]
fn qbittorrent_seeds_spate_downloads() {
    x_seeds_spate_downloads(&Swarm::single_file(), Qbittorrent::start);
}

#[test]
fn spate_seeds_qbittorrent_downloads() {
    spate_seeds_x_downloads(Swarm::single_file(), Qbittorrent::start);
}

#[test]
fn spate_seeds_qbittorrent_dials_in() {
    spate_seeds_x_dials_in(Swarm::single_file(), |job, spate| {
        let q = Qbittorrent::start(job);
        q.add_peer(spate);
        q
    });
}

/// qBittorrent given a magnet link naming spate's address fetches the info dictionary from
/// spate, then the data.
#[test]
fn spate_seeds_qbittorrent_downloads_from_a_magnet_link() {
    spate_seeds_x_fetches_from_a_link(|job, _| Qbittorrent::start(job));
}

/// Client X given a bare magnet link; spate seeds and dials it, and X fetches the info
/// dictionary from spate over that connection, then the data.
fn spate_seeds_x_fetches_the_metadata<C: Client>(swarm: Swarm, start: impl FnOnce(&Job) -> C) {
    let mut leech = swarm.job(Role::Leech);
    leech.torrent = PathBuf::from(format!("magnet:?xt=urn:btih:{}", swarm.info_hash));
    spate_dials_x(swarm, leech, start);
}

#[test]
fn spate_seeds_aria2_downloads_from_a_magnet_link() {
    spate_seeds_x_fetches_the_metadata(Swarm::multi_file(), Aria2::start);
}

/// One file, as in `spate_seeds_transmission_downloads`: from the multi-file swarm,
/// Transmission 3.00 fetched everything but did not create the zero-length `multi/empty`.
#[test]
fn spate_seeds_transmission_downloads_from_a_magnet_link() {
    spate_seeds_x_fetches_the_metadata(Swarm::single_file(), Transmission::start);
}

// ---- rqbit -----------------------------------------------------------------------------

#[test]
fn rqbit_seeds_spate_downloads() {
    x_seeds_spate_downloads(&Swarm::single_file(), |job| Rqbit::start(job, &[]));
}

#[test]
fn spate_seeds_rqbit_downloads() {
    spate_seeds_x_downloads(Swarm::single_file(), |job| Rqbit::start(job, &[]));
}

#[test]
fn spate_seeds_rqbit_downloads_multi_file() {
    spate_seeds_x_downloads(Swarm::multi_file(), |job| Rqbit::start(job, &[]));
}

#[test]
fn spate_seeds_rqbit_dials_in() {
    spate_seeds_x_dials_in(Swarm::single_file(), |job, spate| {
        Rqbit::start(job, &[spate])
    });
}

// ---- BitTorrent v2 ----------------------------------------------------------------------

/// libtorrent 2.0 makes hybrid torrents by default: BEP 52's v2 file tree next to the v1
/// pieces, every file but the last padded to a piece boundary by a BEP 47 padding file.
const HYBRID_TORRENT: &str = r#"
import sys, libtorrent as lt
src, out = sys.argv[1], sys.argv[2]
fs = lt.file_storage()
lt.add_files(fs, src)
ct = lt.create_torrent(fs, 256 * 1024)
lt.set_piece_hashes(ct, src.rsplit("/", 1)[0])
open(out, "wb").write(lt.bencode(ct.generate()))
info = lt.torrent_info(out)
assert info.info_hashes().has_v1() and info.info_hashes().has_v2(), "not hybrid"
print(info.info_hashes().v1)
"#;

/// Three files in a hybrid torrent made by libtorrent.
fn hybrid_swarm() -> Swarm {
    let files = [
        ("hybrid/a.bin", 3 * PIECE + 1_000),
        ("hybrid/sub/b.bin", 50_000),
        ("hybrid/z.bin", PIECE + 7),
    ];
    Swarm::made_by(&files, "hybrid", |src, torrent| {
        let out = std::process::Command::new(PYTHON_WITH_LIBTORRENT)
            .args(["-c", HYBRID_TORRENT, path_str(src), path_str(torrent)])
            .output()
            .expect("running python3 with libtorrent");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    })
}

/// A hybrid torrent libtorrent made and seeds: spate downloads it by its v1 info-hash and
/// writes the real files only, no padding.
#[test]
fn libtorrent_seeds_a_hybrid_torrent_spate_downloads() {
    let swarm = hybrid_swarm();
    let out = run_spate(&["info", path_str(&swarm.torrent), "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let padding = info["padding_bytes"].as_u64().unwrap();
    assert!(padding > 0, "libtorrent pads a hybrid's files: {info}");
    assert_eq!(
        info["total_length"].as_u64().unwrap() - padding,
        swarm.total_bytes(),
        "the files and their padding make the torrent: {info}"
    );
    x_seeds_spate_downloads(&swarm, |job| Libtorrent::start(job, &[]));
    let written = walk(&swarm.leech_dir);
    assert_eq!(
        written,
        ["hybrid/a.bin", "hybrid/sub/b.bin", "hybrid/z.bin"],
        "only the real files"
    );
}

/// spate seeds a hybrid torrent (its padding served as zeros, never read from disk) to
/// libtorrent, which checks what it gets against the torrent's hashes.
#[test]
fn spate_seeds_a_hybrid_torrent_libtorrent_downloads() {
    spate_seeds_x_downloads(hybrid_swarm(), |job| Libtorrent::start(job, &[]));
}

/// Relative paths of the files under `root`, sorted; spate's own `.spate` folder left out.
fn walk(root: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if rel == ".spate" {
                continue;
            }
            if path.is_dir() {
                dirs.push(path);
            } else {
                out.push(rel);
            }
        }
    }
    out.sort();
    out
}

// ---- Several clients at once -----------------------------------------------------------

/// libtorrent, aria2 (asked for four blocks per request) and rqbit seed at once and spate
/// downloads from all three: requests of both sizes out to different peers from one picker,
/// and the endgame's duplicates and cancels across clients. The download is held to 6 MiB/s
/// so that aria2, which answers a dial only about once a second, joins before it ends; each
/// seeder must deliver part of the data, and the bytes must come out identical.
#[test]
fn libtorrent_aria2_and_rqbit_seed_spate_downloads_from_all_three() {
    let swarm = Swarm::single_file();
    let seeds = [Role::Seed; 3].map(|role| swarm.job(role));
    let _libtorrent = Libtorrent::start(&seeds[0], &[]);
    let _aria2 = Aria2::start(&seeds[1]);
    let _rqbit = Rqbit::start(&seeds[2], &[]);
    let peers: Vec<SocketAddr> = seeds.iter().map(|s| local(s.port)).collect();
    let leech = swarm.job(Role::Leech);
    let limit = ["--download-limit", "6M"];
    let (exit, log) = spate_download_with(&leech, &peers, TRANSFER_TIMEOUT, &limit);
    assert_eq!(exit, Some(Exit::Code(0)), "spate download:\n{log}");
    swarm.assert_identical(Duration::ZERO, &[&log]);
    let mut delivered = 0;
    for (name, seed) in ["libtorrent", "aria2", "rqbit"].iter().zip(&seeds) {
        let bytes = delivered_by(&log, local(seed.port));
        assert!(bytes > 0, "{name} delivered nothing:\n{log}");
        eprintln!("{name} delivered {bytes} bytes");
        delivered += bytes;
    }
    // Endgame copies are handed out one at a time to peers with nothing else to do, so
    // few blocks come twice (all three got copies of everything still out, 4.4 MB, before).
    let report = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|r| r.get("wasted_bytes").is_some())
        .unwrap_or_else(|| panic!("no report in spate's output:\n{log}"));
    let (total, wasted) = (
        swarm.total_bytes(),
        report["wasted_bytes"].as_u64().unwrap(),
    );
    assert_eq!(
        delivered,
        total + wasted,
        "every byte received is counted once: {report}"
    );
    assert!(
        wasted <= total / 20,
        "{wasted} of {total} bytes came twice: {report}"
    );
}

/// Bytes spate's debug log says the peer at `addr` delivered (its "peer totals" lines).
fn delivered_by(log: &str, addr: SocketAddr) -> u64 {
    let field = format!("addr={addr} ");
    log.lines()
        .filter(|l| l.contains("peer totals") && l.contains(&field))
        .filter_map(|l| {
            l.split("downloaded=")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}
