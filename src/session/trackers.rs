//! The session's tracker task: announces `started`, then re-announces on the trackers'
//! interval (with backoff on failures), announces `completed` when the download finishes,
//! and `stopped` when the session ends; every peer list goes to the peer source.

use super::peers::PeerSource;
use crate::announce::{http_client, AnnounceConfig, Announcer, HttpConfig, TransferStats};
use crate::metainfo::Metainfo;
use crate::tracker::Event;
use crate::types::PeerId;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// How long the final `stopped` announce may take before the session exits anyway.
pub const STOP_ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(5);

/// Signals from the session to its tracker task.
#[derive(Default)]
pub struct TrackerSignals {
    pub completed: Notify,
    pub stop: Notify,
}

/// Runs until told to stop; returns after the `stopped` announce (or its timeout).
pub async fn announce_loop(
    meta: Arc<Metainfo>,
    peer_id: PeerId,
    port: u16,
    source: Rc<PeerSource>,
    signals: Rc<TrackerSignals>,
) {
    let client = match http_client(&HttpConfig::default()) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "trackers disabled");
            return;
        }
    };
    let config = AnnounceConfig::new(meta.info_hash, peer_id, port);
    let mut announcer = Announcer::new(config, meta.trackers.clone(), client);
    let mut event = Event::Started;
    loop {
        match announcer.announce(event, source.transfer_stats()).await {
            Ok(outcome) => {
                tracing::debug!(tracker = %outcome.tracker, peers = outcome.peers.len(), "announced");
                source.add(outcome.peers);
                event = Event::None;
            }
            Err(e) => tracing::warn!(error = %e, "announce failed"),
        }
        let delay = announcer.next_announce_delay(Instant::now());
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = signals.completed.notified() => event = Event::Completed,
            _ = signals.stop.notified() => break,
        }
    }
    let stopped = announcer.announce(Event::Stopped, source.transfer_stats());
    let _ = tokio::time::timeout(STOP_ANNOUNCE_TIMEOUT, stopped).await;
}

impl PeerSource {
    /// What trackers are told: bytes sent and received this session, bytes still missing.
    pub fn transfer_stats(&self) -> TransferStats {
        let t = self.torrent();
        let total = t.layout().total_length();
        TransferStats {
            uploaded: t.stats.uploaded,
            downloaded: t.stats.downloaded,
            left: total - t.bytes_have(),
        }
    }
}
