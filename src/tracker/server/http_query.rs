//! The HTTP side of the tracker core: parsing announce and scrape query strings (BEP 3, 23,
//! 48) into requests for `TrackerState`, and encoding its answers as bencoded bodies. The
//! request line and the socket belong to `tracker::http_request` and `tracker_server`.

use super::{ServerAnnounce, ServerReply, MAX_HTTP_SCRAPE_HASHES, MAX_QUERY_LEN};
use crate::tracker::response::ScrapeEntry;
use crate::tracker::Event;
use crate::types::{InfoHash, PeerId};
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// Parses an HTTP announce query (the part after '?'). `info_hash` and `peer_id` are
/// percent-decoded and must be exactly 20 bytes; `port` and `left` are required. The peer's
/// address is `remote` (IPv4-mapped IPv6 turned into IPv4): an `ip` parameter is ignored,
/// so nobody can announce someone else. The error is a failure reason for the client.
pub fn parse_announce_query(query: &str, remote: IpAddr) -> Result<ServerAnnounce, String> {
    let params = query_params(query)?;
    let info_hash = InfoHash(param_20(&params, "info_hash")?);
    let peer_id = PeerId(param_20(&params, "peer_id")?);
    let port: u16 = param_number(&params, "port")?.ok_or("missing port")?;
    if port == 0 {
        return Err("invalid port 0".into());
    }
    let left: u64 = param_number(&params, "left")?.ok_or("missing left")?;
    let event = param(&params, "event").map_or(Event::None, Event::from_http);
    // A bad numwant (say, -1) is not worth refusing the announce: use the default.
    let numwant = param_number::<u32>(&params, "numwant").ok().flatten();
    Ok(ServerAnnounce {
        info_hash,
        peer_id,
        addr: SocketAddr::new(remote.to_canonical(), port),
        left,
        event,
        numwant,
    })
}

/// Parses an HTTP scrape query: one to `MAX_HTTP_SCRAPE_HASHES` `info_hash` parameters of
/// 20 bytes each. A scrape of everything (no `info_hash`) is not offered.
pub fn parse_scrape_query(query: &str) -> Result<Vec<InfoHash>, String> {
    let params = query_params(query)?;
    let mut hashes = Vec::new();
    for (key, value) in &params {
        if key.as_slice() != b"info_hash" {
            continue;
        }
        let hash = <[u8; 20]>::try_from(value.as_slice())
            .map_err(|_| "info_hash must be 20 bytes".to_string())?;
        hashes.push(InfoHash(hash));
    }
    if hashes.is_empty() {
        return Err("missing info_hash: scraping everything is not supported".into());
    }
    if hashes.len() > MAX_HTTP_SCRAPE_HASHES {
        return Err(format!(
            "too many info_hash, at most {MAX_HTTP_SCRAPE_HASHES}"
        ));
    }
    Ok(hashes)
}

/// Whether the client accepts compact peers: yes unless it says `compact=0`.
pub fn query_wants_compact(query: &str) -> bool {
    let params = query_params(query).unwrap_or_default();
    param(&params, "compact") != Some(b"0".as_slice())
}

type Params = Vec<(Vec<u8>, Vec<u8>)>;

/// Splits and percent-decodes `k=v&k=v`. '+' stays '+', as in the binary values clients send.
fn query_params(query: &str) -> Result<Params, String> {
    if query.len() > MAX_QUERY_LEN {
        return Err(format!("query longer than {MAX_QUERY_LEN} bytes"));
    }
    let mut out = Vec::new();
    for part in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = part.split_once('=').unwrap_or((part, ""));
        let key = percent_decode(key).ok_or("invalid percent-encoding in a parameter name")?;
        let value = percent_decode(value).ok_or_else(|| {
            let name = String::from_utf8_lossy(&key);
            format!("invalid percent-encoding in {name}")
        })?;
        out.push((key, value));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hi = hex_digit(*bytes.get(i + 1)?)?;
            let lo = hex_digit(*bytes.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Some(out)
}

fn hex_digit(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// The first value of parameter `name`.
fn param<'a>(params: &'a Params, name: &str) -> Option<&'a [u8]> {
    params
        .iter()
        .find(|(k, _)| k.as_slice() == name.as_bytes())
        .map(|(_, v)| v.as_slice())
}

fn param_20(params: &Params, name: &str) -> Result<[u8; 20], String> {
    let value = param(params, name).ok_or_else(|| format!("missing {name}"))?;
    <[u8; 20]>::try_from(value).map_err(|_| format!("{name} must be 20 bytes"))
}

/// A decimal parameter: `Ok(None)` when absent, an error when present but not a number.
fn param_number<T: FromStr>(params: &Params, name: &str) -> Result<Option<T>, String> {
    let Some(value) = param(params, name) else {
        return Ok(None);
    };
    let parsed = std::str::from_utf8(value).ok().and_then(|s| s.parse().ok());
    parsed.map(Some).ok_or_else(|| format!("invalid {name}"))
}

// ---------------------------------------------------------------------------------------
// HTTP bodies (bencode, keys in sorted order)

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(bytes.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(bytes);
}

fn put_int(out: &mut Vec<u8>, n: u64) {
    out.push(b'i');
    out.extend_from_slice(n.to_string().as_bytes());
    out.push(b'e');
}

/// The bencoded announce reply. Compact: IPv4 peers in `peers`, IPv6 peers in `peers6`
/// (BEP 7, 23); otherwise `peers` is a list of `{ip, peer id, port}` dictionaries.
pub fn encode_announce_reply(reply: &ServerReply, compact: bool) -> Vec<u8> {
    let mut out = b"d".to_vec();
    put_bytes(&mut out, b"complete");
    put_int(&mut out, reply.complete.into());
    put_bytes(&mut out, b"incomplete");
    put_int(&mut out, reply.incomplete.into());
    put_bytes(&mut out, b"interval");
    put_int(&mut out, reply.interval.into());
    put_bytes(&mut out, b"peers");
    if compact {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for p in &reply.peers {
            crate::compact::put(if p.addr.is_ipv4() { &mut v4 } else { &mut v6 }, p.addr);
        }
        put_bytes(&mut out, &v4);
        if !v6.is_empty() {
            put_bytes(&mut out, b"peers6");
            put_bytes(&mut out, &v6);
        }
    } else {
        out.push(b'l');
        for p in &reply.peers {
            out.push(b'd');
            put_bytes(&mut out, b"ip");
            put_bytes(&mut out, p.addr.ip().to_string().as_bytes());
            put_bytes(&mut out, b"peer id");
            put_bytes(&mut out, &p.peer_id.0);
            put_bytes(&mut out, b"port");
            put_int(&mut out, p.addr.port().into());
            out.push(b'e');
        }
        out.push(b'e');
    }
    out.push(b'e');
    out
}

/// The bencoded failure reply: `{"failure reason": reason}`.
pub fn encode_failure(reason: &str) -> Vec<u8> {
    let mut out = b"d".to_vec();
    put_bytes(&mut out, b"failure reason");
    put_bytes(&mut out, reason.as_bytes());
    out.push(b'e');
    out
}

/// The bencoded scrape reply: `files` maps each info-hash to its three numbers. Sorted by
/// info-hash as bencode requires; a hash listed twice appears once.
pub fn encode_scrape(entries: &[ScrapeEntry]) -> Vec<u8> {
    let mut sorted = entries.to_vec();
    sorted.sort_by_key(|e| e.info_hash);
    sorted.dedup_by_key(|e| e.info_hash);
    let mut out = b"d".to_vec();
    put_bytes(&mut out, b"files");
    out.push(b'd');
    for e in &sorted {
        put_bytes(&mut out, &e.info_hash.0);
        out.push(b'd');
        put_bytes(&mut out, b"complete");
        put_int(&mut out, e.complete.into());
        put_bytes(&mut out, b"downloaded");
        put_int(&mut out, e.downloaded.into());
        put_bytes(&mut out, b"incomplete");
        put_int(&mut out, e.incomplete.into());
        out.push(b'e');
    }
    out.extend_from_slice(b"ee");
    out
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::*;
    use super::*;
    use crate::tracker::announce::percent_encode;
    use crate::tracker::response::parse_announce_response;
    use crate::tracker::TrackerError;
    use std::time::Instant;

    #[test]
    fn parses_announce_query() {
        let q = format!(
            "info_hash={}&peer_id={}&port=51413&uploaded=0&downloaded=0&left=77\
             &event=started&numwant=-1&compact=1&ip=1.2.3.4",
            percent_encode(&[0xab; 20]),
            percent_encode(b"-SP0100-abcdefghij+l"),
        );
        let remote: IpAddr = "::ffff:192.0.2.5".parse().unwrap();
        let a = parse_announce_query(&q, remote).unwrap();
        assert_eq!(a.info_hash, InfoHash([0xab; 20]));
        assert_eq!(a.peer_id, PeerId(*b"-SP0100-abcdefghij+l"));
        assert_eq!(a.addr, "192.0.2.5:51413".parse().unwrap());
        assert_eq!((a.left, a.event, a.numwant), (77, Event::Started, None));
        assert!(query_wants_compact(&q));
        assert!(!query_wants_compact("compact=0"));
    }

    #[test]
    fn refuses_bad_announce_queries() {
        let ip: IpAddr = [127, 0, 0, 1].into();
        let ok_hash = format!("info_hash={}", "%01".repeat(20));
        let ok_peer = format!("peer_id={}", "a".repeat(20));
        let cases = [
            (format!("{ok_peer}&port=1&left=0"), "missing info_hash"),
            (
                format!("info_hash=abc&{ok_peer}&port=1&left=0"),
                "info_hash must be 20",
            ),
            (format!("{ok_hash}&{ok_peer}&left=0"), "missing port"),
            (format!("{ok_hash}&{ok_peer}&port=0&left=0"), "invalid port"),
            (
                format!("{ok_hash}&{ok_peer}&port=99999&left=0"),
                "invalid port",
            ),
            (format!("{ok_hash}&{ok_peer}&port=1"), "missing left"),
            (
                format!("{ok_hash}%G1&{ok_peer}&port=1&left=0"),
                "percent-encoding",
            ),
        ];
        for (q, want) in cases {
            let err = parse_announce_query(&q, ip).unwrap_err();
            assert!(err.contains(want), "{q}: {err}");
        }
    }

    #[test]
    fn parses_scrape_query() {
        let one = format!("info_hash={}", "%02".repeat(20));
        assert_eq!(parse_scrape_query(&one), Ok(vec![hash(2)]));
        assert!(parse_scrape_query("").is_err());
        assert!(parse_scrape_query("info_hash=short").is_err());
        let many = vec![one; MAX_HTTP_SCRAPE_HASHES + 1].join("&");
        assert!(parse_scrape_query(&many).unwrap_err().contains("too many"));
    }

    #[test]
    fn http_bodies_parse_back() {
        let reply = reply_with_peers();
        let want: Vec<SocketAddr> = reply.peers.iter().map(|p| p.addr).collect();
        for compact in [true, false] {
            let body = encode_announce_reply(&reply, compact);
            let r = parse_announce_response(&body).unwrap();
            assert_eq!(
                (r.interval, r.complete, r.incomplete),
                (60, Some(2), Some(3))
            );
            assert_eq!(r.peers, want, "compact={compact}");
        }
        let compact = encode_announce_reply(&reply, true);
        assert!(compact.starts_with(b"d8:completei2e10:incompletei3e8:intervali60e5:peers6:"));
        let err = parse_announce_response(&encode_failure("no such torrent"));
        assert_eq!(err, Err(TrackerError::Failure("no such torrent".into())));
    }

    #[test]
    fn scrape_body_parses_back() {
        let mut s = state();
        s.announce(Instant::now(), ann(5, 1, 0, Event::Completed))
            .unwrap();
        let entries = s.scrape(&[hash(5), hash(3), hash(5)]);
        let body = encode_scrape(&entries);
        let parsed = crate::tracker::response::parse_scrape_response(&body).unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0].info_hash, hash(3));
        assert_eq!((parsed[1].complete, parsed[1].downloaded), (1, 1));
    }
}
