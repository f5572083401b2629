//! The receive side of one peer connection: turns a stream of pooled receive buffers into
//! messages. Block payloads are never copied: a PIECE frame yields chunks that point into the
//! receive buffers (two of them when the frame straddles a buffer boundary), ready to be
//! written to disk and hashed. Only small non-block frames, and at most the 13 header bytes
//! of a PIECE, are copied when they straddle a boundary. Pure: no sockets.

use crate::buffer::{Chunk, PoolBuf};
use crate::types::{BlockRef, PieceIndex};
use crate::wire::{FrameDecoder, HeaderKind, Message, WireError, PIECE_HEADER_LEN};
use std::sync::Arc;

/// A decoded message, owning what it needs beyond the receive buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    KeepAlive,
    Choke,
    Unchoke,
    Interested,
    NotInterested,
    Have(PieceIndex),
    Bitfield(Vec<u8>),
    Request(BlockRef),
    Cancel(BlockRef),
    HaveAll,
    HaveNone,
    Reject(BlockRef),
    Extended {
        id: u8,
        payload: Vec<u8>,
    },
    /// Messages spate does not act on (PORT, SUGGEST, ALLOWED_FAST, unknown ids).
    Ignored,
}

impl Inbound {
    fn from_message(m: Message<'_>) -> Inbound {
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
            Message::Piece { .. } => unreachable!("PIECE frames are routed as blocks"),
            _ => Inbound::Ignored,
        }
    }
}

/// A block received, its bytes still in the receive buffers.
#[derive(Clone)]
pub struct ReceivedBlock {
    pub block: BlockRef,
    pub data: Vec<Chunk>,
}

/// What one receive buffer held, in order.
pub enum Event {
    Message(Inbound),
    Block(ReceivedBlock),
}

/// A frame cut by the end of a buffer.
enum Carry {
    None,
    /// The start of a frame (a whole small frame, or a PIECE header) still being gathered.
    Bytes(Vec<u8>),
    /// A PIECE whose header is known and whose payload is partly received.
    Payload {
        block: BlockRef,
        data: Vec<Chunk>,
        missing: usize,
    },
}

/// Frames the byte stream of one connection.
pub struct Inbox {
    decoder: FrameDecoder,
    carry: Carry,
}

impl Inbox {
    pub fn new(max_frame: u32) -> Inbox {
        Inbox {
            decoder: FrameDecoder::new(max_frame),
            carry: Carry::None,
        }
    }

    /// Bytes held back from earlier buffers (a partial frame, not counting block payload).
    pub fn carried_bytes(&self) -> usize {
        match &self.carry {
            Carry::Bytes(b) => b.len(),
            _ => 0,
        }
    }

    /// Decodes everything `buf` completes, appending events to `out` in stream order.
    pub fn feed(&mut self, buf: Arc<PoolBuf>, out: &mut Vec<Event>) -> Result<(), WireError> {
        let mut pos = self.finish_carry(&buf, out)?;
        while pos < buf.len() {
            let rest = &buf.as_slice()[pos..];
            let Some(header) = self.decoder.decode_header(rest)? else {
                self.carry = Carry::Bytes(rest.to_vec());
                return Ok(());
            };
            match header.kind {
                HeaderKind::Piece {
                    piece,
                    offset,
                    header_len,
                    data_len,
                } => {
                    let block = BlockRef {
                        piece,
                        offset,
                        len: data_len,
                    };
                    let start = pos + header_len;
                    let end = (start + data_len as usize).min(buf.len());
                    let data = if end > start {
                        vec![Chunk::new(Arc::clone(&buf), start..end)]
                    } else {
                        Vec::new()
                    };
                    let missing = data_len as usize - (end - start);
                    if missing > 0 {
                        self.carry = Carry::Payload {
                            block,
                            data,
                            missing,
                        };
                        return Ok(());
                    }
                    out.push(Event::Block(ReceivedBlock { block, data }));
                    pos = end;
                }
                HeaderKind::Other => match self.decoder.decode(rest)? {
                    Some((m, used)) => {
                        out.push(Event::Message(Inbound::from_message(m)));
                        pos += used;
                    }
                    None => {
                        self.carry = Carry::Bytes(rest.to_vec());
                        return Ok(());
                    }
                },
            }
        }
        Ok(())
    }

    /// Completes a frame carried over from earlier buffers; returns where `buf`'s unread
    /// bytes start.
    fn finish_carry(
        &mut self,
        buf: &Arc<PoolBuf>,
        out: &mut Vec<Event>,
    ) -> Result<usize, WireError> {
        let mut pos = 0;
        if let Carry::Bytes(bytes) = &mut self.carry {
            while pos < buf.len() {
                let need = bytes_needed(bytes);
                if bytes.len() >= need {
                    break;
                }
                let take = (need - bytes.len()).min(buf.len() - pos);
                bytes.extend_from_slice(&buf.as_slice()[pos..pos + take]);
                pos += take;
                // A length over the cap must fail before we gather its body.
                self.decoder.decode_header(bytes)?;
            }
            if bytes.len() < bytes_needed(bytes) {
                return Ok(pos); // the buffer ended first
            }
            let bytes = std::mem::take(bytes);
            self.carry = Carry::None;
            self.start_carried_frame(&bytes, out)?;
        }
        if let Carry::Payload {
            block,
            data,
            missing,
        } = &mut self.carry
        {
            let take = (*missing).min(buf.len() - pos);
            if take > 0 {
                data.push(Chunk::new(Arc::clone(buf), pos..pos + take));
            }
            *missing -= take;
            pos += take;
            if *missing == 0 {
                let block = *block;
                let data = std::mem::take(data);
                self.carry = Carry::None;
                out.push(Event::Block(ReceivedBlock { block, data }));
            }
        }
        Ok(pos)
    }

    /// `bytes` holds a whole small frame or a whole PIECE header.
    fn start_carried_frame(&mut self, bytes: &[u8], out: &mut Vec<Event>) -> Result<(), WireError> {
        let header = self
            .decoder
            .decode_header(bytes)?
            .expect("bytes_needed gathered at least a header");
        match header.kind {
            HeaderKind::Piece {
                piece,
                offset,
                data_len,
                ..
            } => {
                let block = BlockRef {
                    piece,
                    offset,
                    len: data_len,
                };
                if data_len == 0 {
                    out.push(Event::Block(ReceivedBlock {
                        block,
                        data: Vec::new(),
                    }));
                } else {
                    self.carry = Carry::Payload {
                        block,
                        data: Vec::new(),
                        missing: data_len as usize,
                    };
                }
            }
            HeaderKind::Other => {
                let (m, _) = self
                    .decoder
                    .decode(bytes)?
                    .expect("bytes_needed gathered the whole frame");
                out.push(Event::Message(Inbound::from_message(m)));
            }
        }
        Ok(())
    }
}

/// How many bytes of a frame's start must be gathered before it can be acted on: the
/// length prefix, then the id, then either the PIECE header or the whole (small) frame.
fn bytes_needed(start: &[u8]) -> usize {
    if start.len() < 4 {
        return 4;
    }
    let len = u32::from_be_bytes([start[0], start[1], start[2], start[3]]) as usize;
    if len == 0 {
        return 4;
    }
    match start.get(4) {
        None => 5,
        Some(&7) if len + 4 >= PIECE_HEADER_LEN => PIECE_HEADER_LEN,
        Some(_) => 4 + len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::BufferPool;

    fn stream() -> (Vec<u8>, Vec<u8>) {
        let mut s = Vec::new();
        let payload: Vec<u8> = (0..100u8).collect();
        Message::Have(PieceIndex(3)).encode_into(&mut s);
        Message::Piece {
            piece: PieceIndex(1),
            offset: 16384,
            data: &payload,
        }
        .encode_into(&mut s);
        Message::Bitfield(&[0xff, 0x80]).encode_into(&mut s);
        Message::KeepAlive.encode_into(&mut s);
        Message::Piece {
            piece: PieceIndex(2),
            offset: 0,
            data: &payload[..40],
        }
        .encode_into(&mut s);
        (s, payload)
    }

    fn describe(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                Event::Message(m) => format!("{m:?}"),
                Event::Block(b) => {
                    let bytes: Vec<u8> =
                        b.data.iter().flat_map(|c| c.as_slice().to_vec()).collect();
                    format!("{:?} {:?}", b.block, bytes)
                }
            })
            .collect()
    }

    fn feed_in_pieces(s: &[u8], cut: usize) -> Vec<String> {
        let pool = BufferPool::new(cut, 1 + s.len() / cut.max(1) + 1);
        let mut inbox = Inbox::new(1 << 20);
        let mut events = Vec::new();
        for part in s.chunks(cut) {
            let mut b = pool.try_take().unwrap();
            b.extend_from_slice(part);
            inbox.feed(b.freeze(), &mut events).unwrap();
        }
        assert_eq!(inbox.carried_bytes(), 0);
        describe(&events)
    }

    #[test]
    fn every_split_point_yields_the_same_events() {
        let (s, _) = stream();
        let whole = feed_in_pieces(&s, s.len());
        assert_eq!(whole.len(), 5);
        for cut in 1..s.len() {
            assert_eq!(feed_in_pieces(&s, cut), whole, "cut at {cut}");
        }
    }

    #[test]
    fn block_payload_points_into_the_receive_buffer() {
        let (s, payload) = stream();
        let pool = BufferPool::new(s.len(), 1);
        let mut b = pool.try_take().unwrap();
        b.extend_from_slice(&s);
        let frozen = b.freeze();
        let base = frozen.as_slice().as_ptr();
        let mut events = Vec::new();
        Inbox::new(1 << 20)
            .feed(Arc::clone(&frozen), &mut events)
            .unwrap();
        let Event::Block(block) = &events[1] else {
            panic!("second event is a block")
        };
        assert_eq!(block.data.len(), 1);
        assert_eq!(block.data[0].as_slice(), &payload[..]);
        assert_eq!(block.data[0].as_slice().as_ptr(), base.wrapping_add(9 + 13));
    }

    #[test]
    fn oversized_length_fails_before_the_body_arrives() {
        let pool = BufferPool::new(8, 2);
        let mut inbox = Inbox::new(1 << 20);
        let mut b = pool.try_take().unwrap();
        b.extend_from_slice(&[0x7f, 0xff]);
        inbox.feed(b.freeze(), &mut Vec::new()).unwrap();
        let mut b = pool.try_take().unwrap();
        b.extend_from_slice(&[0xff, 0xff, 7]);
        assert!(inbox.feed(b.freeze(), &mut Vec::new()).is_err());
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_in_random_buffers_never_panic(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048),
            cut in 1usize..300,
        ) {
            let pool = BufferPool::new(cut, bytes.len() / cut + 2);
            let mut inbox = Inbox::new(4096);
            let mut events = Vec::new();
            for part in bytes.chunks(cut) {
                let mut b = pool.try_take().unwrap();
                b.extend_from_slice(part);
                if inbox.feed(b.freeze(), &mut events).is_err() {
                    break;
                }
            }
        }
    }
}
