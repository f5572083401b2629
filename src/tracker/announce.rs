//! The client side of HTTP trackers: what an announce says (`AnnounceRequest`) and the URLs
//! for announce (BEP 3, compact per BEP 23) and scrape (BEP 48). Builds strings only.

use super::Event;
use crate::types::{InfoHash, PeerId};
use std::fmt::Write;

/// One announce, as the HTTP and the UDP encoders both need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceRequest {
    pub info_hash: InfoHash,
    pub peer_id: PeerId,
    /// The port our peer listener accepts connections on.
    pub port: u16,
    pub uploaded: u64,
    pub downloaded: u64,
    /// Bytes still missing; 0 makes us a seed.
    pub left: u64,
    pub event: Event,
    /// How many peers we would like; `None` leaves it to the tracker.
    pub numwant: Option<u32>,
    /// A random number that stays the same for the session, so a tracker can recognise us
    /// across IP changes.
    pub key: u32,
    /// The "tracker id" a previous reply asked us to send back.
    pub tracker_id: Option<Vec<u8>>,
}

/// Percent-encodes every byte except the RFC 3986 unreserved characters
/// (`A-Z a-z 0-9 - . _ ~`), as trackers expect for binary values such as the info-hash.
pub fn percent_encode(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(bytes.len() * 3);
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        }
    }
    out
}

/// The separator to put between `base` and the first parameter we append.
fn separator(base: &str) -> &'static str {
    if base.ends_with('?') || base.ends_with('&') {
        ""
    } else if base.contains('?') {
        "&"
    } else {
        "?"
    }
}

/// The full announce URL: `base` plus the BEP 3 parameters, asking for a compact reply
/// without peer ids. A `base` that already carries a query (a passkey, say) is extended.
pub fn http_announce_url(base: &str, req: &AnnounceRequest) -> String {
    let mut url = String::with_capacity(base.len() + 256);
    url.push_str(base);
    url.push_str(separator(base));
    // Writing to a String cannot fail, so the fmt::Results below are ignored.
    let _ = write!(
        url,
        "info_hash={}&peer_id={}&port={}&uploaded={}&downloaded={}&left={}\
         &compact=1&no_peer_id=1&key={:08X}",
        percent_encode(&req.info_hash.0),
        percent_encode(&req.peer_id.0),
        req.port,
        req.uploaded,
        req.downloaded,
        req.left,
        req.key,
    );
    if let Some(event) = req.event.as_http() {
        let _ = write!(url, "&event={event}");
    }
    if let Some(n) = req.numwant {
        let _ = write!(url, "&numwant={n}");
    }
    if let Some(id) = &req.tracker_id {
        let _ = write!(url, "&trackerid={}", percent_encode(id));
    }
    url
}

/// The scrape URL for `announce`, by the BEP 48 rule: the last path segment must start with
/// "announce", which becomes "scrape"; anything else means the tracker cannot scrape (`None`).
/// Each hash is appended as an `info_hash` parameter.
pub fn http_scrape_url(announce: &str, hashes: &[InfoHash]) -> Option<String> {
    let (path, query) = match announce.find('?') {
        Some(i) => announce.split_at(i),
        None => (announce, ""),
    };
    // The last '/' must lie past the "scheme://host" part, or there is no path at all.
    let authority_start = path.find("://").map_or(0, |i| i + 3);
    let slash = authority_start + path.get(authority_start..)?.rfind('/')?;
    let segment = path.get(slash + 1..)?;
    let rest = segment.strip_prefix("announce")?;
    let mut url = String::with_capacity(announce.len() + hashes.len() * 64);
    url.push_str(&path[..=slash]);
    url.push_str("scrape");
    url.push_str(rest);
    url.push_str(query);
    for hash in hashes {
        let sep = separator(&url);
        let _ = write!(url, "{sep}info_hash={}", percent_encode(&hash.0));
    }
    Some(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known_hash() -> InfoHash {
        // 0x12 0x34 ... with some unreserved bytes mixed in ('A' = 0x41, '.' = 0x2e, '~').
        let mut h = [0u8; 20];
        h[..6].copy_from_slice(&[0x12, 0x34, 0x41, 0x2e, 0x7e, 0xff]);
        h[6] = b' ';
        h[7] = b'%';
        InfoHash(h)
    }

    fn request() -> AnnounceRequest {
        AnnounceRequest {
            info_hash: known_hash(),
            peer_id: PeerId(*b"-SP0100-abcdefghijkl"),
            port: 6881,
            uploaded: 1,
            downloaded: 2,
            left: 3,
            event: Event::Started,
            numwant: Some(50),
            key: 0xdead_beef,
            tracker_id: None,
        }
    }

    #[test]
    fn percent_encodes_known_info_hash() {
        let enc = percent_encode(&known_hash().0);
        assert_eq!(enc, format!("%124A.~%FF%20%25{}", "%00".repeat(12)));
    }

    #[test]
    fn announce_url_has_all_parameters() {
        let url = http_announce_url("http://t.example/announce", &request());
        assert_eq!(
            url,
            "http://t.example/announce?info_hash=%124A.~%FF%20%25%00%00%00%00%00%00%00%00\
             %00%00%00%00&peer_id=-SP0100-abcdefghijkl&port=6881&uploaded=1&downloaded=2&left=3\
             &compact=1&no_peer_id=1&key=DEADBEEF&event=started&numwant=50"
        );
    }

    #[test]
    fn announce_url_extends_existing_query() {
        let mut req = request();
        req.event = Event::None;
        req.numwant = None;
        req.tracker_id = Some(b"x y".to_vec());
        let url = http_announce_url("http://t.example/announce?passkey=abc", &req);
        assert!(url.starts_with("http://t.example/announce?passkey=abc&info_hash="));
        assert!(!url.contains("event="));
        assert!(!url.contains("numwant="));
        assert!(url.ends_with("&trackerid=x%20y"));
    }

    #[test]
    fn scrape_url_follows_bep48() {
        let h = [InfoHash([0xaa; 20])];
        let enc = "%AA".repeat(20);
        assert_eq!(
            http_scrape_url("http://t.example/announce", &h),
            Some(format!("http://t.example/scrape?info_hash={enc}"))
        );
        assert_eq!(
            http_scrape_url("http://t.example/x/announce.php?pk=1", &h),
            Some(format!(
                "http://t.example/x/scrape.php?pk=1&info_hash={enc}"
            ))
        );
        assert_eq!(
            http_scrape_url("http://t.example/announce", &[]),
            Some("http://t.example/scrape".to_string())
        );
        assert_eq!(http_scrape_url("http://t.example/a", &h), None);
        assert_eq!(http_scrape_url("http://t.example/announce/x", &h), None);
        assert_eq!(http_scrape_url("http://announce.example", &h), None);
        assert_eq!(http_scrape_url("http://announce.example/", &h), None);
    }
}
