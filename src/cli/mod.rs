//! The command line: argument parsing (clap) and one module per subcommand. No protocol or
//! storage logic lives here; the subcommands call the library and print what it returns.

mod bench;
mod create;
mod download;
mod info;
mod progress;
mod source;
mod tracker;
mod units;
mod verify;

use clap::{Parser, Subcommand};

/// Input the user gave that cannot be used (a bad .torrent, a missing path): exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

#[derive(Parser)]
#[command(
    name = "spate",
    version,
    about = "A fast BitTorrent client for Linux, built on io_uring"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show what a .torrent file or magnet link holds.
    Info(info::InfoArgs),
    /// Make a .torrent from a file or a directory.
    Create(create::CreateArgs),
    /// Check downloaded data against a .torrent, piece by piece.
    Verify(verify::VerifyArgs),
    /// Download a torrent (a .torrent file or a magnet link) into a directory.
    Download(download::DownloadArgs),
    /// Serve a torrent's data to peers until interrupted.
    Seed(download::SeedArgs),
    /// Run a loopback swarm (1 seeder, K leechers) and report throughput and latencies.
    Bench(bench::BenchArgs),
    /// Run a BitTorrent tracker (HTTP, optionally UDP) until interrupted.
    Tracker(tracker::TrackerArgs),
}

/// Runs the command line and returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    init_logging();
    if matches!(
        cli.command,
        Command::Info(_) | Command::Create(_) | Command::Verify(_)
    ) {
        exit_quietly_on_closed_pipe();
    } else {
        raise_open_file_limit();
    }
    let result = match cli.command {
        Command::Info(a) => info::run(a),
        Command::Create(a) => create::run(a),
        Command::Verify(a) => verify::run(a),
        Command::Download(a) => download::run_download(a),
        Command::Seed(a) => download::run_seed(a),
        Command::Bench(a) => bench::run(a),
        Command::Tracker(a) => tracker::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("spate: {e:#}");
            if e.downcast_ref::<BadInput>().is_some() {
                2
            } else {
                1
            }
        }
    }
}

/// `spate info t.torrent | head` should end quietly when `head` exits, as `cat` does, not
/// panic on the failed print. Only for the commands without sockets: a peer closing its
/// connection must never kill a download.
fn exit_quietly_on_closed_pipe() {
    // SAFETY: restoring the default disposition of SIGPIPE before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Sessions hold a socket per peer and some files per torrent: lift the soft descriptor limit
/// (often 1024) to the hard one, as servers do. Best effort; the session's own caps still hold.
fn raise_open_file_limit() {
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Logs go to stderr, filtered by SPATE_LOG (e.g. `SPATE_LOG=debug`); warnings by default.
/// Colours only on a terminal (not in a file or a pipe) and never with NO_COLOR set.
fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("SPATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .init();
}

/// Reads and parses a .torrent file; every failure is bad input.
pub(crate) fn load_torrent(path: &std::path::Path) -> anyhow::Result<crate::metainfo::Metainfo> {
    let bytes = std::fs::read(path)
        .map_err(|e| BadInput(format!("cannot read {}: {e}", path.display())))?;
    crate::metainfo::Metainfo::from_bytes(&bytes)
        .map_err(|e| BadInput(format!("{}: {e}", path.display())).into())
}
