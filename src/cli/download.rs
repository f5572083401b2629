//! `spate download` and `spate seed`: run a session for one torrent (seed: one or more), with a progress bar on
//! a terminal (plain periodic lines otherwise), and the end-of-run figures with `--stats`.

use super::source::{fetch_and_save, saved_metainfo, Source};
use super::units::{human_bytes, parse_duration, parse_ratio, parse_size};
use super::{load_torrent, BadInput};
use crate::dht::{node::PUBLIC_BOOTSTRAP, DhtConfig};
use crate::metainfo::Metainfo;
use crate::selection::Selection;
use crate::session::{self, Ending, Progress, Report, SeedLimit, SessionConfig, WriteMode};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Options shared by `download` and `seed`.
#[derive(clap::Args)]
pub struct SwarmArgs {
    /// Port to accept peers on (default 6881; 0 picks a free port).
    #[arg(long, default_value_t = 6881)]
    listen_port: u16,
    /// Address to accept peers on (default: every IPv6 and IPv4 address, or every IPv4
    /// address on a host without IPv6).
    #[arg(long, default_value = "::")]
    listen_ip: IpAddr,
    /// A peer to connect to (repeatable), besides those the trackers return.
    #[arg(long = "peer")]
    peers: Vec<SocketAddr>,
    /// Most peer connections at once.
    #[arg(long, default_value_t = 200)]
    max_peers: usize,
    /// Peers uploaded to at once (the best by rate, one of them rotated optimistically).
    #[arg(long, default_value_t = 4)]
    upload_slots: usize,
    /// Cap on upload speed in bytes per second (e.g. 2M); 0 means unlimited.
    #[arg(long, default_value = "0", value_parser = parse_size)]
    upload_limit: u64,
    /// Do not announce to the torrent's trackers.
    #[arg(long)]
    no_trackers: bool,
    /// Also find peers through the DHT (BEP 5), with a node on the listening port (UDP);
    /// private torrents never use it.
    #[arg(long)]
    dht: bool,
    /// A DHT node to join the DHT through (repeatable; implies --dht). Without it, the
    /// routers libtorrent and Transmission use: router.bittorrent.com,
    /// dht.transmissionbt.com and router.utorrent.com, port 6881.
    #[arg(long = "dht-bootstrap", value_name = "HOST:PORT")]
    dht_bootstrap: Vec<String>,
    /// Do not exchange peer addresses with peers (PEX, BEP 11; private torrents never do).
    #[arg(long)]
    no_pex: bool,
    /// Do not fetch from the torrent's web seeds (BEP 19 url-list).
    #[arg(long)]
    no_web_seeds: bool,
    /// Print nothing but errors.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(clap::Args)]
pub struct DownloadArgs {
    /// The .torrent file, or a magnet link (quoted: `'magnet:?xt=urn:btih:...'`); a link's
    /// metadata is fetched from its peers (x.pe, --peer), its trackers and, with --dht, the
    /// DHT, then kept in DIR/.spate so that the same command resumes.
    torrent: PathBuf,
    /// Directory to download into.
    #[arg(short, long, default_value = ".")]
    output: PathBuf,
    /// Download only these files: indices as `spate info` numbers them, and ranges, e.g.
    /// `0,2,4-6` (a magnet link's `so=` says the same). Pieces shared with other files are
    /// fetched whole, so those files get the shared bytes and are left sparse.
    #[arg(long, value_name = "LIST", value_parser = parse_only)]
    only: Option<FileList>,
    /// Keep seeding after the download completes, until interrupted (or a seed limit).
    #[arg(long)]
    seed: bool,
    #[command(flatten)]
    seed_limit: SeedLimitArgs,
    /// Cap on download speed in bytes per second (e.g. 10M), counting everything read from
    /// peers; 0 means unlimited.
    #[arg(long, default_value = "0", value_parser = parse_size)]
    download_limit: u64,
    /// Cap on receive-buffer memory (e.g. 64M); 32 MiB already holds ~30 ms of a 1 GB/s link.
    #[arg(long, default_value = "32M", value_parser = parse_size)]
    memory_limit: u64,
    /// Leave files sparse, allocating disk blocks as data arrives, instead of reserving each
    /// file's full size when it is first written (the default, and faster).
    #[arg(long)]
    sparse: bool,
    /// Fetch pieces first to last (to play a file while it downloads) instead of rarest
    /// first.
    #[arg(long)]
    sequential: bool,
    /// How data reaches the disk: `direct` writes its page-aligned part with O_DIRECT (no
    /// page cache), `buffered` through the page cache, `adaptive` each write on whichever of
    /// the two served bytes faster lately (for a disk slower than the page cache).
    #[arg(long, value_enum, default_value = "direct")]
    write_mode: WriteMode,
    /// Seconds between saves of resume data while downloading.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    resume_interval: u64,
    /// Print bytes, time, rate and latency percentiles at the end.
    #[arg(long)]
    stats: bool,
    /// Print the end-of-run figures as one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    swarm: SwarmArgs,
}

#[derive(clap::Args)]
pub struct SeedArgs {
    /// The .torrent file(s): several are seeded in one session, on one port.
    #[arg(required = true, num_args = 1..)]
    torrents: Vec<PathBuf>,
    /// Directory that holds each torrent's file or top-level folder.
    dir: PathBuf,
    #[command(flatten)]
    seed_limit: SeedLimitArgs,
    #[command(flatten)]
    swarm: SwarmArgs,
}

/// When seeding stops by itself (`download` and `seed`; each torrent on its own).
#[derive(clap::Args)]
struct SeedLimitArgs {
    /// Seed until the share ratio (uploaded over downloaded, or over the torrent's size for
    /// a seed that downloaded nothing) reaches R, e.g. 2 or 1.5, then stop; for `download`
    /// it implies --seed.
    #[arg(long, value_name = "R", value_parser = parse_ratio)]
    seed_ratio: Option<f64>,
    /// Seed for this long once the torrent is complete (e.g. 90s, 30m, 12h, 2d), then stop;
    /// for `download` it implies --seed. With --seed-ratio, whichever comes first.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    seed_time: Option<Duration>,
}

impl SeedLimitArgs {
    fn limit(&self) -> SeedLimit {
        SeedLimit {
            ratio: self.seed_ratio,
            time: self.seed_time,
        }
    }
}

fn session_config(out_dir: PathBuf, swarm: &SwarmArgs) -> SessionConfig {
    SessionConfig {
        out_dir,
        peers: swarm.peers.clone(),
        listen: SocketAddr::new(swarm.listen_ip, swarm.listen_port),
        max_peers: swarm.max_peers,
        upload_slots: swarm.upload_slots,
        upload_limit: (swarm.upload_limit > 0).then_some(swarm.upload_limit),
        use_trackers: !swarm.no_trackers,
        pex: !swarm.no_pex,
        web_seeds: !swarm.no_web_seeds,
        dht: (swarm.dht || !swarm.dht_bootstrap.is_empty()).then(|| DhtConfig {
            bind: SocketAddr::new(swarm.listen_ip, swarm.listen_port),
            bootstrap: if swarm.dht_bootstrap.is_empty() {
                PUBLIC_BOOTSTRAP.iter().map(|s| s.to_string()).collect()
            } else {
                swarm.dht_bootstrap.clone()
            },
        }),
        ..SessionConfig::default()
    }
}

pub fn run_download(args: DownloadArgs) -> anyhow::Result<i32> {
    let source = Source::parse(&args.torrent)?;
    let mut config = session_config(args.output.clone(), &args.swarm);
    config.seed_limit = args.seed_limit.limit();
    config.seed = args.seed || config.seed_limit != SeedLimit::default();
    config.memory_limit = args.memory_limit as usize;
    config.download_limit = (args.download_limit > 0).then_some(args.download_limit);
    config.preallocate = !args.sparse;
    config.sequential = args.sequential;
    config.write_mode = args.write_mode;
    config.resume_interval = Duration::from_secs(args.resume_interval);
    let magnet = match source {
        Source::File(meta) => {
            config.selection = selection_of(&meta, args.only.as_ref().map(|l| l.0.as_slice()))?;
            return crate::runtime::start(download(Arc::new(meta), config, &args));
        }
        Source::Magnet(magnet) => magnet,
    };
    add_peers(&mut config.peers, &magnet.peers);
    let only = (args.only.as_ref().map(|l| l.0.as_slice())).or(magnet.select_only.as_deref());
    if let Some(meta) = saved_metainfo(&args.output, &magnet) {
        config.selection = selection_of(&meta, only)?;
        return crate::runtime::start(download(Arc::new(meta), config, &args));
    }
    if config.listen.port() == 0 {
        // Trackers are told the port before the session binds it.
        let probe = crate::net::BoundSocket::bind(config.listen)
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
        config.listen.set_port(probe.local_addr()?.port());
    }
    crate::runtime::start(async {
        let fetched = fetch_and_save(&magnet, &config, args.swarm.quiet, interrupted()).await?;
        let Some((meta, peers)) = fetched else {
            return Ok(say_if_interrupted(INTERRUPTED));
        };
        add_peers(&mut config.peers, &peers);
        config.selection = selection_of(&meta, only)?;
        download(Arc::new(meta), config, &args).await
    })
}

/// Runs the download session for `meta` and prints its end.
async fn download(
    meta: Arc<Metainfo>,
    config: SessionConfig,
    args: &DownloadArgs,
) -> anyhow::Result<i32> {
    let verb = "downloading".to_string();
    let display = Display::new(args.swarm.quiet, meta.info.total_length, verb);
    let notice = VerifiedNotice::new(args.json, args.swarm.quiet, meta.info.total_length);
    let report = session::run(Arc::clone(&meta), config, |p| {
        display.show(p);
        notice.observe(p, &display);
    })
    .await?;
    display.finish();
    print_report(&report, &meta, args.stats, args.json);
    Ok(say_if_interrupted(exit_code(&report)))
}

/// The file indices and ranges of `--only`.
#[derive(Clone, Debug)]
struct FileList(Vec<RangeInclusive<u32>>);

fn parse_only(text: &str) -> Result<FileList, String> {
    crate::selection::parse_ranges(text)
        .map(FileList)
        .map_err(|e| e.to_string())
}

/// The files `only` names in `meta` (None: every file); naming a file the torrent does not
/// have is bad input.
fn selection_of(
    meta: &Metainfo,
    only: Option<&[RangeInclusive<u32>]>,
) -> Result<Option<Selection>, BadInput> {
    let Some(ranges) = only else {
        return Ok(None);
    };
    Selection::from_ranges(ranges, meta.info.files.len())
        .map(Some)
        .map_err(|e| BadInput(format!("--only / so=: {e}")))
}

/// Appends the peers of `more` that `peers` lacks.
fn add_peers(peers: &mut Vec<SocketAddr>, more: &[SocketAddr]) {
    for p in more {
        if !peers.contains(p) {
            peers.push(*p);
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn interrupted() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).ok();
    let terminated = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminated => {}
    }
}

pub fn run_seed(args: SeedArgs) -> anyhow::Result<i32> {
    let mut metas: Vec<Arc<Metainfo>> = Vec::new();
    for path in &args.torrents {
        let meta = Arc::new(load_torrent(path)?);
        if metas.iter().any(|m| m.info_hash == meta.info_hash) {
            return Err(BadInput(format!(
                "{}: the same torrent is given twice",
                path.display()
            ))
            .into());
        }
        metas.push(meta);
    }
    let mut config = session_config(args.dir.clone(), &args.swarm);
    config.seed = true;
    config.seed_limit = args.seed_limit.limit();
    let total = metas.iter().map(|m| m.info.total_length).sum();
    let verb = match metas.len() {
        1 => "seeding".to_string(),
        n => format!("seeding {n} torrents:"),
    };
    let display = Display::new(args.swarm.quiet, total, verb);
    // Each torrent counts its size from the start, so that the total is never partial.
    let mut each: Vec<Progress> = metas
        .iter()
        .map(|m| Progress {
            total_bytes: m.info.total_length,
            ..Progress::default()
        })
        .collect();
    let run = session::run_many(metas.clone(), config, |i, p| {
        each[i] = p.clone();
        display.show(&Progress::sum(&each));
    });
    let reports = crate::runtime::start(run)?;
    display.finish();
    let (mut failed, mut interrupted) = (false, false);
    for (meta, report) in metas.iter().zip(reports) {
        match report {
            Ok(r) if exit_code(&r) == INTERRUPTED => interrupted = true,
            Ok(_) => {}
            Err(e) => {
                eprintln!("spate: {}: {e}", meta.info.name);
                failed = true;
            }
        }
    }
    Ok(if failed {
        1
    } else if interrupted {
        say_if_interrupted(INTERRUPTED)
    } else {
        0
    })
}

fn exit_code(report: &Report) -> i32 {
    match report.ending {
        Ending::Complete => 0,
        Ending::Interrupted => INTERRUPTED,
    }
}

/// Exit code of a run stopped by SIGINT/SIGTERM before it completed, as shells report it.
const INTERRUPTED: i32 = 130;

/// Tells the user how to go on after an interruption; returns `code`.
fn say_if_interrupted(code: i32) -> i32 {
    if code == INTERRUPTED {
        eprintln!("spate: interrupted; progress saved, run the same command to resume");
    }
    code
}

fn print_report(report: &Report, meta: &crate::metainfo::Metainfo, stats: bool, as_json: bool) {
    let secs = report.elapsed.as_secs_f64().max(1e-9);
    let got = report.progress.downloaded;
    if as_json {
        let v = json!({
            "name": meta.info.name,
            "info_hash": meta.info_hash.to_hex(),
            "complete": report.ending == Ending::Complete,
            "total_bytes": meta.info.total_length,
            "wanted_bytes": report.progress.total_bytes,
            "downloaded_bytes": got,
            "uploaded_bytes": report.progress.uploaded,
            "wall_s": secs,
            "mb_s": got as f64 / secs / 1e6,
            "hash_failures": report.hash_failures,
            "pieces_lost": report.pieces_lost,
            "peers_dropped": report.peers_dropped,
            "peers_banned": report.peers_banned,
            "direct_bytes": report.direct_bytes,
            "reread_bytes": report.reread_bytes,
            "wasted_bytes": report.wasted_bytes,
            "request_messages": report.request_messages,
            "peers_from_pex": report.peers_from_pex,
            "web_seed_bytes": report.web_seed_bytes,
            "peak_rss_mib": peak_rss_mib(),
            "latency": report.stats_json,
        });
        println!("{v}");
    } else if stats {
        println!(
            "downloaded {} in {:.2} s: {:.1} MB/s ({} hash failures, {} peers dropped)",
            human_bytes(got),
            secs,
            got as f64 / secs / 1e6,
            report.hash_failures,
            report.peers_dropped
        );
        if report.web_seed_bytes > 0 {
            println!("from web seeds: {}", human_bytes(report.web_seed_bytes));
        }
        for line in &report.stats_lines {
            println!("{line}");
        }
    }
}

/// This process's peak resident memory (VmHWM), in MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Says once, the moment every piece is verified, that the download is complete: with
/// `--json` as a line `{"event":"verified",...}` on stdout (the end-of-run object follows
/// when the run ends), otherwise as a message unless quiet. The closing flush to disk and
/// the resume save come after it; the process exits once they are done.
struct VerifiedNotice {
    started: Instant,
    said: std::cell::Cell<bool>,
    json: bool,
    quiet: bool,
    /// The torrent's size (what is verified may be a selection of its files).
    total_bytes: u64,
}

impl VerifiedNotice {
    fn new(json: bool, quiet: bool, total_bytes: u64) -> VerifiedNotice {
        VerifiedNotice {
            started: Instant::now(),
            said: std::cell::Cell::new(false),
            json,
            quiet,
            total_bytes,
        }
    }

    fn observe(&self, p: &Progress, display: &Display) {
        if self.said.get() || p.checking.is_some() || p.have_bytes < p.total_bytes {
            return;
        }
        self.said.set(true);
        let secs = self.started.elapsed().as_secs_f64();
        if self.json {
            let unix_s = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            println!(
                "{}",
                json!({"event": "verified", "wall_s": secs, "unix_s": unix_s,
                    "total_bytes": self.total_bytes, "wanted_bytes": p.total_bytes})
            );
        } else if !self.quiet {
            display.say(&format!(
                "spate: all {} verified after {secs:.2} s; flushing to disk",
                human_bytes(p.total_bytes)
            ));
        }
    }
}

/// A progress bar on a terminal, a plain line every 5 s otherwise, nothing when quiet.
struct Display {
    bar: Option<ProgressBar>,
    quiet: bool,
    last_line: std::cell::Cell<Instant>,
    /// The latest plain progress line, when it has not been printed (lines are printed
    /// every 5 s at most): `finish` prints it, so the last line is the final state.
    unprinted: std::cell::RefCell<Option<String>>,
    verb: String,
}

impl Display {
    fn new(quiet: bool, total: u64, verb: String) -> Display {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>11} [{bar:30.cyan/blue}] {bytes}/{total_bytes} {msg} eta {eta}",
                )
                .expect("the template is valid")
                .progress_chars("=> "),
            );
            bar.set_prefix(verb.clone());
            bar
        });
        Display {
            bar,
            quiet,
            last_line: std::cell::Cell::new(Instant::now() - Duration::from_secs(10)),
            unprinted: std::cell::RefCell::new(None),
            verb,
        }
    }

    fn show(&self, p: &Progress) {
        let rates = format!(
            "down {}/s up {}/s peers {} uploaded {} ratio {:.2}",
            human_bytes(p.download_rate as u64),
            human_bytes(p.upload_rate as u64),
            p.peers,
            human_bytes(p.uploaded),
            p.share_ratio()
        );
        if let Some(bar) = &self.bar {
            if let Some((done, count)) = p.checking {
                bar.set_prefix("checking");
                bar.set_message(format!("{done}/{count} pieces"));
            } else {
                bar.set_prefix(self.verb.clone());
                bar.set_message(rates);
                bar.set_length(p.total_bytes); // the chosen files' pieces, with --only
            }
            bar.set_position(p.have_bytes);
            return;
        }
        if self.quiet {
            return;
        }
        let pct = 100.0 * p.have_bytes as f64 / p.total_bytes.max(1) as f64;
        let line = format!(
            "spate: {} {pct:5.1}% of {}, {rates}",
            self.verb,
            human_bytes(p.total_bytes)
        );
        if self.last_line.get().elapsed() < Duration::from_secs(5) {
            *self.unprinted.borrow_mut() = Some(line);
            return;
        }
        self.last_line.set(Instant::now());
        *self.unprinted.borrow_mut() = None;
        eprintln!("{line}");
    }

    /// A message that does not tear the progress bar.
    fn say(&self, message: &str) {
        match &self.bar {
            Some(bar) => bar.println(message),
            None => eprintln!("{message}"),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        if let Some(line) = self.unprinted.take() {
            eprintln!("{line}");
        }
    }
}
