//! Fuzz target: the HTTP tracker reply parsers, `parse_announce_response` and
//! `parse_scrape_response`, on arbitrary bytes (a tracker's body). They must never panic, and
//! what they accept must respect their bounds: interval clamped, peers capped and with a
//! non-zero port, scrape entries capped and sorted by info-hash.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spate::tracker::response::MAX_SCRAPE_ENTRIES;
use spate::tracker::{
    parse_announce_response, parse_scrape_response, MAX_INTERVAL, MAX_PEERS_PER_RESPONSE,
    MIN_INTERVAL,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = parse_announce_response(data) {
        let range = MIN_INTERVAL..=MAX_INTERVAL;
        assert!(range.contains(&r.interval), "interval {}", r.interval);
        if let Some(min) = r.min_interval {
            assert!(range.contains(&min), "min interval {min}");
        }
        assert!(
            r.peers.len() <= MAX_PEERS_PER_RESPONSE,
            "{} peers",
            r.peers.len()
        );
        assert!(r.peers.iter().all(|p| p.port() != 0));
    }
    if let Ok(entries) = parse_scrape_response(data) {
        assert!(
            entries.len() <= MAX_SCRAPE_ENTRIES,
            "{} entries",
            entries.len()
        );
        assert!(entries.windows(2).all(|w| w[0].info_hash <= w[1].info_hash));
    }
});
