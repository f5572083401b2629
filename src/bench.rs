//! `spate bench`: a whole swarm in one process, with no other software. Makes a payload in a
//! temporary directory, creates its torrent, starts a seeder session and K leecher sessions
//! (each on its own thread with its own io_uring runtime) on loopback, and reports each
//! leecher's throughput and latency histograms. Leechers also know each other, so they trade
//! pieces as well as fetching from the seeder. Everything it made is removed at the end.

use crate::creator::{hash_and_encode, scan, CreateOptions};
use crate::hash::HashPool;
use crate::metainfo::Metainfo;
use crate::session::{self, Ending, Report, SessionConfig};
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub size: u64,
    pub leechers: usize,
    pub piece_length: Option<u32>,
    /// Where the temporary directory goes (default: the system temp dir).
    pub scratch: Option<PathBuf>,
}

/// One leecher's result.
pub struct LeecherResult {
    pub wall: Duration,
    pub report: Report,
}

/// Everything `spate bench` prints.
pub struct BenchReport {
    pub payload_bytes: u64,
    pub piece_length: u32,
    pub setup: Duration,
    pub leechers: Vec<LeecherResult>,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("scratch directory: {0}")]
    Io(#[from] std::io::Error),
    #[error("making the torrent: {0}")]
    Create(String),
    #[error("a session failed: {0}")]
    Session(String),
    #[error("leecher {0} did not complete")]
    Incomplete(usize),
}

/// A temporary directory removed on drop (also when the bench fails part-way).
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Writes `size` pseudo-random bytes (xorshift: fast, incompressible enough for a network
/// test) to `path`.
fn write_payload(path: &Path, size: u64) -> std::io::Result<()> {
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut block = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for word in block.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            word.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n])?;
        left -= n as u64;
    }
    f.flush()
}

fn make_torrent(data: &Path, config: &BenchConfig) -> Result<Arc<Metainfo>, BenchError> {
    let opts = CreateOptions {
        piece_length: config.piece_length,
        ..CreateOptions::default()
    };
    let tree = scan(data, &opts).map_err(|e| BenchError::Create(e.to_string()))?;
    let pool = HashPool::per_core();
    let bytes = crate::runtime::start(hash_and_encode(&tree, &pool, |_| {}))
        .map_err(|e| BenchError::Create(e.to_string()))?;
    let meta = Metainfo::from_bytes(&bytes).map_err(|e| BenchError::Create(e.to_string()))?;
    Ok(Arc::new(meta))
}

fn session_on(out_dir: PathBuf, port: u16, peers: Vec<SocketAddr>, seed: bool) -> SessionConfig {
    SessionConfig {
        out_dir,
        peers,
        listen: SocketAddr::from(([127, 0, 0, 1], port)),
        seed,
        use_trackers: false,
        handle_signals: false,
        ..SessionConfig::default()
    }
}

/// Runs the bench; `on_status` receives one-line updates.
pub fn run(
    config: &BenchConfig,
    mut on_status: impl FnMut(&str),
) -> Result<BenchReport, BenchError> {
    let started = Instant::now();
    let base = config.scratch.clone().unwrap_or_else(std::env::temp_dir);
    let scratch = Scratch(base.join(format!("spate-bench-{}", std::process::id())));
    let seed_dir = scratch.0.join("seed");
    std::fs::create_dir_all(&seed_dir)?;
    on_status(&format!("writing a {} byte payload", config.size));
    write_payload(&seed_dir.join("payload.bin"), config.size)?;
    on_status("hashing it into a torrent");
    let meta = make_torrent(&seed_dir.join("payload.bin"), config)?;
    let seeder_port = free_port()?;
    let leecher_ports: Vec<u16> = (0..config.leechers)
        .map(|_| free_port())
        .collect::<Result<_, _>>()?;
    let shutdown = Arc::new(tokio::sync::Notify::new());
    let mut seeder_config = session_on(seed_dir.clone(), seeder_port, Vec::new(), true);
    seeder_config.upload_slots = config.leechers.max(4);
    seeder_config.shutdown = Some(Arc::clone(&shutdown));
    let seeder_meta = Arc::clone(&meta);
    let seeder = std::thread::spawn(move || {
        crate::runtime::start(session::run(seeder_meta, seeder_config, |_| {}))
    });
    wait_listening(SocketAddr::from(([127, 0, 0, 1], seeder_port)))?;
    let setup = started.elapsed();
    on_status(&format!("{} leecher(s) downloading", config.leechers));
    let mut threads = Vec::new();
    for (i, &port) in leecher_ports.iter().enumerate() {
        let mut peers = vec![SocketAddr::from(([127, 0, 0, 1], seeder_port))];
        peers.extend(
            leecher_ports
                .iter()
                .filter(|&&p| p != port)
                .map(|&p| SocketAddr::from(([127, 0, 0, 1], p))),
        );
        let config = session_on(scratch.0.join(format!("leecher{i}")), port, peers, false);
        let meta = Arc::clone(&meta);
        threads.push(std::thread::spawn(move || {
            let t = Instant::now();
            let r = crate::runtime::start(session::run(meta, config, |_| {}));
            (t.elapsed(), r)
        }));
    }
    let mut leechers = Vec::new();
    for (i, t) in threads.into_iter().enumerate() {
        let (wall, result) = t
            .join()
            .map_err(|_| BenchError::Session("a leecher thread panicked".into()))?;
        let report = result.map_err(|e| BenchError::Session(e.to_string()))?;
        if report.ending != Ending::Complete {
            return Err(BenchError::Incomplete(i));
        }
        leechers.push(LeecherResult { wall, report });
    }
    shutdown.notify_one();
    let _ = seeder.join();
    Ok(BenchReport {
        payload_bytes: config.size,
        piece_length: meta.info.piece_length,
        setup,
        leechers,
    })
}

fn wait_listening(addr: SocketAddr) -> std::io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}
