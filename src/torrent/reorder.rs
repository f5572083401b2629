//! Blocks that arrive ahead of their piece's running hash, held in memory until the gap
//! before them fills, so they can be hashed from the receive buffers instead of being read
//! back from disk once the piece is complete. Seeders that read from disk in parallel
//! (libtorrent, qBittorrent) send a piece's blocks out of order often: in one 2 GiB run from
//! libtorrent, 30% of the bytes arrived behind a gap.
//!
//! Held blocks keep their receive buffers out of the pool, so the buffers they pin are
//! capped. A block whose read filled less than half of its buffer (a slow peer, or many
//! peers sharing the link) is copied into a block-sized buffer instead, so that a few
//! sparse reads cannot use up the cap: without that, one piece sent back to front in
//! one-block reads pinned 15 buffers. When neither a pin nor a copy is possible, the
//! piece's hold is given up (it is then finished from disk as before), and the rest of the
//! pool stays free for reads. Pure: no I/O.

use crate::buffer::{copy_from_chunks, BufferPool, Chunk};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// A held block: its length, its bytes, and whether they pin receive buffers (rather than
/// sitting in a copy).
struct Held {
    len: u32,
    data: Vec<Chunk>,
    pinned: bool,
}

pub struct Reorder {
    /// Held blocks by piece, then by offset in the piece.
    held: HashMap<u32, BTreeMap<u32, Held>>,
    /// Held chunks per receive buffer, keyed by the buffer's address.
    pins: HashMap<usize, usize>,
    max_buffers: usize,
    /// Where blocks from mostly empty receive buffers are copied to; bounded by its own cap.
    copies: BufferPool,
}

impl Reorder {
    /// Holds blocks pinning at most `max_buffers` receive buffers, or copied into `copies`.
    pub fn new(max_buffers: usize, copies: BufferPool) -> Reorder {
        Reorder {
            held: HashMap::new(),
            pins: HashMap::new(),
            max_buffers,
            copies,
        }
    }

    /// Receive buffers the held blocks keep out of the pool.
    #[cfg(test)]
    pub fn pinned_buffers(&self) -> usize {
        self.pins.len()
    }

    /// Holds the block at `offset` of `piece`: in its receive buffers if they are already
    /// pinned, or well filled and under the cap; otherwise in a copy. If neither is possible,
    /// nothing is held and every block already held for `piece` is let go: returns false.
    pub fn hold(&mut self, piece: u32, offset: u32, len: u32, data: Vec<Chunk>) -> bool {
        let new: Vec<&Chunk> = data
            .iter()
            .filter(|c| !self.pins.contains_key(&c.buffer_id()))
            .collect();
        let pin_fits = self.pins.len() + new.len() <= self.max_buffers;
        let sparse = new.iter().any(|c| c.buffer_len() * 2 < c.buffer_capacity());
        let held = if new.is_empty() || (pin_fits && !sparse) {
            self.pin(len, data)
        } else if let Some(copy) = self.copy(len, &data) {
            copy
        } else if pin_fits {
            self.pin(len, data)
        } else {
            self.forget(piece);
            return false;
        };
        if let Some(old) = self.held.entry(piece).or_default().insert(offset, held) {
            self.release(&old); // a second copy of the same block replaces the first
        }
        true
    }

    fn pin(&mut self, len: u32, data: Vec<Chunk>) -> Held {
        for c in &data {
            *self.pins.entry(c.buffer_id()).or_default() += 1;
        }
        Held {
            len,
            data,
            pinned: true,
        }
    }

    /// The block copied into one buffer of `copies`, if it fits one and one is free.
    fn copy(&self, len: u32, data: &[Chunk]) -> Option<Held> {
        let n = len as usize;
        if n > self.copies.buf_size() {
            return None;
        }
        let mut buf = self.copies.try_take()?;
        buf.set_len_initialized(n);
        copy_from_chunks(data, 0, buf.as_mut_slice());
        Some(Held {
            len,
            data: vec![Chunk::new(Arc::new(buf), 0..n)],
            pinned: false,
        })
    }

    /// Takes the held blocks of `piece` that continue its hashed run from `at`, in order,
    /// as (length, bytes).
    pub fn take_from(&mut self, piece: u32, mut at: u32) -> Vec<(u32, Vec<Chunk>)> {
        let Some(blocks) = self.held.get_mut(&piece) else {
            return Vec::new();
        };
        let mut run = Vec::new();
        while let Some(held) = blocks.remove(&at) {
            at += held.len;
            run.push(held);
        }
        if blocks.is_empty() {
            self.held.remove(&piece);
        }
        for held in &run {
            self.release(held);
        }
        run.into_iter().map(|h| (h.len, h.data)).collect()
    }

    /// Lets go of every block held for `piece`.
    pub fn forget(&mut self, piece: u32) {
        for held in self
            .held
            .remove(&piece)
            .into_iter()
            .flat_map(|b| b.into_values())
        {
            self.release(&held);
        }
    }

    /// Unpins the receive buffers of a block no longer held (a copy frees itself on drop).
    fn release(&mut self, held: &Held) {
        if !held.pinned {
            return;
        }
        for c in &held.data {
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

    /// A copy pool whose buffers are too small for any test block.
    fn no_copies() -> BufferPool {
        BufferPool::new(2, 1)
    }

    #[test]
    fn held_blocks_come_back_in_order_once_the_gap_fills() {
        let pool = BufferPool::new(16, 4);
        let (b, _) = blocks(&pool);
        let mut r = Reorder::new(1, no_copies());
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
        let mut r = Reorder::new(1, no_copies());
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

    #[test]
    fn blocks_from_mostly_empty_buffers_are_copied_and_free_their_buffers() {
        let pool = BufferPool::new(16, 2);
        let copies = BufferPool::new(4, 1);
        let (full, sparse) = blocks(&pool);
        let mut r = Reorder::new(1, copies.clone());
        assert!(
            r.hold(3, 8, 4, sparse),
            "the 4 bytes in a 16-byte buffer are copied"
        );
        assert_eq!(r.pinned_buffers(), 0);
        assert_eq!(
            pool.available(),
            1,
            "the sparse buffer went back to the pool"
        );
        assert!(r.hold(3, 4, 4, full[1].clone()), "a full buffer is pinned");
        assert_eq!(r.pinned_buffers(), 1);
        let run = r.take_from(3, 4);
        let bytes: Vec<&[u8]> = run.iter().map(|(_, d)| d[0].as_slice()).collect();
        assert_eq!(bytes, [b"bbbb", b"eeee"]);
        assert_eq!(copies.available(), 0, "the copy lives until it is hashed");
        drop(run);
        assert_eq!(copies.available(), 1);
    }

    #[test]
    fn with_no_copy_free_a_sparse_block_is_pinned_under_the_cap() {
        let pool = BufferPool::new(16, 2);
        let copies = BufferPool::new(4, 1);
        let (_, sparse) = blocks(&pool);
        let taken = copies.try_take().unwrap();
        let mut r = Reorder::new(1, copies.clone());
        assert!(r.hold(3, 8, 4, sparse));
        assert_eq!(r.pinned_buffers(), 1);
        drop(taken);
    }
}
