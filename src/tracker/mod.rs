//! Tracker protocols, without any I/O: building HTTP announce/scrape URLs (BEP 3, 48), parsing
//! tracker replies (BEP 3, 7, 23), the UDP tracker packets (BEP 15) and the pure core of a
//! built-in tracker (`server`, with the small HTTP request reader it needs in `http_request`).
//! This module owns the shared `TrackerError` and the announce `Event`.
//! Callers own the sockets and the clock: time comes in as `Instant` or plain numbers.

pub mod announce;
pub mod http_request;
pub mod response;
pub mod server;
pub mod udp;

pub use announce::{http_announce_url, http_scrape_url, percent_encode, AnnounceRequest};
pub use http_request::{
    http_response, parse_request_head, HttpError, RequestHead, MAX_REQUEST_HEAD,
};
pub use response::{
    parse_announce_response, parse_scrape_response, AnnounceResponse, ScrapeEntry,
    DEFAULT_INTERVAL, MAX_BODY_LEN, MAX_INTERVAL, MAX_NESTING, MAX_PEERS_PER_RESPONSE,
    MIN_INTERVAL,
};
pub use server::{
    decode_udp_request, encode_announce_reply, encode_failure, encode_scrape,
    encode_udp_announce_reply, encode_udp_connect_reply, encode_udp_error, encode_udp_scrape_reply,
    parse_announce_query, parse_scrape_query, parse_whitelist, query_wants_compact,
    udp_connection_id, udp_connection_id_valid, ServerAnnounce, ServerConfig, ServerPeer,
    ServerReply, TrackerState, UdpRequest, WhitelistError,
};
pub use udp::{
    decode_announce_response, decode_connect_response, decode_scrape_response, encode_announce,
    encode_connect, encode_scrape_request, retry_timeout, UdpConnectionCache, ANNOUNCE_REQUEST_LEN,
    CONNECTION_ID_LIFETIME, MAX_SCRAPE_HASHES, PROTOCOL_ID,
};

/// Everything that can go wrong talking to a tracker or decoding what one sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrackerError {
    /// The tracker answered with a "failure reason" (HTTP) or an error packet (UDP).
    #[error("tracker refused the request: {0}")]
    Failure(String),
    /// The reply could be read but a field is missing or wrong; the string names the field.
    #[error("malformed tracker reply: {0}")]
    Malformed(String),
    /// The reply is not valid bencode at all.
    #[error("tracker reply is not valid bencode: {0}")]
    InvalidBencode(String),
    /// The body is longer than we are willing to parse.
    #[error("tracker reply is {0} bytes, more than the {max} we accept", max = MAX_BODY_LEN)]
    TooLarge(usize),
    /// The bencode nests deeper than any tracker reply needs.
    #[error("tracker reply nests deeper than {} levels", MAX_NESTING)]
    TooDeep,
    /// A UDP packet is shorter than its fixed header.
    #[error("packet is {got} bytes, need at least {need}")]
    Truncated { got: usize, need: usize },
    /// A UDP reply answers another request than the one we sent.
    #[error("transaction id mismatch: sent {expected:#010x}, got {got:#010x}")]
    TransactionMismatch { expected: u32, got: u32 },
    /// A UDP packet carries an action we did not expect here.
    #[error("unexpected action {0} in packet")]
    UnexpectedAction(u32),
    /// A UDP connect request without the BEP 15 magic number.
    #[error("connect request lacks the protocol id")]
    BadProtocolId,
    /// More info-hashes in one scrape than one UDP packet may carry.
    #[error("{0} info-hashes in one scrape, at most {max} allowed", max = MAX_SCRAPE_HASHES)]
    TooManyHashes(usize),
}

/// The `event` of an announce. `None` is the regular, periodic announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Event {
    #[default]
    None,
    Started,
    Completed,
    Stopped,
}

impl Event {
    /// The value of the HTTP `event` parameter; `None` for the regular announce, which sends
    /// no parameter at all.
    pub fn as_http(self) -> Option<&'static str> {
        match self {
            Event::None => Option::None,
            Event::Started => Some("started"),
            Event::Completed => Some("completed"),
            Event::Stopped => Some("stopped"),
        }
    }

    /// Reads an HTTP `event` value. Empty, "empty" and unknown values are the regular announce.
    pub fn from_http(value: &[u8]) -> Event {
        match value {
            b"started" => Event::Started,
            b"completed" => Event::Completed,
            b"stopped" => Event::Stopped,
            _ => Event::None,
        }
    }

    /// The BEP 15 number: none 0, completed 1, started 2, stopped 3.
    pub fn udp_code(self) -> u32 {
        match self {
            Event::None => 0,
            Event::Completed => 1,
            Event::Started => 2,
            Event::Stopped => 3,
        }
    }

    /// Reads a BEP 15 event number; unknown numbers are the regular announce.
    pub fn from_udp(code: u32) -> Event {
        match code {
            1 => Event::Completed,
            2 => Event::Started,
            3 => Event::Stopped,
            _ => Event::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_codes_round_trip() {
        for e in [
            Event::None,
            Event::Started,
            Event::Completed,
            Event::Stopped,
        ] {
            assert_eq!(Event::from_udp(e.udp_code()), e);
            let http = e.as_http().unwrap_or("");
            assert_eq!(Event::from_http(http.as_bytes()), e);
        }
        assert_eq!(Event::Started.udp_code(), 2);
        assert_eq!(Event::from_http(b"bogus"), Event::None);
    }

    #[test]
    fn errors_say_what_happened() {
        let e = TrackerError::Failure("unregistered torrent".into());
        assert_eq!(
            e.to_string(),
            "tracker refused the request: unregistered torrent"
        );
        let e = TrackerError::TransactionMismatch {
            expected: 1,
            got: 2,
        };
        assert!(e.to_string().contains("0x00000001"));
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use crate::types::{InfoHash, PeerId};
    use proptest::collection::vec;
    use proptest::prelude::*;
    use proptest::sample::select;
    use std::net::IpAddr;
    use std::time::Instant;

    /// Bytes drawn mostly from the bencode alphabet, to get past the first byte checks.
    fn bencodeish() -> impl Strategy<Value = Vec<u8>> {
        vec(select(b"dlie0123456789:-peers".to_vec()), 0..300)
    }

    fn query_text() -> impl Strategy<Value = String> {
        vec(
            select(
                "info_hash=peer_id&port=left%0aF9G+event=numwantipé"
                    .chars()
                    .collect::<Vec<_>>(),
            ),
            0..200,
        )
        .prop_map(|cs| cs.into_iter().collect())
    }

    fn all_byte_decoders(bytes: &[u8], tid: u32, ipv6: bool) {
        let _ = parse_announce_response(bytes);
        let _ = parse_scrape_response(bytes);
        let _ = decode_connect_response(bytes, tid);
        let _ = decode_announce_response(bytes, tid, ipv6);
        let _ = decode_scrape_response(bytes, tid, &[InfoHash([0; 20]); 3]);
        if let Ok(req) = decode_udp_request(bytes) {
            let remote: IpAddr = [127, 0, 0, 1].into();
            if let Some(a) = req.to_server_announce(remote) {
                let mut state = TrackerState::with_seed(ServerConfig::default(), 0);
                let _ = state.announce(Instant::now(), a);
            }
        }
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in vec(any::<u8>(), 0..600), tid: u32, ipv6: bool) {
            all_byte_decoders(&bytes, tid, ipv6);
        }

        #[test]
        fn bencode_like_bytes_never_panic(bytes in bencodeish(), tid: u32, ipv6: bool) {
            all_byte_decoders(&bytes, tid, ipv6);
        }

        #[test]
        fn random_queries_never_panic(q in query_text(), v6: bool) {
            let remote: IpAddr = if v6 { "::1".parse().unwrap() } else { [10, 0, 0, 1].into() };
            let _ = parse_announce_query(&q, remote);
            let _ = parse_scrape_query(&q);
            let _ = query_wants_compact(&q);
        }

        #[test]
        fn http_reply_round_trips(
            raw in vec((any::<[u8; 16]>(), any::<bool>(), 1u16..), 0..60),
            compact: bool, complete: u32, incomplete: u32,
        ) {
            let peers: Vec<ServerPeer> = raw
                .iter()
                .map(|(ip, v6, port)| {
                    let ip: IpAddr = if *v6 {
                        std::net::Ipv6Addr::from(*ip).into()
                    } else {
                        [ip[0], ip[1], ip[2], ip[3]].into()
                    };
                    ServerPeer { peer_id: PeerId(*b"-SP0100-abcdefghijkl"), addr: (ip, *port).into() }
                })
                .collect();
            let reply = ServerReply { interval: 60, complete, incomplete, peers };
            let parsed = parse_announce_response(&encode_announce_reply(&reply, compact));
            let parsed = parsed.map_err(|e| TestCaseError::fail(e.to_string()))?;
            let mut want: Vec<_> = reply.peers.iter().map(|p| p.addr).collect();
            let mut got = parsed.peers;
            want.sort();
            got.sort();
            prop_assert_eq!(got, want);
            prop_assert_eq!((parsed.complete, parsed.incomplete), (Some(complete), Some(incomplete)));
        }

        #[test]
        fn udp_announce_round_trips(
            hash: [u8; 20], id: [u8; 20], port: u16, up: u64, down: u64, left: u64,
            event in select(vec![Event::None, Event::Started, Event::Completed, Event::Stopped]),
            numwant in proptest::option::of(0u32..=i32::MAX as u32), key: u32, conn: u64, tid: u32,
        ) {
            let req = AnnounceRequest {
                info_hash: InfoHash(hash), peer_id: PeerId(id), port, uploaded: up,
                downloaded: down, left, event, numwant, key, tracker_id: None,
            };
            let decoded = decode_udp_request(&encode_announce(conn, tid, &req));
            let want = UdpRequest::Announce {
                conn_id: conn, tid, info_hash: InfoHash(hash), peer_id: PeerId(id),
                downloaded: down, left, uploaded: up, event, key, numwant, port,
            };
            prop_assert_eq!(decoded, Ok(want));
        }
    }
}
