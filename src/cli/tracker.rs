//! `spate tracker`: run the built-in tracker (HTTP, and UDP if asked) until Ctrl-C or
//! SIGTERM. Maps the flags onto `TrackerServerConfig`; the serving is `tracker_server`'s.

use super::BadInput;
use crate::tracker::ServerConfig;
use crate::tracker_server::{load_whitelist, BoundTracker, TrackerServerConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Notify;

#[derive(clap::Args)]
pub struct TrackerArgs {
    /// Address for HTTP announces and scrapes (/announce, /scrape); port 0 picks a free port.
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,
    /// Also answer UDP tracker requests (BEP 15) on this address.
    #[arg(long, value_name = "ADDR")]
    udp: Option<SocketAddr>,
    /// Track only the info-hashes in FILE: 40 hex digits a line, '#' starts a comment.
    #[arg(long, value_name = "FILE")]
    whitelist: Option<PathBuf>,
    /// Seconds between announces asked of clients; peers silent for two intervals are dropped.
    #[arg(long, value_name = "SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u32).range(1..=86_400))]
    interval: u32,
}

pub fn run(args: TrackerArgs) -> anyhow::Result<i32> {
    let whitelist = match &args.whitelist {
        Some(path) => Some(load_whitelist(path).map_err(|e| BadInput(e.to_string()))?),
        None => None,
    };
    let config = TrackerServerConfig {
        http: Some(args.listen),
        udp: args.udp,
        state: ServerConfig {
            interval: args.interval,
            whitelist,
            ..ServerConfig::default()
        },
    };
    let bound = BoundTracker::bind(&config)?;
    crate::runtime::start(async move {
        let shutdown = Rc::new(Notify::new());
        // Signals are caught before the addresses are printed: whoever reads them may stop
        // us at once, and must get the clean stop.
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let stop = Rc::clone(&shutdown);
        tokio::task::spawn_local(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            stop.notify_one();
        });
        print_addresses(&bound);
        bound.serve(shutdown).await
    })?;
    eprintln!("spate: tracker stopped");
    Ok(130)
}

/// The announce URLs, on stderr, one a line; scripts read the real ports from here.
fn print_addresses(bound: &BoundTracker) {
    if let Some(addr) = bound.http_addr() {
        eprintln!("spate: tracker listening on http://{addr}/announce");
    }
    if let Some(addr) = bound.udp_addr() {
        eprintln!("spate: tracker listening on udp://{addr}/announce");
    }
}
