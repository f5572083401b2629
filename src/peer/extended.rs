//! The BEP 10 extension handshake and the extension messages spate speaks: what we
//! advertise (client name, how many requests we accept queued, `lt_donthave`, `ut_metadata`
//! with the info dictionary's size) and what we read from the peer's (its request queue size
//! `reqq`, its ids for those extensions, the metadata size it offers). BEP 54's
//! `lt_donthave` lets a seeder whose file went missing take back a piece it announced, so
//! leechers stop waiting on requests it can no longer serve; BEP 9's `ut_metadata` carries
//! the info dictionary to peers that came from a magnet link (see `crate::metadata`);
//! BEP 11's `ut_pex` exchanges the addresses of connected peers (see `crate::pex`), and the
//! handshake's `p` says which port we listen on, so peers can pass our address on.

use crate::torrent::MAX_QUEUED_REQUESTS;
use crate::types::PieceIndex;
use serde_bencode::value::Value;
use std::collections::HashMap;

/// The extended message id peers use to send us `lt_donthave` (we pick it, BEP 10).
pub const OUR_DONTHAVE_ID: u8 = 1;
/// The extended message id peers use to send us `ut_metadata` messages.
pub const OUR_METADATA_ID: u8 = 2;
/// The extended message id peers use to send us `ut_pex` messages.
pub const OUR_PEX_ID: u8 = 3;

/// What our extension handshake offers beyond what every connection has.
#[derive(Debug, Default, Clone, Copy)]
pub struct Offer {
    /// The size of the info dictionary we can send, None while we do not have it.
    pub metadata_size: Option<usize>,
    /// Whether we exchange peers (never for private torrents, BEP 27).
    pub pex: bool,
    /// The port we accept connections on, if any.
    pub listen_port: Option<u16>,
}

/// Our extension handshake payload (message id 20, extended id 0).
pub fn our_handshake(offer: Offer) -> Vec<u8> {
    let mut m = HashMap::new();
    m.insert(b"lt_donthave".to_vec(), Value::Int(OUR_DONTHAVE_ID.into()));
    m.insert(b"ut_metadata".to_vec(), Value::Int(OUR_METADATA_ID.into()));
    if offer.pex {
        m.insert(b"ut_pex".to_vec(), Value::Int(OUR_PEX_ID.into()));
    }
    let mut d = HashMap::new();
    d.insert(b"m".to_vec(), Value::Dict(m));
    if let Some(size) = offer.metadata_size {
        d.insert(b"metadata_size".to_vec(), Value::Int(size as i64));
    }
    if let Some(port) = offer.listen_port {
        d.insert(b"p".to_vec(), Value::Int(port.into()));
    }
    d.insert(b"reqq".to_vec(), Value::Int(MAX_QUEUED_REQUESTS as i64));
    d.insert(
        b"v".to_vec(),
        Value::Bytes(format!("spate {}", env!("CARGO_PKG_VERSION")).into_bytes()),
    );
    serde_bencode::to_bytes(&Value::Dict(d)).expect("encoding an in-memory dict cannot fail")
}

/// The positive integer stored under `key` in the dict `payload`, clamped to u32, if the
/// payload is valid bencode and has one. Only that value is decoded.
fn positive_int_of(payload: &[u8], key: &[u8]) -> Option<u32> {
    let span = crate::bencode::dict_value_span(payload, key).ok()??;
    match serde_bencode::from_bytes::<Value>(&payload[span]).ok()? {
        Value::Int(n) if n > 0 => Some(n.min(i64::from(u32::MAX)) as u32),
        _ => None,
    }
}

/// What a peer's extension handshake says, read with one pass of the bencode scanner over
/// the payload (a peer's frame may be large); every field None unless the payload is one
/// well-formed bencode value.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TheirOffer {
    /// How many requests it queues (`reqq`), clamped to u32.
    pub reqq: Option<u32>,
    /// The ids it wants its `lt_donthave`, `ut_metadata` and `ut_pex` messages sent with
    /// (`m.<name>`; 0, which turns an extension off, reads as None).
    pub donthave_id: Option<u8>,
    pub metadata_id: Option<u8>,
    pub pex_id: Option<u8>,
    /// The size of the info dictionary it offers (`metadata_size`), checked by its user.
    pub metadata_size: Option<i64>,
    /// The port it accepts connections on (`p`), if that is a port.
    pub listen_port: Option<u16>,
}

impl TheirOffer {
    pub fn read(payload: &[u8]) -> TheirOffer {
        if crate::bencode::validate(payload).is_err() {
            return TheirOffer::default();
        }
        let m = crate::bencode::dict_value_span(payload, b"m")
            .ok()
            .flatten();
        let id = |name: &[u8]| {
            let m = &payload[m.clone()?];
            u8::try_from(positive_int_of(m, name)?).ok()
        };
        TheirOffer {
            reqq: positive_int_of(payload, b"reqq"),
            donthave_id: id(b"lt_donthave"),
            metadata_id: id(b"ut_metadata"),
            pex_id: id(b"ut_pex"),
            metadata_size: crate::bencode::dict_int(payload, b"metadata_size"),
            listen_port: crate::bencode::dict_int(payload, b"p")
                .and_then(|p| u16::try_from(p).ok())
                .filter(|&p| p != 0),
        }
    }
}

/// The `reqq` a peer advertised, if its handshake is well-formed and has one.
pub fn reqq_of(payload: &[u8]) -> Option<u32> {
    TheirOffer::read(payload).reqq
}

/// The id a peer wants its `lt_donthave` messages sent with (`m.lt_donthave`), if any.
pub fn donthave_id_of(payload: &[u8]) -> Option<u8> {
    TheirOffer::read(payload).donthave_id
}

/// The id a peer wants its `ut_metadata` messages sent with (`m.ut_metadata`), if any.
pub fn metadata_id_of(payload: &[u8]) -> Option<u8> {
    TheirOffer::read(payload).metadata_id
}

/// The id a peer wants its `ut_pex` messages sent with (`m.ut_pex`), if any.
pub fn pex_id_of(payload: &[u8]) -> Option<u8> {
    TheirOffer::read(payload).pex_id
}

/// The port a peer says it accepts connections on (`p`), if it says and it is one.
pub fn listen_port_of(payload: &[u8]) -> Option<u16> {
    TheirOffer::read(payload).listen_port
}

/// The size of the info dictionary a peer offers (`metadata_size`), if it says.
pub fn metadata_size_of(payload: &[u8]) -> Option<i64> {
    TheirOffer::read(payload).metadata_size
}

/// The payload of an `lt_donthave` message: the piece index, big-endian.
pub fn donthave_payload(piece: PieceIndex) -> [u8; 4] {
    piece.0.to_be_bytes()
}

/// The piece an `lt_donthave` payload names, or None if it is not exactly four bytes.
pub fn parse_donthave(payload: &[u8]) -> Option<PieceIndex> {
    let bytes: [u8; 4] = payload.try_into().ok()?;
    Some(PieceIndex(u32::from_be_bytes(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reqq_round_trip_and_garbage() {
        assert_eq!(
            reqq_of(&our_handshake(Offer::default())),
            Some(MAX_QUEUED_REQUESTS as u32)
        );
        assert_eq!(reqq_of(b"d4:reqqi250ee"), Some(250));
        assert_eq!(reqq_of(b"d4:reqqi-1ee"), None);
        assert_eq!(reqq_of(b"garbage"), None);
        assert_eq!(reqq_of(b"d1:mdee"), None);
    }

    #[test]
    fn donthave_id_round_trip_and_garbage() {
        assert_eq!(
            donthave_id_of(&our_handshake(Offer::default())),
            Some(OUR_DONTHAVE_ID)
        );
        assert_eq!(donthave_id_of(b"d1:md11:lt_donthavei7eee"), Some(7));
        assert_eq!(
            donthave_id_of(b"d1:md11:lt_donthavei0eee"),
            None,
            "0 disables"
        );
        assert_eq!(donthave_id_of(b"d1:md11:lt_donthavei300eee"), None);
        assert_eq!(donthave_id_of(b"d11:lt_donthavei7ee"), None, "not under m");
        assert_eq!(donthave_id_of(b"d1:mli1eee"), None);
        assert_eq!(donthave_id_of(b"d1:md11:lt_donthavei7e"), None, "truncated");
    }

    #[test]
    fn metadata_fields_round_trip_and_garbage() {
        let ours = our_handshake(Offer {
            metadata_size: Some(12345),
            ..Offer::default()
        });
        assert_eq!(metadata_id_of(&ours), Some(OUR_METADATA_ID));
        assert_eq!(metadata_size_of(&ours), Some(12345));
        assert_eq!(metadata_size_of(&our_handshake(Offer::default())), None);
        assert_eq!(
            metadata_id_of(b"d1:md11:ut_metadatai3ee13:metadata_sizei9ee"),
            Some(3)
        );
        assert_eq!(
            metadata_size_of(b"d13:metadata_sizei-9ee"),
            Some(-9),
            "checked later"
        );
        assert_eq!(metadata_size_of(b"d13:metadata_size1:9e"), None);
        assert_eq!(
            metadata_id_of(b"d1:md11:ut_metadatai0eee"),
            None,
            "0 disables"
        );
    }

    #[test]
    fn pex_and_listen_port_are_offered_only_when_asked() {
        let plain = our_handshake(Offer::default());
        assert_eq!(pex_id_of(&plain), None, "private torrents offer no PEX");
        assert_eq!(listen_port_of(&plain), None);
        let full = our_handshake(Offer {
            pex: true,
            listen_port: Some(51413),
            ..Offer::default()
        });
        assert_eq!(pex_id_of(&full), Some(OUR_PEX_ID));
        assert_eq!(listen_port_of(&full), Some(51413));
        assert_eq!(listen_port_of(b"d1:pi0ee"), None);
        assert_eq!(listen_port_of(b"d1:pi65536ee"), None);
        assert_eq!(listen_port_of(b"d1:pi-1ee"), None);
        assert_eq!(listen_port_of(b"d1:p4:6881e"), None);
    }

    #[test]
    fn donthave_payload_round_trip() {
        let p = PieceIndex(0x0102_0304);
        assert_eq!(parse_donthave(&donthave_payload(p)), Some(p));
        assert_eq!(parse_donthave(&[0, 0, 1]), None);
        assert_eq!(parse_donthave(&[0, 0, 0, 1, 0]), None);
    }
}
