//! The state of one torrent in a running session and every decision about it: which peers
//! we talk to and what each has, which blocks to request from whom, what to do with a block
//! that arrives (strike, drop, or write and hash), what happens when a piece verifies or
//! fails, and whom to unchoke. The I/O layer (`peer::conn`, `session`) calls these handlers
//! and carries out what they return (writes to issue, tail reads, peers to drop); nothing
//! here awaits, so the state is never borrowed across an I/O operation.

mod peer_exchange;
mod peer_state;
mod reorder;
mod stats;
mod verify;

pub use peer_state::{PeerState, MAX_QUEUED_REQUESTS};
pub use stats::Stats;
pub use verify::{HashVerdict, TailBytes, Verifier};

use crate::buffer::{cut_chunks, BufferPool, Chunk};
use crate::choker::{Choker, ChokerConfig, Decision, PeerSnapshot};
use crate::hash::CopyPlan;
use crate::layout::Layout;
use crate::metadata::{self, MetadataMessage};
use crate::peer::extended;
use crate::peer::inbox::{Inbound, ReceivedBlock};
use crate::peer::outbox::Outbox;
use crate::picker::{BlockReceived, PeerKey, Picker};
use crate::types::{BlockRef, PeerId, PieceIndex, BLOCK_SIZE};
use crate::wire::{validate_bitfield, Message};
use bitvec::prelude::{BitVec, Msb0};
use reorder::Reorder;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Hash failures a peer may contribute to before it is banned.
const MAX_STRIKES: u32 = 3;
/// Largest block a peer may request from us (128 KiB is the most any client sends).
const MAX_REQUEST_LEN: u32 = 128 << 10;
/// A peer with requests outstanding that sends no block for this long is snubbed: its
/// requests go back to the pool for others.
const SNUB_TIMEOUT: Duration = Duration::from_secs(30);
/// A peer that sends nothing at all for this long is dropped (keep-alives come every 2 min).
const IDLE_TIMEOUT: Duration = Duration::from_secs(180);
/// A peer that leaves one of our writes unread for this long is dropped, freeing the
/// upload buffers it pins.
const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// We send a keep-alive this often, so peers with the usual 2-3 minute idle timeout keep us.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(90);
/// Endgame copies (blocks another peer holds) a peer may take at once, and only when it has
/// nothing else in flight (libtorrent's rule). Handing every idle peer copies of every
/// block still out made libtorrent, aria2 and rqbit seeding one 20 MiB download at once
/// deliver 25.4 MB for it.
const ENDGAME_COPIES: usize = 1;

/// Why a peer is being disconnected for what it sent.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Violation {
    #[error("sent a block that was never requested ({0:?})")]
    UnrequestedBlock(BlockRef),
    #[error("sent a bad BITFIELD: {0}")]
    BadBitfield(String),
    #[error("sent HAVE for piece {0}, past the last piece")]
    HaveOutOfRange(u32),
    #[error("sent DONT_HAVE for piece {0}, past the last piece")]
    DontHaveOutOfRange(u32),
    #[error("requested a block outside the torrent ({0:?})")]
    BadRequest(BlockRef),
    #[error("requested piece {0}, which we do not have")]
    RequestForMissingPiece(u32),
    #[error("queued more than {MAX_QUEUED_REQUESTS} requests")]
    RequestFlood,
    #[error("banned after {MAX_STRIKES} pieces that failed their hash check")]
    Banned,
}

/// A run of accepted blocks contiguous in the torrent's data, to be written with one
/// vectored write.
pub struct WriteJob {
    pub start: u64,
    pub chunks: Vec<Chunk>,
    pub pieces: Vec<PieceIndex>,
}

/// Bytes of a piece that must be re-read from disk and hashed before its verdict (they
/// arrived out of order).
pub struct TailRead {
    pub piece: PieceIndex,
    pub start: u64,
    pub len: usize,
    pub since: Instant,
}

/// Calls `send` once per run of up to `per_request` consecutive blocks of one piece, with
/// the run as one request.
fn coalesce_requests(blocks: &[BlockRef], per_request: u32, mut send: impl FnMut(BlockRef)) {
    let mut run: Option<BlockRef> = None;
    let mut joined = 0;
    for &b in blocks {
        match run.as_mut() {
            Some(r)
                if joined < per_request && r.piece == b.piece && r.offset + r.len == b.offset =>
            {
                r.len += b.len;
                joined += 1;
            }
            _ => {
                if let Some(r) = run.replace(b) {
                    send(r);
                }
                joined = 1;
            }
        }
    }
    if let Some(r) = run {
        send(r);
    }
}

/// Session-level settings a torrent needs.
#[derive(Debug, Clone)]
pub struct TorrentConfig {
    /// Peers we upload to at once.
    pub upload_slots: usize,
    /// Receive buffers that blocks arriving ahead of their piece's hash may keep out of the
    /// pool (see `reorder`).
    pub reorder_buffers: usize,
    /// Block-sized buffers such blocks are copied into when their receive buffer is mostly
    /// empty.
    pub reorder_copies: BufferPool,
    /// The info dictionary, sent to peers that ask for it (BEP 9); None offers nothing.
    pub metadata: Option<Arc<[u8]>>,
    /// Whether to exchange peers with peers (BEP 11); false for private torrents.
    pub pex: bool,
    /// The pieces to download (see `crate::selection`); None wants them all.
    pub wanted: Option<BitVec<u8, Msb0>>,
    /// Start pieces in index order instead of rarest first (`Picker::set_sequential`).
    pub sequential: bool,
}

impl Default for TorrentConfig {
    fn default() -> Self {
        TorrentConfig {
            upload_slots: 4,
            reorder_buffers: 8,
            reorder_copies: BufferPool::new(BLOCK_SIZE as usize, 64),
            metadata: None,
            pex: false,
            wanted: None,
            sequential: false,
        }
    }
}

/// Write and hash progress of a piece being downloaded.
#[derive(Default)]
struct PieceProgress {
    /// Bytes from the piece start fed to the running hash.
    hashed_to: u32,
    writes_pending: u32,
    all_received: bool,
    /// Its blocks ahead of the hash are no longer held (the cap was reached): the piece is
    /// finished by reading its tail back from disk.
    spilled: bool,
}

/// Which side opened a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialler {
    Us,
    Them,
}

/// A second connection to a peer we are already connected to, which loses to the first.
#[derive(Debug, thiserror::Error)]
#[error("already connected to this peer")]
pub struct DuplicateConnection;

pub struct Torrent {
    layout: Layout,
    picker: Picker,
    have: BitVec<u8, Msb0>,
    peers: HashMap<PeerKey, PeerState>,
    next_key: u32,
    /// Each connected peer's id, and who dialled: one connection per peer.
    by_peer_id: HashMap<PeerId, (PeerKey, Dialler)>,
    progress: HashMap<u32, PieceProgress>,
    verifier: Verifier,
    reorder: Reorder,
    /// Banned peers: whole IPs, except on loopback where many peers share 127.0.0.1 and
    /// only the listening address (IP and port) is banned.
    banned: HashSet<SocketAddr>,
    choker: Choker,
    /// Pieces we had but could no longer read (file removed, truncated, unreadable): peers
    /// we told we had them may still ask, which is no fault of theirs.
    lost: BitVec<u8, Msb0>,
    pub stats: Stats,
    /// Pieces verified since the resume data was last saved.
    pub resume_dirty: bool,
    /// The info dictionary we send to peers that ask (BEP 9).
    metadata: Option<Arc<[u8]>>,
    /// Whether we exchange peers (BEP 11).
    pex: bool,
    /// Addresses peers told us about (BEP 11) that the session has not taken yet.
    pex_found: Vec<SocketAddr>,
    /// Pieces outside the file selection: never requested, and the picker counts them as
    /// done, so "complete" means every wanted piece is verified.
    unwanted: BitVec<u8, Msb0>,
    /// The addresses of our web seeds' bridges (`crate::webseed`): peers there are asked
    /// for runs of consecutive pieces.
    web_seed_bridges: HashSet<SocketAddr>,
}

/// Bytes queued for a peer past which its metadata requests are rejected instead of
/// answered: a peer that asks again and again without reading cannot make us hold more.
const MAX_QUEUED_FOR_METADATA: usize = 256 << 10;

impl Torrent {
    pub fn new(
        layout: Layout,
        have: BitVec<u8, Msb0>,
        verifier: Verifier,
        config: TorrentConfig,
    ) -> Torrent {
        let mut picker = Picker::new(
            layout.piece_count(),
            layout.piece_length(),
            layout.total_length(),
            rand::random(),
        );
        let layout_piece_count = layout.piece_count() as usize;
        let unwanted = match &config.wanted {
            Some(wanted) => !wanted.clone(),
            None => BitVec::repeat(false, layout_piece_count),
        };
        for p in have.iter_ones().chain(unwanted.iter_ones()) {
            picker.mark_have(PieceIndex(p as u32));
        }
        picker.set_sequential(config.sequential);
        Torrent {
            layout,
            picker,
            have,
            peers: HashMap::new(),
            next_key: 0,
            by_peer_id: HashMap::new(),
            progress: HashMap::new(),
            reorder: Reorder::new(config.reorder_buffers, config.reorder_copies),
            verifier,
            banned: HashSet::new(),
            choker: Choker::new(
                ChokerConfig {
                    upload_slots: config.upload_slots,
                    ..ChokerConfig::default()
                },
                rand::random(),
            ),
            lost: BitVec::repeat(false, layout_piece_count),
            stats: Stats::default(),
            resume_dirty: false,
            metadata: config.metadata,
            pex: config.pex,
            pex_found: Vec::new(),
            unwanted,
            web_seed_bridges: HashSet::new(),
        }
    }

    /// Names the addresses of the web seeds' bridges.
    pub fn add_web_seed_bridges(&mut self, addrs: &[SocketAddr]) {
        self.web_seed_bridges.extend(addrs);
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The size of the info dictionary we offer peers, if we offer one.
    pub fn metadata_size(&self) -> Option<usize> {
        self.metadata.as_ref().map(|m| m.len())
    }

    /// What our extension handshake offers, listening on `listen_port`.
    pub fn extension_offer(&self, listen_port: u16) -> extended::Offer {
        extended::Offer {
            metadata_size: self.metadata_size(),
            pex: self.pex,
            listen_port: Some(listen_port).filter(|&p| p != 0),
        }
    }

    pub fn have(&self) -> &BitVec<u8, Msb0> {
        &self.have
    }

    pub fn is_complete(&self) -> bool {
        self.picker.is_complete()
    }

    /// Bytes of verified pieces.
    pub fn bytes_have(&self) -> u64 {
        self.have
            .iter_ones()
            .map(|p| u64::from(self.layout.piece_len(PieceIndex(p as u32))))
            .sum()
    }

    /// Bytes of the wanted pieces verified, and of all wanted pieces: the progress of the
    /// selection (of the whole torrent when every file is wanted).
    pub fn wanted_progress(&self) -> (u64, u64) {
        let (mut done, mut total) = (0, 0);
        for p in self.unwanted.iter_zeros() {
            let len = u64::from(self.layout.piece_len(PieceIndex(p as u32)));
            total += len;
            if self.have[p] {
                done += len;
            }
        }
        (done, total)
    }

    /// We want `piece` and do not have it yet.
    fn lacks(&self, piece: usize) -> bool {
        !self.have[piece] && !self.unwanted[piece]
    }

    /// Every piece verified, not only the wanted ones: a seed.
    pub fn has_every_piece(&self) -> bool {
        self.have.all()
    }

    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// True if a peer at `addr` must be refused.
    pub fn is_banned(&self, addr: SocketAddr) -> bool {
        self.banned.contains(&ban_key(addr)) || self.banned.contains(&addr)
    }

    pub fn is_connected(&self, addr: SocketAddr) -> bool {
        self.peers.values().any(|p| p.addr == addr)
    }

    /// Sum of the peers' download rates, bytes per second.
    pub fn download_rate(&self) -> f64 {
        self.peers.values().map(|p| p.download.rate()).sum()
    }

    pub fn upload_rate(&self) -> f64 {
        self.peers.values().map(|p| p.upload.rate()).sum()
    }

    pub fn peer(&self, key: PeerKey) -> Option<&PeerState> {
        self.peers.get(&key)
    }

    pub fn peer_mut(&mut self, key: PeerKey) -> Option<&mut PeerState> {
        self.peers.get_mut(&key)
    }

    /// Adds a connected peer (handshake done) and sends it our BITFIELD.
    pub fn add_peer(
        &mut self,
        addr: SocketAddr,
        dialler: Dialler,
        outbox: Rc<Outbox>,
        now: Instant,
    ) -> PeerKey {
        let key = PeerKey(self.next_key);
        self.next_key = self.next_key.wrapping_add(1);
        if self.have.any() {
            outbox.send(&Message::Bitfield(self.have.as_raw_slice()));
        }
        let mut state = PeerState::new(addr, outbox, self.layout.piece_count(), now);
        state.dialled_by_us = dialler == Dialler::Us;
        state.prefers_runs = self.web_seed_bridges.contains(&addr);
        self.peers.insert(key, state);
        key
    }

    /// Decides whether a new connection to the peer with id `theirs` may join, when we may
    /// already hold one to it (both sides dialled each other, say after a tracker gave each
    /// the other's address). Both ends keep the connection dialled by the side with the
    /// higher peer id, so they agree without talking; the other is closed here or refused.
    pub fn claim_peer_id(
        &mut self,
        key: PeerKey,
        theirs: PeerId,
        ours: PeerId,
        dialler: Dialler,
    ) -> Result<(), DuplicateConnection> {
        let preferred = if ours.0 > theirs.0 {
            Dialler::Us
        } else {
            Dialler::Them
        };
        if let Some(&(old_key, old_dialler)) = self.by_peer_id.get(&theirs) {
            if old_key != key && self.peers.contains_key(&old_key) {
                if old_dialler == preferred || dialler != preferred {
                    return Err(DuplicateConnection);
                }
                if let Some(old) = self.peers.get(&old_key) {
                    old.outbox.close();
                }
            }
        }
        self.by_peer_id.insert(theirs, (key, dialler));
        if let Some(p) = self.peers.get_mut(&key) {
            p.set_blocks_per_request(peer_state::blocks_per_request(&theirs.0));
        }
        Ok(())
    }

    /// Asks every connection to close (their writers shut the sockets down).
    pub fn close_all_peers(&self) {
        for p in self.peers.values() {
            p.log_totals("closed by us");
            p.outbox.close();
        }
    }

    /// Forgets a disconnected peer: its pieces stop counting, its requests go back and its
    /// upload slot goes to a waiting peer.
    pub fn remove_peer(&mut self, key: PeerKey, now: Instant) {
        let Some(mut p) = self.peers.remove(&key) else {
            return;
        };
        p.log_totals("disconnected");
        self.by_peer_id.retain(|_, (k, _)| *k != key);
        self.choker.on_peer_gone(key.0);
        if !p.am_choking && p.peer_interested {
            self.refill_upload_slots(now);
        }
        let blocks = p.release_all_requests();
        self.picker.release_peer(key, &blocks);
        if p.counted_as_seed {
            self.picker.seed_left();
        } else {
            let pieces: Vec<PieceIndex> = p.has.iter_ones().map(|i| PieceIndex(i as u32)).collect();
            self.picker.peer_lost(pieces);
        }
        p.outbox.close();
    }

    /// Handles one non-block message from `key`.
    pub fn on_message(
        &mut self,
        key: PeerKey,
        msg: Inbound,
        now: Instant,
    ) -> Result<(), Violation> {
        let Some(p) = self.peers.get_mut(&key) else {
            return Ok(());
        };
        p.last_received_at = now;
        // BITFIELD must come first, but the extension handshake, keep-alives and messages we
        // ignore may precede it (clients differ in what they send first).
        let bitfield_allowed = p.bitfield_allowed;
        if !matches!(
            msg,
            Inbound::Extended { .. } | Inbound::KeepAlive | Inbound::Ignored
        ) {
            p.bitfield_allowed = false;
        }
        match msg {
            Inbound::KeepAlive | Inbound::Ignored | Inbound::HaveNone => {}
            Inbound::Choke => {
                p.peer_choking = true;
                let blocks = p.release_all_requests();
                self.picker.release_peer(key, &blocks);
            }
            Inbound::Unchoke => {
                p.peer_choking = false;
                self.refill_requests(key, now);
            }
            Inbound::Interested => {
                p.peer_interested = true;
                let snapshots = self.choker_snapshots(now);
                let seeding = self.is_complete();
                let decision = self
                    .choker
                    .on_peer_interested(now, seeding, &snapshots, key.0);
                self.apply_choke_decision(decision);
            }
            Inbound::NotInterested => {
                p.peer_interested = false;
                if !p.am_choking {
                    p.am_choking = true;
                    p.their_requests.clear();
                    p.outbox.send(&Message::Choke);
                    self.refill_upload_slots(now);
                }
            }
            Inbound::Have(piece) => self.on_have(key, piece)?,
            Inbound::Bitfield(bits) => {
                validate_bitfield(&bits, self.layout.piece_count())
                    .map_err(|e| Violation::BadBitfield(e.to_string()))?;
                if bitfield_allowed {
                    self.on_bitfield(key, BitVec::from_vec(bits));
                } else {
                    // aria2 sends a whole BITFIELD instead of HAVEs when that is shorter:
                    // take it as HAVEs for the pieces it adds (pieces are never un-had).
                    let bits = BitVec::<u8, Msb0>::from_vec(bits);
                    for i in bits.iter_ones() {
                        self.on_have(key, PieceIndex(i as u32))?;
                    }
                }
            }
            Inbound::HaveAll => {
                let all = BitVec::repeat(true, self.layout.piece_count() as usize);
                self.on_bitfield(key, all);
            }
            Inbound::Request(block) => self.on_request(key, block)?,
            Inbound::Cancel(block) => p.their_requests.retain(|b| *b != block),
            // A REJECT covers at most what one of our requests asked for; a longer one
            // matches nothing (and is not cut into thousands of lookups).
            Inbound::Reject(rejected) if rejected.len <= p.blocks_per_request * BLOCK_SIZE => {
                for block in self.layout.blocks_within(rejected) {
                    if p.take_request(block).is_some() {
                        self.picker.release_block(key, block);
                    }
                }
            }
            Inbound::Reject(_) => {}
            Inbound::Extended { id: 0, payload } => {
                let offer = extended::TheirOffer::read(&payload);
                if let Some(reqq) = offer.reqq {
                    p.set_reqq(reqq);
                }
                p.donthave_id = offer.donthave_id;
                p.metadata_id = offer.metadata_id;
                p.pex_id = offer.pex_id.filter(|_| self.pex);
                p.listen_port = offer.listen_port;
            }
            Inbound::Extended {
                id: extended::OUR_PEX_ID,
                payload,
            } => self.on_pex_message(key, &payload, now),
            Inbound::Extended {
                id: extended::OUR_METADATA_ID,
                payload,
            } => self.on_metadata_message(key, &payload),
            Inbound::Extended {
                id: extended::OUR_DONTHAVE_ID,
                payload,
            } => {
                if let Some(piece) = extended::parse_donthave(&payload) {
                    self.on_dont_have(key, piece, now)?;
                }
            }
            Inbound::Extended { .. } => {}
        }
        Ok(())
    }

    /// Answers a peer's request for a piece of the info dictionary (BEP 9), or rejects it
    /// when we offer none or the peer has too much waiting already. A session never asks, so
    /// anything else (and a message that does not parse) is ignored.
    fn on_metadata_message(&mut self, key: PeerKey, payload: &[u8]) {
        let Some(p) = self.peers.get(&key) else {
            return;
        };
        let (Some(their_id), Ok(MetadataMessage::Request { piece })) =
            (p.metadata_id, MetadataMessage::parse(payload))
        else {
            return;
        };
        let reply = match &self.metadata {
            Some(info) if p.outbox.queued_bytes() < MAX_QUEUED_FOR_METADATA => {
                metadata::answer(info, piece)
            }
            _ => MetadataMessage::Reject { piece }.encode(),
        };
        p.outbox.send(&Message::Extended {
            id: their_id,
            payload: &reply,
        });
    }

    fn on_have(&mut self, key: PeerKey, piece: PieceIndex) -> Result<(), Violation> {
        if piece.0 >= self.layout.piece_count() {
            return Err(Violation::HaveOutOfRange(piece.0));
        }
        let we_lack = self.lacks(piece.as_usize());
        let p = self.peers.get_mut(&key).expect("caller checked the peer");
        if p.has_piece(piece) {
            return Ok(());
        }
        p.has.set(piece.as_usize(), true);
        p.has_count += 1;
        self.picker.peer_has_piece(piece);
        if we_lack {
            p.wanted_count += 1;
            self.update_interest(key);
        }
        Ok(())
    }

    fn on_bitfield(&mut self, key: PeerKey, mut bits: BitVec<u8, Msb0>) {
        bits.truncate(self.layout.piece_count() as usize);
        let wanted_count = bits.iter_ones().filter(|&i| self.lacks(i)).count() as u32;
        let p = self.peers.get_mut(&key).expect("caller checked the peer");
        p.has_count = bits.count_ones() as u32;
        p.wanted_count = wanted_count;
        if !bits.is_empty() && bits.all() {
            p.counted_as_seed = true;
            self.picker.seed_joined();
        } else {
            self.picker
                .peer_has_pieces(bits.iter_ones().map(|i| PieceIndex(i as u32)));
        }
        p.has = bits;
        self.update_interest(key);
    }

    /// BEP 54: the peer takes back a piece it announced. Its requests in that piece go back
    /// to the picker, so they are asked of someone who can answer.
    fn on_dont_have(
        &mut self,
        key: PeerKey,
        piece: PieceIndex,
        now: Instant,
    ) -> Result<(), Violation> {
        if piece.0 >= self.layout.piece_count() {
            return Err(Violation::DontHaveOutOfRange(piece.0));
        }
        let we_lack = self.lacks(piece.as_usize());
        let p = self.peers.get_mut(&key).expect("caller checked the peer");
        if !p.has_piece(piece) {
            return Ok(());
        }
        p.has.set(piece.as_usize(), false);
        p.has_count -= 1;
        if p.counted_as_seed {
            // It counted once for every piece; now it counts piece by piece.
            p.counted_as_seed = false;
            self.picker.seed_left();
            self.picker
                .peer_has_pieces(p.has.iter_ones().map(|i| PieceIndex(i as u32)));
        } else {
            self.picker.peer_lost([piece]);
        }
        if we_lack {
            p.wanted_count = p.wanted_count.saturating_sub(1);
        }
        let blocks = p.release_requests_in(piece);
        self.picker.release_peer(key, &blocks);
        self.update_interest(key);
        self.refill_requests(key, now);
        Ok(())
    }

    fn on_request(&mut self, key: PeerKey, block: BlockRef) -> Result<(), Violation> {
        if block.len == 0
            || block.len > MAX_REQUEST_LEN
            || !self.layout.contains(block.piece, block.offset, block.len)
        {
            return Err(Violation::BadRequest(block));
        }
        if !self.have[block.piece.as_usize()] {
            if self.lost[block.piece.as_usize()] {
                return Ok(()); // we said we had it; it went missing since
            }
            return Err(Violation::RequestForMissingPiece(block.piece.0));
        }
        let p = self.peers.get_mut(&key).expect("caller checked the peer");
        if p.am_choking {
            return Ok(()); // BEP 3: requests while choked are ignored
        }
        if p.their_requests.len() >= MAX_QUEUED_REQUESTS {
            return Err(Violation::RequestFlood);
        }
        p.their_requests.push_back(block);
        Ok(())
    }

    /// Sends INTERESTED or NOT_INTERESTED when our interest in `key` changed.
    fn update_interest(&mut self, key: PeerKey) {
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        let want = p.wanted_count > 0;
        if want != p.am_interested {
            p.am_interested = want;
            p.outbox.send(if want {
                &Message::Interested
            } else {
                &Message::NotInterested
            });
        }
    }

    /// What the choker needs to know about every peer.
    fn choker_snapshots(&self, now: Instant) -> Vec<PeerSnapshot> {
        self.peers
            .iter()
            .map(|(key, p)| PeerSnapshot {
                id: key.0,
                interested: p.peer_interested,
                choked: p.am_choking,
                download_rate: p.download.rate(),
                upload_rate: p.upload.rate(),
                connected_at: p.connected_at.min(now),
                last_block_at: (p.download.total() > 0).then_some(p.last_block_at),
                we_are_interested: p.am_interested,
            })
            .collect()
    }

    /// Sends the CHOKE and UNCHOKE messages the choker decided on.
    fn apply_choke_decision(&mut self, decision: Decision) {
        for id in decision.unchoke {
            if let Some(p) = self.peers.get_mut(&PeerKey(id)) {
                p.am_choking = false;
                p.outbox.send(&Message::Unchoke);
            }
        }
        for id in decision.choke {
            if let Some(p) = self.peers.get_mut(&PeerKey(id)) {
                p.am_choking = true;
                p.their_requests.clear();
                p.outbox.send(&Message::Choke);
            }
        }
    }

    /// Gives free upload slots to waiting peers now rather than at the next round.
    fn refill_upload_slots(&mut self, now: Instant) {
        let snapshots = self.choker_snapshots(now);
        let seeding = self.is_complete();
        let decision = self.choker.on_slot_freed(now, seeding, &snapshots);
        self.apply_choke_decision(decision);
    }

    /// Runs a choking round if one is due (every 10 s; the optimistic slot every 30 s).
    fn rechoke_if_due(&mut self, now: Instant) {
        if self.choker.due(now) {
            let snapshots = self.choker_snapshots(now);
            let seeding = self.is_complete();
            let decision = self.choker.rechoke(now, seeding, &snapshots);
            self.apply_choke_decision(decision);
        }
    }

    /// Handles the blocks of one receive buffer from `key`. Returns the writes to issue and,
    /// if a block broke the protocol, the violation: the blocks accepted before it were
    /// already counted as received (and hashed), so their writes must be issued regardless.
    pub fn on_blocks(
        &mut self,
        key: PeerKey,
        blocks: Vec<ReceivedBlock>,
        now: Instant,
    ) -> (Vec<WriteJob>, Option<Violation>) {
        let mut accepted: Vec<ReceivedBlock> = Vec::with_capacity(blocks.len());
        let mut violation = None;
        let blocks: Vec<ReceivedBlock> = if blocks.iter().any(|rb| rb.block.len > BLOCK_SIZE) {
            blocks
                .into_iter()
                .flat_map(|rb| self.split_block(rb))
                .collect()
        } else {
            blocks
        };
        for rb in blocks {
            match self.accept_block(key, &rb, now) {
                Ok(true) => accepted.push(rb),
                Ok(false) => {}
                Err(v) => {
                    violation = Some(v);
                    break;
                }
            }
        }
        (self.coalesce_writes(accepted), violation)
    }

    /// Hashes the blocks `on_blocks` accepted in order (on the I/O thread, see `Verifier`),
    /// making the copies `plan` holds for their bytes in the same pass.
    pub fn hash_received(&self, plan: &mut CopyPlan) {
        self.verifier.hash_fed(plan);
    }

    /// A block longer than one picker block (the answer to a REQUEST that covered several,
    /// see `blocks_per_request`) as the picker blocks it holds, each with its own bytes. A
    /// length that does not end on a block boundary leaves a last part no request matches.
    fn split_block(&self, rb: ReceivedBlock) -> Vec<ReceivedBlock> {
        if rb.block.len <= BLOCK_SIZE {
            return vec![rb];
        }
        self.layout
            .blocks_within(rb.block)
            .map(|block| ReceivedBlock {
                data: cut_chunks(
                    &rb.data,
                    (block.offset - rb.block.offset) as usize,
                    block.len as usize,
                ),
                block,
            })
            .collect()
    }

    /// Checks one block; true if it is new data to write.
    fn accept_block(
        &mut self,
        key: PeerKey,
        rb: &ReceivedBlock,
        now: Instant,
    ) -> Result<bool, Violation> {
        let block = rb.block;
        let p = self.peers.get_mut(&key).expect("caller checked the peer");
        if p.strikes >= MAX_STRIKES {
            return Err(Violation::Banned); // its connection is closing; take nothing more
        }
        p.last_received_at = now;
        let sent_at = p.take_request(block);
        let was_released = sent_at.is_none() && p.take_released(block);
        if sent_at.is_none() && !was_released {
            return Err(Violation::UnrequestedBlock(block));
        }
        p.download.add(block.len.into());
        p.last_block_at = now;
        p.grow_window();
        if let Some(at) = sent_at {
            stats::record(&mut self.stats.request_to_block, now - at);
        }
        match self.picker.on_block_received(block, key) {
            BlockReceived::Accepted {
                piece_complete,
                cancel,
            } => {
                self.stats.downloaded += u64::from(block.len);
                if p.prefers_runs {
                    self.stats.web_seed_bytes += u64::from(block.len);
                }
                for other in cancel {
                    self.cancel_request(other, block);
                }
                self.feed_hash(rb);
                if piece_complete {
                    self.progress.entry(block.piece.0).or_default().all_received = true;
                }
                Ok(true)
            }
            BlockReceived::Duplicate | BlockReceived::Unrequested => {
                self.stats.wasted_bytes += u64::from(block.len);
                Ok(false)
            }
        }
    }

    fn cancel_request(&mut self, key: PeerKey, block: BlockRef) {
        if let Some(p) = self.peers.get_mut(&key) {
            if p.take_request(block).is_some() {
                p.released.push_back(block);
                p.outbox.send(&Message::Cancel(block));
            }
        }
    }

    /// Feeds a block to its piece's running hash if it continues it, with any held blocks
    /// it lets follow; a block ahead of the hash is held for later if the cap allows.
    fn feed_hash(&mut self, rb: &ReceivedBlock) {
        let piece = rb.block.piece;
        let progress = self.progress.entry(piece.0).or_default();
        if progress.hashed_to == rb.block.offset {
            progress.hashed_to += rb.block.len;
            self.verifier.feed(piece, rb.data.clone());
            for (len, data) in self.reorder.take_from(piece.0, progress.hashed_to) {
                progress.hashed_to += len;
                self.verifier.feed(piece, data);
            }
        } else if progress.hashed_to < rb.block.offset && !progress.spilled {
            let held = self
                .reorder
                .hold(piece.0, rb.block.offset, rb.block.len, rb.data.clone());
            progress.spilled = !held;
        }
    }

    /// Groups accepted blocks into contiguous runs, one write each.
    fn coalesce_writes(&mut self, mut blocks: Vec<ReceivedBlock>) -> Vec<WriteJob> {
        blocks.sort_by_key(|b| (b.block.piece, b.block.offset));
        let mut jobs: Vec<WriteJob> = Vec::new();
        let mut end = u64::MAX;
        for rb in blocks {
            let start = self.layout.piece_offset(rb.block.piece) + u64::from(rb.block.offset);
            match jobs.last_mut() {
                Some(job) if start == end => {
                    job.chunks.extend(rb.data);
                    if job.pieces.last() != Some(&rb.block.piece) {
                        job.pieces.push(rb.block.piece);
                    }
                }
                _ => jobs.push(WriteJob {
                    start,
                    chunks: rb.data,
                    pieces: vec![rb.block.piece],
                }),
            }
            end = start + u64::from(rb.block.len);
        }
        for job in &jobs {
            for piece in &job.pieces {
                self.progress.entry(piece.0).or_default().writes_pending += 1;
            }
        }
        jobs
    }

    /// Records a finished write; returns the pieces now ready to hash whose tail must be
    /// re-read first. Pieces with nothing to re-read are finished right here.
    pub fn on_write_done(
        &mut self,
        job_pieces: &[PieceIndex],
        elapsed: Duration,
        now: Instant,
    ) -> Vec<TailRead> {
        stats::record(&mut self.stats.disk_write, elapsed);
        let mut tails = Vec::new();
        for &piece in job_pieces {
            let Some(progress) = self.progress.get_mut(&piece.0) else {
                continue;
            };
            progress.writes_pending -= 1;
            if !progress.all_received || progress.writes_pending > 0 {
                continue;
            }
            let piece_len = self.layout.piece_len(piece);
            if progress.hashed_to == piece_len {
                self.verifier.finish(piece, None, now);
            } else {
                self.reorder.forget(piece.0);
                self.stats.reread_bytes += u64::from(piece_len - progress.hashed_to);
                tails.push(TailRead {
                    piece,
                    start: self.layout.piece_offset(piece) + u64::from(progress.hashed_to),
                    len: (piece_len - progress.hashed_to) as usize,
                    since: now,
                });
            }
        }
        tails
    }

    /// Completes a piece whose tail was re-read from disk.
    pub fn on_tail_read(&mut self, tail: TailRead, data: TailBytes) {
        self.verifier.finish(tail.piece, Some(data), tail.since);
    }

    /// Applies a hash verdict. Returns the peers to disconnect (banned for bad data).
    pub fn on_verdict(&mut self, v: HashVerdict, now: Instant) -> Vec<PeerKey> {
        self.verifier.verdict_received();
        self.progress.remove(&v.piece.0);
        self.reorder.forget(v.piece.0);
        stats::record(
            &mut self.stats.piece_verify,
            now.saturating_duration_since(v.since),
        );
        if v.ok {
            self.on_piece_verified(v.piece);
            return Vec::new();
        }
        self.stats.hash_failures += 1;
        self.verifier.discard(v.piece);
        let mut kick = Vec::new();
        for key in self.picker.on_piece_failed(v.piece) {
            let Some(p) = self.peers.get_mut(&key) else {
                continue;
            };
            p.strikes += 1;
            if p.strikes == MAX_STRIKES {
                self.banned.insert(ban_key(p.addr));
                self.stats.peers_banned += 1;
                kick.push(key);
            }
        }
        kick
    }

    /// Pieces complete and written whose hash verdicts are still to come.
    pub fn verdicts_awaited(&self) -> usize {
        self.verifier.awaiting_verdicts()
    }

    /// Reading `piece` from disk to upload it failed: it is missing now. Queued requests for
    /// it are dropped, it counts as missing in the resume data and, if it is wanted, the
    /// picker fetches it again from peers that have it.
    pub fn on_piece_unreadable(&mut self, piece: PieceIndex) {
        if !self.have[piece.as_usize()] {
            return;
        }
        self.have.set(piece.as_usize(), false);
        self.lost.set(piece.as_usize(), true);
        let wanted = !self.unwanted[piece.as_usize()];
        if wanted {
            self.picker.on_piece_failed(piece);
        }
        self.stats.pieces_lost += 1;
        self.resume_dirty = true;
        let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
        for key in keys {
            let p = self.peers.get_mut(&key).expect("key listed above");
            p.their_requests.retain(|b| b.piece != piece);
            if let Some(id) = p.donthave_id {
                let payload = extended::donthave_payload(piece);
                p.outbox.send(&Message::Extended {
                    id,
                    payload: &payload,
                });
            }
            if wanted && p.has_piece(piece) {
                p.wanted_count += 1;
                self.update_interest(key);
            }
        }
    }

    fn on_piece_verified(&mut self, piece: PieceIndex) {
        self.picker.on_piece_verified(piece);
        self.have.set(piece.as_usize(), true);
        self.lost.set(piece.as_usize(), false);
        self.stats.verified += u64::from(self.layout.piece_len(piece));
        self.resume_dirty = true;
        let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
        for key in keys {
            let p = self.peers.get_mut(&key).expect("key listed above");
            if p.has_piece(piece) {
                p.wanted_count = p.wanted_count.saturating_sub(1);
                self.update_interest(key);
            } else {
                p.outbox.send(&Message::Have(piece));
            }
        }
    }

    /// Tops up the request pipeline of `key` from the picker.
    pub fn refill_requests(&mut self, key: PeerKey, now: Instant) {
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        let room = p.request_room();
        if room == 0 || !p.am_interested {
            return;
        }
        let mut picked = Vec::with_capacity(room);
        let has = &p.has;
        let seed = p.is_seed();
        let peer_has = |piece: PieceIndex| has[piece.as_usize()];
        if p.prefers_runs {
            let after = p.last_picked;
            (self.picker).pick_runs(key, peer_has, seed, room, after, &mut picked);
            p.last_picked = picked.last().map(|b| b.piece).or(after);
        } else {
            (self.picker).pick_blocks(key, peer_has, seed, room, &mut picked);
        }
        if picked.is_empty() && p.requests.is_empty() {
            let copies = room.min(ENDGAME_COPIES);
            (self.picker).pick_duplicates(key, peer_has, seed, copies, &mut picked);
        }
        for &block in &picked {
            p.requests.push_back((block, now));
        }
        let stats = &mut self.stats;
        coalesce_requests(&picked, p.blocks_per_request, |request| {
            p.outbox.send(&Message::Request(request));
            stats.request_messages += 1;
        });
    }

    /// Once a second: rates, pipeline sizes, snubbing, idle peers. Returns peers to drop.
    pub fn tick(&mut self, elapsed: Duration, now: Instant) -> Vec<PeerKey> {
        self.rechoke_if_due(now);
        let mut drop = Vec::new();
        let complete = self.is_complete();
        let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
        for key in keys {
            let p = self.peers.get_mut(&key).expect("key listed above");
            p.download.tick(elapsed);
            p.upload.tick(elapsed);
            p.resize_window_from_rate();
            // Idle peers, peers that stopped reading what we send, and seeds once we are a
            // seed too (neither side wants anything).
            let stalled = p.outbox.write_stalled_for(now) > WRITE_STALL_TIMEOUT;
            if now - p.last_received_at > IDLE_TIMEOUT || stalled || (complete && p.is_seed()) {
                drop.push(key);
                continue;
            }
            if now - p.last_keepalive_at > KEEPALIVE_INTERVAL {
                p.last_keepalive_at = now;
                p.outbox.send(&Message::KeepAlive);
            }
            if !p.requests.is_empty() && now - p.last_block_at > SNUB_TIMEOUT {
                let blocks = p.release_all_requests();
                self.picker.release_peer(key, &blocks);
                p.window = peer_state::MIN_WINDOW;
                p.last_block_at = now;
            }
            self.refill_requests(key, now);
        }
        self.send_pex(now);
        drop
    }

    /// The next requests of `key` to serve: a run of blocks contiguous in one piece, up to
    /// `max_bytes`, so one disk read can serve them all. Empty when there is nothing to do.
    pub fn next_upload_run(&mut self, key: PeerKey, max_bytes: u32) -> Vec<BlockRef> {
        let Some(p) = self.peers.get_mut(&key) else {
            return Vec::new();
        };
        if p.am_choking {
            p.their_requests.clear();
            return Vec::new();
        }
        let mut run: Vec<BlockRef> = Vec::new();
        let mut bytes = 0;
        while let Some(&next) = p.their_requests.front() {
            let contiguous = run.last().is_none_or(|last: &BlockRef| {
                last.piece == next.piece && last.offset + last.len == next.offset
            });
            if !contiguous || (bytes + next.len > max_bytes && !run.is_empty()) {
                break;
            }
            bytes += next.len;
            run.push(next);
            p.their_requests.pop_front();
        }
        run
    }

    /// Returns a run taken by `next_upload_run` that could not be read yet (no buffer free):
    /// it is served first next time, unless the peer was choked meanwhile.
    pub fn put_back_upload_run(&mut self, key: PeerKey, run: Vec<BlockRef>) {
        if let Some(p) = self.peers.get_mut(&key) {
            for block in run.into_iter().rev() {
                p.their_requests.push_front(block);
            }
        }
    }

    pub fn record_upload(&mut self, key: PeerKey, bytes: u64) {
        self.stats.uploaded += bytes;
        if let Some(p) = self.peers.get_mut(&key) {
            p.upload.add(bytes);
        }
    }
}

/// What a ban covers: the IP (port 0 stands for any port), or the exact address on
/// loopback.
fn ban_key(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_loopback() {
        addr
    } else {
        SocketAddr::new(addr.ip(), 0)
    }
}

#[cfg(test)]
mod tests;
