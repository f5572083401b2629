//! The piece picker: decides which blocks to request from which peer. It owns the
//! availability of every piece (per-peer counts plus one counter for seeds), which pieces
//! we have, which pieces are being downloaded, and for each of their blocks who reserved
//! it and who delivered it; endgame duplicates and the cancel lists that follow from them
//! are decided here too. It never does I/O, never reads a clock, never hashes, never talks
//! to a peer and never decides whom to choke: the engine (`torrent`/`peer`) tells it what
//! happened and sends the requests and cancels it returns; `types` gives it its vocabulary.
//!
//! Layout (after libtorrent's, not its shape): one packed [`PieceRecord`] per piece; the
//! untouched missing pieces in one vector sorted into availability buckets (`order`); the
//! started pieces with per-block state (`download`); sizes in `geometry`.

mod download;
mod geometry;
mod order;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use crate::types::{BlockRef, PieceIndex};
use download::Downloads;
use geometry::Geometry;
use order::AvailabilityOrder;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Below this many verified pieces, new pieces are picked at random rather than
/// rarest-first: the first pieces should complete quickly so we have something to trade,
/// and rare pieces are slow to get (libtorrent's and BitTorrent 4's heuristic).
const RANDOM_FIRST_PIECES: u32 = 4;

/// Sequential mode: how many pieces from the first untouched one a peer lacking it may be
/// asked for instead, before its new piece is the usual rarest-first choice.
const SEQUENTIAL_REACH: usize = 4096;

/// A connected peer, as the engine numbers them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct PeerKey(pub u32);

/// What became of a block that arrived.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum BlockReceived {
    /// Nobody reserved it for this peer, or it is not a block of this torrent: a strike.
    Unrequested,
    /// We already had it (a late endgame copy): drop it, no strike.
    Duplicate,
    /// Keep it. `cancel` lists the other peers that had it reserved (endgame), to CANCEL.
    Accepted {
        piece_complete: bool,
        cancel: Vec<PeerKey>,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum PieceState {
    /// Missing and never started: lives in the availability order.
    Untouched,
    /// Started: lives in the downloads until verified or failed.
    Downloading,
    /// Verified.
    Have,
}

/// Everything the picker keeps per piece, 12 bytes.
#[derive(Clone, Copy, Debug)]
struct PieceRecord {
    /// How many connected non-seed peers have this piece.
    avail: u32,
    /// Position in the availability order (Untouched) or index of its download.
    slot: u32,
    state: PieceState,
}

/// Block selection for one torrent. See the module doc.
#[derive(Debug)]
pub struct Picker {
    geometry: Geometry,
    records: Vec<PieceRecord>,
    order: AvailabilityOrder,
    downloads: Downloads,
    /// Connected peers that have every piece; not counted in `PieceRecord::avail`.
    seeds: u32,
    have_count: u32,
    rng: SmallRng,
    /// New pieces in index order (`set_sequential`), not rarest first.
    sequential: bool,
    /// Sequential mode: no untouched piece lies before this one.
    first_untouched: u32,
}

impl Picker {
    /// A picker for a torrent of `piece_count` pieces of `piece_len` bytes (the last one
    /// shorter) holding `total_len` bytes. `seed` fixes every random choice.
    ///
    /// # Panics
    /// If the sizes do not describe a torrent (the metainfo parser rejects those).
    pub fn new(piece_count: u32, piece_len: u32, total_len: u64, seed: u64) -> Picker {
        let geometry = Geometry::new(piece_count, piece_len, total_len);
        let mut records = vec![
            PieceRecord {
                avail: 0,
                slot: 0,
                state: PieceState::Untouched,
            };
            piece_count as usize
        ];
        let order = AvailabilityOrder::with_all_pieces(piece_count, &mut records);
        Picker {
            geometry,
            records,
            order,
            downloads: Downloads::default(),
            seeds: 0,
            have_count: 0,
            rng: SmallRng::seed_from_u64(seed),
            sequential: false,
            first_untouched: 0,
        }
    }

    /// Starts new pieces in index order, first to last (for playing a file while it
    /// downloads), instead of rarest first. A peer that lacks the next pieces gets the first
    /// it has within `SEQUENTIAL_REACH` of them, else the usual choice.
    pub fn set_sequential(&mut self, sequential: bool) {
        self.sequential = sequential;
    }

    pub fn piece_count(&self) -> u32 {
        self.geometry.piece_count
    }

    /// Bytes in `piece` (the last piece may be short); 0 past the end.
    pub fn piece_len(&self, piece: PieceIndex) -> u32 {
        self.geometry.piece_len(piece)
    }

    /// Blocks in `piece`; 0 past the end.
    pub fn block_count(&self, piece: PieceIndex) -> u32 {
        self.geometry.block_count(piece)
    }

    /// Bytes in block number `block` of `piece` (the last block may be short).
    pub fn block_len(&self, piece: PieceIndex, block: u32) -> u32 {
        self.geometry.block_len(piece, block)
    }

    pub fn has(&self, piece: PieceIndex) -> bool {
        self.record(piece)
            .is_some_and(|r| r.state == PieceState::Have)
    }

    pub fn have_count(&self) -> u32 {
        self.have_count
    }

    /// Pieces not verified yet, including those being downloaded.
    pub fn missing_count(&self) -> u32 {
        self.geometry.piece_count - self.have_count
    }

    pub fn is_complete(&self) -> bool {
        self.missing_count() == 0
    }

    /// How many connected peers have `piece`, seeds included.
    pub fn availability(&self, piece: PieceIndex) -> u32 {
        self.record(piece).map_or(0, |r| r.avail + self.seeds)
    }

    /// True once every block we lack is reserved or received: from now on a pick hands
    /// out blocks other peers already hold. A piece nobody has keeps us out of endgame.
    pub fn in_endgame(&self) -> bool {
        !self.is_complete() && self.order.is_empty() && self.downloads.open_count() == 0
    }

    /// Resume: `piece` was verified on disk before this session.
    pub fn mark_have(&mut self, piece: PieceIndex) {
        self.on_piece_verified(piece);
    }

    /// A peer announced these pieces (its BITFIELD, as the indices of its set bits). A peer
    /// with every piece should be reported with [`Picker::seed_joined`] instead.
    pub fn peer_has_pieces(&mut self, pieces: impl IntoIterator<Item = PieceIndex>) {
        for piece in pieces {
            self.peer_has_piece(piece);
        }
    }

    /// A peer announced one more piece (HAVE). O(1).
    pub fn peer_has_piece(&mut self, piece: PieceIndex) {
        let Some(record) = self.record(piece).copied() else {
            return;
        };
        if record.state == PieceState::Untouched {
            self.order.move_up(&mut self.records, piece, record.avail);
        }
        self.records[piece.as_usize()].avail += 1;
    }

    /// A non-seed peer left; `pieces` are the pieces it had announced. O(1) per piece.
    pub fn peer_lost(&mut self, pieces: impl IntoIterator<Item = PieceIndex>) {
        for piece in pieces {
            let Some(record) = self.record(piece).copied() else {
                continue;
            };
            if record.avail == 0 {
                continue; // the engine reported a piece it never announced
            }
            if record.state == PieceState::Untouched {
                self.order.move_down(&mut self.records, piece, record.avail);
            }
            self.records[piece.as_usize()].avail -= 1;
        }
    }

    /// A peer with every piece connected (or completed). O(1): seeds raise every piece
    /// equally, so the rarest-first order does not change.
    pub fn seed_joined(&mut self) {
        self.seeds += 1;
    }

    pub fn seed_left(&mut self) {
        self.seeds = self.seeds.saturating_sub(1);
    }

    fn record(&self, piece: PieceIndex) -> Option<&PieceRecord> {
        self.records.get(piece.as_usize())
    }
}

/// Picking.
impl Picker {
    /// Appends up to `max` blocks to `out` and reserves them for `peer`, which has the
    /// pieces for which `peer_has` is true (ignored if `peer_is_seed`). A non-seed peer's
    /// pieces must have been reported with `peer_has_pieces`/`peer_has_piece`.
    ///
    /// Order: blocks of started pieces (those `peer` started first), then a new piece
    /// (random while we have fewer than 4 pieces, else rarest-first with random ties).
    /// Never a block another peer holds: that is `pick_duplicates`, in endgame.
    ///
    /// Cost: O(blocks returned + open pieces + availability buckets) for a seed; a peer
    /// lacking many pieces may scan the untouched pieces of its rarest buckets.
    pub fn pick_blocks(
        &mut self,
        peer: PeerKey,
        peer_has: impl Fn(PieceIndex) -> bool,
        peer_is_seed: bool,
        max: usize,
        out: &mut Vec<BlockRef>,
    ) {
        self.pick(peer, peer_has, peer_is_seed, max, None, out);
    }

    /// `pick_blocks` for a peer that serves runs of consecutive blocks best (a web seed's
    /// bridge fetches each run with one HTTP request): each new piece is the untouched one
    /// right after `after` (then after the piece just started) when the peer has it, and
    /// only otherwise the usual choice.
    pub fn pick_runs(
        &mut self,
        peer: PeerKey,
        peer_has: impl Fn(PieceIndex) -> bool,
        peer_is_seed: bool,
        max: usize,
        after: Option<PieceIndex>,
        out: &mut Vec<BlockRef>,
    ) {
        self.pick(peer, peer_has, peer_is_seed, max, Some(after), out);
    }

    /// Picks; `runs` is Some for a peer whose new pieces follow the last one (`pick_runs`).
    fn pick(
        &mut self,
        peer: PeerKey,
        peer_has: impl Fn(PieceIndex) -> bool,
        peer_is_seed: bool,
        max: usize,
        mut runs: Option<Option<PieceIndex>>,
        out: &mut Vec<BlockRef>,
    ) {
        let has = |piece: PieceIndex| peer_is_seed || peer_has(piece);
        let limit = out.len() + max;
        self.continue_open_pieces(peer, &has, true, limit, out);
        self.continue_open_pieces(peer, &has, false, limit, out);
        while out.len() < limit {
            let next = runs.flatten().and_then(|p| self.untouched_after(p, &has));
            let Some(piece) = next.or_else(|| self.choose_new_piece(&has, peer_is_seed)) else {
                break;
            };
            if let Some(after) = &mut runs {
                *after = Some(piece);
            }
            let index = self.start_piece(piece, peer);
            self.reserve_free_blocks(index, peer, limit, out);
        }
    }

    /// Endgame (`in_endgame`): up to `max` blocks that other peers hold and `peer` does not,
    /// fewest holders first, so that a slow peer's last blocks do not hold up the end. The
    /// first to arrive wins; the others are cancelled (`BlockReceived::Accepted`). The
    /// caller decides how many copies a peer may take (the torrent gives one at a time, to
    /// a peer with nothing else in flight, as libtorrent does: each copy is a block paid for
    /// twice). Nothing outside endgame. Cost: a scan of the blocks in flight.
    pub fn pick_duplicates(
        &mut self,
        peer: PeerKey,
        peer_has: impl Fn(PieceIndex) -> bool,
        peer_is_seed: bool,
        max: usize,
        out: &mut Vec<BlockRef>,
    ) {
        if self.in_endgame() {
            let has = |piece: PieceIndex| peer_is_seed || peer_has(piece);
            self.reserve_endgame_duplicates(peer, &has, out.len() + max, out);
        }
    }

    /// Takes free blocks from open pieces `peer` has, started by `peer` (`own`) or not.
    fn continue_open_pieces(
        &mut self,
        peer: PeerKey,
        has: &impl Fn(PieceIndex) -> bool,
        own: bool,
        limit: usize,
        out: &mut Vec<BlockRef>,
    ) {
        let mut i = 0;
        while i < self.downloads.open_count() && out.len() < limit {
            let index = self.downloads.open_at(i);
            let download = self.downloads.get(index);
            if (download.starter == peer) == own && has(download.piece) {
                self.reserve_free_blocks(index, peer, limit, out);
            }
            // A piece that ran out of free blocks left the open list; another took its place.
            if self.downloads.is_open(index) {
                i += 1;
            }
        }
    }

    fn reserve_free_blocks(
        &mut self,
        index: u32,
        peer: PeerKey,
        limit: usize,
        out: &mut Vec<BlockRef>,
    ) {
        let piece = self.downloads.get(index).piece;
        while out.len() < limit {
            let Some(block) = self.downloads.take_free(index, peer) else {
                break;
            };
            out.push(self.geometry.block(piece, block));
        }
    }

    /// The untouched piece to start next, or None if `peer` has none of them.
    fn choose_new_piece(
        &mut self,
        has: &impl Fn(PieceIndex) -> bool,
        peer_is_seed: bool,
    ) -> Option<PieceIndex> {
        if self.sequential {
            if let Some(piece) = self.first_untouched_fit(has) {
                return Some(piece);
            }
        }
        // A non-seed peer's pieces have availability >= 1: skip the pieces only seeds have.
        let first_bucket = usize::from(!peer_is_seed);
        if self.have_count < RANDOM_FIRST_PIECES {
            let start = self.order.bucket(first_bucket).start;
            return self.random_fit(start..self.order.len(), has);
        }
        for k in first_bucket..self.order.bucket_count() {
            if let Some(piece) = self.random_fit(self.order.bucket(k), has) {
                return Some(piece);
            }
        }
        None
    }

    /// Sequential mode: the first untouched piece `has` holds among the `SEQUENTIAL_REACH`
    /// pieces from the first untouched one (a bounded scan on every pick, however many
    /// pieces we already have past it).
    fn first_untouched_fit(&mut self, has: &impl Fn(PieceIndex) -> bool) -> Option<PieceIndex> {
        let untouched = |r: &PieceRecord| r.state == PieceState::Untouched;
        let start = self.first_untouched as usize;
        let skipped = self.records[start..]
            .iter()
            .take_while(|r| !untouched(r))
            .count();
        self.first_untouched += skipped as u32;
        let first = self.first_untouched as usize;
        let end = self.records.len().min(first + SEQUENTIAL_REACH);
        (first..end)
            .filter(|&i| untouched(&self.records[i]))
            .map(|i| PieceIndex(i as u32))
            .find(|&piece| has(piece))
    }

    /// The piece after `piece`, if it is untouched and `has` it.
    fn untouched_after(
        &self,
        piece: PieceIndex,
        has: &impl Fn(PieceIndex) -> bool,
    ) -> Option<PieceIndex> {
        let next = PieceIndex(piece.0.checked_add(1)?);
        let record = self.records.get(next.as_usize())?;
        (record.state == PieceState::Untouched && has(next)).then_some(next)
    }

    /// A piece `peer` has among the order's `positions`, scanning from a random one.
    fn random_fit(
        &mut self,
        positions: std::ops::Range<usize>,
        has: &impl Fn(PieceIndex) -> bool,
    ) -> Option<PieceIndex> {
        if positions.is_empty() {
            return None;
        }
        let start = self.rng.gen_range(positions.clone());
        (start..positions.end)
            .chain(positions.start..start)
            .map(|position| self.order.piece_at(position))
            .find(|&piece| has(piece))
    }

    /// Moves `piece` from the availability order to the downloads; returns its index there.
    fn start_piece(&mut self, piece: PieceIndex, starter: PeerKey) -> u32 {
        self.order.remove(&mut self.records, piece);
        let index = self
            .downloads
            .start(piece, starter, self.geometry.block_count(piece));
        let record = &mut self.records[piece.as_usize()];
        record.state = PieceState::Downloading;
        record.slot = index;
        index
    }

    /// Endgame: blocks other peers hold and `peer` does not, fewest holders first.
    fn reserve_endgame_duplicates(
        &mut self,
        peer: PeerKey,
        has: &impl Fn(PieceIndex) -> bool,
        limit: usize,
        out: &mut Vec<BlockRef>,
    ) {
        let mut candidates: Vec<(usize, u32, u32)> = Vec::new();
        for (index, download) in self.downloads.iter() {
            if has(download.piece) {
                let blocks = download.duplicate_candidates(peer);
                candidates.extend(blocks.map(|(holders, block)| (holders, index, block)));
            }
        }
        candidates.sort_by_key(|&(holders, _, _)| holders);
        for (_, index, block) in candidates.into_iter().take(limit - out.len()) {
            self.downloads.add_duplicate(index, block, peer);
            out.push(self.geometry.block(self.downloads.get(index).piece, block));
        }
    }
}

/// Arrivals, releases and verdicts.
impl Picker {
    /// A block arrived from `from`. Never panics on a block the peer made up.
    pub fn on_block_received(&mut self, block: BlockRef, from: PeerKey) -> BlockReceived {
        let Some(index) = self.geometry.block_index(block) else {
            return BlockReceived::Unrequested;
        };
        let record = self.records[block.piece.as_usize()];
        match record.state {
            PieceState::Have => BlockReceived::Duplicate,
            PieceState::Untouched => BlockReceived::Unrequested,
            PieceState::Downloading => self.downloads.receive(record.slot, index, from),
        }
    }

    /// `peer` will not deliver `blocks` (choke, disconnect, timeout): they go back to the
    /// pool. Their pieces stay started, so they are finished before new ones begin.
    pub fn release_peer(&mut self, peer: PeerKey, blocks: &[BlockRef]) {
        for &block in blocks {
            self.release_block(peer, block);
        }
    }

    /// `peer` rejected one request.
    pub fn release_block(&mut self, peer: PeerKey, block: BlockRef) {
        let Some(index) = self.geometry.block_index(block) else {
            return;
        };
        let record = self.records[block.piece.as_usize()];
        if record.state == PieceState::Downloading {
            self.downloads.release(record.slot, index, peer);
        }
    }

    /// The hash of `piece` matched: we have it.
    pub fn on_piece_verified(&mut self, piece: PieceIndex) {
        let Some(record) = self.record(piece).copied() else {
            return;
        };
        match record.state {
            PieceState::Have => return,
            PieceState::Untouched => self.order.remove(&mut self.records, piece),
            PieceState::Downloading => drop(self.finish_download(record.slot)),
        }
        self.records[piece.as_usize()].state = PieceState::Have;
        self.have_count += 1;
    }

    /// The hash of `piece` did not match: every block of it will be fetched again. Returns
    /// the peers that supplied its blocks, for the engine to strike.
    pub fn on_piece_failed(&mut self, piece: PieceIndex) -> Vec<PeerKey> {
        let Some(record) = self.record(piece).copied() else {
            return Vec::new();
        };
        let contributors = match record.state {
            PieceState::Untouched => return Vec::new(),
            PieceState::Have => {
                self.have_count -= 1;
                Vec::new()
            }
            PieceState::Downloading => self.finish_download(record.slot).contributors(),
        };
        self.records[piece.as_usize()].state = PieceState::Untouched;
        self.order.insert(&mut self.records, piece);
        self.first_untouched = self.first_untouched.min(piece.0);
        contributors
    }

    /// Drops download `index`, keeping the record of the download that takes its index.
    fn finish_download(&mut self, index: u32) -> download::Download {
        let (done, moved) = self.downloads.finish(index);
        if let Some(piece) = moved {
            self.records[piece.as_usize()].slot = index;
        }
        done
    }

    /// Test support: the internal structures agree with each other.
    #[cfg(test)]
    fn check_invariants(&self) {
        self.order.check(&self.records);
        self.downloads.check();
        for (index, download) in self.downloads.iter() {
            let record = &self.records[download.piece.as_usize()];
            assert_eq!(record.state, PieceState::Downloading);
            assert_eq!(record.slot, index);
        }
        let downloading = self
            .records
            .iter()
            .filter(|r| r.state == PieceState::Downloading);
        assert_eq!(downloading.count(), self.downloads.iter().count());
        let have = self.records.iter().filter(|r| r.state == PieceState::Have);
        assert_eq!(have.count() as u32, self.have_count);
    }
}
