//! What the torrent knows about one connected peer: the four choke/interest flags, which
//! pieces it has, the requests we have outstanding to it (and their send times), the
//! requests it has queued with us, its measured rates, and its strikes. Pure state; the
//! transitions live in `torrent` and this file's methods.

use crate::peer::outbox::Outbox;
use crate::pex::PexLog;
use crate::types::{BlockRef, PieceIndex, BLOCK_SIZE};
use bitvec::prelude::{BitVec, Msb0};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Request pipeline bounds (blocks of 16 KiB): the floor keeps a slow link busy, the
/// ceiling is libtorrent's default max_out_request_queue. The ceiling counts REQUEST
/// messages, which are what a peer queues: a peer asked for several blocks per request
/// (`blocks_per_request`) gets that many times as many blocks per request in flight, up to
/// MAX_MULTI_BLOCK_REQUESTS requests.
pub const MIN_WINDOW: u32 = 4;
pub const MAX_WINDOW: u32 = 500;
/// The most REQUESTs in flight to a peer asked for several blocks per request (aria2, 64 KiB
/// each: 4 MiB, within the receive buffer the kernel's autotuning gives a fast loopback peer,
/// 4.7 MB here). aria2 reads every queued request's block before it sends any more, and once
/// it has more queued than our receive window takes, it sends only when our reads open the
/// window: its queued segments then go out from our core, inside our `recv` (the leecher's
/// `tcp_recvmsg` took 17% of its samples from aria2 against 11% from libtorrent). Capped,
/// aria2 sends in its own time. `perf/compare --pairs aria2:spate`, alternating single runs
/// (2026-12-07): 1 GiB in 200 files at 32 requests against 500, 1.10-1.12 against 1.20-1.25
/// leecher CPU s in three pairs (64: 1.06-1.15 in four runs), 2.18-2.26 against 2.24-2.30 s;
/// 2 GiB 644-667 against 591-656 MB/s at the same CPU.
pub const MAX_MULTI_BLOCK_REQUESTS: u32 = 64;
/// Window a new peer starts with, before its rate is known.
const INITIAL_WINDOW: u32 = 32;
/// The pipeline holds this much time's worth of the peer's measured rate (the
/// bandwidth-delay product at this target delay).
const TARGET_DELAY: Duration = Duration::from_secs(1);
/// Most blocks one REQUEST asks for (64 KiB: what aria2 serves).
pub const MAX_BLOCKS_PER_REQUEST: u32 = 4;

/// Requests a peer may queue with us; past it the peer is flooding and is dropped.
pub const MAX_QUEUED_REQUESTS: usize = 2000;

/// How many consecutive 16 KiB blocks one REQUEST may ask a peer with this id for. aria2
/// serves requests of up to 64 KiB (`MAX_BLOCK_LENGTH` in its `BtConstants.h`) and its
/// seeding costs it per message more than per byte: a loopback client reading 1 GiB from
/// aria2 1.36 took 656-717 MB/s at 1.46-1.64 aria2 CPU s in 16 KiB requests and 739-806
/// MB/s at 1.32-1.45 s in 64 KiB ones (alternating runs, 2026-12-06). Other clients refuse
/// requests over 16 KiB, as BEP 3 lets them, so they get one block per request.
pub fn blocks_per_request(peer_id: &[u8; 20]) -> u32 {
    if peer_id.starts_with(b"A2-") {
        MAX_BLOCKS_PER_REQUEST
    } else {
        1
    }
}

/// Bytes per second, as an exponentially weighted average over one-second ticks.
#[derive(Default, Debug)]
pub struct RateMeter {
    this_tick: u64,
    rate: f64,
    total: u64,
}

impl RateMeter {
    pub fn add(&mut self, bytes: u64) {
        self.this_tick += bytes;
        self.total += bytes;
    }

    /// Closes a tick of `elapsed` length.
    pub fn tick(&mut self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64().max(0.001);
        let sample = self.this_tick as f64 / secs;
        self.rate = if self.rate == 0.0 {
            sample
        } else {
            0.5 * self.rate + 0.5 * sample
        };
        self.this_tick = 0;
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    pub fn total(&self) -> u64 {
        self.total
    }
}

pub struct PeerState {
    pub addr: SocketAddr,
    pub outbox: Rc<Outbox>,
    pub has: BitVec<u8, Msb0>,
    pub has_count: u32,
    /// Joined with every piece: the picker counts it once, as a seed, not per piece.
    pub counted_as_seed: bool,
    /// Pieces it has that we lack: we are interested while this is above zero.
    pub wanted_count: u32,
    pub am_choking: bool,
    pub am_interested: bool,
    pub peer_choking: bool,
    pub peer_interested: bool,
    /// Our outstanding requests to it, oldest first, with when each was sent.
    pub requests: VecDeque<(BlockRef, Instant)>,
    /// Blocks we asked for and then gave back (choke, timeout): they may still arrive and
    /// are not held against the peer.
    pub released: VecDeque<BlockRef>,
    /// How many requests to keep outstanding.
    pub window: u32,
    /// REQUEST messages the peer queues (extension handshake `reqq`, at most MAX_WINDOW).
    reqq: u32,
    /// Consecutive blocks of a piece one REQUEST message may cover (`blocks_per_request`).
    pub blocks_per_request: u32,
    /// The id it wants `lt_donthave` sent with, if it speaks BEP 54.
    pub donthave_id: Option<u8>,
    /// The id it wants `ut_metadata` sent with, if it speaks BEP 9.
    pub metadata_id: Option<u8>,
    /// The id it wants `ut_pex` sent with, if it speaks BEP 11 and we exchange peers.
    pub pex_id: Option<u8>,
    /// The port it accepts connections on, from its extension handshake (`p`).
    pub listen_port: Option<u16>,
    /// We dialled it (so its address is one it accepts connections on).
    pub dialled_by_us: bool,
    /// It serves runs of consecutive pieces best (a web seed's bridge): its new pieces
    /// follow `last_picked` where they can.
    pub prefers_runs: bool,
    /// The piece of the last block we asked it for (kept for `prefers_runs` only).
    pub last_picked: Option<PieceIndex>,
    /// What it has been told of our peers, and when it last told us of its own.
    pub pex: PexLog,
    /// Its requests waiting to be served.
    pub their_requests: VecDeque<BlockRef>,
    pub download: RateMeter,
    pub upload: RateMeter,
    pub connected_at: Instant,
    pub last_block_at: Instant,
    pub last_received_at: Instant,
    pub last_keepalive_at: Instant,
    pub strikes: u32,
    /// Whether the initial BITFIELD (or HAVE_ALL/NONE) slot has passed.
    pub bitfield_allowed: bool,
}

impl PeerState {
    pub fn new(addr: SocketAddr, outbox: Rc<Outbox>, piece_count: u32, now: Instant) -> PeerState {
        PeerState {
            addr,
            outbox,
            has: BitVec::repeat(false, piece_count as usize),
            has_count: 0,
            counted_as_seed: false,
            wanted_count: 0,
            am_choking: true,
            am_interested: false,
            peer_choking: true,
            peer_interested: false,
            requests: VecDeque::new(),
            released: VecDeque::new(),
            window: INITIAL_WINDOW,
            reqq: MAX_WINDOW,
            blocks_per_request: 1,
            donthave_id: None,
            metadata_id: None,
            pex_id: None,
            listen_port: None,
            dialled_by_us: false,
            prefers_runs: false,
            last_picked: None,
            pex: PexLog::default(),
            their_requests: VecDeque::new(),
            download: RateMeter::default(),
            upload: RateMeter::default(),
            connected_at: now,
            last_block_at: now,
            last_received_at: now,
            last_keepalive_at: now,
            strikes: 0,
            bitfield_allowed: true,
        }
    }

    /// The address it accepts connections on, if we know one: the one we dialled, or its
    /// IP with the port its extension handshake gave.
    pub fn listening_addr(&self) -> Option<SocketAddr> {
        if self.dialled_by_us {
            return Some(self.addr);
        }
        let port = self.listen_port?;
        Some(SocketAddr::new(self.addr.ip(), port))
    }

    /// Logs (at debug level) what it sent us and what we sent it, in payload bytes.
    pub fn log_totals(&self, why: &'static str) {
        tracing::debug!(
            addr = %self.addr,
            downloaded = self.download.total(),
            uploaded = self.upload.total(),
            why,
            "peer totals"
        );
    }

    pub fn is_seed(&self) -> bool {
        self.has_count as usize == self.has.len()
    }

    pub fn has_piece(&self, p: PieceIndex) -> bool {
        self.has.get(p.as_usize()).is_some_and(|b| *b)
    }

    /// Requests we may still send right now.
    pub fn request_room(&self) -> usize {
        if self.peer_choking {
            return 0;
        }
        (self.window.min(self.max_window()) as usize).saturating_sub(self.requests.len())
    }

    /// Removes `block` from the outstanding requests; returns when it was sent, or None if
    /// it was not outstanding.
    pub fn take_request(&mut self, block: BlockRef) -> Option<Instant> {
        let i = self.requests.iter().position(|(b, _)| *b == block)?;
        self.requests.remove(i).map(|(_, at)| at)
    }

    /// True if `block` was requested from this peer and later released by us.
    pub fn take_released(&mut self, block: BlockRef) -> bool {
        match self.released.iter().position(|b| *b == block) {
            Some(i) => {
                self.released.remove(i);
                true
            }
            None => false,
        }
    }

    /// Moves every outstanding request to `released` and returns the blocks.
    pub fn release_all_requests(&mut self) -> Vec<BlockRef> {
        let blocks: Vec<BlockRef> = self.requests.drain(..).map(|(b, _)| b).collect();
        self.remember_released(&blocks);
        blocks
    }

    fn remember_released(&mut self, blocks: &[BlockRef]) {
        self.released.extend(blocks.iter().copied());
        // Only the most recent releases matter; older ones have surely arrived or died.
        while self.released.len() > self.ceiling() as usize * 2 {
            self.released.pop_front();
        }
    }

    /// Gives back our outstanding requests in `piece` (the peer said it no longer has it).
    pub fn release_requests_in(&mut self, piece: PieceIndex) -> Vec<BlockRef> {
        let mut blocks = Vec::new();
        self.requests.retain(|(b, _)| {
            let keep = b.piece != piece;
            if !keep {
                blocks.push(*b);
            }
            keep
        });
        self.remember_released(&blocks);
        blocks
    }

    /// Asks for `blocks` consecutive blocks per request from now on (at most
    /// MAX_BLOCKS_PER_REQUEST); the window's ceilings grow with it.
    pub fn set_blocks_per_request(&mut self, blocks: u32) {
        self.blocks_per_request = blocks.clamp(1, MAX_BLOCKS_PER_REQUEST);
    }

    /// Takes the peer's own request queue size (`reqq`, in requests) as its cap.
    pub fn set_reqq(&mut self, reqq: u32) {
        self.reqq = reqq.clamp(1, MAX_WINDOW);
    }

    /// The most blocks the peer's own queue takes: `reqq` requests, within our cap.
    pub fn max_window(&self) -> u32 {
        self.reqq.min(self.max_requests()) * self.blocks_per_request
    }

    /// The most blocks that may be in flight: our cap on requests.
    fn ceiling(&self) -> u32 {
        self.max_requests() * self.blocks_per_request
    }

    /// Our cap on REQUESTs in flight: MAX_WINDOW, or MAX_MULTI_BLOCK_REQUESTS for a peer asked
    /// for several blocks per request.
    fn max_requests(&self) -> u32 {
        if self.blocks_per_request > 1 {
            MAX_MULTI_BLOCK_REQUESTS
        } else {
            MAX_WINDOW
        }
    }

    /// Slow start: each block received widens the window by one, up to the ceiling that
    /// the last rate measurement allows.
    pub fn grow_window(&mut self) {
        if self.window < self.ceiling() {
            self.window += 1;
        }
    }

    /// Resizes the window from the measured rate (called once per tick).
    pub fn resize_window_from_rate(&mut self) {
        let bdp = self.download.rate() * TARGET_DELAY.as_secs_f64() / f64::from(BLOCK_SIZE);
        let sized = (bdp as u32).clamp(MIN_WINDOW, self.ceiling());
        // Never shrink below what is in flight plus slow start's progress: a window the rate
        // was limited by would otherwise collapse.
        self.window = sized.max(self.window.min(self.requests.len() as u32 + MIN_WINDOW));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_follows_rate_within_bounds() {
        let now = Instant::now();
        let mut p = PeerState::new("127.0.0.1:1".parse().unwrap(), Outbox::new(), 10, now);
        p.download.add(100 * 16384);
        p.download.tick(Duration::from_secs(1));
        p.resize_window_from_rate();
        assert_eq!(p.window, 100);
        p.download.add(0);
        for _ in 0..20 {
            p.download.tick(Duration::from_secs(1));
        }
        p.resize_window_from_rate();
        assert_eq!(p.window, MIN_WINDOW);
        p.download.add(1 << 40);
        p.download.tick(Duration::from_secs(1));
        p.resize_window_from_rate();
        assert_eq!(p.window, MAX_WINDOW);
    }

    #[test]
    fn the_ceiling_counts_requests_not_blocks() {
        let now = Instant::now();
        let mut p = PeerState::new("127.0.0.1:1".parse().unwrap(), Outbox::new(), 10, now);
        assert_eq!(p.max_window(), MAX_WINDOW);
        p.set_blocks_per_request(4);
        assert_eq!(p.max_window(), 4 * MAX_MULTI_BLOCK_REQUESTS);
        p.download.add(1 << 40);
        p.download.tick(Duration::from_secs(1));
        p.resize_window_from_rate();
        assert_eq!(
            p.window,
            4 * MAX_MULTI_BLOCK_REQUESTS,
            "a fast aria2 has 64 requests of 4 blocks in flight"
        );
        p.set_reqq(16);
        assert_eq!(
            p.max_window(),
            64,
            "its reqq of 16 requests holds 64 blocks"
        );
        p.set_reqq(1 << 20);
        assert_eq!(
            p.max_window(),
            4 * MAX_MULTI_BLOCK_REQUESTS,
            "a huge reqq is capped"
        );
        assert_eq!(blocks_per_request(b"A2-1-36-0-0123456789"), 4);
        assert_eq!(blocks_per_request(b"-lt2080-0123456789ab"), 1);
    }

    #[test]
    fn released_requests_are_remembered() {
        let now = Instant::now();
        let mut p = PeerState::new("127.0.0.1:1".parse().unwrap(), Outbox::new(), 10, now);
        let b = BlockRef {
            piece: PieceIndex(1),
            offset: 0,
            len: 16384,
        };
        p.requests.push_back((b, now));
        assert_eq!(p.release_all_requests(), vec![b]);
        assert!(p.take_request(b).is_none());
        assert!(p.take_released(b));
        assert!(!p.take_released(b));
    }
}
