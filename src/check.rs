//! Piece checking: read pieces through `Storage` and hash them on the `HashPool`, many in
//! flight, with memory bounded by a byte budget. `create` uses it to compute the hashes of a
//! new torrent, `verify` and resume use it to compare what is on disk with the torrent.

use crate::hash::{sha1, HashPool};
use crate::storage::Storage;
use crate::types::PieceIndex;
use futures_util::stream::{FuturesUnordered, StreamExt};
use std::io;
use std::sync::Arc;

/// What checking one piece found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PieceCheck {
    /// The piece's SHA-1, when there was nothing to compare it with.
    Digest([u8; 20]),
    /// Matches the expected hash.
    Good,
    /// Does not match, and holds data.
    Corrupt,
    /// Does not match and is all zeros: never written (a sparse hole).
    Unwritten,
    /// Could not be read (file missing or short, or an I/O error).
    Unreadable(io::ErrorKind),
}

/// Bytes of piece data in flight (being read or hashed) at once; at least a few pieces are
/// always allowed so large pieces still overlap reading with hashing.
const IN_FLIGHT_BYTES: usize = 64 << 20;

/// Reads and hashes `pieces`, calling `on_piece` as each finishes (in completion order).
/// With `expected` hashes each piece is judged; without, its digest is reported.
pub async fn check_pieces(
    storage: &Storage,
    pool: &HashPool,
    pieces: impl IntoIterator<Item = u32>,
    expected: Option<Arc<Vec<[u8; 20]>>>,
    mut on_piece: impl FnMut(PieceIndex, PieceCheck),
) {
    let layout = storage.layout();
    let piece_len = layout.piece_length() as usize;
    let max_in_flight = (IN_FLIGHT_BYTES / piece_len).clamp(2 * pool.workers() + 2, 64);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut pieces = pieces.into_iter();
    let mut reads = FuturesUnordered::new();
    let mut spare: Vec<Vec<u8>> = Vec::new();
    let mut outstanding = 0usize;
    loop {
        while outstanding < max_in_flight {
            let Some(index) = pieces.next() else { break };
            let piece = PieceIndex(index);
            let buf = spare.pop().unwrap_or_default();
            let start = layout.piece_offset(piece);
            let len = layout.piece_len(piece) as usize;
            reads.push(async move { (piece, storage.read(start, len, buf).await) });
            outstanding += 1;
        }
        if outstanding == 0 {
            break;
        }
        tokio::select! {
            Some((piece, (res, buf))) = reads.next(), if !reads.is_empty() => match res {
                Ok(()) => {
                    let want = expected.as_ref().map(|e| e[piece.as_usize()]);
                    let tx = done_tx.clone();
                    pool.submit(move || {
                        let verdict = judge(&buf, want);
                        let _ = tx.send((piece, verdict, buf));
                    });
                }
                Err(e) => {
                    on_piece(piece, PieceCheck::Unreadable(e.kind()));
                    outstanding -= 1;
                    spare.push(buf);
                }
            },
            Some((piece, verdict, buf)) = done_rx.recv() => {
                on_piece(piece, verdict);
                outstanding -= 1;
                spare.push(buf);
            }
        }
    }
}

fn judge(data: &[u8], expected: Option<[u8; 20]>) -> PieceCheck {
    let digest = sha1(data);
    match expected {
        None => PieceCheck::Digest(digest),
        Some(want) if want == digest => PieceCheck::Good,
        Some(_) if data.iter().all(|&b| b == 0) => PieceCheck::Unwritten,
        Some(_) => PieceCheck::Corrupt,
    }
}
