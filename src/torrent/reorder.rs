//! Blocks that arrive ahead of their piece's running hash, held in memory until the gap
//! before them fills, so they can be hashed from the receive buffers instead of being read
//! back from disk once the piece is complete. Seeders that read from disk in parallel
//! (libtorrent, qBittorrent) send a piece's blocks out of order often: in one 2 GiB run from
//! libtorrent, 30% of the bytes arrived behind a gap.
//!
//! Held blocks keep their receive buffers out of the pool, so the buffers they pin are
//! capped: a block that would pin one buffer too many gives up its piece's hold (the piece
//! is then finished from disk as before), and the rest of the pool stays free for reads.
//! Pure: no I/O.

use crate::buffer::Chunk;
use std::collections::{BTreeMap, HashMap};

/// A held block: its length and its bytes, still in the receive buffers.
type Held = (u32, Vec<Chunk>);

pub struct Reorder {
    /// Held blocks by piece, then by offset in the piece.
    held: HashMap<u32, BTreeMap<u32, Held>>,
    /// Held chunks per receive buffer, keyed by the buffer's address.
    pins: HashMap<usize, usize>,
    max_buffers: usize,
}

impl Reorder {
    /// Holds blocks pinning at most `max_buffers` receive buffers.
    pub fn new(max_buffers: usize) -> Reorder {
        Reorder {
            held: HashMap::new(),
            pins: HashMap::new(),
            max_buffers,
        }
    }

    /// Receive buffers the held blocks keep out of the pool.
    #[cfg(test)]
    pub fn pinned_buffers(&self) -> usize {
        self.pins.len()
    }

    /// Holds the block at `offset` of `piece`. If that would pin more buffers than the cap,
    /// nothing is held and every block already held for `piece` is let go: returns false.
    pub fn hold(&mut self, piece: u32, offset: u32, len: u32, data: Vec<Chunk>) -> bool {
        let new_buffers = data
            .iter()
            .filter(|c| !self.pins.contains_key(&c.buffer_id()))
            .count();
        if self.pins.len() + new_buffers > self.max_buffers {
            self.forget(piece);
            return false;
        }
        for c in &data {
            *self.pins.entry(c.buffer_id()).or_default() += 1;
        }
        if let Some((_, old)) = self
            .held
            .entry(piece)
            .or_default()
            .insert(offset, (len, data))
        {
            self.unpin(&old); // a second copy of the same block replaces the first
        }
        true
    }

    /// Takes the held blocks of `piece` that continue its hashed run from `at`, in order,
    /// as (length, bytes).
    pub fn take_from(&mut self, piece: u32, mut at: u32) -> Vec<Held> {
        let Some(blocks) = self.held.get_mut(&piece) else {
            return Vec::new();
        };
        let mut run = Vec::new();
        while let Some((len, data)) = blocks.remove(&at) {
            at += len;
            run.push((len, data));
        }
        if blocks.is_empty() {
            self.held.remove(&piece);
        }
        for (_, data) in &run {
            self.unpin(data);
        }
        run
    }

    /// Lets go of every block held for `piece`.
    pub fn forget(&mut self, piece: u32) {
        for (_, data) in self
            .held
            .remove(&piece)
            .into_iter()
            .flat_map(|b| b.into_values())
        {
            self.unpin(&data);
        }
    }

    fn unpin(&mut self, data: &[Chunk]) {
        for c in data {
            let id = c.buffer_id();
            if let Some(n) = self.pins.get_mut(&id) {
                *n -= 1;
                if *n == 0 {
                    self.pins.remove(&id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::BufferPool;
    use std::sync::Arc;

    /// Four 4-byte "blocks" cut from one buffer, and one from a second buffer.
    fn blocks(pool: &BufferPool) -> (Vec<Vec<Chunk>>, Vec<Chunk>) {
        let mut a = pool.try_take().unwrap();
        a.extend_from_slice(b"aaaabbbbccccdddd");
        let a = a.freeze();
        let cut = |i: usize| vec![Chunk::new(Arc::clone(&a), i * 4..i * 4 + 4)];
        let mut b = pool.try_take().unwrap();
        b.extend_from_slice(b"eeee");
        (
            (0..4).map(cut).collect(),
            vec![Chunk::new(b.freeze(), 0..4)],
        )
    }

    #[test]
    fn held_blocks_come_back_in_order_once_the_gap_fills() {
        let pool = BufferPool::new(16, 4);
        let (b, _) = blocks(&pool);
        let mut r = Reorder::new(1);
        assert!(r.hold(7, 12, 4, b[3].clone()));
        assert!(r.hold(7, 4, 4, b[1].clone()));
        assert_eq!(r.pinned_buffers(), 1, "blocks of one buffer pin it once");
        assert!(r.take_from(7, 0).is_empty(), "block 0 is still missing");
        let run = r.take_from(7, 4);
        assert_eq!(run.len(), 1, "block 2 is missing, so block 3 stays held");
        assert_eq!(run[0].1[0].as_slice(), b"bbbb");
        assert!(r.hold(7, 8, 4, b[2].clone()));
        let run: Vec<_> = r.take_from(7, 8).into_iter().map(|(l, _)| l).collect();
        assert_eq!(run, [4, 4]);
        assert_eq!(r.pinned_buffers(), 0);
    }

    #[test]
    fn a_block_over_the_cap_lets_its_piece_go_and_frees_the_buffers() {
        let pool = BufferPool::new(16, 2);
        let (b, other) = blocks(&pool);
        let mut r = Reorder::new(1);
        assert!(r.hold(1, 4, 4, b[1].clone()));
        assert!(r.hold(2, 8, 4, b[2].clone()));
        assert!(!r.hold(1, 16, 4, other), "a second buffer is over the cap");
        assert!(
            r.take_from(1, 4).is_empty(),
            "piece 1 held nothing any more"
        );
        assert_eq!(r.pinned_buffers(), 1, "piece 2 still holds its block");
        r.forget(2);
        assert_eq!(r.pinned_buffers(), 0);
        drop(b);
        assert_eq!(pool.available(), 2, "both buffers went back to the pool");
    }
}
