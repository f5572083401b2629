//! The UDP side of the tracker core (BEP 15): decoding connect, announce and scrape requests
//! and encoding the replies and error packets. The client side and the shared packet layout
//! live in `tracker::udp`; connection ids in `connection_id`.

use super::{ServerAnnounce, ServerReply, MAX_UDP_ERROR_LEN};
use crate::tracker::response::ScrapeEntry;
use crate::tracker::udp::{
    concat, Reader, ACTION_ANNOUNCE, ACTION_CONNECT, ACTION_ERROR, ACTION_SCRAPE,
    ANNOUNCE_REPLY_HEADER_LEN, MAX_SCRAPE_HASHES, PROTOCOL_ID, REPLY_HEADER_LEN, SCRAPE_ENTRY_LEN,
};
use crate::tracker::{Event, TrackerError};
use crate::types::{InfoHash, PeerId};
use std::net::{IpAddr, SocketAddr};

/// A decoded UDP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UdpRequest {
    Connect {
        tid: u32,
    },
    Announce {
        conn_id: u64,
        tid: u32,
        info_hash: InfoHash,
        peer_id: PeerId,
        downloaded: u64,
        left: u64,
        uploaded: u64,
        event: Event,
        key: u32,
        /// `None` when the client sent a negative number ("tracker's choice").
        numwant: Option<u32>,
        port: u16,
    },
    Scrape {
        conn_id: u64,
        tid: u32,
        /// 1 to `MAX_SCRAPE_HASHES`.
        hashes: Vec<InfoHash>,
    },
}

impl UdpRequest {
    /// The transaction id to echo in the reply.
    pub fn tid(&self) -> u32 {
        match self {
            UdpRequest::Connect { tid }
            | UdpRequest::Announce { tid, .. }
            | UdpRequest::Scrape { tid, .. } => *tid,
        }
    }

    /// The connection id to check; `None` for a connect request.
    pub fn conn_id(&self) -> Option<u64> {
        match self {
            UdpRequest::Connect { .. } => None,
            UdpRequest::Announce { conn_id, .. } | UdpRequest::Scrape { conn_id, .. } => {
                Some(*conn_id)
            }
        }
    }

    /// The announce for `TrackerState::announce`: the packet's source IP `remote` with the
    /// announced port (the packet's IP field is ignored). `None` unless this is an announce.
    pub fn to_server_announce(&self, remote: IpAddr) -> Option<ServerAnnounce> {
        let UdpRequest::Announce {
            info_hash,
            peer_id,
            left,
            event,
            numwant,
            port,
            ..
        } = self
        else {
            return None;
        };
        Some(ServerAnnounce {
            info_hash: *info_hash,
            peer_id: *peer_id,
            addr: SocketAddr::new(remote.to_canonical(), *port),
            left: *left,
            event: *event,
            numwant: *numwant,
        })
    }
}

/// Decodes a request packet. Bytes after a 98-byte announce (BEP 41 options) are ignored.
pub fn decode_udp_request(buf: &[u8]) -> Result<UdpRequest, TrackerError> {
    let mut r = Reader::new(buf);
    let conn_id = r.u64()?;
    let action = r.u32()?;
    let tid = r.u32()?;
    match action {
        ACTION_CONNECT if conn_id == PROTOCOL_ID => Ok(UdpRequest::Connect { tid }),
        ACTION_CONNECT => Err(TrackerError::BadProtocolId),
        ACTION_ANNOUNCE => decode_udp_announce(conn_id, tid, &mut r),
        ACTION_SCRAPE => decode_udp_scrape(conn_id, tid, r.rest()),
        other => Err(TrackerError::UnexpectedAction(other)),
    }
}

fn decode_udp_announce(
    conn_id: u64,
    tid: u32,
    r: &mut Reader<'_>,
) -> Result<UdpRequest, TrackerError> {
    let info_hash = InfoHash(r.array()?);
    let peer_id = PeerId(r.array()?);
    let downloaded = r.u64()?;
    let left = r.u64()?;
    let uploaded = r.u64()?;
    let event = Event::from_udp(r.u32()?);
    let _ip_ignored = r.u32()?;
    let key = r.u32()?;
    let numwant = u32::try_from(r.i32()?).ok();
    let port = r.u16()?;
    Ok(UdpRequest::Announce {
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
    })
}

fn decode_udp_scrape(conn_id: u64, tid: u32, rest: &[u8]) -> Result<UdpRequest, TrackerError> {
    if rest.is_empty() || !rest.len().is_multiple_of(20) {
        let why = format!("{} bytes is not a positive multiple of 20", rest.len());
        return Err(TrackerError::Malformed(format!(
            "scrape info-hashes: {why}"
        )));
    }
    let count = rest.len() / 20;
    if count > MAX_SCRAPE_HASHES {
        return Err(TrackerError::TooManyHashes(count));
    }
    let hashes = rest
        .chunks_exact(20)
        .map(|c| {
            let mut h = [0u8; 20];
            h.copy_from_slice(c);
            InfoHash(h)
        })
        .collect();
    Ok(UdpRequest::Scrape {
        conn_id,
        tid,
        hashes,
    })
}

/// The connect reply: action 0, transaction id, connection id.
pub fn encode_udp_connect_reply(tid: u32, conn_id: u64) -> [u8; 16] {
    concat(&[
        &ACTION_CONNECT.to_be_bytes(),
        &tid.to_be_bytes(),
        &conn_id.to_be_bytes(),
    ])
}

/// The announce reply. `ipv6` says whether the request came over IPv6: then peers are 18
/// bytes each and only IPv6 peers are listed, else 6 bytes and only IPv4 peers.
pub fn encode_udp_announce_reply(tid: u32, reply: &ServerReply, ipv6: bool) -> Vec<u8> {
    let per_peer = if ipv6 { 18 } else { 6 };
    let mut out = Vec::with_capacity(ANNOUNCE_REPLY_HEADER_LEN + per_peer * reply.peers.len());
    out.extend_from_slice(&ACTION_ANNOUNCE.to_be_bytes());
    out.extend_from_slice(&tid.to_be_bytes());
    out.extend_from_slice(&reply.interval.to_be_bytes());
    out.extend_from_slice(&reply.incomplete.to_be_bytes());
    out.extend_from_slice(&reply.complete.to_be_bytes());
    for p in reply.peers.iter().filter(|p| p.addr.is_ipv6() == ipv6) {
        crate::compact::put(&mut out, p.addr);
    }
    out
}

/// The scrape reply: seeders, completed, leechers for each entry, in order.
pub fn encode_udp_scrape_reply(tid: u32, entries: &[ScrapeEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(REPLY_HEADER_LEN + SCRAPE_ENTRY_LEN * entries.len());
    out.extend_from_slice(&ACTION_SCRAPE.to_be_bytes());
    out.extend_from_slice(&tid.to_be_bytes());
    for e in entries {
        out.extend_from_slice(&e.complete.to_be_bytes());
        out.extend_from_slice(&e.downloaded.to_be_bytes());
        out.extend_from_slice(&e.incomplete.to_be_bytes());
    }
    out
}

/// The error reply: action 3, transaction id, the message (cut to `MAX_UDP_ERROR_LEN` bytes
/// at a character boundary).
pub fn encode_udp_error(tid: u32, message: &str) -> Vec<u8> {
    let mut end = message.len().min(MAX_UDP_ERROR_LEN);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = Vec::with_capacity(REPLY_HEADER_LEN + end);
    out.extend_from_slice(&ACTION_ERROR.to_be_bytes());
    out.extend_from_slice(&tid.to_be_bytes());
    out.extend_from_slice(&message.as_bytes()[..end]);
    out
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::*;
    use super::*;
    use crate::tracker::announce::AnnounceRequest;
    use crate::tracker::udp::{
        decode_announce_response, decode_connect_response, decode_scrape_response, encode_announce,
        encode_connect, encode_scrape_request,
    };
    use std::time::Instant;

    #[test]
    fn udp_connect_round_trip() {
        let secret = [9u8; 16];
        let client: SocketAddr = "192.0.2.7:40000".parse().unwrap();
        let packet = encode_connect(0x1234_5678);
        let req = decode_udp_request(&packet).unwrap();
        assert_eq!(req, UdpRequest::Connect { tid: 0x1234_5678 });
        let id = udp_connection_id(&secret, client.ip(), 1000);
        let reply = encode_udp_connect_reply(req.tid(), id);
        assert_eq!(decode_connect_response(&reply, 0x1234_5678), Ok(id));
        assert_eq!(
            decode_connect_response(&reply, 0x1234_5679),
            Err(TrackerError::TransactionMismatch {
                expected: 0x1234_5679,
                got: 0x1234_5678
            })
        );
        let mut bad = packet;
        bad[0] ^= 1;
        assert_eq!(decode_udp_request(&bad), Err(TrackerError::BadProtocolId));
    }

    fn client_request() -> AnnounceRequest {
        AnnounceRequest {
            info_hash: hash(1),
            peer_id: pid(50),
            port: 7000,
            uploaded: 3,
            downloaded: 2,
            left: 1,
            event: Event::Started,
            numwant: Some(10),
            key: 0xfeed,
            tracker_id: None,
        }
    }

    #[test]
    fn udp_announce_round_trip() {
        let packet = encode_announce(77, 5, &client_request());
        let req = decode_udp_request(&packet).unwrap();
        let want = UdpRequest::Announce {
            conn_id: 77,
            tid: 5,
            info_hash: hash(1),
            peer_id: pid(50),
            downloaded: 2,
            left: 1,
            uploaded: 3,
            event: Event::Started,
            key: 0xfeed,
            numwant: Some(10),
            port: 7000,
        };
        assert_eq!(req, want);
        let mut s = state();
        let t = Instant::now();
        s.announce(t, ann(1, 1, 0, Event::None)).unwrap();
        let remote: IpAddr = [192, 0, 2, 50].into();
        let a = req.to_server_announce(remote).unwrap();
        assert_eq!(a.addr, "192.0.2.50:7000".parse().unwrap());
        let reply = s.announce(t, a).unwrap();
        let bytes = encode_udp_announce_reply(req.tid(), &reply, false);
        let mut expected = vec![0, 0, 0, 1, 0, 0, 0, 5, 0, 0, 0, 60, 0, 0, 0, 1, 0, 0, 0, 1];
        expected.extend_from_slice(&[10, 0, 0, 1, 0x1a, 0xe1]);
        assert_eq!(bytes, expected);
        let r = decode_announce_response(&bytes, 5, false).unwrap();
        assert_eq!(
            (r.interval, r.complete, r.incomplete),
            (60, Some(1), Some(1))
        );
        assert_eq!(r.peers, vec!["10.0.0.1:6881".parse().unwrap()]);
        assert!(matches!(
            decode_announce_response(&bytes, 6, false),
            Err(TrackerError::TransactionMismatch { .. })
        ));
    }

    #[test]
    fn udp_announce_reply_ipv6_lists_only_ipv6() {
        let bytes = encode_udp_announce_reply(1, &reply_with_peers(), true);
        let r = decode_announce_response(&bytes, 1, true).unwrap();
        assert_eq!(r.peers, vec!["[2001:db8::2]:51413".parse().unwrap()]);
    }

    #[test]
    fn udp_scrape_and_error_round_trip() {
        let hashes = [hash(1), hash(2)];
        let packet = encode_scrape_request(8, 9, &hashes).unwrap();
        let req = decode_udp_request(&packet).unwrap();
        let want = UdpRequest::Scrape {
            conn_id: 8,
            tid: 9,
            hashes: hashes.to_vec(),
        };
        assert_eq!(req, want);
        let mut s = state();
        s.announce(Instant::now(), ann(2, 1, 0, Event::Completed))
            .unwrap();
        let entries = s.scrape(&hashes);
        let bytes = encode_udp_scrape_reply(9, &entries);
        assert_eq!(decode_scrape_response(&bytes, 9, &hashes), Ok(entries));
        let err = encode_udp_error(9, "connection id expired");
        assert_eq!(
            decode_scrape_response(&err, 9, &hashes),
            Err(TrackerError::Failure("connection id expired".into()))
        );
        let long = "é".repeat(MAX_UDP_ERROR_LEN);
        assert!(encode_udp_error(1, &long).len() <= REPLY_HEADER_LEN + MAX_UDP_ERROR_LEN);
    }

    #[test]
    fn udp_scrape_request_limits() {
        let mut p = encode_scrape_request(1, 1, &[]).unwrap();
        assert!(matches!(
            decode_udp_request(&p),
            Err(TrackerError::Malformed(_))
        ));
        p.extend_from_slice(&[0; 20 * (MAX_SCRAPE_HASHES + 1)]);
        assert_eq!(
            decode_udp_request(&p),
            Err(TrackerError::TooManyHashes(MAX_SCRAPE_HASHES + 1))
        );
        let p = [0u8, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 9, 0, 0, 0, 1];
        assert_eq!(
            decode_udp_request(&p),
            Err(TrackerError::UnexpectedAction(9))
        );
    }
}
