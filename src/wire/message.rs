//! One peer-wire message: the enum, its encoding (length prefix included), and the decoding of
//! one whole frame body (the bytes after the length prefix). Each length check sits in the
//! decode arm of the message whose rule it enforces.

use super::WireError;
use crate::types::{BlockRef, PieceIndex};

/// Message ids on the wire: BEP 3, BEP 5 (PORT), BEP 6 (fast extension), BEP 10 (extended).
pub mod id {
    pub const CHOKE: u8 = 0;
    pub const UNCHOKE: u8 = 1;
    pub const INTERESTED: u8 = 2;
    pub const NOT_INTERESTED: u8 = 3;
    pub const HAVE: u8 = 4;
    pub const BITFIELD: u8 = 5;
    pub const REQUEST: u8 = 6;
    pub const PIECE: u8 = 7;
    pub const CANCEL: u8 = 8;
    pub const PORT: u8 = 9;
    pub const SUGGEST: u8 = 0x0D;
    pub const HAVE_ALL: u8 = 0x0E;
    pub const HAVE_NONE: u8 = 0x0F;
    pub const REJECT: u8 = 0x10;
    pub const ALLOWED_FAST: u8 = 0x11;
    pub const EXTENDED: u8 = 20;
}

/// Bytes before a PIECE frame's block: length prefix, id, index, begin.
pub const PIECE_HEADER_LEN: usize = 13;

/// Bytes of the length prefix in front of every frame.
const PREFIX_LEN: usize = 4;

/// One message. Variable-size payloads borrow from the buffer they were decoded from.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Message<'a> {
    KeepAlive,
    Choke,
    Unchoke,
    Interested,
    NotInterested,
    Have(PieceIndex),
    /// Raw bitfield bytes; check them against the torrent with `validate_bitfield`.
    Bitfield(&'a [u8]),
    Request(BlockRef),
    Piece {
        piece: PieceIndex,
        offset: u32,
        data: &'a [u8],
    },
    Cancel(BlockRef),
    /// The peer's DHT port (BEP 5).
    Port(u16),
    Suggest(PieceIndex),
    HaveAll,
    HaveNone,
    Reject(BlockRef),
    AllowedFast(PieceIndex),
    /// BEP 10: `id` 0 is the extended handshake, others are ids the peers agreed on.
    Extended {
        id: u8,
        payload: &'a [u8],
    },
    /// An id this codec does not know. Peers may send these and must not be dropped for it.
    /// Encoding one with a known id yields a frame that decodes as that known message.
    Unknown {
        id: u8,
        payload: &'a [u8],
    },
}

impl<'a> Message<'a> {
    /// The id byte, or `None` for a keep-alive, which has none.
    pub fn id(&self) -> Option<u8> {
        Some(match self {
            Message::KeepAlive => return None,
            Message::Choke => id::CHOKE,
            Message::Unchoke => id::UNCHOKE,
            Message::Interested => id::INTERESTED,
            Message::NotInterested => id::NOT_INTERESTED,
            Message::Have(_) => id::HAVE,
            Message::Bitfield(_) => id::BITFIELD,
            Message::Request(_) => id::REQUEST,
            Message::Piece { .. } => id::PIECE,
            Message::Cancel(_) => id::CANCEL,
            Message::Port(_) => id::PORT,
            Message::Suggest(_) => id::SUGGEST,
            Message::HaveAll => id::HAVE_ALL,
            Message::HaveNone => id::HAVE_NONE,
            Message::Reject(_) => id::REJECT,
            Message::AllowedFast(_) => id::ALLOWED_FAST,
            Message::Extended { .. } => id::EXTENDED,
            Message::Unknown { id, .. } => *id,
        })
    }

    /// Bytes `encode_into` appends, length prefix included.
    pub fn encoded_len(&self) -> usize {
        PREFIX_LEN + self.body_len()
    }

    /// The frame's length prefix value: id plus payload.
    fn body_len(&self) -> usize {
        match self {
            Message::KeepAlive => 0,
            Message::Choke
            | Message::Unchoke
            | Message::Interested
            | Message::NotInterested
            | Message::HaveAll
            | Message::HaveNone => 1,
            Message::Have(_) | Message::Suggest(_) | Message::AllowedFast(_) => 5,
            Message::Request(_) | Message::Cancel(_) | Message::Reject(_) => 13,
            Message::Port(_) => 3,
            Message::Bitfield(bits) => 1 + bits.len(),
            Message::Piece { data, .. } => PIECE_HEADER_LEN - PREFIX_LEN + data.len(),
            Message::Extended { payload, .. } => 2 + payload.len(),
            Message::Unknown { payload, .. } => 1 + payload.len(),
        }
    }

    /// Appends the whole frame, length prefix included.
    ///
    /// # Panics
    /// If the frame body exceeds `u32::MAX` bytes, which the wire cannot express; only a
    /// caller bug (a multi-GiB payload) gets there.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let body = u32::try_from(self.body_len()).expect("frame body over 4 GiB");
        out.reserve(self.encoded_len());
        out.extend_from_slice(&body.to_be_bytes());
        if let Some(id) = self.id() {
            out.push(id);
        }
        self.encode_payload(out);
    }

    /// Appends what follows the id byte.
    fn encode_payload(&self, out: &mut Vec<u8>) {
        match *self {
            Message::Have(p) | Message::Suggest(p) | Message::AllowedFast(p) => {
                out.extend_from_slice(&p.0.to_be_bytes())
            }
            Message::Request(b) | Message::Cancel(b) | Message::Reject(b) => {
                out.extend_from_slice(&b.piece.0.to_be_bytes());
                out.extend_from_slice(&b.offset.to_be_bytes());
                out.extend_from_slice(&b.len.to_be_bytes());
            }
            Message::Port(port) => out.extend_from_slice(&port.to_be_bytes()),
            Message::Bitfield(bits) => out.extend_from_slice(bits),
            Message::Piece {
                piece,
                offset,
                data,
            } => {
                out.extend_from_slice(&piece.0.to_be_bytes());
                out.extend_from_slice(&offset.to_be_bytes());
                out.extend_from_slice(data);
            }
            Message::Extended { id, payload } => {
                out.push(id);
                out.extend_from_slice(payload);
            }
            Message::Unknown { payload, .. } => out.extend_from_slice(payload),
            _ => {}
        }
    }

    /// Decodes one whole frame body: the `len` bytes after the length prefix. An empty body
    /// is a keep-alive. Unknown ids decode to [`Message::Unknown`], not an error, so that a
    /// newer peer's messages can be skipped.
    pub fn decode_body(body: &'a [u8]) -> Result<Message<'a>, WireError> {
        let Some((&id, rest)) = body.split_first() else {
            return Ok(Message::KeepAlive);
        };
        match id {
            // State messages are the id alone.
            id::CHOKE => fixed::<0>(id, rest).map(|_| Message::Choke),
            id::UNCHOKE => fixed::<0>(id, rest).map(|_| Message::Unchoke),
            id::INTERESTED => fixed::<0>(id, rest).map(|_| Message::Interested),
            id::NOT_INTERESTED => fixed::<0>(id, rest).map(|_| Message::NotInterested),
            id::HAVE_ALL => fixed::<0>(id, rest).map(|_| Message::HaveAll),
            id::HAVE_NONE => fixed::<0>(id, rest).map(|_| Message::HaveNone),
            // One piece index.
            id::HAVE => piece_index(id, rest).map(Message::Have),
            id::SUGGEST => piece_index(id, rest).map(Message::Suggest),
            id::ALLOWED_FAST => piece_index(id, rest).map(Message::AllowedFast),
            // index, begin, length.
            id::REQUEST => block(id, rest).map(Message::Request),
            id::CANCEL => block(id, rest).map(Message::Cancel),
            id::REJECT => block(id, rest).map(Message::Reject),
            // A two-byte port.
            id::PORT => fixed::<2>(id, rest).map(|p| Message::Port(u16::from_be_bytes(p))),
            // Any length: its match with the piece count is the engine's check.
            id::BITFIELD => Ok(Message::Bitfield(rest)),
            id::PIECE => piece(rest),
            id::EXTENDED => extended(rest),
            _ => Ok(Message::Unknown { id, payload: rest }),
        }
    }
}

/// The payload of a fixed-size message as an array, or `BadLength` if it has another size.
fn fixed<const N: usize>(id: u8, rest: &[u8]) -> Result<[u8; N], WireError> {
    <[u8; N]>::try_from(rest).map_err(|_| bad_length(id, rest))
}

/// `BadLength` reporting the frame's length prefix (the id byte plus `rest`).
fn bad_length(id: u8, rest: &[u8]) -> WireError {
    // A body always fits u32 when it came from a frame; saturate for direct callers.
    let len = u32::try_from(rest.len().saturating_add(1)).unwrap_or(u32::MAX);
    WireError::BadLength { id, len }
}

/// HAVE, SUGGEST and ALLOWED_FAST carry exactly one big-endian u32.
fn piece_index(id: u8, rest: &[u8]) -> Result<PieceIndex, WireError> {
    fixed::<4>(id, rest).map(|b| PieceIndex(u32::from_be_bytes(b)))
}

/// REQUEST, CANCEL and REJECT carry exactly index, begin and length.
fn block(id: u8, rest: &[u8]) -> Result<BlockRef, WireError> {
    let b = fixed::<12>(id, rest)?;
    let word = |at: usize| u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    Ok(BlockRef {
        piece: PieceIndex(word(0)),
        offset: word(4),
        len: word(8),
    })
}

/// PIECE needs at least index and begin; the block after them may be empty.
fn piece(rest: &[u8]) -> Result<Message<'_>, WireError> {
    let Some((head, data)) = rest.split_first_chunk::<8>() else {
        return Err(bad_length(id::PIECE, rest));
    };
    let (piece, offset) = piece_index_and_offset(head);
    Ok(Message::Piece {
        piece,
        offset,
        data,
    })
}

/// The index and begin fields that follow a PIECE frame's id byte.
pub(super) fn piece_index_and_offset(head: &[u8; 8]) -> (PieceIndex, u32) {
    let [a, b, c, d, e, f, g, h] = *head;
    (
        PieceIndex(u32::from_be_bytes([a, b, c, d])),
        u32::from_be_bytes([e, f, g, h]),
    )
}

/// EXTENDED needs at least its extended-message id; the payload may be empty.
fn extended(rest: &[u8]) -> Result<Message<'_>, WireError> {
    match rest.split_first() {
        Some((&id, payload)) => Ok(Message::Extended { id, payload }),
        None => Err(bad_length(id::EXTENDED, rest)),
    }
}

/// The 13 bytes that precede a PIECE frame's block (length prefix, id 7, index, begin), so a
/// sender can write this header and the block from separate buffers without copying the block.
///
/// # Panics
/// If `data_len` is within 9 of `u32::MAX`, which no frame can hold; only a caller bug gets
/// there.
pub fn piece_header(piece: PieceIndex, offset: u32, data_len: u32) -> [u8; PIECE_HEADER_LEN] {
    let len = data_len
        .checked_add((PIECE_HEADER_LEN - PREFIX_LEN) as u32)
        .expect("PIECE block too long for a frame");
    let mut h = [0u8; PIECE_HEADER_LEN];
    h[..4].copy_from_slice(&len.to_be_bytes());
    h[4] = id::PIECE;
    h[5..9].copy_from_slice(&piece.0.to_be_bytes());
    h[9..].copy_from_slice(&offset.to_be_bytes());
    h
}

/// Shared by this file's tests and the decoder's.
#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use proptest::prelude::*;

    const KNOWN_IDS: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 14, 15, 16, 17, 20];

    /// One message of every kind, including empty variable payloads.
    pub(in crate::wire) fn every_message() -> Vec<Message<'static>> {
        let b = BlockRef {
            piece: PieceIndex(7),
            offset: 16384,
            len: 16384,
        };
        vec![
            Message::KeepAlive,
            Message::Choke,
            Message::Unchoke,
            Message::Interested,
            Message::NotInterested,
            Message::Have(PieceIndex(0xDEAD_BEEF)),
            Message::Bitfield(&[0b1010_0000, 0xFF]),
            Message::Bitfield(&[]),
            Message::Request(b),
            Message::Piece {
                piece: PieceIndex(3),
                offset: 32768,
                data: b"hello block",
            },
            Message::Piece {
                piece: PieceIndex(1),
                offset: 0,
                data: &[],
            },
            Message::Cancel(b),
            Message::Port(6881),
            Message::Suggest(PieceIndex(9)),
            Message::HaveAll,
            Message::HaveNone,
            Message::Reject(b),
            Message::AllowedFast(PieceIndex(u32::MAX)),
            Message::Extended {
                id: 0,
                payload: b"d1:md11:ut_metadatai1eee",
            },
            Message::Extended {
                id: 3,
                payload: &[],
            },
            Message::Unknown {
                id: 0x0A,
                payload: b"?",
            },
            Message::Unknown {
                id: 0xFF,
                payload: &[],
            },
        ]
    }

    /// Owned raw material from which `build` makes a message of any kind.
    #[derive(Debug, Clone)]
    pub(in crate::wire) struct Sample {
        kind: u8,
        a: u32,
        b: u32,
        c: u32,
        small: u16,
        bytes: Vec<u8>,
    }

    pub(in crate::wire) fn arb_sample() -> impl Strategy<Value = Sample> {
        (
            0u8..18,
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            any::<u16>(),
            proptest::collection::vec(any::<u8>(), 0..200),
        )
            .prop_map(|(kind, a, b, c, small, bytes)| Sample {
                kind,
                a,
                b,
                c,
                small,
                bytes,
            })
    }

    /// An id no message of this codec uses, chosen by `seed`.
    fn unknown_id(seed: u16) -> u8 {
        let free: Vec<u8> = (0..=255u8).filter(|i| !KNOWN_IDS.contains(i)).collect();
        free[usize::from(seed) % free.len()]
    }

    pub(in crate::wire) fn build(s: &Sample) -> Message<'_> {
        let blk = BlockRef {
            piece: PieceIndex(s.a),
            offset: s.b,
            len: s.c,
        };
        match s.kind {
            0 => Message::KeepAlive,
            1 => Message::Choke,
            2 => Message::Unchoke,
            3 => Message::Interested,
            4 => Message::NotInterested,
            5 => Message::Have(PieceIndex(s.a)),
            6 => Message::Bitfield(&s.bytes),
            7 => Message::Request(blk),
            8 => Message::Piece {
                piece: PieceIndex(s.a),
                offset: s.b,
                data: &s.bytes,
            },
            9 => Message::Cancel(blk),
            10 => Message::Port(s.small),
            11 => Message::Suggest(PieceIndex(s.a)),
            12 => Message::HaveAll,
            13 => Message::HaveNone,
            14 => Message::Reject(blk),
            15 => Message::AllowedFast(PieceIndex(s.a)),
            16 => Message::Extended {
                id: s.small as u8,
                payload: &s.bytes,
            },
            _ => Message::Unknown {
                id: unknown_id(s.small),
                payload: &s.bytes,
            },
        }
    }

    fn encode(m: &Message<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        m.encode_into(&mut out);
        out
    }

    /// Encodes, checks the prefix and `encoded_len`, and decodes the body back.
    fn round_trip(m: &Message<'_>) {
        let bytes = encode(m);
        assert_eq!(bytes.len(), m.encoded_len(), "{m:?}");
        let prefix = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        assert_eq!(prefix as usize, bytes.len() - 4, "{m:?}");
        assert_eq!(Message::decode_body(&bytes[4..]).as_ref(), Ok(m));
    }

    #[test]
    fn every_message_encodes_then_decodes_to_itself() {
        for m in every_message() {
            round_trip(&m);
        }
    }

    #[test]
    fn known_encodings() {
        assert_eq!(encode(&Message::KeepAlive), [0, 0, 0, 0]);
        assert_eq!(encode(&Message::Unchoke), [0, 0, 0, 1, 1]);
        assert_eq!(
            encode(&Message::Have(PieceIndex(258))),
            [0, 0, 0, 5, 4, 0, 0, 1, 2]
        );
        assert_eq!(encode(&Message::Port(0x1AE1)), [0, 0, 0, 3, 9, 0x1A, 0xE1]);
        assert_eq!(encode(&Message::HaveAll), [0, 0, 0, 1, 0x0E]);
    }

    #[test]
    fn every_known_id_is_covered_by_every_message() {
        let ids: Vec<u8> = every_message().iter().filter_map(Message::id).collect();
        for id in KNOWN_IDS {
            assert!(ids.contains(&id), "id {id} has no sample");
        }
    }

    #[test]
    fn piece_header_matches_full_encoding() {
        let m = Message::Piece {
            piece: PieceIndex(42),
            offset: 16384,
            data: &[9; 100],
        };
        let full = encode(&m);
        let head = piece_header(PieceIndex(42), 16384, 100);
        assert_eq!(&full[..PIECE_HEADER_LEN], &head);
        assert_eq!(&full[PIECE_HEADER_LEN..], &[9; 100]);
    }

    /// (id, the only valid length prefix) for every fixed-size message.
    const FIXED: [(u8, u32); 14] = [
        (id::CHOKE, 1),
        (id::UNCHOKE, 1),
        (id::INTERESTED, 1),
        (id::NOT_INTERESTED, 1),
        (id::HAVE_ALL, 1),
        (id::HAVE_NONE, 1),
        (id::HAVE, 5),
        (id::SUGGEST, 5),
        (id::ALLOWED_FAST, 5),
        (id::REQUEST, 13),
        (id::CANCEL, 13),
        (id::REJECT, 13),
        (id::PORT, 3),
        (id::PIECE, 9), // the minimum: PIECE may be longer but never shorter
    ];

    #[test]
    fn fixed_size_messages_with_a_wrong_length_fail_with_bad_length() {
        for (id, good) in FIXED {
            for len in 1..=20u32 {
                let mut body = vec![0u8; len as usize];
                body[0] = id;
                let got = Message::decode_body(&body);
                let ok = len == good || (id == id::PIECE && len > good);
                if ok {
                    assert!(got.is_ok(), "id {id} len {len}: {got:?}");
                } else {
                    assert_eq!(got, Err(WireError::BadLength { id, len }), "id {id}");
                }
            }
        }
    }

    #[test]
    fn extended_without_its_id_fails_with_bad_length() {
        assert_eq!(
            Message::decode_body(&[id::EXTENDED]),
            Err(WireError::BadLength { id: 20, len: 1 })
        );
    }

    proptest! {
        #[test]
        fn any_message_encodes_then_decodes_to_itself(s in arb_sample()) {
            let m = build(&s);
            let bytes = encode(&m);
            prop_assert_eq!(bytes.len(), m.encoded_len());
            prop_assert_eq!(Message::decode_body(&bytes[4..]), Ok(m));
        }

        #[test]
        fn random_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(m) = Message::decode_body(&body) {
                // Whatever decodes re-encodes to the same bytes.
                prop_assert_eq!(&encode(&m)[4..], &body[..]);
            }
        }
    }
}
