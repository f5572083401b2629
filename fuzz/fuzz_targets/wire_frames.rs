//! Fuzz target: the peer-wire frame decoder. The input is a byte stream from a peer;
//! `FrameDecoder::decode` is looped over it as a receive loop would, and `decode_header` is
//! asked about every position too. Nothing may panic; the header must agree with the whole-
//! frame decode (extent, and PIECE's index, offset and block); every decoded message must
//! re-encode to exactly the bytes it came from, and (unless Unknown) decode back to itself.
//! The first byte picks the frame cap: the default 1 MiB, or a small one so that over-cap
//! frames are reached too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spate::wire::{FrameDecoder, HeaderKind, Message, PIECE_HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    let Some((&first, stream)) = data.split_first() else {
        return;
    };
    let dec = if first < 128 {
        FrameDecoder::default()
    } else {
        FrameDecoder::new(u32::from(first - 128) * 4)
    };
    let mut at = 0;
    while at <= stream.len() {
        let rest = &stream[at..];
        let header = dec.decode_header(rest);
        let (msg, used) = match dec.decode(rest) {
            Ok(Some(decoded)) => decoded,
            Ok(None) => {
                // Not all of the frame is there: the header cannot claim that it is.
                if let Ok(Some(h)) = header {
                    assert!(
                        h.frame_len > rest.len(),
                        "header says whole, decode says partial"
                    );
                }
                break;
            }
            Err(_) => break,
        };
        assert!(
            used >= 4 && used <= rest.len(),
            "used {used} of {}",
            rest.len()
        );
        assert_eq!(used, msg.encoded_len());

        // The header agrees with the decoded frame.
        let h = match header {
            Ok(Some(h)) => h,
            other => panic!("decode gave {msg:?} but decode_header gave {other:?}"),
        };
        assert_eq!(h.frame_len, used);
        match (msg, h.kind) {
            (
                Message::Piece {
                    piece,
                    offset,
                    data,
                },
                HeaderKind::Piece {
                    piece: p,
                    offset: o,
                    header_len,
                    data_len,
                },
            ) => {
                assert_eq!((piece, offset, header_len), (p, o, PIECE_HEADER_LEN));
                assert_eq!(data.len(), data_len as usize);
                assert_eq!(&rest[header_len..used], data);
            }
            (Message::Piece { .. }, kind) | (_, kind @ HeaderKind::Piece { .. }) => {
                panic!("header kind {kind:?} for {msg:?}")
            }
            _ => {}
        }

        // Re-encoding gives back the frame's bytes; decoding those gives back the message.
        let mut out = Vec::new();
        msg.encode_into(&mut out);
        assert_eq!(out.len(), msg.encoded_len());
        assert_eq!(&out[..], &rest[..used], "{msg:?} re-encodes differently");
        if !matches!(msg, Message::Unknown { .. }) {
            let again = FrameDecoder::new(u32::MAX).decode(&out);
            assert_eq!(again, Ok(Some((msg, out.len()))));
        }
        at += used;
    }
});
