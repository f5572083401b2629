//! Fuzz target: the receive-side framing of a peer connection, `Inbox::feed`, as the read loop
//! drives it: a byte stream cut into pooled receive buffers. Input: byte 0 picks the frame cap
//! (the default 1 MiB below 128, else a small one), bytes 1-4 pick two ways of cutting the
//! stream into buffers (sizes from 1 byte to 64 KiB, fixed or random, some empty), the rest is
//! the stream. The stream is fed three times, cut those two ways and as one buffer, and each
//! run must give exactly what a reference built on the pure `FrameDecoder` gives: the same
//! messages and blocks in the same order, then the same error, raised as soon as the bytes
//! that prove it have arrived and not before (so the way a stream is cut never matters).
//! Nothing may panic. Every block's data must point into the receive buffers (no copy), at
//! the exact place of that block in the stream. Memory stays bounded: after each buffer the
//! inbox copies only the partial frame that follows the last complete one (and nothing once
//! a PIECE header is whole), and keeps only the buffers holding part of that frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spate::buffer::{BufferPool, Chunk};
use spate::peer::inbox::{Event, Inbound, Inbox};
use spate::types::BlockRef;
use spate::wire::{FrameDecoder, HeaderKind, Message, WireError, DEFAULT_MAX_FRAME};
use std::collections::BTreeMap;
use std::ops::Range;

/// One event, with a block's data given by where it sits in the stream.
#[derive(Debug, PartialEq, Eq)]
enum Item {
    Message(Inbound),
    /// `at` is None for an empty block (no data, so no place).
    Block {
        block: BlockRef,
        at: Option<Range<usize>>,
    },
}

/// What the pure decoder makes of the whole stream.
struct Reference {
    /// Each item with the stream offset just past its frame.
    items: Vec<(Item, usize)>,
    /// The first error, with the stream length from which it is certain.
    error: Option<(WireError, usize)>,
}

fuzz_target!(|data: &[u8]| {
    let Some((&[cap_byte, sel_a, seed_a, sel_b, seed_b], stream)) = data.split_first_chunk() else {
        return;
    };
    let max_frame = if cap_byte < 128 {
        DEFAULT_MAX_FRAME
    } else {
        u32::from(cap_byte - 128) * 4
    };
    let reference = reference(FrameDecoder::new(max_frame), stream);
    for cuts in [
        cut(sel_a, seed_a, stream.len()),
        cut(sel_b, seed_b, stream.len()),
        vec![stream.len()],
    ] {
        check_run(max_frame, stream, &cuts, &reference);
    }
});

/// Buffer sizes adding up to `total`: at most 1 to 65536 bytes, random or all the maximum
/// (as full socket reads), with an empty buffer now and then if bit 3 of `sel` is set.
fn cut(sel: u8, seed: u8, total: usize) -> Vec<usize> {
    const MAX: [usize; 8] = [1, 2, 5, 13, 14, 100, 4096, 65536];
    let max = MAX[usize::from(sel & 7)];
    let empties = sel & 8 != 0;
    let fixed = sel & 16 != 0;
    let mut x = (u32::from(seed) << 8 | u32::from(sel)).wrapping_mul(0x9E37_79B9) | 1;
    let mut cuts = Vec::new();
    let mut left = total;
    while left > 0 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let len = if empties && x % 16 == 0 {
            0
        } else if fixed {
            max
        } else {
            1 + (x as usize >> 4) % max
        };
        let len = len.min(left);
        cuts.push(len);
        left -= len;
    }
    cuts
}

/// The stream framed by `FrameDecoder` alone, as one slice.
fn reference(dec: FrameDecoder, s: &[u8]) -> Reference {
    let mut items = Vec::new();
    let mut pos = 0;
    while pos < s.len() {
        let rest = &s[pos..];
        let header = match dec.decode_header(rest) {
            Ok(Some(h)) => h,
            Ok(None) => break,
            Err(e) => {
                // The shortest prefix of the frame that shows the error.
                let need = (1..=rest.len())
                    .find(|&n| dec.decode_header(&rest[..n]).is_err())
                    .expect("an error on the whole rest shows on some prefix");
                return Reference {
                    items,
                    error: Some((e, pos + need)),
                };
            }
        };
        match header.kind {
            HeaderKind::Piece {
                piece,
                offset,
                header_len,
                data_len,
            } => {
                let start = pos + header_len;
                let end = start + data_len as usize;
                if end > s.len() {
                    break;
                }
                let block = BlockRef {
                    piece,
                    offset,
                    len: data_len,
                };
                let at = (data_len > 0).then_some(start..end);
                items.push((Item::Block { block, at }, end));
                pos = end;
            }
            HeaderKind::Other => match dec.decode(rest) {
                Ok(Some((m, used))) => {
                    assert_eq!(used, header.frame_len);
                    pos += used;
                    items.push((Item::Message(expected_inbound(m)), pos));
                }
                Ok(None) => break,
                Err(e) => {
                    return Reference {
                        items,
                        error: Some((e, pos + header.frame_len)),
                    }
                }
            },
        }
    }
    Reference { items, error: None }
}

/// What the inbox hands on for a decoded (non-PIECE) message.
fn expected_inbound(m: Message<'_>) -> Inbound {
    match m {
        Message::KeepAlive => Inbound::KeepAlive,
        Message::Choke => Inbound::Choke,
        Message::Unchoke => Inbound::Unchoke,
        Message::Interested => Inbound::Interested,
        Message::NotInterested => Inbound::NotInterested,
        Message::Have(p) => Inbound::Have(p),
        Message::Bitfield(b) => Inbound::Bitfield(b.to_vec()),
        Message::Request(b) => Inbound::Request(b),
        Message::Cancel(b) => Inbound::Cancel(b),
        Message::HaveAll => Inbound::HaveAll,
        Message::HaveNone => Inbound::HaveNone,
        Message::Reject(b) => Inbound::Reject(b),
        Message::Extended { id, payload } => Inbound::Extended {
            id,
            payload: payload.to_vec(),
        },
        Message::Piece { .. } => unreachable!("the reference routes PIECE as a block"),
        Message::Port(_)
        | Message::Suggest(_)
        | Message::AllowedFast(_)
        | Message::Unknown { .. } => Inbound::Ignored,
    }
}

/// The receive buffers fed so far: start of each allocation -> (stream offset, length).
/// An allocation is reused only once its buffer is dropped, when no chunk points into it, so
/// the newest entry for an address is the one a live chunk can point into.
type Fed = BTreeMap<usize, (usize, usize)>;

/// Feeds `stream` cut as `cuts` through an inbox and checks it against `reference`.
fn check_run(max_frame: u32, stream: &[u8], cuts: &[usize], reference: &Reference) {
    let buf_size = cuts.iter().copied().max().unwrap_or(0).max(1);
    let pool = BufferPool::new(buf_size, cuts.len());
    let total_buffers = pool.available();
    let mut inbox = Inbox::new(max_frame);
    let mut events = Vec::new();
    let mut items: Vec<Item> = Vec::new();
    let mut fed = Fed::new();
    // End in the stream of each buffer fed, for counting those a partial frame spans.
    let mut ends: Vec<usize> = Vec::with_capacity(cuts.len());
    let mut at = 0;
    for &len in cuts {
        let mut buf = pool.try_take().expect("one buffer per cut");
        buf.extend_from_slice(&stream[at..at + len]);
        fed.insert(buf.as_slice().as_ptr() as usize, (at, len));
        at += len;
        ends.push(at);
        let result = inbox.feed(buf.freeze(), &mut events);
        let checked = items.len();
        items.extend(events.drain(..).map(|e| describe(e, &fed)));

        // What came out of this buffer is what the reference has next, in order.
        assert!(
            items.len() <= reference.items.len(),
            "inbox gave {} items, the reference only {}: {:?}",
            items.len(),
            reference.items.len(),
            items.last()
        );
        for (i, (got, (want, _))) in items.iter().zip(&reference.items).enumerate().skip(checked) {
            assert_eq!(got, want, "item {i} differs (cuts {:?})", short(cuts));
        }
        let frame_start = items
            .len()
            .checked_sub(1)
            .map_or(0, |i| reference.items[i].1);

        match result {
            Err(e) => {
                let Some((want, from)) = &reference.error else {
                    panic!("inbox failed with {e:?} after {at} bytes; the stream has no error");
                };
                assert_eq!(&e, want, "a different error");
                assert!(
                    at >= *from,
                    "failed after {at} bytes, before the error shows at {from}"
                );
                assert_eq!(
                    items.len(),
                    reference.items.len(),
                    "failed before handing on every item ahead of the error"
                );
                return;
            }
            Ok(()) => {
                if let Some((e, from)) = &reference.error {
                    assert!(
                        at < *from,
                        "{e:?} showed after {from} bytes, not reported by {at}"
                    );
                }
            }
        }

        // Every complete frame fed so far has come out.
        let next_done = reference.items.get(items.len()).map(|(_, end)| *end);
        assert!(
            next_done.is_none_or(|end| end > at),
            "the frame ending at {} was fed in full ({at} bytes) but not handed on",
            next_done.unwrap_or(0)
        );

        // Memory: only the partial frame is kept, copied unless it is a PIECE past its header.
        let partial = &stream[frame_start..at];
        let piece_payload = matches!(
            FrameDecoder::new(max_frame).decode_header(partial),
            Ok(Some(h)) if matches!(h.kind, HeaderKind::Piece { .. })
        );
        let want_carried = if piece_payload { 0 } else { partial.len() };
        assert_eq!(
            inbox.carried_bytes(),
            want_carried,
            "carried bytes with {} bytes of a partial frame",
            partial.len()
        );
        let held = total_buffers - pool.available();
        let spanning = ends.len() - ends.partition_point(|&end| end <= frame_start);
        if piece_payload {
            assert!(
                held <= spanning,
                "inbox holds {held} buffers; the partial PIECE spans {spanning}"
            );
        } else {
            assert_eq!(held, 0, "inbox holds buffers with no PIECE in progress");
        }
    }
    assert_eq!(at, stream.len());
    if let Some((e, from)) = &reference.error {
        panic!("no error reported; the reference fails with {e:?} at {from}");
    }
    assert_eq!(items.len(), reference.items.len());
}

/// An event as an `Item`, locating a block's chunks in the stream through `fed`.
fn describe(event: Event, fed: &Fed) -> Item {
    match event {
        Event::Message(m) => Item::Message(m),
        Event::Block(b) => {
            let total: usize = b.data.iter().map(Chunk::len).sum();
            assert_eq!(total, b.block.len as usize, "block data length");
            let mut at: Option<Range<usize>> = None;
            for chunk in &b.data {
                let here = locate(chunk, fed);
                at = Some(match at {
                    None => here,
                    Some(prev) => {
                        assert_eq!(prev.end, here.start, "block chunks are not contiguous");
                        prev.start..here.end
                    }
                });
            }
            if total == 0 {
                // Chunks of no bytes have no place to check; drop them like an empty block.
                at = None;
            }
            Item::Block { block: b.block, at }
        }
    }
}

/// Where `chunk`'s bytes sit in the stream; panics unless they lie inside a receive buffer.
fn locate(chunk: &Chunk, fed: &Fed) -> Range<usize> {
    let ptr = chunk.as_slice().as_ptr() as usize;
    let (&base, &(start, len)) = fed
        .range(..=ptr)
        .next_back()
        .expect("block data is not in a receive buffer");
    let off = ptr - base;
    assert!(
        off + chunk.len() <= len,
        "block data outside the bytes of its receive buffer ({off}+{} of {len})",
        chunk.len()
    );
    start + off..start + off + chunk.len()
}

/// The first few cuts, for messages.
fn short(cuts: &[usize]) -> &[usize] {
    &cuts[..cuts.len().min(16)]
}
