//! Seeding under hostile leechers: requests out of range or for pieces the seed lacks, a
//! request flood, requests while choked, a peer that never reads its socket, and a storm of
//! connections. Each bad peer is dropped or ignored while an honest spate leecher is served
//! in full, and the seeder's memory stays bounded. And broken data under a seeder: a file
//! truncated while seeding loses only the pieces it no longer holds, and leaves the other
//! torrents of the same session served; a file nobody may write is still seeded.

mod common;

use common::swarm::{report_of, start_leecher, start_seeder, Proc};
use common::*;
use spate::metainfo::Metainfo;
use spate::types::{BlockRef, PieceIndex};
use spate::wire::{FrameDecoder, Message};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const PIECE: usize = 256 << 10;

struct Seeded {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    torrent: PathBuf,
    meta: Metainfo,
    seeder: Proc,
}

fn seeded(len: usize) -> Seeded {
    let d = tempdir();
    let dir = d.path().to_path_buf();
    write_tree(&dir.join("seed"), &[("f.bin", len)]);
    let torrent = dir.join("t.torrent");
    create_torrent(&dir.join("seed/f.bin"), &torrent, &["--piece-size", "256K"]);
    let meta = Metainfo::from_bytes(&std::fs::read(&torrent).unwrap()).unwrap();
    let seeder = start_seeder(&torrent, &dir.join("seed"), &["--max-peers", "50"]);
    Seeded {
        _dir: d,
        dir,
        torrent,
        meta,
        seeder,
    }
}

/// A raw connection to the seeder, past the handshake and its BITFIELD.
fn raw_peer(s: &Seeded) -> TcpStream {
    handshaken(s.seeder.addr(), s.meta.info_hash)
}

fn send(c: &mut TcpStream, m: &Message<'_>) -> std::io::Result<()> {
    let mut out = Vec::new();
    m.encode_into(&mut out);
    c.write_all(&out)
}

/// Reads messages until the connection closes (true) or `limit` passes (false), handing
/// each decoded message to `seen`.
fn read_until_closed(
    c: &mut TcpStream,
    limit: Duration,
    mut seen: impl FnMut(&Message<'_>),
) -> bool {
    let deadline = Instant::now() + limit;
    let decoder = FrameDecoder::new(1 << 20);
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 1 << 16];
    c.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    while Instant::now() < deadline {
        match c.read(&mut chunk) {
            Ok(0) => return true,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                continue
            }
            Err(_) => return true,
        }
        let mut used = 0;
        while let Ok(Some((m, len))) = decoder.decode(&buf[used..]) {
            seen(&m);
            used += len;
        }
        buf.drain(..used);
    }
    false
}

fn block(piece: u32, offset: u32, len: u32) -> BlockRef {
    BlockRef {
        piece: PieceIndex(piece),
        offset,
        len,
    }
}

/// An honest leecher downloads everything while the bad peers do their worst.
fn honest_download(s: &Seeded) {
    let out = s.dir.join("honest");
    let l = start_leecher(&s.torrent, &out, &["--peer", &s.seeder.addr().to_string()]);
    report_of(&l.wait(Duration::from_secs(60)));
    assert!(
        std::fs::read(out.join("f.bin")).unwrap()
            == std::fs::read(s.dir.join("seed/f.bin")).unwrap()
    );
}

#[test]
fn bad_requests_get_the_peer_dropped() {
    let s = seeded(8 * PIECE);
    let last = s.meta.info.piece_count();
    for bad in [
        block(last, 0, 16384),
        block(0, PIECE as u32 - 100, 16384),
        block(0, 0, 1 << 20),
    ] {
        let mut c = raw_peer(&s);
        send(&mut c, &Message::Interested).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        send(&mut c, &Message::Request(bad)).unwrap();
        assert!(
            read_until_closed(&mut c, Duration::from_secs(10), |_| {}),
            "{bad:?} was not punished"
        );
    }
    honest_download(&s);
}

#[test]
fn a_request_flood_gets_the_peer_dropped() {
    let s = seeded(8 * PIECE);
    let mut c = raw_peer(&s);
    send(&mut c, &Message::Interested).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let mut burst = Vec::new();
    for i in 0..5000u32 {
        Message::Request(block(i % 8, 0, 16384)).encode_into(&mut burst);
    }
    let _ = c.write_all(&burst); // may fail once the seeder hangs up
    assert!(
        read_until_closed(&mut c, Duration::from_secs(20), |_| {}),
        "the flood was tolerated"
    );
    honest_download(&s);
}

#[test]
fn requests_while_choked_are_ignored() {
    let s = seeded(4 * PIECE);
    let mut c = raw_peer(&s);
    send(&mut c, &Message::Request(block(0, 0, 16384))).unwrap();
    let mut pieces = 0;
    let closed = read_until_closed(&mut c, Duration::from_secs(2), |m| {
        if matches!(m, Message::Piece { .. }) {
            pieces += 1;
        }
    });
    assert!(
        !closed,
        "a request while choked is not a reason to drop the peer"
    );
    assert_eq!(pieces, 0, "no data while choked");
    send(&mut c, &Message::Interested).unwrap();
    send(&mut c, &Message::Request(block(1, 0, 16384))).unwrap();
    read_until_closed(&mut c, Duration::from_secs(3), |m| {
        if let Message::Piece { piece, .. } = m {
            assert_eq!(*piece, PieceIndex(1));
            pieces += 1;
        }
    });
    assert_eq!(pieces, 1, "served once unchoked");
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_peer_that_never_reads_cannot_grow_the_seeders_memory() {
    let s = seeded(64 * PIECE);
    let before = rss_kib(s.seeder.child.id());
    let mut stuck = raw_peer(&s);
    send(&mut stuck, &Message::Interested).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    // 1,500 requests (24 MiB of blocks), never reading a byte of the answers.
    let mut burst = Vec::new();
    for i in 0..1500u32 {
        Message::Request(block(i % 64, (i / 64 % 16) * 16384, 16384)).encode_into(&mut burst);
    }
    stuck.write_all(&burst).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    honest_download(&s);
    let growth_mib = (rss_kib(s.seeder.child.id()).saturating_sub(before)) / 1024;
    assert!(
        growth_mib < 48,
        "seeder grew {growth_mib} MiB for a peer that never reads"
    );
    drop(stuck);
}

#[test]
fn a_connection_storm_leaves_the_seeder_serving() {
    let s = seeded(64 * PIECE);
    let addr: SocketAddr = s.seeder.addr();
    let out = s.dir.join("honest");
    let leecher = start_leecher(&s.torrent, &out, &["--peer", &addr.to_string()]);
    let storm = std::thread::spawn(move || {
        (0..300)
            .filter_map(|_| TcpStream::connect(addr).ok())
            .collect::<Vec<_>>()
    });
    report_of(&leecher.wait(Duration::from_secs(60)));
    assert!(
        std::fs::read(out.join("f.bin")).unwrap()
            == std::fs::read(s.dir.join("seed/f.bin")).unwrap()
    );
    drop(storm.join().unwrap());
    let count = || {
        std::fs::read_dir(format!("/proc/{}/fd", s.seeder.child.id()))
            .unwrap()
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while count() > 40 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        count() <= 40,
        "the seeder holds {} descriptors after the storm",
        count()
    );
}

#[test]
fn a_file_truncated_while_seeding_loses_only_the_pieces_past_its_end() {
    let s = seeded(16 * PIECE);
    let file = s.dir.join("seed/f.bin");
    // Pieces 0-9 stay whole; piece 10 is cut short and 11-15 are gone.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(10 * PIECE as u64 + 1000)
        .unwrap();
    let out = s.dir.join("leech");
    let leecher = start_leecher(&s.torrent, &out, &["--peer", &s.seeder.addr().to_string()]);
    // Well inside the leecher's 30 s snub timeout: the seeder takes the lost pieces back
    // (BEP 54), so the leecher never waits on requests that cannot be answered.
    let deadline = Instant::now() + Duration::from_secs(15);
    while good_pieces(&s.meta, &out).iter().take(10).any(|good| !good) {
        assert!(Instant::now() < deadline, "pieces 0-9 never arrived");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The seeder keeps running and tells why it stopped serving the rest.
    std::thread::sleep(Duration::from_millis(500));
    assert!(s.seeder.child.id() > 0);
    drop(leecher);
    s.seeder.signal("TERM");
    let Seeded {
        seeder,
        meta,
        dir,
        _dir,
        ..
    } = s;
    let log = stderr(&seeder.wait(Duration::from_secs(10)));
    assert!(
        log.contains("cannot read piece 10") && log.contains("marked missing"),
        "seeder log: {log}"
    );
    let have = spate::session::resume::load(&dir.join("seed"), &meta).expect("resume data saved");
    let bit = |i: usize| have[i / 8] & (0x80 >> (i % 8)) != 0;
    assert!(
        (0..10).all(bit),
        "a readable piece was dropped: {have:02x?}"
    );
    assert!(
        !(10..16).any(bit),
        "an unreadable piece is still claimed: {have:02x?}"
    );
}

#[test]
fn a_file_emptied_under_one_torrent_leaves_the_other_torrents_of_the_session_served() {
    let d = tempdir();
    let dir = d.path();
    write_tree(
        &dir.join("seed"),
        &[("a.bin", 8 * PIECE), ("b.bin", 12 * PIECE)],
    );
    let torrent = |name: &str| {
        let t = dir.join(format!("{name}.torrent"));
        create_torrent(&dir.join("seed").join(name), &t, &["--piece-size", "256K"]);
        t
    };
    let (a, b) = (torrent("a.bin"), torrent("b.bin"));
    let port = common::swarm::free_port();
    let seed_dir = dir.join("seed");
    let seed = ["seed", path_str(&a), path_str(&b), path_str(&seed_dir)];
    let seeder = common::swarm::spawn_on(port, &[&seed[..], &["--no-trackers"]].concat());
    common::swarm::wait_listening(seeder.addr(), Duration::from_secs(20));
    std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("seed/a.bin"))
        .unwrap()
        .set_len(0)
        .unwrap();
    let peer = ["--peer", &seeder.addr().to_string()];
    let leech_a = start_leecher(&a, &dir.join("leech-a"), &peer);
    let leech_b = start_leecher(&b, &dir.join("leech-b"), &peer);
    report_of(&leech_b.wait(Duration::from_secs(60)));
    assert!(
        std::fs::read(dir.join("leech-b/b.bin")).unwrap()
            == std::fs::read(dir.join("seed/b.bin")).unwrap(),
        "torrent b was not served in full"
    );
    // The seeder has refused a's pieces by now (b's leecher asked after a's did).
    std::thread::sleep(Duration::from_millis(500));
    drop(leech_a);
    seeder.signal("TERM");
    let out = seeder.wait(Duration::from_secs(10));
    let log = stderr(&out);
    assert!(
        log.contains("cannot read piece") && log.contains("marked missing"),
        "seeder log: {log}"
    );
    assert!(
        out.status.code().is_some(),
        "the seeder did not stop on SIGTERM: {log}"
    );
}

/// Makes a file immutable (not even root may write it) until dropped.
struct Immutable<'a>(&'a std::path::Path);

impl<'a> Immutable<'a> {
    fn set(path: &'a std::path::Path) -> Immutable<'a> {
        let ok = std::process::Command::new("chattr")
            .arg("+i")
            .arg(path)
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "chattr +i {} failed (needs root and ext4)",
            path.display()
        );
        Immutable(path)
    }
}

impl Drop for Immutable<'_> {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(self.0)
            .status();
    }
}

#[test]
fn data_nobody_may_write_is_still_seeded() {
    let d = tempdir();
    let dir = d.path().to_path_buf();
    write_tree(&dir.join("seed"), &[("f.bin", 8 * PIECE)]);
    let torrent = dir.join("t.torrent");
    create_torrent(&dir.join("seed/f.bin"), &torrent, &["--piece-size", "256K"]);
    let file = dir.join("seed/f.bin");
    let _immutable = Immutable::set(&file);
    let seeder = start_seeder(&torrent, &dir.join("seed"), &[]);
    let out = dir.join("leech");
    let leecher = start_leecher(&torrent, &out, &["--peer", &seeder.addr().to_string()]);
    report_of(&leecher.wait(Duration::from_secs(30)));
    assert!(
        std::fs::read(out.join("f.bin")).unwrap() == std::fs::read(dir.join("seed/f.bin")).unwrap()
    );
}

/// A client refused (aria2 falls back from a failed MSE handshake to a plain one only once we
/// close) must be closed at once, not when the 10 s watchdog fires: a plain handshake for a
/// torrent we do not serve, an MSE public key out of range, and an MSE opening whose pad runs
/// past 512 bytes without the sync hash.
#[test]
fn a_refused_handshake_is_closed_at_once() {
    let s = seeded(4 * PIECE);
    let mut wrong_hash = spate::wire::Handshake {
        reserved: [0; 8],
        info_hash: s.meta.info_hash,
        peer_id: spate::types::PeerId::generate(),
    }
    .encode()
    .to_vec();
    wrong_hash[28] ^= 0xff;
    let zero_key = vec![0u8; 96];
    let no_sync: Vec<u8> = (0..96 + 600u32).map(|i| (i * 37 + 11) as u8).collect();
    for opening in [no_sync, zero_key, wrong_hash] {
        let mut c = TcpStream::connect(s.seeder.addr()).unwrap();
        c.write_all(&opening).unwrap();
        let started = Instant::now();
        let closed = read_until_closed(&mut c, Duration::from_secs(3), |_| {});
        assert!(
            closed,
            "still open {:?} after a refused handshake",
            started.elapsed()
        );
    }
}
