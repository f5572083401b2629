//! Pieces being downloaded: the state of each of their blocks (free, reserved by a peer,
//! received from a peer), the endgame's extra reservations, and the short list of "open"
//! pieces that still have free blocks, which is where a pick looks first.

use super::{BlockReceived, PeerKey};
use crate::types::PieceIndex;

/// Marks "not in the open list".
const CLOSED: u32 = u32::MAX;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Block {
    Free,
    Reserved(PeerKey),
    Received(PeerKey),
}

/// One started piece. It stays here from its first reservation until it is verified or
/// fails, even if every reservation is released again.
#[derive(Debug)]
pub(super) struct Download {
    pub(super) piece: PieceIndex,
    /// The peer whose pick started this piece; it is offered this piece before others.
    pub(super) starter: PeerKey,
    blocks: Box<[Block]>,
    free: u32,
    received: u32,
    /// No block below this index is free: finding the next free block is amortised O(1).
    cursor: u32,
    /// Endgame duplicates: peers holding a block that another peer already holds.
    extras: Vec<(u32, PeerKey)>,
    /// Position in `Downloads::open`, or `CLOSED`.
    open_slot: u32,
}

impl Download {
    /// True if `peer` holds a reservation for `block` (as first holder or endgame extra).
    pub(super) fn is_held_by(&self, block: u32, peer: PeerKey) -> bool {
        self.blocks[block as usize] == Block::Reserved(peer) || self.extras.contains(&(block, peer))
    }

    fn holder_count(&self, block: u32) -> usize {
        let extra = self.extras.iter().filter(|(b, _)| *b == block).count();
        usize::from(matches!(self.blocks[block as usize], Block::Reserved(_))) + extra
    }

    /// The distinct peers that supplied at least one received block.
    pub(super) fn contributors(&self) -> Vec<PeerKey> {
        let mut peers: Vec<PeerKey> = (self.blocks.iter())
            .filter_map(|b| match b {
                Block::Received(peer) => Some(*peer),
                _ => None,
            })
            .collect();
        peers.sort_unstable();
        peers.dedup();
        peers
    }

    /// Endgame candidates in this piece for `peer`: (holders, block) for every block that
    /// someone else holds and `peer` does not.
    pub(super) fn duplicate_candidates(
        &self,
        peer: PeerKey,
    ) -> impl Iterator<Item = (usize, u32)> + '_ {
        (0..self.blocks.len() as u32)
            .filter(move |&b| {
                matches!(self.blocks[b as usize], Block::Reserved(_)) && !self.is_held_by(b, peer)
            })
            .map(|b| (self.holder_count(b), b))
    }

    fn take_free(&mut self, peer: PeerKey) -> Option<u32> {
        let len = self.blocks.len() as u32;
        while self.cursor < len && self.blocks[self.cursor as usize] != Block::Free {
            self.cursor += 1;
        }
        if self.cursor == len {
            return None;
        }
        let block = self.cursor;
        self.blocks[block as usize] = Block::Reserved(peer);
        self.free -= 1;
        self.cursor += 1;
        Some(block)
    }

    /// Drops `peer`'s hold on `block`; returns true if the block became free.
    fn release(&mut self, block: u32, peer: PeerKey) -> bool {
        if self.blocks[block as usize] != Block::Reserved(peer) {
            self.extras.retain(|&held| held != (block, peer));
            return false;
        }
        // An endgame extra holder takes over, so the block stays asked for.
        if let Some(i) = self.extras.iter().position(|(b, _)| *b == block) {
            let (_, heir) = self.extras.swap_remove(i);
            self.blocks[block as usize] = Block::Reserved(heir);
            return false;
        }
        self.blocks[block as usize] = Block::Free;
        self.free += 1;
        self.cursor = self.cursor.min(block);
        true
    }

    fn receive(&mut self, block: u32, from: PeerKey) -> BlockReceived {
        match self.blocks[block as usize] {
            Block::Received(_) => return BlockReceived::Duplicate,
            Block::Free => return BlockReceived::Unrequested,
            Block::Reserved(_) if !self.is_held_by(block, from) => {
                return BlockReceived::Unrequested
            }
            Block::Reserved(_) => {}
        }
        let mut cancel = Vec::new();
        if let Block::Reserved(first) = self.blocks[block as usize] {
            if first != from {
                cancel.push(first);
            }
        }
        self.extras.retain(|&(b, peer)| {
            if b == block && peer != from {
                cancel.push(peer);
            }
            b != block
        });
        self.blocks[block as usize] = Block::Received(from);
        self.received += 1;
        BlockReceived::Accepted {
            piece_complete: self.received as usize == self.blocks.len(),
            cancel,
        }
    }
}

/// Every started piece, and which of them still have free blocks.
#[derive(Debug, Default)]
pub(super) struct Downloads {
    list: Vec<Download>,
    /// Indices into `list` of the pieces with at least one free block.
    open: Vec<u32>,
}

impl Downloads {
    /// Starts `piece` for `starter`; returns its index. It opens with every block free.
    pub(super) fn start(&mut self, piece: PieceIndex, starter: PeerKey, blocks: u32) -> u32 {
        let index = self.list.len() as u32;
        self.list.push(Download {
            piece,
            starter,
            blocks: vec![Block::Free; blocks as usize].into_boxed_slice(),
            free: blocks,
            received: 0,
            cursor: 0,
            extras: Vec::new(),
            open_slot: CLOSED,
        });
        if blocks > 0 {
            self.open(index);
        }
        index
    }

    /// Forgets download `index`. The last download moves into its place: returns that
    /// download's piece so the caller can point the piece's record at `index`.
    pub(super) fn finish(&mut self, index: u32) -> (Download, Option<PieceIndex>) {
        self.close(index);
        let done = self.list.swap_remove(index as usize);
        let moved = self.list.get(index as usize).map(|d| d.piece);
        if let Some(d) = self.list.get(index as usize) {
            if d.open_slot != CLOSED {
                self.open[d.open_slot as usize] = index;
            }
        }
        (done, moved)
    }

    pub(super) fn get(&self, index: u32) -> &Download {
        &self.list[index as usize]
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (u32, &Download)> {
        (0..self.list.len() as u32).zip(self.list.iter())
    }

    pub(super) fn open_count(&self) -> usize {
        self.open.len()
    }

    /// The download at position `i` of the open list.
    pub(super) fn open_at(&self, i: usize) -> u32 {
        self.open[i]
    }

    pub(super) fn is_open(&self, index: u32) -> bool {
        self.list[index as usize].open_slot != CLOSED
    }

    /// Reserves the lowest free block of download `index` for `peer`, if any is left.
    pub(super) fn take_free(&mut self, index: u32, peer: PeerKey) -> Option<u32> {
        let taken = self.list[index as usize].take_free(peer);
        if self.list[index as usize].free == 0 {
            self.close(index);
        }
        taken
    }

    pub(super) fn add_duplicate(&mut self, index: u32, block: u32, peer: PeerKey) {
        self.list[index as usize].extras.push((block, peer));
    }

    pub(super) fn release(&mut self, index: u32, block: u32, peer: PeerKey) {
        if self.list[index as usize].release(block, peer) {
            self.open(index);
        }
    }

    pub(super) fn receive(&mut self, index: u32, block: u32, from: PeerKey) -> BlockReceived {
        self.list[index as usize].receive(block, from)
    }

    fn open(&mut self, index: u32) {
        let download = &mut self.list[index as usize];
        if download.open_slot == CLOSED {
            download.open_slot = self.open.len() as u32;
            self.open.push(index);
        }
    }

    fn close(&mut self, index: u32) {
        let slot = self.list[index as usize].open_slot;
        if slot == CLOSED {
            return;
        }
        self.list[index as usize].open_slot = CLOSED;
        self.open.swap_remove(slot as usize);
        if let Some(&moved) = self.open.get(slot as usize) {
            self.list[moved as usize].open_slot = slot;
        }
    }

    /// Test support: counters, cursors and the open list agree with the blocks.
    #[cfg(test)]
    pub(super) fn check(&self) {
        for (index, d) in self.iter() {
            let free = d.blocks.iter().filter(|b| **b == Block::Free).count();
            let received = d
                .blocks
                .iter()
                .filter(|b| matches!(b, Block::Received(_)))
                .count();
            assert_eq!(d.free as usize, free);
            assert_eq!(d.received as usize, received);
            assert!(d.blocks[..d.cursor as usize]
                .iter()
                .all(|b| *b != Block::Free));
            assert_eq!(d.open_slot != CLOSED, free > 0, "open iff a block is free");
            if d.open_slot != CLOSED {
                assert_eq!(self.open[d.open_slot as usize], index);
            }
            for &(block, peer) in &d.extras {
                let first = d.blocks[block as usize];
                assert!(
                    matches!(first, Block::Reserved(p) if p != peer),
                    "extra on {first:?}"
                );
            }
        }
        let open = self.list.iter().filter(|d| d.open_slot != CLOSED).count();
        assert_eq!(open, self.open.len());
    }

    /// Test support: the peers holding `block` of download `index`.
    #[cfg(test)]
    pub(super) fn holders(&self, index: u32, block: u32) -> Vec<PeerKey> {
        let d = &self.list[index as usize];
        let mut peers: Vec<PeerKey> = match d.blocks[block as usize] {
            Block::Reserved(p) => vec![p],
            _ => vec![],
        };
        peers.extend(
            d.extras
                .iter()
                .filter(|(b, _)| *b == block)
                .map(|(_, p)| *p),
        );
        peers
    }
}
