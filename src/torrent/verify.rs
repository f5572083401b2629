//! Piece verification for a download in progress. Blocks that arrive in order are fed to a
//! running SHA-1 as they arrive, either right on the I/O thread while the bytes are still in
//! its cache, or on a hashing thread chosen by piece index (so one piece's blocks are hashed
//! in order); see `HashPlacement`. On the I/O thread, the blocks of one socket read are
//! hashed together once their writes are planned (`hash_fed`), so that the copy into the
//! direct writes' bounce buffers is made by the hashing pass (`CopyPlan`). When the piece is
//! complete and written, the hash is finished, after hashing any tail that could not be fed
//! in order (blocks that arrived ahead of a gap and were not held by `reorder`: re-read from
//! disk by the caller, and always hashed on a hashing thread). Verdicts come back on a channel that the
//! I/O thread drains.

use crate::buffer::Chunk;
use crate::hash::{CopyPlan, HashPlacement, HashPool, PieceHasher};
use crate::types::PieceIndex;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::mpsc;

/// The outcome of hashing one piece.
#[derive(Debug)]
pub struct HashVerdict {
    pub piece: PieceIndex,
    pub ok: bool,
    /// When the piece's last write completed.
    pub since: Instant,
}

/// Running hash states, one map per hashing thread; only that thread (or, with
/// `HashPlacement::IoThread`, the I/O thread) touches its map, so the locks are never
/// contended.
struct Shards(Vec<Mutex<HashMap<u32, PieceHasher>>>);

/// A piece's tail re-read from disk. It holds its share of the session's budget for such
/// bytes until hashed, so a hashing backlog cannot pile them up without bound.
pub struct TailBytes {
    pub data: Vec<u8>,
    pub budget: tokio::sync::OwnedSemaphorePermit,
}

pub struct Verifier {
    pool: Arc<HashPool>,
    shards: Arc<Shards>,
    expected: Arc<Vec<[u8; 20]>>,
    verdicts: mpsc::UnboundedSender<HashVerdict>,
    placement: HashPlacement,
    /// Blocks fed on the I/O thread and not hashed yet, in the order they were fed.
    fed: RefCell<Vec<(PieceIndex, Vec<Chunk>)>>,
    /// Pieces finished whose verdicts have not been received yet.
    awaiting_verdicts: Cell<usize>,
}

impl Verifier {
    /// A verifier and the channel its verdicts arrive on. The channel holds at most one
    /// verdict per piece in flight, so it is bounded by the picker's work in progress.
    pub fn new(
        pool: Arc<HashPool>,
        expected: Arc<Vec<[u8; 20]>>,
        placement: HashPlacement,
    ) -> (Verifier, mpsc::UnboundedReceiver<HashVerdict>) {
        let shards = (0..pool.workers())
            .map(|_| Mutex::new(HashMap::new()))
            .collect();
        let (tx, rx) = mpsc::unbounded_channel();
        let v = Verifier {
            pool,
            shards: Arc::new(Shards(shards)),
            expected,
            verdicts: tx,
            placement,
            fed: RefCell::default(),
            awaiting_verdicts: Cell::new(0),
        };
        (v, rx)
    }

    /// Hashes the next in-order bytes of `piece`: on the I/O thread at the next `hash_fed`
    /// (or before the next `finish` or `discard`), else on its hashing thread.
    pub fn feed(&self, piece: PieceIndex, data: Vec<Chunk>) {
        if self.placement == HashPlacement::IoThread {
            self.fed.borrow_mut().push((piece, data));
            return;
        }
        let shards = Arc::clone(&self.shards);
        let shard = self.shard_of(piece);
        self.run(shard, true, move || {
            let mut map = shards.0[shard].lock().expect("hash shard lock");
            let h = map.entry(piece.0).or_default();
            for c in &data {
                h.update(c.as_slice());
            }
        });
    }

    /// Hashes the blocks fed on the I/O thread since the last call, in the order they were
    /// fed; the copies `plan` has for their bytes are made in the same pass.
    pub fn hash_fed(&self, plan: &mut CopyPlan) {
        let fed = std::mem::take(&mut *self.fed.borrow_mut());
        for (piece, data) in fed {
            let mut map = self.shards.0[self.shard_of(piece)]
                .lock()
                .expect("hash shard lock");
            let h = map.entry(piece.0).or_default();
            for c in &data {
                plan.hash_through(c.as_slice(), h);
            }
        }
    }

    /// Finishes `piece`: hashes `tail` (the bytes after what was fed), compares, and sends
    /// the verdict.
    pub fn finish(&self, piece: PieceIndex, tail: Option<TailBytes>, since: Instant) {
        self.hash_fed(&mut CopyPlan::default());
        let shards = Arc::clone(&self.shards);
        let shard = self.shard_of(piece);
        let expected = self.expected[piece.as_usize()];
        let tx = self.verdicts.clone();
        let small = tail.is_none();
        self.awaiting_verdicts.set(self.awaiting_verdicts.get() + 1);
        self.run(shard, small, move || {
            let mut h = shards.0[shard]
                .lock()
                .expect("hash shard lock")
                .remove(&piece.0)
                .unwrap_or_default();
            if let Some(t) = tail {
                h.update(&t.data);
            }
            let ok = h.finish() == expected;
            let _ = tx.send(HashVerdict { piece, ok, since });
        });
    }

    /// Counts one verdict as received from the channel.
    pub fn verdict_received(&self) {
        self.awaiting_verdicts
            .set(self.awaiting_verdicts.get().saturating_sub(1));
    }

    /// Pieces finished (complete and written) whose verdicts have not been received yet.
    pub fn awaiting_verdicts(&self) -> usize {
        self.awaiting_verdicts.get()
    }

    /// Forgets a piece's running hash (its data is being fetched again).
    pub fn discard(&self, piece: PieceIndex) {
        self.hash_fed(&mut CopyPlan::default());
        let shards = Arc::clone(&self.shards);
        let shard = self.shard_of(piece);
        self.run(shard, true, move || {
            shards.0[shard]
                .lock()
                .expect("hash shard lock")
                .remove(&piece.0);
        });
    }

    /// Runs `job` on the I/O thread if the placement says so and the job is `small` (a
    /// block's worth of hashing), else on the hashing thread of `shard`. A piece's jobs stay
    /// in order either way: a piece's large job (its tail) is its last until its verdict.
    fn run(&self, shard: usize, small: bool, job: impl FnOnce() + Send + 'static) {
        if small && self.placement == HashPlacement::IoThread {
            job()
        } else {
            self.pool.submit_to(shard, job)
        }
    }

    fn shard_of(&self, piece: PieceIndex) -> usize {
        piece.as_usize() % self.shards.0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::BufferPool;
    use crate::hash::sha1;

    fn chunk_of(pool: &BufferPool, bytes: &[u8]) -> Vec<Chunk> {
        let mut buf = pool.try_take().expect("a free test buffer");
        buf.extend_from_slice(bytes);
        let len = buf.len();
        vec![Chunk::new(buf.freeze(), 0..len)]
    }

    /// A finished piece is awaited until its verdict is received, whichever way it went.
    #[test]
    fn finished_pieces_are_awaited_until_their_verdicts_are_received() {
        let expected = Arc::new(vec![sha1(&[1; 64]), sha1(&[2; 64])]);
        let pool = BufferPool::new(64, 4);
        let (v, mut verdicts) =
            Verifier::new(Arc::new(HashPool::new(1)), expected, HashPlacement::Workers);
        v.feed(PieceIndex(0), chunk_of(&pool, &[1; 64]));
        v.feed(PieceIndex(1), chunk_of(&pool, &[9; 64]));
        v.finish(PieceIndex(0), None, Instant::now());
        v.finish(PieceIndex(1), None, Instant::now());
        assert_eq!(v.awaiting_verdicts(), 2);
        let mut oks = Vec::new();
        for left in [1, 0] {
            oks.push(verdicts.blocking_recv().expect("a verdict").ok);
            v.verdict_received();
            assert_eq!(v.awaiting_verdicts(), left);
        }
        oks.sort();
        assert_eq!(oks, [false, true]);
    }

    /// Piece 0 arrives in order, piece 1 has a tail re-read from disk, piece 2 is corrupt and
    /// then fetched again: the verdicts are the same wherever the blocks are hashed.
    #[test]
    fn verdicts_do_not_depend_on_where_blocks_are_hashed() {
        let data: Vec<Vec<u8>> = (0..3u8).map(|p| vec![p + 1; 64]).collect();
        let expected = Arc::new(data.iter().map(|d| sha1(d)).collect::<Vec<_>>());
        let budget = Arc::new(tokio::sync::Semaphore::new(4));
        let pool = BufferPool::new(64, 16);
        for placement in [HashPlacement::IoThread, HashPlacement::Workers] {
            let (v, mut verdicts) =
                Verifier::new(Arc::new(HashPool::new(2)), Arc::clone(&expected), placement);
            let now = Instant::now();
            let mut verdict = || {
                let got = verdicts.blocking_recv().expect("a verdict");
                (got.piece.0, got.ok)
            };
            v.feed(PieceIndex(0), chunk_of(&pool, &data[0][..32]));
            v.feed(PieceIndex(0), chunk_of(&pool, &data[0][32..]));
            v.finish(PieceIndex(0), None, now);
            assert_eq!(verdict(), (0, true), "{placement:?}");

            v.feed(PieceIndex(1), chunk_of(&pool, &data[1][..16]));
            let tail = TailBytes {
                data: data[1][16..].to_vec(),
                budget: Arc::clone(&budget).try_acquire_owned().unwrap(),
            };
            v.finish(PieceIndex(1), Some(tail), now);
            assert_eq!(verdict(), (1, true), "{placement:?}");

            v.feed(PieceIndex(2), chunk_of(&pool, &[0; 64]));
            v.finish(PieceIndex(2), None, now);
            assert_eq!(verdict(), (2, false), "{placement:?}");
            v.discard(PieceIndex(2));
            v.feed(PieceIndex(2), chunk_of(&pool, &data[2]));
            v.finish(PieceIndex(2), None, now);
            assert_eq!(verdict(), (2, true), "{placement:?}");
        }
    }
}
