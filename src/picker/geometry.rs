//! Piece and block sizes of one torrent: which `(piece, offset, len)` triples exist, with a
//! short last piece and a short last block in each piece. Pure arithmetic, no state.

use crate::types::{BlockRef, PieceIndex, BLOCK_SIZE};

#[derive(Clone, Copy, Debug)]
pub(super) struct Geometry {
    pub(super) piece_count: u32,
    piece_len: u32,
    last_piece_len: u32,
}

impl Geometry {
    /// # Panics
    /// If the three numbers do not describe one torrent; the metainfo parser has already
    /// checked that they do, so a mismatch here is a bug in the caller.
    pub(super) fn new(piece_count: u32, piece_len: u32, total_len: u64) -> Geometry {
        if piece_count == 0 {
            assert_eq!(total_len, 0, "a torrent without pieces has no bytes");
            return Geometry {
                piece_count,
                piece_len,
                last_piece_len: 0,
            };
        }
        assert!(piece_len > 0, "pieces must be at least one byte long");
        let before_last = u64::from(piece_count - 1) * u64::from(piece_len);
        let last = total_len.saturating_sub(before_last);
        assert!(
            (1..=u64::from(piece_len)).contains(&last),
            "{piece_count} pieces of {piece_len} bytes cannot hold {total_len} bytes"
        );
        Geometry {
            piece_count,
            piece_len,
            last_piece_len: last as u32,
        }
    }

    /// Bytes in `piece`; 0 for an index past the end.
    pub(super) fn piece_len(&self, piece: PieceIndex) -> u32 {
        match piece.0.cmp(&self.piece_count.saturating_sub(1)) {
            std::cmp::Ordering::Less => self.piece_len,
            std::cmp::Ordering::Equal if self.piece_count > 0 => self.last_piece_len,
            _ => 0,
        }
    }

    pub(super) fn block_count(&self, piece: PieceIndex) -> u32 {
        self.piece_len(piece).div_ceil(BLOCK_SIZE)
    }

    /// Bytes in block `block` of `piece`: `BLOCK_SIZE` except the last block of a piece
    /// whose length is not a multiple of it; 0 for a block that does not exist.
    pub(super) fn block_len(&self, piece: PieceIndex, block: u32) -> u32 {
        let start = u64::from(block) * u64::from(BLOCK_SIZE);
        let len = u64::from(self.piece_len(piece));
        len.saturating_sub(start).min(u64::from(BLOCK_SIZE)) as u32
    }

    pub(super) fn block(&self, piece: PieceIndex, block: u32) -> BlockRef {
        BlockRef {
            piece,
            offset: block * BLOCK_SIZE,
            len: self.block_len(piece, block),
        }
    }

    /// The index of `block` inside its piece, or None unless it is exactly one of this
    /// torrent's blocks (a peer's message can carry any three numbers).
    pub(super) fn block_index(&self, block: BlockRef) -> Option<u32> {
        if !block.offset.is_multiple_of(BLOCK_SIZE) {
            return None;
        }
        let index = block.offset / BLOCK_SIZE;
        let len = self.block_len(block.piece, index);
        (len > 0 && len == block.len).then_some(index)
    }
}
