//! Magnet links (BEP 9 URI form): parses `magnet:?xt=urn:btih:...` with its display name,
//! trackers, web seeds, peer addresses (x.pe) and file selection (so, BEP 53) into a value.
//! Pure: fetching the metadata a magnet points at belongs to the engine.

use crate::types::InfoHash;
use std::net::SocketAddr;
use std::ops::RangeInclusive;

/// Most parameters of each kind kept from one link; a link is typed or pasted by a person.
const MAX_LIST_ITEMS: usize = 200;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MagnetError {
    #[error("not a magnet link (it must start with \"magnet:?\")")]
    NotMagnet,
    #[error("the magnet link has no xt=urn:btih: info-hash")]
    NoInfoHash,
    #[error("the magnet link names only a v2 (urn:btmh) hash, which spate does not support yet")]
    OnlyV2,
    #[error("info-hash {0:?} is neither 40 hex nor 32 base32 characters")]
    BadInfoHash(String),
    #[error("bad percent-escape in {0:?}")]
    BadEscape(String),
    #[error("so={0:?} is not a list of file indices and ranges")]
    BadSelectOnly(String),
}

/// What a magnet link says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Magnet {
    pub info_hash: Option<InfoHash>,
    pub name: Option<String>,
    pub trackers: Vec<String>,
    pub web_seeds: Vec<String>,
    /// x.pe peers given as IP:port; host names are skipped.
    pub peers: Vec<SocketAddr>,
    /// so: the file indices to download, as inclusive ranges.
    pub select_only: Option<Vec<RangeInclusive<u32>>>,
}

impl Magnet {
    /// Parses a magnet URI.
    pub fn parse(uri: &str) -> Result<Magnet, MagnetError> {
        let query = uri.strip_prefix("magnet:?").ok_or(MagnetError::NotMagnet)?;
        let mut m = Magnet::default();
        let mut saw_v2 = false;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, raw) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(raw)?;
            match key {
                "xt" => {
                    if let Some(h) = value.strip_prefix("urn:btih:") {
                        m.info_hash = Some(parse_info_hash(h)?);
                    } else if value.starts_with("urn:btmh:") {
                        saw_v2 = true;
                    }
                }
                "dn" => m.name = Some(value),
                "tr" => push_capped(&mut m.trackers, value),
                "ws" => push_capped(&mut m.web_seeds, value),
                "x.pe" => {
                    if let Ok(addr) = value.parse() {
                        if m.peers.len() < MAX_LIST_ITEMS {
                            m.peers.push(addr);
                        }
                    }
                }
                "so" => m.select_only = Some(parse_select_only(&value)?),
                _ => {} // unknown keys are allowed by the spec
            }
        }
        match m.info_hash {
            Some(_) => Ok(m),
            None if saw_v2 => Err(MagnetError::OnlyV2),
            None => Err(MagnetError::NoInfoHash),
        }
    }
}

fn push_capped(list: &mut Vec<String>, value: String) {
    if list.len() < MAX_LIST_ITEMS && !list.contains(&value) {
        list.push(value);
    }
}

fn parse_info_hash(text: &str) -> Result<InfoHash, MagnetError> {
    let bad = || MagnetError::BadInfoHash(text.to_string());
    let bytes = match text.len() {
        40 => data_encoding::HEXLOWER_PERMISSIVE.decode(text.as_bytes()),
        32 => data_encoding::BASE32.decode(text.to_ascii_uppercase().as_bytes()),
        _ => return Err(bad()),
    }
    .map_err(|_| bad())?;
    let array: [u8; 20] = bytes.try_into().map_err(|_| bad())?;
    Ok(InfoHash(array))
}

fn parse_select_only(text: &str) -> Result<Vec<RangeInclusive<u32>>, MagnetError> {
    crate::selection::parse_ranges(text).map_err(|_| MagnetError::BadSelectOnly(text.to_string()))
}

/// Decodes %XX escapes and '+' (as a space); the result must be UTF-8.
fn percent_decode(raw: &str) -> Result<String, MagnetError> {
    let bad = || MagnetError::BadEscape(raw.to_string());
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or_else(bad)?;
                let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "c12fe1c06bba254a9dc9f519b335aa7c1367a88a";

    #[test]
    fn parses_every_field() {
        let uri = format!(
            "magnet:?xt=urn:btih:{HEX}&dn=My+File%20%E2%9C%93&tr=http%3A%2F%2Ft%2Fa&tr=udp://u:1\
             &ws=http://w/&x.pe=127.0.0.1:6881&x.pe=host.example:1&so=0,2,4-6"
        );
        let m = Magnet::parse(&uri).unwrap();
        assert_eq!(m.info_hash.unwrap().to_hex(), HEX);
        assert_eq!(m.name.as_deref(), Some("My File ✓"));
        assert_eq!(m.trackers, vec!["http://t/a", "udp://u:1"]);
        assert_eq!(m.web_seeds, vec!["http://w/"]);
        assert_eq!(m.peers, vec!["127.0.0.1:6881".parse().unwrap()]);
        assert_eq!(m.select_only, Some(vec![0..=0, 2..=2, 4..=6]));
    }

    #[test]
    fn base32_and_hex_agree() {
        let b32 =
            data_encoding::BASE32.encode(&data_encoding::HEXLOWER.decode(HEX.as_bytes()).unwrap());
        let a = Magnet::parse(&format!("magnet:?xt=urn:btih:{HEX}")).unwrap();
        let b = Magnet::parse(&format!("magnet:?xt=urn:btih:{}", b32.to_lowercase())).unwrap();
        assert_eq!(a.info_hash, b.info_hash);
    }

    #[test]
    fn refusals() {
        assert_eq!(Magnet::parse("http://x"), Err(MagnetError::NotMagnet));
        assert_eq!(Magnet::parse("magnet:?dn=x"), Err(MagnetError::NoInfoHash));
        assert_eq!(
            Magnet::parse("magnet:?xt=urn:btmh:1220aa"),
            Err(MagnetError::OnlyV2)
        );
        assert!(matches!(
            Magnet::parse("magnet:?xt=urn:btih:abc"),
            Err(MagnetError::BadInfoHash(_))
        ));
        assert!(matches!(
            Magnet::parse(&format!("magnet:?xt=urn:btih:{HEX}&dn=%zz")),
            Err(MagnetError::BadEscape(_))
        ));
        assert!(matches!(
            Magnet::parse(&format!("magnet:?xt=urn:btih:{HEX}&so=5-2")),
            Err(MagnetError::BadSelectOnly(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn random_text_never_panics(s in "magnet:\\?[ -~]{0,200}") {
            let _ = Magnet::parse(&s);
        }
    }
}
