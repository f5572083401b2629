//! Piece verification for a download in progress. Blocks that arrive in order are fed to a
//! running SHA-1 on a hashing thread as they arrive (the thread chosen by piece index, so one
//! piece's blocks are hashed in order); when the piece is complete and written, the hash is
//! finished, after hashing any tail that arrived out of order (re-read from disk by the
//! caller). Verdicts come back on a channel that the I/O thread drains.

use crate::buffer::Chunk;
use crate::hash::{HashPool, PieceHasher};
use crate::types::PieceIndex;
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

/// Running hash states, one map per hashing thread; only that thread touches its map, so
/// the locks are never contended.
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
}

impl Verifier {
    /// A verifier and the channel its verdicts arrive on. The channel holds at most one
    /// verdict per piece in flight, so it is bounded by the picker's work in progress.
    pub fn new(
        pool: Arc<HashPool>,
        expected: Arc<Vec<[u8; 20]>>,
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
        };
        (v, rx)
    }

    /// Hashes the next in-order bytes of `piece`.
    pub fn feed(&self, piece: PieceIndex, data: Vec<Chunk>) {
        let shards = Arc::clone(&self.shards);
        let shard = self.shard_of(piece);
        self.pool.submit_to(shard, move || {
            let mut map = shards.0[shard].lock().expect("hash shard lock");
            let h = map.entry(piece.0).or_default();
            for c in &data {
                h.update(c.as_slice());
            }
        });
    }

    /// Finishes `piece`: hashes `tail` (the bytes after what was fed), compares, and sends
    /// the verdict.
    pub fn finish(&self, piece: PieceIndex, tail: Option<TailBytes>, since: Instant) {
        let shards = Arc::clone(&self.shards);
        let shard = self.shard_of(piece);
        let expected = self.expected[piece.as_usize()];
        let tx = self.verdicts.clone();
        self.pool.submit_to(shard, move || {
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

    /// Forgets a piece's running hash (its data is being fetched again).
    pub fn discard(&self, piece: PieceIndex) {
        let shards = Arc::clone(&self.shards);
        let shard = self.shard_of(piece);
        self.pool.submit_to(shard, move || {
            shards.0[shard]
                .lock()
                .expect("hash shard lock")
                .remove(&piece.0);
        });
    }

    fn shard_of(&self, piece: PieceIndex) -> usize {
        piece.as_usize() % self.shards.0.len()
    }
}
