//! Splitting a received byte stream into frames: whole-frame decoding for messages that fit a
//! receive buffer, header-only decoding so a PIECE frame straddling two fixed-size buffers can
//! have its block routed by the caller, and the bitfield check the engine runs once it knows
//! the piece count.

use super::message::{id, piece_index_and_offset, Message, PIECE_HEADER_LEN};
use super::WireError;
use crate::types::PieceIndex;

/// Default cap on a frame's length prefix. The largest honest frames are a PIECE (a 16 KiB
/// block, at most 128 KiB from lenient clients), a BEP 10 metadata piece (16 KiB plus a small
/// dict) and a BITFIELD, which is one bit per piece: 1 MiB covers torrents of over 8 million
/// pieces while bounding what one peer can make us hold for a single frame.
pub const DEFAULT_MAX_FRAME: u32 = 1 << 20;

/// Bytes of the big-endian length prefix.
const PREFIX_LEN: usize = 4;

/// Stateless frame splitter; holds only the length cap.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FrameDecoder {
    max_len: u32,
}

/// Where a frame ends and, for PIECE, where its block sits.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FrameHeader {
    /// The whole frame, including the 4-byte length prefix.
    pub frame_len: usize,
    pub kind: HeaderKind,
}

/// What `decode_header` learned about a frame's contents.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum HeaderKind {
    /// A PIECE frame: its block is the `data_len` bytes after the first `header_len`.
    Piece {
        piece: PieceIndex,
        offset: u32,
        /// Always `PIECE_HEADER_LEN` (13).
        header_len: usize,
        data_len: u32,
    },
    /// Any other frame (keep-alive included): wait for all `frame_len` bytes, then `decode`.
    Other,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::new(DEFAULT_MAX_FRAME)
    }
}

impl FrameDecoder {
    /// A decoder refusing frames whose length prefix exceeds `max_len`.
    pub const fn new(max_len: u32) -> Self {
        FrameDecoder { max_len }
    }

    /// The cap this decoder enforces.
    pub const fn max_len(&self) -> u32 {
        self.max_len
    }

    /// The next whole frame at the start of `buf` and the bytes it took, or `None` if `buf`
    /// does not yet hold all of it. An over-cap length fails as soon as its prefix is seen,
    /// so a peer cannot make the caller wait for (or buffer) a frame it will never accept.
    pub fn decode<'a>(&self, buf: &'a [u8]) -> Result<Option<(Message<'a>, usize)>, WireError> {
        let Some(len) = self.length_prefix(buf)? else {
            return Ok(None);
        };
        let end = frame_end(len);
        let Some(body) = buf.get(PREFIX_LEN..end) else {
            return Ok(None);
        };
        Message::decode_body(body).map(|m| Some((m, end)))
    }

    /// The next frame's extent and, for PIECE, its index, offset and block length, from its
    /// first 13 bytes (5 for other messages, 4 for a keep-alive); `None` if fewer are there.
    pub fn decode_header(&self, buf: &[u8]) -> Result<Option<FrameHeader>, WireError> {
        let Some(len) = self.length_prefix(buf)? else {
            return Ok(None);
        };
        let frame_len = frame_end(len);
        let other = Some(FrameHeader {
            frame_len,
            kind: HeaderKind::Other,
        });
        if len == 0 {
            return Ok(other);
        }
        match buf.get(PREFIX_LEN) {
            None => Ok(None),
            Some(&id::PIECE) => piece_header_kind(buf, len)
                .map(|kind| kind.map(|kind| FrameHeader { frame_len, kind })),
            Some(_) => Ok(other),
        }
    }

    /// The length prefix, if all four bytes are there, checked against the cap.
    fn length_prefix(&self, buf: &[u8]) -> Result<Option<u32>, WireError> {
        let Some(prefix) = buf.first_chunk::<PREFIX_LEN>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*prefix);
        if len > self.max_len {
            return Err(WireError::FrameTooLong {
                len,
                max: self.max_len,
            });
        }
        Ok(Some(len))
    }
}

/// Where a frame with length prefix `len` ends. Saturating: on a 32-bit target a huge `len`
/// then asks for more bytes than any buffer holds, which reads as "need more", not a wrap.
fn frame_end(len: u32) -> usize {
    (len as usize).saturating_add(PREFIX_LEN)
}

/// PIECE's fields from its first 13 bytes; its length must leave room for index and begin,
/// the same rule `Message::decode_body` applies, checked here before the header is complete.
fn piece_header_kind(buf: &[u8], len: u32) -> Result<Option<HeaderKind>, WireError> {
    let min = (PIECE_HEADER_LEN - PREFIX_LEN) as u32;
    let Some(data_len) = len.checked_sub(min) else {
        return Err(WireError::BadLength { id: id::PIECE, len });
    };
    let Some(head) = buf
        .get(PREFIX_LEN + 1..PIECE_HEADER_LEN)
        .and_then(|h| <&[u8; 8]>::try_from(h).ok())
    else {
        return Ok(None);
    };
    let (piece, offset) = piece_index_and_offset(head);
    Ok(Some(HeaderKind::Piece {
        piece,
        offset,
        header_len: PIECE_HEADER_LEN,
        data_len,
    }))
}

/// Checks a BITFIELD payload against the torrent's piece count: exactly ceil(n/8) bytes, and
/// the spare bits after the last piece all zero (BEP 3 lets us drop a peer that sets them).
pub fn validate_bitfield(bits: &[u8], piece_count: u32) -> Result<(), WireError> {
    let want = (piece_count as usize).div_ceil(8);
    if bits.len() != want {
        return Err(WireError::BitfieldLength {
            got: bits.len(),
            want,
        });
    }
    // Piece 0 is the high bit of byte 0, so the spare bits are the low bits of the last byte.
    let used_in_last = piece_count % 8;
    let spare_mask = match used_in_last {
        0 => 0,
        used => 0xFFu8 >> used,
    };
    match bits.last() {
        Some(last) if last & spare_mask != 0 => Err(WireError::BitfieldSpareBits),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::message::tests::{arb_sample, build, every_message};
    use super::*;
    use proptest::prelude::*;

    fn encode_all(msgs: &[Message<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        for m in msgs {
            m.encode_into(&mut out);
        }
        out
    }

    fn encode(m: &Message<'_>) -> Vec<u8> {
        encode_all(std::slice::from_ref(m))
    }

    /// Decodes every whole frame in `buf`, appending each one's re-encoding to `out`, and
    /// returns the bytes consumed, as a caller would before keeping the rest.
    fn drain(dec: &FrameDecoder, buf: &[u8], out: &mut Vec<Vec<u8>>) -> usize {
        let mut at = 0;
        while let Some((m, used)) = dec.decode(&buf[at..]).expect("valid stream") {
            out.push(encode(&m));
            at += used;
        }
        at
    }

    #[test]
    fn decodes_every_message_and_reports_its_length() {
        let dec = FrameDecoder::default();
        for m in every_message() {
            let bytes = encode(&m);
            assert_eq!(dec.decode(&bytes), Ok(Some((m, bytes.len()))));
            assert_eq!(dec.decode(&bytes[..bytes.len() - 1]), Ok(None));
        }
    }

    #[test]
    fn stream_split_at_every_point_yields_the_same_messages() {
        let dec = FrameDecoder::default();
        let msgs = every_message();
        let stream = encode_all(&msgs);
        let want: Vec<Vec<u8>> = msgs.iter().map(encode).collect();
        for split in 0..=stream.len() {
            let mut got = Vec::new();
            let used = drain(&dec, &stream[..split], &mut got);
            // Keep the undecoded tail and append the second half, as a receive loop would.
            let mut rest = stream[used..split].to_vec();
            rest.extend_from_slice(&stream[split..]);
            let used2 = drain(&dec, &rest, &mut got);
            assert_eq!(used2, rest.len(), "split {split}");
            assert_eq!(got, want, "split {split}");
        }
    }

    #[test]
    fn over_cap_length_fails_at_four_bytes() {
        let dec = FrameDecoder::new(100);
        let prefix = 101u32.to_be_bytes();
        let err = WireError::FrameTooLong { len: 101, max: 100 };
        assert_eq!(dec.decode(&prefix), Err(err.clone()));
        assert_eq!(dec.decode_header(&prefix), Err(err));
        assert_eq!(dec.decode(&prefix[..3]), Ok(None));
        // At the cap is still fine.
        assert_eq!(dec.decode(&100u32.to_be_bytes()), Ok(None));
    }

    #[test]
    fn default_cap_is_one_mib() {
        let dec = FrameDecoder::default();
        assert_eq!(dec.max_len(), DEFAULT_MAX_FRAME);
        assert!(dec.decode(&(DEFAULT_MAX_FRAME + 1).to_be_bytes()).is_err());
    }

    #[test]
    fn wrong_length_surfaces_through_decode() {
        let dec = FrameDecoder::default();
        // HAVE with a 3-byte index.
        let frame = [0, 0, 0, 4, id::HAVE, 1, 2, 3];
        assert_eq!(
            dec.decode(&frame),
            Err(WireError::BadLength { id: 4, len: 4 })
        );
    }

    #[test]
    fn header_of_partial_piece_frame() {
        let data = [7u8; 16384];
        let m = Message::Piece {
            piece: PieceIndex(12),
            offset: 49152,
            data: &data,
        };
        let bytes = encode(&m);
        let dec = FrameDecoder::default();
        let want = FrameHeader {
            frame_len: 16384 + 13,
            kind: HeaderKind::Piece {
                piece: PieceIndex(12),
                offset: 49152,
                header_len: 13,
                data_len: 16384,
            },
        };
        for have in 0..13 {
            assert_eq!(dec.decode_header(&bytes[..have]), Ok(None), "{have} bytes");
        }
        for have in [13, 14, 100, bytes.len()] {
            assert_eq!(dec.decode_header(&bytes[..have]), Ok(Some(want)));
        }
    }

    #[test]
    fn header_of_other_frames() {
        let dec = FrameDecoder::default();
        assert_eq!(
            dec.decode_header(&[0, 0, 0, 0]),
            Ok(Some(FrameHeader {
                frame_len: 4,
                kind: HeaderKind::Other
            }))
        );
        let bitfield = [0, 0, 0, 3, id::BITFIELD];
        assert_eq!(dec.decode_header(&bitfield[..4]), Ok(None));
        assert_eq!(
            dec.decode_header(&bitfield),
            Ok(Some(FrameHeader {
                frame_len: 7,
                kind: HeaderKind::Other
            }))
        );
    }

    #[test]
    fn header_of_too_short_piece_fails_early() {
        let dec = FrameDecoder::default();
        assert_eq!(
            dec.decode_header(&[0, 0, 0, 8, id::PIECE]),
            Err(WireError::BadLength { id: 7, len: 8 })
        );
    }

    #[test]
    fn bitfield_validation() {
        assert_eq!(validate_bitfield(&[], 0), Ok(()));
        assert_eq!(validate_bitfield(&[0xFF], 8), Ok(()));
        assert_eq!(validate_bitfield(&[0xFF, 0x80], 9), Ok(()));
        assert_eq!(
            validate_bitfield(&[0xFF, 0x40], 9),
            Err(WireError::BitfieldSpareBits)
        );
        assert_eq!(validate_bitfield(&[0xE0], 3), Ok(()));
        assert_eq!(
            validate_bitfield(&[0xF0], 3),
            Err(WireError::BitfieldSpareBits)
        );
        assert_eq!(
            validate_bitfield(&[0xFF], 9),
            Err(WireError::BitfieldLength { got: 1, want: 2 })
        );
        assert_eq!(
            validate_bitfield(&[0, 0], 8),
            Err(WireError::BitfieldLength { got: 2, want: 1 })
        );
        // The largest count computes its length without overflow.
        assert_eq!(
            validate_bitfield(&[], u32::MAX),
            Err(WireError::BitfieldLength {
                got: 0,
                want: 536_870_912
            })
        );
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..64), cap in any::<u32>()) {
            let dec = FrameDecoder::new(cap);
            let _ = dec.decode(&buf);
            let _ = dec.decode_header(&buf);
            let _ = validate_bitfield(&buf, u32::from(cap as u16));
        }

        #[test]
        fn looping_over_a_random_stream_never_panics(
            chunks in proptest::collection::vec(
                (0u32..48, proptest::collection::vec(any::<u8>(), 0..48)),
                0..16,
            ),
        ) {
            // Small prefixes followed by random bytes: mostly in-cap frames of random ids and
            // lengths that disagree with their contents, so decoding goes past the first prefix.
            let buf: Vec<u8> = chunks
                .iter()
                .flat_map(|(len, bytes)| len.to_be_bytes().into_iter().chain(bytes.iter().copied()))
                .collect();
            let dec = FrameDecoder::new(40);
            let mut at = 0;
            while let Ok(Some((_, used))) = dec.decode(&buf[at..]) {
                // Every frame takes at least its prefix, so the loop ends.
                prop_assert!(used >= 4 && at + used <= buf.len());
                at += used;
            }
        }

        #[test]
        fn header_agrees_with_decode(samples in proptest::collection::vec(arb_sample(), 1..8)) {
            let msgs: Vec<Message<'_>> = samples.iter().map(build).collect();
            let stream = encode_all(&msgs);
            let dec = FrameDecoder::default();
            let mut at = 0;
            for m in &msgs {
                let head = dec.decode_header(&stream[at..]).expect("valid").expect("whole");
                prop_assert_eq!(head.frame_len, m.encoded_len());
                match (*m, head.kind) {
                    (Message::Piece { piece, offset, data },
                     HeaderKind::Piece { piece: p, offset: o, header_len, data_len }) => {
                        prop_assert_eq!((piece, offset, data.len()), (p, o, data_len as usize));
                        prop_assert_eq!(&stream[at + header_len..at + head.frame_len], data);
                    }
                    (Message::Piece { .. }, k) | (_, k @ HeaderKind::Piece { .. }) => {
                        prop_assert!(false, "kind {:?} for {:?}", k, m);
                    }
                    _ => {}
                }
                prop_assert_eq!(dec.decode(&stream[at..]), Ok(Some((*m, head.frame_len))));
                at += head.frame_len;
            }
        }
    }
}
