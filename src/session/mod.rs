//! A running session for one torrent or several (see `hub` for what they share): checks
//! what is already on disk (or trusts fresh resume data), then connects to peers (given,
//! announced, incoming, or the bridges of its web seeds), downloads and verifies, uploads,
//! saves resume data, and ends on completion (or keeps seeding), on a fatal disk error, or
//! on SIGINT/SIGTERM (resume data flushed first). It wires the torrent state to the
//! sockets, the disk and the hashing threads; the decisions live in `torrent`.

mod dht_search;
mod hub;
pub mod magnet;
mod peers;
pub mod resume;
mod trackers;

use crate::check::{check_pieces, PieceCheck};
use crate::dht::DhtConfig;
use crate::hash::HashPlacement;
use crate::layout::Layout;
use crate::metainfo::Metainfo;
use crate::peer::conn::{ConnContext, FatalSlot};
use crate::selection::Selection;
use crate::storage::{self, Storage, StorageConfig, WritePaths};
use crate::torrent::{Torrent, TorrentConfig, Verifier};
use crate::types::{PeerId, PieceIndex};
use crate::webseed::bridge::WebSeeds;
use bitvec::prelude::{BitVec, Msb0};
use peers::PeerSource;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Receive buffer size: large reads amortise the per-read cost and let one vectored write
/// carry up to 64 blocks of a fast peer. 1 MiB against 256 KiB, alternating single runs of
/// `perf/compare --size 2G --piece 1M --runs 1`: from libtorrent 2.33-3.21 leecher CPU s
/// and 562-765 MB/s against 2.57-3.44 s and 557-663 MB/s (6 each), from spate 2.26-2.49 s
/// against 2.46-2.65 (3 each), 200 files from libtorrent 1.45-1.47 s against 1.65-1.72 (2
/// each); 64 KiB was worse than either. The default 32 MiB memory limit still gives 32.
pub const RECEIVE_BUFFER: usize = 1 << 20;
/// Cap on memory holding blocks read from disk for uploading: 32 MiB keeps 16 fast peers
/// each with two long reads queued, and bounds the total whatever the peer count. A quarter
/// of it is single-block buffers, for leechers that ask a block at a time.
pub(crate) const UPLOAD_MEMORY: usize = 32 << 20;

/// How downloaded data reaches the disk (see `storage::direct` and `storage::write_path` for
/// the measurements).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WriteMode {
    /// The page-aligned part of every write with O_DIRECT. The default at every size: each
    /// fresh page-cache page costs CPU the receive and hash paths need (on the README's VM a
    /// host fault too, `page_reporting`), and with 32 writes in flight direct writes won every
    /// alternating pair of 2026-12-05 (1 GiB in 200 files from five seeders: 824-955 MB/s at
    /// 1.12-1.25 leecher CPU s against 583-743 at 1.45-1.85 buffered).
    Direct,
    /// Everything through the page cache.
    Buffered,
    /// Each write on whichever path served bytes faster in its latest trial: for a disk
    /// slower than the page cache.
    Adaptive,
}

impl WriteMode {
    /// The storage write paths of this mode.
    pub fn paths(self) -> WritePaths {
        match self {
            WriteMode::Direct => WritePaths::Direct,
            WriteMode::Buffered => WritePaths::Buffered,
            WriteMode::Adaptive => WritePaths::Adaptive {
                trial_bytes: storage::TRIAL_BYTES,
            },
        }
    }
}

/// Everything a session needs besides the torrent.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub out_dir: PathBuf,
    /// Peers to connect to besides those the trackers return.
    pub peers: Vec<SocketAddr>,
    /// Address to accept peers on; port 0 picks a free port.
    pub listen: SocketAddr,
    pub max_peers: usize,
    /// Cap on receive buffer memory (bytes).
    pub memory_limit: usize,
    /// Keep running and uploading after the download completes.
    pub seed: bool,
    /// When a seeding download stops by itself (with `seed`); the default never.
    pub seed_limit: SeedLimit,
    /// Reserve each file's full size when it is first opened (see `StorageConfig`).
    pub preallocate: bool,
    /// Whether downloaded data is written with O_DIRECT where it is page-aligned.
    pub write_mode: WriteMode,
    pub upload_slots: usize,
    /// How often resume data is saved while pieces keep verifying (each save fsyncs the
    /// data first, so very short intervals cost throughput).
    pub resume_interval: Duration,
    /// Upload rate cap in bytes/s for the whole session; None is unlimited.
    pub upload_limit: Option<u64>,
    /// Download rate cap in bytes/s for the whole session (everything read from peers);
    /// None is unlimited.
    pub download_limit: Option<u64>,
    /// Announce to the torrent's trackers.
    pub use_trackers: bool,
    /// Stops the session when notified (from any thread), like SIGINT does.
    pub shutdown: Option<Arc<tokio::sync::Notify>>,
    /// Stop on SIGINT/SIGTERM (the command line); off when several sessions share a process.
    pub handle_signals: bool,
    /// Where arriving blocks are hashed.
    pub hash_placement: HashPlacement,
    /// Run a DHT node (BEP 5) on the listening port and find peers of public torrents
    /// through it; None leaves the DHT off.
    pub dht: Option<DhtConfig>,
    /// Exchange peer addresses with peers (BEP 11), for public torrents.
    pub pex: bool,
    /// Fetch from the torrent's web seeds (BEP 19 `url-list`) while downloading.
    pub web_seeds: bool,
    /// Fetch pieces first to last instead of rarest first (`Picker::set_sequential`).
    pub sequential: bool,
    /// The files to download, in a one-torrent session (`download --only`, a magnet link's
    /// `so=`); None fetches every file.
    pub selection: Option<Selection>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            out_dir: PathBuf::from("."),
            peers: Vec::new(),
            listen: "[::]:6881".parse().expect("valid address"),
            max_peers: 200,
            memory_limit: 32 << 20,
            seed: false,
            seed_limit: SeedLimit::default(),
            preallocate: true,
            write_mode: WriteMode::Direct,
            upload_slots: 4,
            upload_limit: None,
            download_limit: None,
            resume_interval: Duration::from_secs(30),
            use_trackers: true,
            shutdown: None,
            handle_signals: true,
            hash_placement: HashPlacement::for_this_machine(),
            dht: None,
            pex: true,
            web_seeds: true,
            sequential: false,
            selection: None,
        }
    }
}

/// Why a session stopped early.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("disk: {0}")]
    Disk(String),
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Complete,
    Interrupted,
}

/// When a seeding download stops by itself, as Transmission's ratio and idle limits and
/// qBittorrent's share limits do: once the share ratio reaches `ratio`, or after `time` of
/// seeding, whichever comes first. Neither set: until interrupted.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SeedLimit {
    pub ratio: Option<f64>,
    pub time: Option<Duration>,
}

impl SeedLimit {
    /// Whether a download with progress `p`, seeding for `seeded` since it completed, may
    /// stop.
    pub fn reached(&self, p: &Progress, seeded: Duration) -> bool {
        self.ratio.is_some_and(|r| p.share_ratio() >= r) || self.time.is_some_and(|t| seeded >= t)
    }
}

/// A snapshot for progress displays.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    pub have_bytes: u64,
    pub total_bytes: u64,
    pub download_rate: f64,
    pub upload_rate: f64,
    pub peers: usize,
    pub downloaded: u64,
    pub uploaded: u64,
    /// Pieces checked so far during the initial check (0 once downloading).
    pub checking: Option<(u32, u32)>,
}

impl Progress {
    /// The share ratio as Transmission shows it: uploaded over downloaded, or over the
    /// wanted size for a seed that downloaded nothing.
    pub fn share_ratio(&self) -> f64 {
        let base = if self.downloaded > 0 {
            self.downloaded
        } else {
            self.total_bytes.max(1)
        };
        self.uploaded as f64 / base as f64
    }

    /// The totals over several torrents' progress.
    pub fn sum(all: &[Progress]) -> Progress {
        let mut total = Progress::default();
        for p in all {
            total.have_bytes += p.have_bytes;
            total.total_bytes += p.total_bytes;
            total.download_rate += p.download_rate;
            total.upload_rate += p.upload_rate;
            total.peers += p.peers;
            total.downloaded += p.downloaded;
            total.uploaded += p.uploaded;
            if let Some((done, count)) = p.checking {
                let (d, c) = total.checking.unwrap_or((0, 0));
                total.checking = Some((d + done, c + count));
            }
        }
        total
    }
}

/// What a finished session reports.
pub struct Report {
    pub ending: Ending,
    pub elapsed: Duration,
    pub listen_addr: SocketAddr,
    pub progress: Progress,
    pub stats_json: serde_json::Value,
    pub stats_lines: Vec<String>,
    pub hash_failures: u32,
    /// Pieces we had that could no longer be read from disk (marked missing).
    pub pieces_lost: u32,
    pub peers_dropped: u32,
    pub peers_banned: u32,
    /// Bytes written with O_DIRECT (the rest of the download went through the page cache).
    pub direct_bytes: u64,
    /// Bytes read back from disk to finish hashing pieces whose blocks arrived out of order.
    pub reread_bytes: u64,
    /// Payload bytes received that were no longer wanted (endgame copies, late blocks).
    pub wasted_bytes: u64,
    /// REQUEST messages sent.
    pub request_messages: u64,
    /// Peer addresses learned through peer exchange.
    pub peers_from_pex: u32,
    /// Bytes of new blocks from web seeds.
    pub web_seed_bytes: u64,
}

/// Runs a session for `meta` until it completes (and, with `seed`, until interrupted).
pub async fn run(
    meta: Arc<Metainfo>,
    config: SessionConfig,
    mut on_progress: impl FnMut(&Progress),
) -> Result<Report, SessionError> {
    let mut reports = run_many(vec![meta], config, |_, p| on_progress(p)).await?;
    reports.pop().expect("one report per torrent")
}

/// Runs one session for several torrents at once, all under `config.out_dir`, sharing one
/// listening port, the hashing threads, the memory caps and the upload limit. Each torrent
/// ends on its own (complete, interrupted, or its own disk error, which leaves the others
/// running); `on_progress` gets the torrent's index. Fails only if the port cannot be bound.
pub async fn run_many(
    metas: Vec<Arc<Metainfo>>,
    config: SessionConfig,
    on_progress: impl FnMut(usize, &Progress),
) -> Result<Vec<Result<Report, SessionError>>, SessionError> {
    let hub = hub::Hub::bind(&config, metas.len())?;
    let on_progress = RefCell::new(on_progress);
    let runs = metas.into_iter().enumerate().map(|(i, meta)| {
        let (hub, config, on_progress) = (Rc::clone(&hub), config.clone(), &on_progress);
        async move { run_torrent(&hub, meta, &config, |p| (on_progress.borrow_mut())(i, p)).await }
    });
    let reports = futures_util::future::join_all(runs).await;
    hub.save_dht_nodes(&config.out_dir);
    Ok(reports)
}

/// One torrent of a session, from its data check to its end.
async fn run_torrent(
    hub: &Rc<hub::Hub>,
    meta: Arc<Metainfo>,
    config: &SessionConfig,
    mut on_progress: impl FnMut(&Progress),
) -> Result<Report, SessionError> {
    let started = Instant::now();
    let layout = Layout::new(&meta.info);
    let storage_config = StorageConfig {
        preallocate: config.preallocate,
        write_paths: config.write_mode.paths(),
        max_open_files: hub.open_files_per_torrent,
        selected_files: config.selection.as_ref().map(|s| s.files_to_keep(&layout)),
        ..StorageConfig::default()
    };
    let storage = Rc::new(Storage::new(&config.out_dir, &meta.info, storage_config));
    let pool = Arc::clone(&hub.hash_pool);
    let have = initial_have(&meta, config, hub, &mut on_progress).await;
    if !have.all() {
        storage.create_files_ahead();
    }
    let (verifier, mut verdicts) = Verifier::new(
        Arc::clone(&pool),
        Arc::new(meta.info.pieces.clone()),
        config.hash_placement,
    );
    let torrent_config = TorrentConfig {
        upload_slots: config.upload_slots,
        reorder_buffers: hub.reorder_buffers_per_torrent,
        reorder_copies: hub.reorder_copies.clone(),
        metadata: Some(Arc::from(meta.info_bytes.as_slice())),
        // Private torrents (BEP 27) find peers through their trackers only.
        pex: config.pex && !meta.info.private,
        wanted: config.selection.as_ref().map(|s| s.wanted_pieces(&layout)),
        sequential: config.sequential,
    };
    let torrent = Rc::new(RefCell::new(Torrent::new(
        storage.layout().clone(),
        have,
        verifier,
        torrent_config,
    )));
    let ctx = Rc::new(ConnContext {
        torrent: Rc::clone(&torrent),
        storage: Rc::clone(&storage),
        pool: hub.receive_pool.clone(),
        control_pool: hub.control_pool.clone(),
        upload_pools: hub.upload_pools.clone(),
        upload_limit: Rc::clone(&hub.upload_limit),
        download_limit: Rc::clone(&hub.download_limit),
        info_hash: meta.info_hash,
        peer_id: hub.peer_id,
        listen_port: hub.listen_addr.port(),
        fatal: Rc::new(FatalSlot::default()),
        tail_reads: Arc::clone(&hub.tail_reads),
    });
    let listen_addr = hub.listen_addr;
    let source = PeerSource::new(Rc::clone(&ctx), config.max_peers);
    source.add(config.peers.iter().copied());
    let web_seeds = start_web_seeds(&meta, config, &torrent.borrow(), hub.peer_id);
    if let Some(bridges) = &web_seeds {
        torrent.borrow_mut().add_web_seed_bridges(bridges.addrs());
        source.add(bridges.addrs().iter().copied());
    }
    // The bridges stop once every piece is verified (a seed needs nothing from them).
    let verified = Rc::new(tokio::sync::Notify::new());
    let web_seeds_task = web_seeds.map(|bridges| {
        let (verified, source) = (Rc::clone(&verified), Rc::clone(&source));
        tokio_uring::spawn(async move {
            verified.notified().await;
            source.retire(bridges.addrs());
            drop(bridges);
        })
    });
    let registration = hub.register(meta.info_hash, Rc::clone(&source));
    hub.checked();
    let tasks = vec![tokio_uring::spawn(peers::connect_loop(Rc::clone(&source)))];
    let signals = Rc::new(trackers::TrackerSignals::default());
    let tracker_task = (config.use_trackers && !meta.trackers.is_empty()).then(|| {
        tokio_uring::spawn(trackers::announce_loop(
            Arc::clone(&meta),
            ctx.peer_id,
            listen_addr.port(),
            Rc::clone(&source),
            Rc::clone(&signals),
        ))
    });
    // Private torrents (BEP 27) find peers through their trackers only.
    let dht_task = hub.dht.as_ref().filter(|_| !meta.info.private).map(|dht| {
        tokio_uring::spawn(dht_search::search_loop(
            Rc::clone(dht),
            meta.info_hash,
            listen_addr.port(),
            Rc::clone(&source),
        ))
    });
    let complete = Rc::new(tokio::sync::Notify::new());
    let verdict_task = tokio_uring::spawn({
        let (torrent, complete) = (Rc::clone(&torrent), Rc::clone(&complete));
        let verified = Rc::clone(&verified);
        async move {
            while let Some(v) = verdicts.recv().await {
                let mut t = torrent.borrow_mut();
                for key in t.on_verdict(v, Instant::now()) {
                    if let Some(p) = t.peer(key) {
                        p.outbox.close();
                    }
                }
                if t.is_complete() {
                    complete.notify_one();
                    verified.notify_one();
                }
            }
        }
    });
    if torrent.borrow().is_complete() {
        complete.notify_one();
    }
    let ending = drive(&meta, config, &ctx, &complete, &signals, &mut on_progress).await;
    for t in tasks {
        t.abort();
    }
    verdict_task.abort();
    if let Some(task) = dht_task {
        task.abort();
    }
    if let Some(task) = tracker_task {
        signals.stop.notify_one();
        let _ = tokio::time::timeout(
            trackers::STOP_ANNOUNCE_TIMEOUT + Duration::from_secs(1),
            task,
        )
        .await;
    }
    drop(registration);
    let ending = ending?;
    source.disconnect_all();
    if let Some(task) = web_seeds_task {
        verified.notify_one();
        let _ = task.await;
    }
    let progress = snapshot(&torrent.borrow());
    let t = torrent.borrow();
    Ok(Report {
        ending,
        elapsed: started.elapsed(),
        listen_addr,
        progress,
        stats_json: t.stats.latency_json(),
        stats_lines: t.stats.latency_lines(),
        hash_failures: t.stats.hash_failures,
        pieces_lost: t.stats.pieces_lost,
        peers_dropped: t.stats.peers_dropped,
        peers_banned: t.stats.peers_banned,
        direct_bytes: storage.direct_bytes(),
        reread_bytes: t.stats.reread_bytes,
        wasted_bytes: t.stats.wasted_bytes,
        request_messages: t.stats.request_messages,
        peers_from_pex: t.stats.peers_from_pex,
        web_seed_bytes: t.stats.web_seed_bytes,
    })
}

/// Bridges to the torrent's web seeds (BEP 19) while it has pieces to fetch, unless
/// `config` turns them off.
fn start_web_seeds(
    meta: &Metainfo,
    config: &SessionConfig,
    torrent: &Torrent,
    session_id: PeerId,
) -> Option<WebSeeds> {
    if !config.web_seeds || meta.web_seeds.is_empty() || torrent.is_complete() {
        return None;
    }
    match WebSeeds::start(meta, session_id) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "web seeds off");
            None
        }
    }
}

/// The main loop: ticks, progress, resume saves, until completion, failure or a signal.
async fn drive(
    meta: &Arc<Metainfo>,
    config: &SessionConfig,
    ctx: &Rc<ConnContext>,
    complete: &tokio::sync::Notify,
    signals: &trackers::TrackerSignals,
    on_progress: &mut impl FnMut(&Progress),
) -> Result<Ending, SessionError> {
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    let shutdown = config.shutdown.clone();
    let signals_on = config.handle_signals;
    let mut sigterm = signals_on
        .then(|| tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok())
        .flatten();
    let mut last_tick = Instant::now();
    let mut last_save = Instant::now();
    // When every wanted piece was verified; None until then.
    let mut completed_at: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = interval.tick() => {
                let now = Instant::now();
                let kick = ctx.torrent.borrow_mut().tick(now - last_tick, now);
                last_tick = now;
                for key in kick {
                    if let Some(p) = ctx.torrent.borrow().peer(key) {
                        p.outbox.close();
                    }
                }
                let progress = snapshot(&ctx.torrent.borrow());
                on_progress(&progress);
                if completed_at.is_none() {
                    ctx.storage.start_writeback();
                }
                if completed_at.is_some_and(|at| config.seed_limit.reached(&progress, now - at)) {
                    tracing::info!(ratio = progress.share_ratio(), "seed limit reached");
                    break;
                }
                if now - last_save >= config.resume_interval && ctx.torrent.borrow().resume_dirty {
                    save_resume(meta, config, ctx).await?;
                    last_save = now;
                }
            }
            _ = complete.notified(), if completed_at.is_none() => {
                completed_at = Some(Instant::now());
                // Every piece is verified now; the caller hears so before the closing flush.
                on_progress(&snapshot(&ctx.torrent.borrow()));
                finish_download(meta, config, ctx).await?;
                // A seed that started complete never "completes", nor does a selection of files.
                let t = ctx.torrent.borrow();
                if t.stats.downloaded > 0 && t.has_every_piece() {
                    signals.completed.notify_one();
                }
                drop(t);
                on_progress(&snapshot(&ctx.torrent.borrow()));
                if !config.seed {
                    return Ok(Ending::Complete);
                }
            }
            _ = ctx.fatal.notify.notified() => {
                let message = ctx.fatal.get().unwrap_or_default();
                let _ = save_resume(meta, config, ctx).await;
                return Err(SessionError::Disk(message));
            }
            _ = async { tokio::signal::ctrl_c().await }, if signals_on => break,
            _ = async { sigterm.as_mut().expect("guarded").recv().await }, if signals_on && sigterm.is_some() => break,
            _ = async { shutdown.as_ref().expect("guarded").notified().await }, if shutdown.is_some() => break,
        }
    }
    settle_verdicts(ctx).await;
    save_resume(meta, config, ctx).await?;
    Ok(if completed_at.is_some() {
        Ending::Complete
    } else {
        Ending::Interrupted
    })
}

/// Before an interrupted download's last save: lets the writes that already completed reach
/// the verifier and the verdicts in flight arrive, so a piece that was whole on disk when the
/// signal came is kept, not fetched again. Done once nothing is awaited on two looks a
/// millisecond apart (each sleep lets the runtime reap completions), or after 250 ms.
async fn settle_verdicts(ctx: &ConnContext) {
    const LIMIT: Duration = Duration::from_millis(250);
    let deadline = Instant::now() + LIMIT;
    let mut quiet_looks = 0;
    while quiet_looks < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
        if ctx.torrent.borrow().verdicts_awaited() == 0 {
            quiet_looks += 1;
        } else {
            quiet_looks = 0;
        }
    }
}

/// Flushes the data, then records which pieces are verified.
async fn save_resume(
    meta: &Arc<Metainfo>,
    config: &SessionConfig,
    ctx: &ConnContext,
) -> Result<(), SessionError> {
    ctx.storage
        .sync()
        .await
        .map_err(|e| SessionError::Disk(format!("fsync: {e}")))?;
    let have = ctx.torrent.borrow().have().as_raw_slice().to_vec();
    ctx.torrent.borrow_mut().resume_dirty = false;
    let (dir, meta) = (config.out_dir.clone(), Arc::clone(meta));
    tokio::task::spawn_blocking(move || resume::save(&dir, &meta, &have))
        .await
        .map_err(|e| SessionError::Disk(format!("saving resume data: {e}")))?
        .map_err(|e| SessionError::Disk(format!("saving resume data: {e}")))
}

async fn finish_download(
    meta: &Arc<Metainfo>,
    config: &SessionConfig,
    ctx: &ConnContext,
) -> Result<(), SessionError> {
    ctx.storage
        .finalize_sizes()
        .await
        .map_err(|e| SessionError::Disk(format!("setting file sizes: {e}")))?;
    save_resume(meta, config, ctx).await
}

/// The torrent's progress over the wanted pieces (all of them unless files were selected).
fn snapshot(t: &Torrent) -> Progress {
    let (have_bytes, total_bytes) = t.wanted_progress();
    Progress {
        have_bytes,
        total_bytes,
        download_rate: t.download_rate(),
        upload_rate: t.upload_rate(),
        peers: t.peer_count(),
        downloaded: t.stats.downloaded,
        uploaded: t.stats.uploaded,
        checking: None,
    }
}

/// Which pieces are already good on disk: fresh resume data is trusted, otherwise every
/// piece of every existing file is hashed.
async fn initial_have(
    meta: &Metainfo,
    config: &SessionConfig,
    hub: &hub::Hub,
    on_progress: &mut impl FnMut(&Progress),
) -> BitVec<u8, Msb0> {
    let count = meta.info.piece_count();
    if let Some(bits) = resume::load(&config.out_dir, meta) {
        let mut have = BitVec::<u8, Msb0>::from_vec(bits);
        have.truncate(count as usize);
        return have;
    }
    let mut have = BitVec::repeat(false, count as usize);
    let any_file = meta
        .info
        .files
        .iter()
        .any(|f| !f.pad && config.out_dir.join(&f.path).exists());
    if !any_file {
        return have;
    }
    let ro = StorageConfig {
        writable: false,
        ..StorageConfig::default()
    };
    // The torrent's writable storage opens files lazily; checking uses a read-only view.
    let reader = Storage::new(&config.out_dir, &meta.info, ro);
    let expected = Arc::new(meta.info.pieces.clone());
    let _turn = hub.check_turn.acquire().await.expect("never closed");
    let mut done = 0u32;
    let mut progress = Progress {
        total_bytes: meta.info.total_length,
        ..Progress::default()
    };
    check_pieces(
        &reader,
        &hub.hash_pool,
        0..count,
        Some(expected),
        |piece: PieceIndex, check| {
            if check == PieceCheck::Good {
                have.set(piece.as_usize(), true);
                progress.have_bytes += u64::from(meta.info.piece_len(piece.0));
            }
            done += 1;
            if done.is_multiple_of(64) || done == count {
                progress.checking = Some((done, count));
                on_progress(&progress);
            }
        },
    )
    .await;
    have
}
