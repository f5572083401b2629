//! The client side of the UDP tracker protocol (BEP 15): connect, announce and scrape
//! packets, reply decoding, the retry schedule and the one-minute connection-id cache.
//! Also the big-endian reader and the layout constants that the server side shares.

use super::response::{clamp_interval, read_compact_peers, AnnounceResponse, ScrapeEntry};
use super::{AnnounceRequest, TrackerError};
use crate::types::InfoHash;
use std::time::{Duration, Instant};

/// The magic number a connect request carries in place of a connection id.
pub const PROTOCOL_ID: u64 = 0x0417_2710_1980;
/// The most info-hashes one scrape packet may carry.
pub const MAX_SCRAPE_HASHES: usize = 74;
/// How long a connection id may be used after it was received.
pub const CONNECTION_ID_LIFETIME: Duration = Duration::from_secs(60);
/// `retry_timeout` stops growing after this many doublings.
pub const MAX_RETRY_EXPONENT: u32 = 8;

pub(super) const ACTION_CONNECT: u32 = 0;
pub(super) const ACTION_ANNOUNCE: u32 = 1;
pub(super) const ACTION_SCRAPE: u32 = 2;
pub(super) const ACTION_ERROR: u32 = 3;
/// Size of an announce request (without BEP 41 options).
pub const ANNOUNCE_REQUEST_LEN: usize = 98;
/// Every reply starts with action and transaction id.
pub(super) const REPLY_HEADER_LEN: usize = 8;
/// An announce reply adds interval, leechers and seeders before the peers.
pub(super) const ANNOUNCE_REPLY_HEADER_LEN: usize = 20;
/// Seeders, completed, leechers.
pub(super) const SCRAPE_ENTRY_LEN: usize = 12;

/// The connect request: protocol id, action 0, transaction id.
pub fn encode_connect(tid: u32) -> [u8; 16] {
    concat(&[
        &PROTOCOL_ID.to_be_bytes(),
        &ACTION_CONNECT.to_be_bytes(),
        &tid.to_be_bytes(),
    ])
}

/// Reads a connect reply to the request with transaction id `tid`; returns the connection id.
pub fn decode_connect_response(buf: &[u8], tid: u32) -> Result<u64, TrackerError> {
    let mut r = check_reply(buf, tid, ACTION_CONNECT)?;
    r.u64()
}

/// The announce request. `num_want` is -1 ("tracker's choice") when `numwant` is `None`; the
/// IP field is always 0 (the tracker uses the packet's source address).
pub fn encode_announce(
    conn_id: u64,
    tid: u32,
    req: &AnnounceRequest,
) -> [u8; ANNOUNCE_REQUEST_LEN] {
    let num_want = req
        .numwant
        .map_or(-1, |n| i32::try_from(n).unwrap_or(i32::MAX));
    concat(&[
        &conn_id.to_be_bytes(),
        &ACTION_ANNOUNCE.to_be_bytes(),
        &tid.to_be_bytes(),
        &req.info_hash.0,
        &req.peer_id.0,
        &req.downloaded.to_be_bytes(),
        &req.left.to_be_bytes(),
        &req.uploaded.to_be_bytes(),
        &req.event.udp_code().to_be_bytes(),
        &0u32.to_be_bytes(),
        &req.key.to_be_bytes(),
        &num_want.to_be_bytes(),
        &req.port.to_be_bytes(),
    ])
}

/// Reads an announce reply. `ipv6` says whether the request went over IPv6, in which case
/// peers are 18 bytes each instead of 6. Interval is clamped like the HTTP one.
pub fn decode_announce_response(
    buf: &[u8],
    tid: u32,
    ipv6: bool,
) -> Result<AnnounceResponse, TrackerError> {
    let mut r = check_reply(buf, tid, ACTION_ANNOUNCE)?;
    let interval = r.u32()?;
    let leechers = r.u32()?;
    let seeders = r.u32()?;
    let mut peers = Vec::new();
    read_compact_peers(r.rest(), ipv6, "peers", &mut peers)?;
    Ok(AnnounceResponse {
        interval: clamp_interval(interval.into()),
        complete: Some(seeders),
        incomplete: Some(leechers),
        peers,
        ..AnnounceResponse::default()
    })
}

/// The scrape request for up to `MAX_SCRAPE_HASHES` torrents.
pub fn encode_scrape_request(
    conn_id: u64,
    tid: u32,
    hashes: &[InfoHash],
) -> Result<Vec<u8>, TrackerError> {
    if hashes.len() > MAX_SCRAPE_HASHES {
        return Err(TrackerError::TooManyHashes(hashes.len()));
    }
    let mut out = Vec::with_capacity(16 + 20 * hashes.len());
    out.extend_from_slice(&conn_id.to_be_bytes());
    out.extend_from_slice(&ACTION_SCRAPE.to_be_bytes());
    out.extend_from_slice(&tid.to_be_bytes());
    for h in hashes {
        out.extend_from_slice(&h.0);
    }
    Ok(out)
}

/// Reads a scrape reply; entries come in the order of `hashes`, the request's list. Extra
/// entries are ignored; a trailing partial entry is an error.
pub fn decode_scrape_response(
    buf: &[u8],
    tid: u32,
    hashes: &[InfoHash],
) -> Result<Vec<ScrapeEntry>, TrackerError> {
    let r = check_reply(buf, tid, ACTION_SCRAPE)?;
    let rest = r.rest();
    if !rest.len().is_multiple_of(SCRAPE_ENTRY_LEN) {
        let why = format!(
            "{} bytes is not a multiple of {SCRAPE_ENTRY_LEN}",
            rest.len()
        );
        return Err(TrackerError::Malformed(format!("scrape entries: {why}")));
    }
    let mut out = Vec::with_capacity(hashes.len());
    for (hash, entry) in hashes.iter().zip(rest.chunks_exact(SCRAPE_ENTRY_LEN)) {
        let mut e = Reader::new(entry);
        let complete = e.u32()?;
        let downloaded = e.u32()?;
        let incomplete = e.u32()?;
        out.push(ScrapeEntry {
            info_hash: *hash,
            complete,
            downloaded,
            incomplete,
        });
    }
    Ok(out)
}

/// How long to wait for a reply to the `attempt`-th try (0-based): 15 s * 2^attempt, with
/// the exponent capped at `MAX_RETRY_EXPONENT` (BEP 15).
pub fn retry_timeout(attempt: u32) -> Duration {
    Duration::from_secs(15 << attempt.min(MAX_RETRY_EXPONENT))
}

/// The connection id last received from one tracker, usable for `CONNECTION_ID_LIFETIME`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UdpConnectionCache {
    current: Option<(u64, Instant)>,
}

impl UdpConnectionCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// The cached connection id if it is still fresh at `now`.
    pub fn valid(&self, now: Instant) -> Option<u64> {
        let (id, received) = self.current?;
        (now.saturating_duration_since(received) < CONNECTION_ID_LIFETIME).then_some(id)
    }

    /// Remembers a connection id received at `now`.
    pub fn store(&mut self, conn_id: u64, now: Instant) {
        self.current = Some((conn_id, now));
    }

    /// Forgets the id, e.g. after the tracker answered with an error.
    pub fn clear(&mut self) {
        self.current = None;
    }
}

/// Checks a reply's header: the transaction id must be ours, an error packet becomes
/// `Failure`, and the action must be `action`. Returns a reader past the header.
fn check_reply(buf: &[u8], tid: u32, action: u32) -> Result<Reader<'_>, TrackerError> {
    let mut r = Reader::new(buf);
    let got_action = r.u32()?;
    let got_tid = r.u32()?;
    if got_tid != tid {
        return Err(TrackerError::TransactionMismatch {
            expected: tid,
            got: got_tid,
        });
    }
    if got_action == ACTION_ERROR {
        return Err(TrackerError::Failure(
            String::from_utf8_lossy(r.rest()).into_owned(),
        ));
    }
    if got_action != action {
        return Err(TrackerError::UnexpectedAction(got_action));
    }
    Ok(r)
}

/// Concatenates byte strings into a fixed-size array. The parts' lengths are constants of
/// each caller and must add up to `N`.
pub(super) fn concat<const N: usize>(parts: &[&[u8]]) -> [u8; N] {
    let mut out = [0u8; N];
    let mut at = 0;
    for part in parts {
        out[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    debug_assert_eq!(at, N, "parts must fill the array exactly");
    out
}

/// A big-endian cursor over a packet; running past the end is `Truncated`.
pub(super) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(super) fn array<const N: usize>(&mut self) -> Result<[u8; N], TrackerError> {
        let end = self.pos + N;
        let Some(bytes) = self.buf.get(self.pos..end) else {
            return Err(TrackerError::Truncated {
                got: self.buf.len(),
                need: end,
            });
        };
        let mut array = [0u8; N];
        array.copy_from_slice(bytes);
        self.pos = end;
        Ok(array)
    }

    pub(super) fn u16(&mut self) -> Result<u16, TrackerError> {
        self.array().map(u16::from_be_bytes)
    }

    pub(super) fn u32(&mut self) -> Result<u32, TrackerError> {
        self.array().map(u32::from_be_bytes)
    }

    pub(super) fn u64(&mut self) -> Result<u64, TrackerError> {
        self.array().map(u64::from_be_bytes)
    }

    pub(super) fn i32(&mut self) -> Result<i32, TrackerError> {
        self.array().map(i32::from_be_bytes)
    }

    /// Everything not read yet.
    pub(super) fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::Event;
    use crate::types::PeerId;

    pub(crate) fn sample_request() -> AnnounceRequest {
        AnnounceRequest {
            info_hash: InfoHash([0x11; 20]),
            peer_id: PeerId(*b"-SP0100-abcdefghijkl"),
            port: 6881,
            uploaded: 10,
            downloaded: 20,
            left: 30,
            event: Event::Completed,
            numwant: None,
            key: 0x0102_0304,
            tracker_id: None,
        }
    }

    #[test]
    fn connect_packet_layout() {
        let p = encode_connect(0xaabb_ccdd);
        assert_eq!(&p[..8], &[0, 0, 0x04, 0x17, 0x27, 0x10, 0x19, 0x80]);
        assert_eq!(&p[8..12], &[0, 0, 0, 0]);
        assert_eq!(&p[12..], &[0xaa, 0xbb, 0xcc, 0xdd]);
    }

    #[test]
    fn announce_packet_layout() {
        let p = encode_announce(7, 9, &sample_request());
        assert_eq!(p.len(), ANNOUNCE_REQUEST_LEN);
        assert_eq!(&p[..8], &7u64.to_be_bytes());
        assert_eq!(&p[8..12], &1u32.to_be_bytes());
        assert_eq!(&p[80..84], &1u32.to_be_bytes(), "event completed = 1");
        assert_eq!(
            &p[92..96],
            &(-1i32).to_be_bytes(),
            "num_want defaults to -1"
        );
        assert_eq!(&p[96..], &6881u16.to_be_bytes());
    }

    #[test]
    fn connect_reply_checks_tid_and_errors() {
        let mut reply = [0u8; 16];
        reply[4..8].copy_from_slice(&5u32.to_be_bytes());
        reply[8..].copy_from_slice(&42u64.to_be_bytes());
        assert_eq!(decode_connect_response(&reply, 5), Ok(42));
        assert_eq!(
            decode_connect_response(&reply, 6),
            Err(TrackerError::TransactionMismatch {
                expected: 6,
                got: 5
            })
        );
        assert!(matches!(
            decode_connect_response(&reply[..12], 5),
            Err(TrackerError::Truncated { got: 12, need: 16 })
        ));
        let mut err = vec![0, 0, 0, 3, 0, 0, 0, 5];
        err.extend_from_slice(b"go away");
        assert_eq!(
            decode_connect_response(&err, 5),
            Err(TrackerError::Failure("go away".into()))
        );
    }

    #[test]
    fn scrape_request_is_capped() {
        let hashes = vec![InfoHash([1; 20]); MAX_SCRAPE_HASHES + 1];
        assert_eq!(
            encode_scrape_request(1, 2, &hashes),
            Err(TrackerError::TooManyHashes(MAX_SCRAPE_HASHES + 1))
        );
        let p = encode_scrape_request(1, 2, &hashes[..2]).unwrap();
        assert_eq!(p.len(), 16 + 40);
    }

    #[test]
    fn retry_schedule() {
        assert_eq!(retry_timeout(0), Duration::from_secs(15));
        assert_eq!(retry_timeout(1), Duration::from_secs(30));
        assert_eq!(retry_timeout(8), Duration::from_secs(3840));
        assert_eq!(retry_timeout(100), Duration::from_secs(3840));
    }

    #[test]
    fn connection_cache_expires_after_a_minute() {
        let t0 = Instant::now();
        let mut c = UdpConnectionCache::new();
        assert_eq!(c.valid(t0), None);
        c.store(99, t0);
        assert_eq!(c.valid(t0 + Duration::from_secs(59)), Some(99));
        assert_eq!(c.valid(t0 + CONNECTION_ID_LIFETIME), None);
        c.clear();
        assert_eq!(c.valid(t0), None);
    }
}
