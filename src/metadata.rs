//! BEP 9 metadata exchange (`ut_metadata`): the messages that carry a torrent's info
//! dictionary between peers in 16 KiB pieces, what a peer's extension handshake says about
//! it, and `MetadataAssembler`, which puts one peer's pieces together and hands the result
//! over only if its SHA-1 is the info-hash. Pure: fetching over sockets is
//! `session::magnet`, answering requests is `torrent`.

use crate::bencode;
use crate::types::InfoHash;
use sha1::{Digest, Sha1};

/// Bytes in every metadata piece but the last (BEP 9).
pub const METADATA_PIECE: usize = 16 << 10;
/// Largest info dictionary accepted from a peer: 8 MiB holds the hashes of 400,000 pieces.
/// A peer may claim any size, and the buffer is allocated before the first piece arrives.
pub const MAX_METADATA_SIZE: usize = 8 << 20;

const MSG_REQUEST: i64 = 0;
const MSG_DATA: i64 = 1;
const MSG_REJECT: i64 = 2;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MetadataError {
    #[error("metadata message is not a bencoded dictionary")]
    NotADict,
    #[error("metadata message lacks {0}")]
    Missing(&'static str),
    #[error("unknown metadata message type {0}")]
    UnknownType(i64),
    #[error("metadata size {0} is out of range (1 byte to 8 MiB)")]
    BadSize(i64),
    #[error("metadata piece {piece} is out of range ({count} pieces)")]
    PieceOutOfRange { piece: i64, count: u32 },
    #[error("metadata piece {piece} has {got} bytes, not {want}")]
    WrongLength { piece: u32, got: usize, want: usize },
    #[error("peer says the metadata is {got} bytes, having said {want}")]
    SizeChanged { got: i64, want: usize },
    #[error("the metadata's SHA-1 is not the info-hash")]
    WrongHash,
}

/// One `ut_metadata` message (the payload of an extended message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataMessage<'a> {
    Request {
        piece: u32,
    },
    /// A piece, `data` being the raw bytes after the dictionary.
    Data {
        piece: u32,
        total_size: i64,
        data: &'a [u8],
    },
    Reject {
        piece: u32,
    },
}

impl<'a> MetadataMessage<'a> {
    /// Parses a `ut_metadata` payload. Piece indices are checked against the metadata's size
    /// by the assembler; here they only have to fit a u32.
    pub fn parse(payload: &'a [u8]) -> Result<MetadataMessage<'a>, MetadataError> {
        let dict_len = bencode::leading_value_len(payload).map_err(|_| MetadataError::NotADict)?;
        let dict = &payload[..dict_len];
        if dict.first() != Some(&b'd') {
            return Err(MetadataError::NotADict);
        }
        let msg_type =
            bencode::dict_int(dict, b"msg_type").ok_or(MetadataError::Missing("msg_type"))?;
        let piece = bencode::dict_int(dict, b"piece").ok_or(MetadataError::Missing("piece"))?;
        let piece =
            u32::try_from(piece).map_err(|_| MetadataError::PieceOutOfRange { piece, count: 0 })?;
        match msg_type {
            MSG_REQUEST => Ok(MetadataMessage::Request { piece }),
            MSG_REJECT => Ok(MetadataMessage::Reject { piece }),
            MSG_DATA => Ok(MetadataMessage::Data {
                piece,
                total_size: bencode::dict_int(dict, b"total_size")
                    .ok_or(MetadataError::Missing("total_size"))?,
                data: &payload[dict_len..],
            }),
            other => Err(MetadataError::UnknownType(other)),
        }
    }

    /// The message as a `ut_metadata` payload.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            MetadataMessage::Request { piece } => {
                format!("d8:msg_typei{MSG_REQUEST}e5:piecei{piece}ee").into_bytes()
            }
            MetadataMessage::Reject { piece } => {
                format!("d8:msg_typei{MSG_REJECT}e5:piecei{piece}ee").into_bytes()
            }
            MetadataMessage::Data {
                piece,
                total_size,
                data,
            } => {
                let mut out =
                    format!("d8:msg_typei{MSG_DATA}e5:piecei{piece}e10:total_sizei{total_size}ee")
                        .into_bytes();
                out.extend_from_slice(data);
                out
            }
        }
    }
}

/// Pieces an info dictionary of `size` bytes is sent in.
pub fn piece_count(size: usize) -> u32 {
    size.div_ceil(METADATA_PIECE) as u32
}

/// The bytes of metadata piece `piece` of `info`, if there is such a piece.
pub fn piece_of(info: &[u8], piece: u32) -> Option<&[u8]> {
    let start = (piece as usize).checked_mul(METADATA_PIECE)?;
    (start < info.len()).then(|| &info[start..info.len().min(start + METADATA_PIECE)])
}

/// The answer to a request for `piece` of `info`: the piece, or a reject when there is no
/// such piece.
pub fn answer(info: &[u8], piece: u32) -> Vec<u8> {
    match piece_of(info, piece) {
        Some(data) => MetadataMessage::Data {
            piece,
            total_size: info.len() as i64,
            data,
        }
        .encode(),
        None => MetadataMessage::Reject { piece }.encode(),
    }
}

/// Checks a size a peer advertised (`metadata_size`) or sent (`total_size`).
pub fn checked_size(size: i64) -> Result<usize, MetadataError> {
    match usize::try_from(size) {
        Ok(n) if (1..=MAX_METADATA_SIZE).contains(&n) => Ok(n),
        _ => Err(MetadataError::BadSize(size)),
    }
}

/// One peer's pieces of an info dictionary, put together.
pub struct MetadataAssembler {
    info_hash: InfoHash,
    buf: Vec<u8>,
    received: Vec<bool>,
    missing: u32,
}

impl MetadataAssembler {
    /// An assembler for an info dictionary the peer says is `size` bytes long.
    pub fn new(info_hash: InfoHash, size: i64) -> Result<MetadataAssembler, MetadataError> {
        let size = checked_size(size)?;
        let count = piece_count(size);
        Ok(MetadataAssembler {
            info_hash,
            buf: vec![0; size],
            received: vec![false; count as usize],
            missing: count,
        })
    }

    /// Pieces not received yet, in order.
    pub fn missing(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.received.len() as u32).filter(|&p| !self.received[p as usize])
    }

    pub fn is_complete(&self) -> bool {
        self.missing == 0
    }

    /// Takes one DATA message's contents.
    pub fn add(&mut self, piece: u32, total_size: i64, data: &[u8]) -> Result<(), MetadataError> {
        if usize::try_from(total_size).ok() != Some(self.buf.len()) {
            return Err(MetadataError::SizeChanged {
                got: total_size,
                want: self.buf.len(),
            });
        }
        let count = self.received.len() as u32;
        let start = piece as usize * METADATA_PIECE;
        if piece >= count {
            return Err(MetadataError::PieceOutOfRange {
                piece: piece.into(),
                count,
            });
        }
        let want = (self.buf.len() - start).min(METADATA_PIECE);
        if data.len() != want {
            return Err(MetadataError::WrongLength {
                piece,
                got: data.len(),
                want,
            });
        }
        self.buf[start..start + want].copy_from_slice(data);
        if !std::mem::replace(&mut self.received[piece as usize], true) {
            self.missing -= 1;
        }
        Ok(())
    }

    /// The info dictionary, once every piece is in and its SHA-1 is the info-hash.
    pub fn finish(self) -> Result<Vec<u8>, MetadataError> {
        if !self.is_complete() {
            return Err(MetadataError::Missing("pieces"));
        }
        if Sha1::digest(&self.buf).as_slice() != self.info_hash.0 {
            return Err(MetadataError::WrongHash);
        }
        Ok(self.buf)
    }
}

/// A .torrent file around an info dictionary fetched from peers, with the magnet link's
/// trackers, one tier each (as libtorrent and Transmission take them), and its web seeds
/// (`ws`, as `url-list`). The info dictionary goes in byte for byte, so the file's
/// info-hash is the one the link named.
pub fn torrent_file(info: &[u8], trackers: &[String], web_seeds: &[String]) -> Vec<u8> {
    fn string(out: &mut Vec<u8>, s: &[u8]) {
        out.extend_from_slice(format!("{}:", s.len()).as_bytes());
        out.extend_from_slice(s);
    }
    let mut out = b"d".to_vec();
    if let Some(first) = trackers.first() {
        string(&mut out, b"announce");
        string(&mut out, first.as_bytes());
        string(&mut out, b"announce-list");
        out.push(b'l');
        for t in trackers {
            out.push(b'l');
            string(&mut out, t.as_bytes());
            out.push(b'e');
        }
        out.push(b'e');
    }
    string(&mut out, b"info");
    out.extend_from_slice(info);
    if !web_seeds.is_empty() {
        string(&mut out, b"url-list");
        out.push(b'l');
        for w in web_seeds {
            string(&mut out, w.as_bytes());
        }
        out.push(b'e');
    }
    out.push(b'e');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info_of(len: usize) -> Vec<u8> {
        let body: Vec<u8> = (0..len - 2).map(|i| b'a' + (i % 26) as u8).collect();
        // Not a real info dictionary: the assembler only checks the hash.
        [b"x".as_slice(), &body, b"y"].concat()
    }

    fn hash_of(bytes: &[u8]) -> InfoHash {
        InfoHash(Sha1::digest(bytes).into())
    }

    #[test]
    fn messages_round_trip() {
        for m in [
            MetadataMessage::Request { piece: 3 },
            MetadataMessage::Reject { piece: 0 },
            MetadataMessage::Data {
                piece: 1,
                total_size: 20000,
                data: b"raw bytes",
            },
        ] {
            assert_eq!(MetadataMessage::parse(&m.encode()).unwrap(), m);
        }
        // Keys in another order and extra keys, as some clients send them.
        let m = MetadataMessage::parse(b"d5:piecei0e8:msg_typei0e1:xi9ee").unwrap();
        assert_eq!(m, MetadataMessage::Request { piece: 0 });
    }

    #[test]
    fn refuses_bad_messages() {
        for (bad, err) in [
            (&b"garbage"[..], MetadataError::NotADict),
            (b"li1ee", MetadataError::NotADict),
            (b"d5:piecei0ee", MetadataError::Missing("msg_type")),
            (b"d8:msg_typei0ee", MetadataError::Missing("piece")),
            (b"d8:msg_typei7e5:piecei0ee", MetadataError::UnknownType(7)),
            (
                b"d8:msg_typei1e5:piecei0ee",
                MetadataError::Missing("total_size"),
            ),
            (
                b"d8:msg_typei0e5:piecei-1ee",
                MetadataError::PieceOutOfRange {
                    piece: -1,
                    count: 0,
                },
            ),
        ] {
            assert_eq!(
                MetadataMessage::parse(bad),
                Err(err),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn assembles_pieces_in_any_order_and_checks_the_hash() {
        let info = info_of(2 * METADATA_PIECE + 100);
        let mut a = MetadataAssembler::new(hash_of(&info), info.len() as i64).unwrap();
        assert_eq!(a.missing().collect::<Vec<_>>(), [0, 1, 2]);
        for piece in [2, 0, 0, 1] {
            let reply = answer(&info, piece);
            let MetadataMessage::Data {
                piece,
                total_size,
                data,
            } = MetadataMessage::parse(&reply).unwrap()
            else {
                panic!("a data message");
            };
            a.add(piece, total_size, data).unwrap();
        }
        assert!(a.is_complete());
        assert_eq!(a.finish().unwrap(), info);
    }

    #[test]
    fn refuses_what_does_not_fit() {
        let info = info_of(METADATA_PIECE + 10);
        let size = info.len() as i64;
        assert_eq!(
            MetadataAssembler::new(hash_of(&info), 0).err(),
            Some(MetadataError::BadSize(0))
        );
        assert!(MetadataAssembler::new(hash_of(&info), MAX_METADATA_SIZE as i64 + 1).is_err());
        assert!(MetadataAssembler::new(hash_of(&info), -5).is_err());
        let mut a = MetadataAssembler::new(hash_of(&info), size).unwrap();
        assert!(matches!(
            a.add(2, size, b"x"),
            Err(MetadataError::PieceOutOfRange { .. })
        ));
        assert!(matches!(
            a.add(0, size + 1, &info[..METADATA_PIECE]),
            Err(MetadataError::SizeChanged { .. })
        ));
        assert!(matches!(
            a.add(1, size, &info[..11]),
            Err(MetadataError::WrongLength { .. })
        ));
        assert!(matches!(
            a.add(0, size, &info[..METADATA_PIECE - 1]),
            Err(MetadataError::WrongLength { .. })
        ));
        a.add(0, size, &info[..METADATA_PIECE]).unwrap();
        assert!(!a.is_complete());
        // The right size but other bytes: complete, and refused for its hash.
        a.add(1, size, &[0u8; 10]).unwrap();
        assert_eq!(a.finish().err(), Some(MetadataError::WrongHash));
    }

    #[test]
    fn answers_requests_past_the_end_with_a_reject() {
        let info = info_of(100);
        assert_eq!(
            MetadataMessage::parse(&answer(&info, 1)).unwrap(),
            MetadataMessage::Reject { piece: 1 }
        );
        assert_eq!(piece_of(&info, u32::MAX), None);
        assert_eq!(piece_count(METADATA_PIECE), 1);
        assert_eq!(piece_count(METADATA_PIECE + 1), 2);
    }

    #[test]
    fn wraps_an_info_dictionary_into_a_torrent_with_the_same_hash() {
        let info = b"d6:lengthi5e4:name1:a12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaae";
        let trackers = vec!["http://a/announce".to_string(), "udp://b:1".to_string()];
        let seeds = vec!["http://w/files/".to_string()];
        let file = torrent_file(info, &trackers, &seeds);
        let meta = crate::metainfo::Metainfo::from_bytes(&file).unwrap();
        assert_eq!(meta.info_hash, hash_of(info));
        assert_eq!(
            meta.trackers,
            vec![vec![trackers[0].clone()], vec![trackers[1].clone()]]
        );
        assert_eq!(meta.web_seeds, seeds);
        let bare = crate::metainfo::Metainfo::from_bytes(&torrent_file(info, &[], &[])).unwrap();
        assert!(bare.trackers.is_empty() && bare.web_seeds.is_empty());
    }
}
