//! Counters and latency histograms of one torrent: request-to-block latency, disk write
//! latency and piece verification time (hdrhistogram), plus byte totals. Printed by
//! `--stats` and `spate bench`.

use hdrhistogram::Histogram;
use serde_json::json;
use std::time::Duration;

/// Microsecond histograms with 3 significant digits, up to 1 hour.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static histogram bounds are valid")
}

pub struct Stats {
    pub request_to_block: Histogram<u64>,
    pub disk_write: Histogram<u64>,
    pub piece_verify: Histogram<u64>,
    /// Payload bytes received in accepted blocks.
    pub downloaded: u64,
    /// Payload bytes sent in PIECE messages.
    pub uploaded: u64,
    /// Bytes in pieces that passed their hash check this session.
    pub verified: u64,
    pub hash_failures: u32,
    /// Peers disconnected for breaking the protocol.
    pub peers_dropped: u32,
    pub peers_banned: u32,
    /// Payload bytes of blocks that came when no longer wanted: endgame copies that lost the
    /// race, blocks asked for again elsewhere after a choke or timeout.
    pub wasted_bytes: u64,
    /// Pieces we had that could no longer be read from disk.
    pub pieces_lost: u32,
    /// Bytes read back from disk to finish a piece's hash (blocks that arrived out of order).
    pub reread_bytes: u64,
    /// REQUEST messages sent (one may cover several blocks, see `blocks_per_request`).
    pub request_messages: u64,
    /// Peer addresses peers told us about (BEP 11) and we kept to dial.
    pub peers_from_pex: u32,
    /// Bytes of new blocks that came from web seeds (BEP 19, through their bridges).
    pub web_seed_bytes: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            request_to_block: histogram(),
            disk_write: histogram(),
            piece_verify: histogram(),
            downloaded: 0,
            uploaded: 0,
            verified: 0,
            hash_failures: 0,
            peers_dropped: 0,
            peers_banned: 0,
            wasted_bytes: 0,
            pieces_lost: 0,
            reread_bytes: 0,
            request_messages: 0,
            peers_from_pex: 0,
            web_seed_bytes: 0,
        }
    }
}

pub fn record(h: &mut Histogram<u64>, d: Duration) {
    let _ = h.record((d.as_micros() as u64).max(1));
}

fn percentiles(h: &Histogram<u64>) -> serde_json::Value {
    let ms = |us: u64| us as f64 / 1000.0;
    json!({
        "count": h.len(),
        "p50_ms": ms(h.value_at_quantile(0.5)),
        "p90_ms": ms(h.value_at_quantile(0.9)),
        "p99_ms": ms(h.value_at_quantile(0.99)),
        "max_ms": ms(h.max()),
    })
}

impl Stats {
    pub fn latency_json(&self) -> serde_json::Value {
        json!({
            "request_to_block": percentiles(&self.request_to_block),
            "disk_write": percentiles(&self.disk_write),
            "piece_verify": percentiles(&self.piece_verify),
        })
    }

    /// Lines like "request->block  p50 1.2 ms  p90 ...", one per histogram.
    pub fn latency_lines(&self) -> Vec<String> {
        let rows = [
            ("request->block", &self.request_to_block),
            ("disk write", &self.disk_write),
            ("piece verify", &self.piece_verify),
        ];
        rows.iter()
            .map(|(name, h)| {
                let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
                format!(
                    "{name:<15} p50 {:>8.3} ms  p90 {:>8.3} ms  p99 {:>8.3} ms  max {:>8.3} ms  (n={})",
                    ms(0.5),
                    ms(0.9),
                    ms(0.99),
                    h.max() as f64 / 1000.0,
                    h.len()
                )
            })
            .collect()
    }
}
