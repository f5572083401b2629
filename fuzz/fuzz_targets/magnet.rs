//! Fuzz target: `Magnet::parse` on arbitrary UTF-8, both as given and behind the
//! "magnet:?" prefix (so the fuzzer need not find the prefix first). It must never panic, and
//! an accepted link must have an info-hash, capped lists and well-ordered `so` ranges.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spate::magnet::Magnet;

/// The parser's per-list cap (MAX_LIST_ITEMS in magnet.rs).
const CAP: usize = 200;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check(text);
    check(&format!("magnet:?{text}"));
});

fn check(uri: &str) {
    let Ok(m) = Magnet::parse(uri) else {
        return;
    };
    assert!(m.info_hash.is_some());
    assert!(m.trackers.len() <= CAP && m.web_seeds.len() <= CAP && m.peers.len() <= CAP);
    if let Some(ranges) = &m.select_only {
        assert!(ranges.len() <= CAP);
        assert!(ranges.iter().all(|r| r.start() <= r.end()));
    }
}
