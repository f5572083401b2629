//! The availability order: every untouched missing piece in one vector, grouped into
//! contiguous buckets by availability (bucket k holds the pieces that k non-seed peers
//! have), rarest bucket first. Each piece's position lives in its record, so a +1/-1 of
//! availability moves it across one bucket boundary with a single swap, and taking a piece
//! out or putting it back costs one swap per bucket above it. Seeds are not counted here:
//! they raise every piece equally and would not change the order.

use super::PieceRecord;
use crate::types::PieceIndex;
use std::ops::Range;

#[derive(Debug)]
pub(super) struct AvailabilityOrder {
    pieces: Vec<PieceIndex>,
    /// `bucket_ends[k]` is one past the last position of bucket k. Never empty; the last
    /// entry always equals `pieces.len()`, and trailing empty buckets are trimmed.
    bucket_ends: Vec<u32>,
}

impl AvailabilityOrder {
    /// All `count` pieces, nobody has any of them yet.
    pub(super) fn with_all_pieces(count: u32, records: &mut [PieceRecord]) -> Self {
        for (position, record) in records.iter_mut().enumerate() {
            record.slot = position as u32;
        }
        AvailabilityOrder {
            pieces: (0..count).map(PieceIndex).collect(),
            bucket_ends: vec![count],
        }
    }

    pub(super) fn len(&self) -> usize {
        self.pieces.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    pub(super) fn bucket_count(&self) -> usize {
        self.bucket_ends.len()
    }

    /// Positions of the pieces with availability `k`; empty past the last bucket.
    pub(super) fn bucket(&self, k: usize) -> Range<usize> {
        let end = self.bucket_end(k);
        let start = if k == 0 { 0 } else { self.bucket_end(k - 1) };
        start..end
    }

    pub(super) fn piece_at(&self, position: usize) -> PieceIndex {
        self.pieces[position]
    }

    /// Puts a piece back (a failed hash) into the bucket of its availability.
    pub(super) fn insert(&mut self, records: &mut [PieceRecord], piece: PieceIndex) {
        let bucket = records[piece.as_usize()].avail as usize;
        self.ensure_buckets(bucket + 1);
        let mut position = self.pieces.len();
        self.pieces.push(piece);
        records[piece.as_usize()].slot = position as u32;
        *self.bucket_ends.last_mut().expect("never empty") += 1;
        // Walk down from the last bucket: each step swaps with a bucket's first piece.
        for k in (bucket + 1..self.bucket_ends.len()).rev() {
            let first = self.bucket_ends[k - 1] as usize;
            self.swap(records, position, first);
            self.bucket_ends[k - 1] += 1;
            position = first;
        }
    }

    /// Takes a piece out (it was started or we have it).
    pub(super) fn remove(&mut self, records: &mut [PieceRecord], piece: PieceIndex) {
        let bucket = records[piece.as_usize()].avail as usize;
        let mut position = records[piece.as_usize()].slot as usize;
        // Walk up to the very end: each step swaps with a bucket's last piece.
        for k in bucket..self.bucket_ends.len() {
            let last = self.bucket_ends[k] as usize - 1;
            self.swap(records, position, last);
            self.bucket_ends[k] -= 1;
            position = last;
        }
        debug_assert_eq!(position, self.pieces.len() - 1);
        // The last bucket's end already moved down with the piece.
        self.pieces.pop();
        self.trim_empty_top_buckets();
    }

    /// One more peer has `piece`, which sits in bucket `from`.
    pub(super) fn move_up(&mut self, records: &mut [PieceRecord], piece: PieceIndex, from: u32) {
        let k = from as usize;
        self.ensure_buckets(k + 2);
        let last = self.bucket_ends[k] as usize - 1;
        self.swap(records, records[piece.as_usize()].slot as usize, last);
        self.bucket_ends[k] -= 1;
    }

    /// One peer fewer has `piece`, which sits in bucket `from` (at least 1).
    pub(super) fn move_down(&mut self, records: &mut [PieceRecord], piece: PieceIndex, from: u32) {
        let k = from as usize;
        let first = self.bucket_ends[k - 1] as usize;
        self.swap(records, records[piece.as_usize()].slot as usize, first);
        self.bucket_ends[k - 1] += 1;
        self.trim_empty_top_buckets();
    }

    fn swap(&mut self, records: &mut [PieceRecord], a: usize, b: usize) {
        self.pieces.swap(a, b);
        records[self.pieces[a].as_usize()].slot = a as u32;
        records[self.pieces[b].as_usize()].slot = b as u32;
    }

    fn bucket_end(&self, k: usize) -> usize {
        match self.bucket_ends.get(k) {
            Some(&end) => end as usize,
            None => self.pieces.len(),
        }
    }

    fn ensure_buckets(&mut self, count: usize) {
        while self.bucket_ends.len() < count {
            self.bucket_ends.push(self.pieces.len() as u32);
        }
    }

    /// Keeps `insert` and `remove` proportional to the availabilities that exist now, not
    /// to the highest one ever seen.
    fn trim_empty_top_buckets(&mut self) {
        while let [.., below, top] = self.bucket_ends[..] {
            if below != top {
                break;
            }
            self.bucket_ends.pop();
        }
    }

    /// Test support: every position agrees with its record and its bucket.
    #[cfg(test)]
    pub(super) fn check(&self, records: &[PieceRecord]) {
        assert_eq!(
            *self.bucket_ends.last().unwrap() as usize,
            self.pieces.len()
        );
        assert!(self.bucket_ends.windows(2).all(|w| w[0] <= w[1]));
        for k in 0..self.bucket_count() {
            for position in self.bucket(k) {
                let record = &records[self.pieces[position].as_usize()];
                assert_eq!(record.state, super::PieceState::Untouched);
                assert_eq!(record.slot as usize, position);
                assert_eq!(record.avail as usize, k, "piece in the wrong bucket");
            }
        }
        let untouched = records
            .iter()
            .filter(|r| r.state == super::PieceState::Untouched);
        assert_eq!(untouched.count(), self.pieces.len());
    }
}
