//! Shared helpers for the integration tests: deterministic payload trees, running the spate
//! binary, and asking other clients (libtorrent, Transmission, aria2) what they make of a
//! torrent. Tests fail loudly when a client is missing: `.ci/run` installs them.
#![allow(dead_code)]

pub mod clients;
pub mod ext_peer;
pub mod fake_peer;
pub mod fixture;
pub mod swarm;
pub mod tracker_clients;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The spate binary built for these tests.
pub fn spate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_spate"))
}

/// Runs spate with `args` and returns its output.
pub fn run_spate(args: &[&str]) -> Output {
    spate().args(args).output().expect("running spate")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
pub fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Writes `files` (relative path, size) under `root` with deterministic contents.
pub fn write_tree(root: &Path, files: &[(&str, usize)]) {
    for (i, (rel, size)) in files.iter().enumerate() {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, payload(*size, i as u64 + 1)).unwrap();
    }
}

/// Creates a torrent of `src` at `out` with extra args; panics on failure.
pub fn create_torrent(src: &Path, out: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "create",
        src.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--no-date",
    ];
    args.extend_from_slice(extra);
    let o = run_spate(&args);
    assert!(o.status.success(), "create failed: {}", stderr(&o));
    stdout(&o).trim().to_string()
}

/// libtorrent's info-hash for a .torrent (Debian's python3-libtorrent).
pub fn libtorrent_info_hash(torrent: &Path) -> String {
    let script = "import sys, libtorrent as lt; print(lt.torrent_info(sys.argv[1]).info_hash())";
    let o = Command::new("/usr/bin/python3")
        .args(["-c", script, torrent.to_str().unwrap()])
        .output()
        .expect("running /usr/bin/python3 (install python3-libtorrent)");
    assert!(
        o.status.success(),
        "libtorrent refused the torrent: {}",
        stderr(&o)
    );
    stdout(&o).trim().to_string()
}

/// Transmission's info-hash for a .torrent (transmission-show from transmission-cli).
pub fn transmission_info_hash(torrent: &Path) -> String {
    let o = Command::new("transmission-show")
        .arg(torrent)
        .output()
        .expect("running transmission-show (install transmission-cli)");
    assert!(
        o.status.success(),
        "transmission-show failed: {}",
        stderr(&o)
    );
    field_after(&stdout(&o), "Hash:")
}

/// aria2's info-hash for a .torrent (`aria2c -S`).
pub fn aria2_info_hash(torrent: &Path) -> String {
    let o = Command::new("aria2c")
        .arg("-S")
        .arg(torrent)
        .output()
        .expect("running aria2c (install aria2)");
    assert!(o.status.success(), "aria2c failed: {}", stderr(&o));
    field_after(&stdout(&o), "Info Hash:")
}

fn field_after(text: &str, label: &str) -> String {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no {label:?} in {text}"))
}

/// A fresh temporary directory.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("creating a temporary directory")
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

pub fn join(p: &Path, rel: &str) -> PathBuf {
    p.join(rel)
}

/// Which pieces of the single-file torrent `meta` are correct in `dir` right now.
pub fn good_pieces(meta: &spate::metainfo::Metainfo, dir: &Path) -> Vec<bool> {
    let data = std::fs::read(dir.join(&meta.info.files[0].path)).unwrap_or_default();
    let len = meta.info.piece_length as usize;
    (0..meta.info.piece_count() as usize)
        .map(|i| {
            let piece = data.get(i * len..((i + 1) * len).min(data.len()));
            piece.is_some_and(|p| spate::hash::sha1(p) == meta.info.pieces[i])
        })
        .collect()
}

/// A TCP connection to the peer at `addr`, past both handshakes (no extensions).
pub fn handshaken(
    addr: std::net::SocketAddr,
    info_hash: spate::types::InfoHash,
) -> std::net::TcpStream {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let hs = spate::wire::Handshake {
        reserved: spate::wire::Extensions {
            extended: false,
            fast: false,
            dht: false,
        }
        .reserved(),
        info_hash,
        peer_id: spate::types::PeerId::generate(),
    };
    c.write_all(&hs.encode()).unwrap();
    let mut theirs = [0u8; 68];
    c.read_exact(&mut theirs).unwrap();
    c
}
