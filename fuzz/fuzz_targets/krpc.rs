//! Fuzz target: `dht::krpc::Krpc::parse` on arbitrary datagrams, as any host on the internet
//! may send a DHT node. It must never panic; a message it accepts must encode back to one that
//! parses the same, with bounded transaction ids, tokens and peer lists, and only usable
//! addresses (no port 0, no unspecified, broadcast or multicast address).
#![no_main]

use libfuzzer_sys::fuzz_target;
use spate::dht::krpc::{usable, Body, Krpc, Query};

fuzz_target!(|data: &[u8]| {
    let Ok(message) = Krpc::parse(data) else {
        return;
    };
    assert!(message.tid.len() <= 64, "transaction id of {} bytes", message.tid.len());
    match &message.body {
        Body::Response(r) => {
            assert!(r.values.len() <= 200, "{} peers", r.values.len());
            assert!(r.token.as_ref().is_none_or(|t| t.len() <= 64));
            assert!(r.values.iter().all(usable), "an unusable peer address");
            assert!(r.nodes.iter().all(|n| usable(&n.addr)), "an unusable node address");
        }
        Body::Query {
            query: Query::AnnouncePeer { token, .. },
            ..
        } => assert!(token.len() <= 64),
        _ => {}
    }
    let again = Krpc::parse(&message.encode()).expect("our own encoding parses");
    assert_eq!(again, message, "re-encoding changed the message");
});
