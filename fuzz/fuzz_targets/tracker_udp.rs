//! Fuzz target: the UDP tracker packets (BEP 15) on both sides, and the built-in tracker's
//! HTTP query parsers. Client side: `decode_connect_response`, `decode_announce_response`
//! (IPv4 and IPv6 peers) and `decode_scrape_response`, with the transaction id taken from the
//! packet so the body gets parsed (and a fixed one, for the mismatch path). Server side:
//! `decode_udp_request`, whose requests must round-trip through the client encoders, and
//! `parse_announce_query` / `parse_scrape_query` / `query_wants_compact` on the input read as
//! lossy UTF-8. Nothing may panic; accepted values must respect their bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spate::tracker::{
    decode_announce_response, decode_connect_response, decode_scrape_response, decode_udp_request,
    encode_announce, encode_connect, encode_scrape_request, parse_announce_query,
    parse_scrape_query, query_wants_compact, AnnounceRequest, UdpRequest, MAX_INTERVAL,
    MAX_PEERS_PER_RESPONSE, MAX_SCRAPE_HASHES, MIN_INTERVAL,
};
use spate::types::InfoHash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

fuzz_target!(|data: &[u8]| {
    client_side(data);
    server_side(data);
    queries(data);
});

fn client_side(data: &[u8]) {
    let packet_tid = data
        .get(4..8)
        .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    for tid in [packet_tid, 0x1234_5678] {
        let _ = decode_connect_response(data, tid);
        for ipv6 in [false, true] {
            if let Ok(r) = decode_announce_response(data, tid, ipv6) {
                assert!((MIN_INTERVAL..=MAX_INTERVAL).contains(&r.interval));
                assert!(r.peers.len() <= MAX_PEERS_PER_RESPONSE);
                assert!(r.peers.iter().all(|p| p.port() != 0 && p.is_ipv6() == ipv6));
            }
        }
        let hashes: Vec<InfoHash> = (0..MAX_SCRAPE_HASHES as u8)
            .map(|i| InfoHash([i; 20]))
            .collect();
        if let Ok(entries) = decode_scrape_response(data, tid, &hashes) {
            let available = data.len().saturating_sub(8) / 12;
            assert_eq!(entries.len(), available.min(hashes.len()));
            assert!(entries.iter().zip(&hashes).all(|(e, h)| e.info_hash == *h));
        }
    }
}

fn server_side(data: &[u8]) {
    let Ok(req) = decode_udp_request(data) else {
        return;
    };
    let remote = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    assert_eq!(
        req.to_server_announce(remote).is_some(),
        matches!(req, UdpRequest::Announce { .. })
    );
    // What was decoded re-encodes (with the client's encoders) to a packet that decodes back to
    // the same request. The bytes may differ: the ignored IP field and BEP 41 options.
    let encoded = match &req {
        UdpRequest::Connect { tid } => {
            assert_eq!(req.conn_id(), None);
            let packet = encode_connect(*tid);
            assert_eq!(&packet[..], &data[..16]);
            packet.to_vec()
        }
        UdpRequest::Announce {
            conn_id,
            tid,
            info_hash,
            peer_id,
            downloaded,
            left,
            uploaded,
            event,
            key,
            numwant,
            port,
        } => {
            assert_eq!(req.conn_id(), Some(*conn_id));
            let a = AnnounceRequest {
                info_hash: *info_hash,
                peer_id: *peer_id,
                port: *port,
                uploaded: *uploaded,
                downloaded: *downloaded,
                left: *left,
                event: *event,
                numwant: *numwant,
                key: *key,
                tracker_id: None,
            };
            encode_announce(*conn_id, *tid, &a).to_vec()
        }
        UdpRequest::Scrape {
            conn_id,
            tid,
            hashes,
        } => {
            assert!((1..=MAX_SCRAPE_HASHES).contains(&hashes.len()));
            encode_scrape_request(*conn_id, *tid, hashes).expect("at most MAX_SCRAPE_HASHES")
        }
    };
    assert_eq!(decode_udp_request(&encoded).as_ref(), Ok(&req));
}

fn queries(data: &[u8]) {
    let query = String::from_utf8_lossy(data);
    let remotes = [
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)),
        IpAddr::V6(Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped()),
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7)),
    ];
    for remote in remotes {
        if let Ok(a) = parse_announce_query(&query, remote) {
            assert_ne!(a.addr.port(), 0);
            assert_eq!(
                a.addr.ip(),
                remote.to_canonical(),
                "the announced address is not the sender's"
            );
        }
    }
    if let Ok(hashes) = parse_scrape_query(&query) {
        assert!(
            !hashes.is_empty() && hashes.len() <= spate::tracker::server::MAX_HTTP_SCRAPE_HASHES
        );
    }
    let _ = query_wants_compact(&query);
}
