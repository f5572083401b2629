//! Reading what an HTTP tracker answers: the announce reply (`AnnounceResponse`, with compact
//! IPv4 peers per BEP 23, the dictionary peer list of BEP 3 and `peers6` of BEP 7) and the
//! scrape reply (BEP 48). Untrusted bytes: sizes, nesting and peer counts are all capped, and
//! no input makes these functions panic.

use super::TrackerError;
use crate::compact;
use crate::types::InfoHash;
use serde_bencode::value::Value;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

/// Peers kept from one reply; the excess is ignored, not an error.
pub const MAX_PEERS_PER_RESPONSE: usize = 2000;
/// Scrape entries kept from one reply; the excess is ignored.
pub const MAX_SCRAPE_ENTRIES: usize = 2000;
/// Largest body we hand to the bencode decoder (4 MiB).
pub const MAX_BODY_LEN: usize = 4 << 20;
/// Deepest nesting of lists and dictionaries we accept; tracker replies need three.
pub const MAX_NESTING: usize = 32;
/// Shortest re-announce interval we honour, in seconds, whatever the tracker says: low
/// enough for private swarms and benchmarks that ask for 5 s (a floor of 30 s left spate
/// missing from a tracker that expires peers after two 5 s intervals), high enough that a
/// tracker answering 0 cannot make us announce in a loop.
pub const MIN_INTERVAL: u32 = 5;
/// Longest re-announce interval we honour, in seconds (2 hours).
pub const MAX_INTERVAL: u32 = 2 * 60 * 60;
/// The interval used when a reply has none, in seconds.
pub const DEFAULT_INTERVAL: u32 = 1800;

/// A successful announce reply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AnnounceResponse {
    /// Seconds until the next regular announce, clamped to `MIN_INTERVAL..=MAX_INTERVAL`.
    pub interval: u32,
    /// Seconds the tracker wants at least between announces, clamped the same way.
    pub min_interval: Option<u32>,
    /// To be sent back as `trackerid` on the next announces.
    pub tracker_id: Option<Vec<u8>>,
    /// Seeds in the swarm.
    pub complete: Option<u32>,
    /// Leechers in the swarm.
    pub incomplete: Option<u32>,
    pub warning: Option<String>,
    /// At most `MAX_PEERS_PER_RESPONSE`, IPv4 first, never with port 0.
    pub peers: Vec<SocketAddr>,
}

/// One torrent's numbers from a scrape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScrapeEntry {
    pub info_hash: InfoHash,
    /// Seeds.
    pub complete: u32,
    /// How many times the torrent was completely downloaded.
    pub downloaded: u32,
    /// Leechers.
    pub incomplete: u32,
}

type Dict = HashMap<Vec<u8>, Value>;

/// Parses an HTTP announce reply. A "failure reason" becomes `TrackerError::Failure`.
pub fn parse_announce_response(body: &[u8]) -> Result<AnnounceResponse, TrackerError> {
    let dict = decode_dict(body)?;
    check_failure(&dict)?;
    let mut peers = Vec::new();
    match dict.get(b"peers".as_slice()) {
        None => {}
        Some(Value::Bytes(b)) => read_compact_peers(b, false, "peers", &mut peers)?,
        Some(Value::List(list)) => read_peer_dicts(list, &mut peers),
        Some(_) => return Err(malformed("peers", "neither a string nor a list")),
    }
    if let Some(b) = bytes_field(&dict, "peers6")? {
        read_compact_peers(b, true, "peers6", &mut peers)?;
    }
    Ok(AnnounceResponse {
        interval: clamp_interval(int_field(&dict, "interval")?.unwrap_or(DEFAULT_INTERVAL.into())),
        min_interval: int_field(&dict, "min interval")?.map(clamp_interval),
        tracker_id: bytes_field(&dict, "tracker id")?.map(<[u8]>::to_vec),
        complete: int_field(&dict, "complete")?.and_then(|n| u32::try_from(n).ok()),
        incomplete: int_field(&dict, "incomplete")?.and_then(|n| u32::try_from(n).ok()),
        warning: bytes_field(&dict, "warning message")?.map(lossy),
        peers,
    })
}

/// Parses an HTTP scrape reply (the `files` dictionary). Keys that are not 20 bytes and
/// entries that are not dictionaries are skipped. Sorted by info-hash.
pub fn parse_scrape_response(body: &[u8]) -> Result<Vec<ScrapeEntry>, TrackerError> {
    let dict = decode_dict(body)?;
    check_failure(&dict)?;
    let files = match dict.get(b"files".as_slice()) {
        Some(Value::Dict(files)) => files,
        Some(_) => return Err(malformed("files", "not a dictionary")),
        None => return Err(malformed("files", "missing")),
    };
    let mut out = Vec::new();
    for (key, value) in files {
        if out.len() >= MAX_SCRAPE_ENTRIES {
            break;
        }
        let (Ok(hash), Value::Dict(stats)) = (<[u8; 20]>::try_from(key.as_slice()), value) else {
            continue;
        };
        let count = |name: &str| match stats.get(name.as_bytes()) {
            Some(Value::Int(n)) => saturating_u32(*n),
            _ => 0,
        };
        out.push(ScrapeEntry {
            info_hash: InfoHash(hash),
            complete: count("complete"),
            downloaded: count("downloaded"),
            incomplete: count("incomplete"),
        });
    }
    out.sort_by_key(|e| e.info_hash);
    Ok(out)
}

/// Clamps a tracker-supplied interval to `MIN_INTERVAL..=MAX_INTERVAL`.
pub(super) fn clamp_interval(secs: i64) -> u32 {
    let clamped = secs.clamp(MIN_INTERVAL.into(), MAX_INTERVAL.into());
    u32::try_from(clamped).unwrap_or(DEFAULT_INTERVAL)
}

/// A count from the wire as u32: negative becomes 0, too large becomes `u32::MAX`.
fn saturating_u32(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

/// Appends compact peers (6 bytes each, or 18 with `ipv6`) to `out`, up to
/// `MAX_PEERS_PER_RESPONSE` in total. A length that is not a whole number of entries is an
/// error naming `field`. Port-0 entries are skipped.
pub(super) fn read_compact_peers(
    bytes: &[u8],
    ipv6: bool,
    field: &str,
    out: &mut Vec<SocketAddr>,
) -> Result<(), TrackerError> {
    compact::read_into(bytes, ipv6, MAX_PEERS_PER_RESPONSE, out).map_err(|e| {
        let why = format!("{} bytes is not a multiple of {}", e.len, e.entry);
        malformed(field, &why)
    })
}

/// Appends peers from a BEP 3 list of `{ip, port}` dictionaries. Entries whose ip is a host
/// name, not text, or whose port is missing or out of range are skipped, not errors.
fn read_peer_dicts(list: &[Value], out: &mut Vec<SocketAddr>) {
    for entry in list {
        if out.len() >= MAX_PEERS_PER_RESPONSE {
            break;
        }
        let Value::Dict(peer) = entry else { continue };
        let ip = match peer.get(b"ip".as_slice()) {
            Some(Value::Bytes(ip)) => std::str::from_utf8(ip).ok(),
            _ => None,
        };
        let Some(Ok(ip)) = ip.map(str::parse::<IpAddr>) else {
            continue;
        };
        let port = match peer.get(b"port".as_slice()) {
            Some(Value::Int(p)) => u16::try_from(*p).ok(),
            _ => None,
        };
        if let Some(port) = port.filter(|&p| p != 0) {
            out.push(SocketAddr::new(ip, port));
        }
    }
}

fn check_failure(dict: &Dict) -> Result<(), TrackerError> {
    match bytes_field(dict, "failure reason")? {
        Some(reason) => Err(TrackerError::Failure(lossy(reason))),
        None => Ok(()),
    }
}

fn malformed(field: &str, why: &str) -> TrackerError {
    TrackerError::Malformed(format!("{field}: {why}"))
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn int_field(dict: &Dict, name: &str) -> Result<Option<i64>, TrackerError> {
    match dict.get(name.as_bytes()) {
        None => Ok(None),
        Some(Value::Int(n)) => Ok(Some(*n)),
        Some(_) => Err(malformed(name, "not an integer")),
    }
}

fn bytes_field<'a>(dict: &'a Dict, name: &str) -> Result<Option<&'a [u8]>, TrackerError> {
    match dict.get(name.as_bytes()) {
        None => Ok(None),
        Some(Value::Bytes(b)) => Ok(Some(b)),
        Some(_) => Err(malformed(name, "not a string")),
    }
}

/// Checks size and nesting, then decodes; the top level must be a dictionary.
fn decode_dict(body: &[u8]) -> Result<Dict, TrackerError> {
    if body.len() > MAX_BODY_LEN {
        return Err(TrackerError::TooLarge(body.len()));
    }
    check_structure(body)?;
    match serde_bencode::from_bytes::<Value>(body) {
        Ok(Value::Dict(dict)) => Ok(dict),
        Ok(_) => Err(TrackerError::Malformed("reply is not a dictionary".into())),
        Err(e) => Err(TrackerError::InvalidBencode(e.to_string())),
    }
}

/// Walks the first bencode value in `body` without recursion, so that the recursive decoder
/// only ever sees input that nests at most `MAX_NESTING` deep and whose string lengths fit.
fn check_structure(body: &[u8]) -> Result<(), TrackerError> {
    let invalid = |why: &str, at: usize| TrackerError::InvalidBencode(format!("{why} at {at}"));
    let mut depth = 0usize;
    let mut i = 0usize;
    loop {
        let Some(&byte) = body.get(i) else {
            return Err(invalid("unexpected end", i));
        };
        match byte {
            b'd' | b'l' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(TrackerError::TooDeep);
                }
                i += 1;
            }
            b'e' if depth > 0 => {
                depth -= 1;
                i += 1;
            }
            b'i' => {
                let len = body[i..].iter().position(|&b| b == b'e');
                i += len.ok_or_else(|| invalid("unterminated integer", i))? + 1;
            }
            b'0'..=b'9' => i = skip_string(body, i).ok_or_else(|| invalid("bad string", i))?,
            _ => return Err(invalid("unexpected byte", i)),
        }
        if depth == 0 {
            return Ok(());
        }
    }
}

/// Given a string starting at `start` ("<len>:<bytes>"), the index just past it, if the
/// length is well-formed and the bytes are all there.
fn skip_string(body: &[u8], start: usize) -> Option<usize> {
    let mut len = 0usize;
    let mut i = start;
    while let Some(&b) = body.get(i) {
        match b {
            b'0'..=b'9' => len = len.checked_mul(10)?.checked_add(usize::from(b - b'0'))?,
            b':' => {
                let end = (i + 1).checked_add(len)?;
                return (end <= body.len()).then_some(end);
            }
            _ => return None,
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_compact_reply() {
        let body = b"d8:completei5e10:incompletei3e8:intervali900e12:min intervali60e\
                     5:peers12:\x7f\x00\x00\x01\x1a\xe1\x0a\x00\x00\x02\x00\x50e";
        let r = parse_announce_response(body).unwrap();
        assert_eq!(r.interval, 900);
        assert_eq!(r.min_interval, Some(60));
        assert_eq!(r.complete, Some(5));
        assert_eq!(r.incomplete, Some(3));
        let want: Vec<SocketAddr> = vec![
            "127.0.0.1:6881".parse().unwrap(),
            "10.0.0.2:80".parse().unwrap(),
        ];
        assert_eq!(r.peers, want);
    }

    #[test]
    fn parses_dict_peers_skipping_bad_entries() {
        let body = b"d8:intervali1800e5:peersl\
                     d2:ip9:127.0.0.17:peer id20:aaaaaaaaaaaaaaaaaaaa4:porti6881ee\
                     d2:ip3:::14:porti51413ee\
                     d2:ip15:tracker.example4:porti1ee\
                     d2:ip9:127.0.0.14:porti70000ee\
                     i7e\
                     d2:ip9:127.0.0.2e\
                     ee";
        let r = parse_announce_response(body).unwrap();
        let want: Vec<SocketAddr> = vec![
            "127.0.0.1:6881".parse().unwrap(),
            "[::1]:51413".parse().unwrap(),
        ];
        assert_eq!(r.peers, want);
    }

    #[test]
    fn parses_peers6() {
        let mut body = b"d8:intervali1800e5:peers0:6:peers618:".to_vec();
        body.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        body.extend_from_slice(&[0; 11]);
        body.extend_from_slice(&[1, 0x1a, 0xe1]);
        body.push(b'e');
        let r = parse_announce_response(&body).unwrap();
        assert_eq!(r.peers, vec!["[2001:db8::1]:6881".parse().unwrap()]);
    }

    #[test]
    fn failure_reason_is_an_error() {
        let r = parse_announce_response(b"d14:failure reason12:unregisterede");
        assert_eq!(r, Err(TrackerError::Failure("unregistered".into())));
        let r = parse_scrape_response(b"d14:failure reason3:nahe");
        assert_eq!(r, Err(TrackerError::Failure("nah".into())));
    }

    #[test]
    fn malformed_compact_length_names_field() {
        let r = parse_announce_response(b"d8:intervali60e5:peers7:abcdefge");
        assert!(matches!(r, Err(TrackerError::Malformed(m)) if m.starts_with("peers:")));
        let r = parse_announce_response(b"d8:intervali60e6:peers65:abcdee");
        assert!(matches!(r, Err(TrackerError::Malformed(m)) if m.starts_with("peers6:")));
        let r = parse_announce_response(b"d8:interval2:60e");
        assert!(matches!(r, Err(TrackerError::Malformed(m)) if m.starts_with("interval:")));
    }

    #[test]
    fn interval_is_clamped_and_defaulted() {
        let r = parse_announce_response(b"d5:peers0:e").unwrap();
        assert_eq!(r.interval, DEFAULT_INTERVAL);
        let r = parse_announce_response(b"d8:intervali1e5:peers0:e").unwrap();
        assert_eq!(r.interval, MIN_INTERVAL);
        let r = parse_announce_response(b"d8:intervali-5e5:peers0:e").unwrap();
        assert_eq!(r.interval, MIN_INTERVAL);
        let r = parse_announce_response(b"d8:intervali99999999999e5:peers0:e").unwrap();
        assert_eq!(r.interval, MAX_INTERVAL);
    }

    #[test]
    fn peers_are_capped_not_refused() {
        let n = MAX_PEERS_PER_RESPONSE + 10;
        let mut body = format!("d8:intervali60e5:peers{}:", n * 6).into_bytes();
        for i in 0..n {
            body.extend_from_slice(&[10, 0, (i >> 8) as u8, i as u8, 0, 1]);
        }
        body.push(b'e');
        let r = parse_announce_response(&body).unwrap();
        assert_eq!(r.peers.len(), MAX_PEERS_PER_RESPONSE);
    }

    #[test]
    fn deep_nesting_and_huge_bodies_are_refused() {
        let mut deep = b"d1:x".to_vec();
        deep.extend(std::iter::repeat_n(b'l', 100_000));
        deep.extend(std::iter::repeat_n(b'e', 100_001));
        assert_eq!(parse_announce_response(&deep), Err(TrackerError::TooDeep));
        let big = vec![b'0'; MAX_BODY_LEN + 1];
        assert_eq!(
            parse_announce_response(&big),
            Err(TrackerError::TooLarge(MAX_BODY_LEN + 1))
        );
        let r = parse_announce_response(b"d5:peers99999999999999999999999:e");
        assert!(matches!(r, Err(TrackerError::InvalidBencode(_))));
    }

    #[test]
    fn parses_scrape() {
        let mut body = b"d5:filesd20:".to_vec();
        body.extend_from_slice(&[7; 20]);
        body.extend_from_slice(b"d8:completei4e10:downloadedi9e10:incompletei2ee");
        body.extend_from_slice(b"3:abcd8:completei1eee");
        body.push(b'e');
        let r = parse_scrape_response(&body).unwrap();
        assert_eq!(
            r,
            vec![ScrapeEntry {
                info_hash: InfoHash([7; 20]),
                complete: 4,
                downloaded: 9,
                incomplete: 2,
            }]
        );
        assert!(parse_scrape_response(b"de").is_err());
    }
}
