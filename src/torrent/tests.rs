//! Unit tests for the torrent state machine, driven without sockets: messages go in, the
//! outbox and the returned decisions come out.

use super::*;
use crate::hash::{HashPlacement, HashPool};
use std::sync::Arc;

const PIECE: u32 = 32 << 10;

/// A torrent of `pieces` pieces of 32 KiB; `have` marks the pieces we already hold.
fn torrent(pieces: u32, have: &[u32]) -> Torrent {
    let total = u64::from(pieces * PIECE);
    let layout = Layout::from_lengths(PIECE, [total]);
    let mut bits = BitVec::<u8, Msb0>::repeat(false, pieces as usize);
    for &p in have {
        bits.set(p as usize, true);
    }
    let (verifier, _rx) = Verifier::new(
        Arc::new(HashPool::new(1)),
        Arc::new(vec![[0; 20]; pieces as usize]),
        HashPlacement::Workers,
    );
    Torrent::new(layout, bits, verifier, TorrentConfig::default())
}

fn peer(t: &mut Torrent) -> (PeerKey, Rc<Outbox>) {
    let outbox = Outbox::new();
    let key = t.add_peer(
        "127.0.0.1:9".parse().unwrap(),
        Dialler::Us,
        Rc::clone(&outbox),
        Instant::now(),
    );
    (key, outbox)
}

fn block(piece: u32, offset: u32) -> BlockRef {
    BlockRef {
        piece: PieceIndex(piece),
        offset,
        len: 16 << 10,
    }
}

#[test]
fn unchoke_from_a_seed_fills_the_pipeline_and_choke_returns_it() {
    let mut t = torrent(8, &[]);
    let (key, outbox) = peer(&mut t);
    let now = Instant::now();
    t.on_message(key, Inbound::Bitfield(vec![0xff]), now)
        .unwrap();
    assert!(t.peer(key).unwrap().am_interested);
    t.on_message(key, Inbound::Unchoke, now).unwrap();
    assert_eq!(
        t.peer(key).unwrap().requests.len(),
        16,
        "all 16 blocks requested"
    );
    assert!(outbox.queued_bytes() > 16 * 17);
    t.on_message(key, Inbound::Choke, now).unwrap();
    assert!(t.peer(key).unwrap().requests.is_empty());
    // A block requested before the choke may still arrive: not held against the peer.
    let late = ReceivedBlock {
        block: block(0, 0),
        data: Vec::new(),
    };
    assert!(t.on_blocks(key, vec![late], now).1.is_none());
}

#[test]
fn a_block_never_requested_is_a_violation() {
    let mut t = torrent(8, &[]);
    let (key, _) = peer(&mut t);
    let rb = ReceivedBlock {
        block: block(3, 0),
        data: Vec::new(),
    };
    assert_eq!(
        t.on_blocks(key, vec![rb], Instant::now()).1,
        Some(Violation::UnrequestedBlock(block(3, 0)))
    );
}

#[test]
fn bitfield_checks_and_late_bitfields_count_as_haves() {
    let mut t = torrent(10, &[]);
    let (key, _) = peer(&mut t);
    let now = Instant::now();
    let spare = t.on_message(key, Inbound::Bitfield(vec![0x00, 0x01]), now);
    assert!(matches!(spare, Err(Violation::BadBitfield(_))));
    let (key, _) = peer(&mut t);
    t.on_message(key, Inbound::Bitfield(vec![0x80, 0x00]), now)
        .unwrap();
    t.on_message(key, Inbound::Bitfield(vec![0xc0, 0x40]), now)
        .unwrap();
    let p = t.peer(key).unwrap();
    assert_eq!(p.has_count, 3);
    assert!(p.has_piece(PieceIndex(9)));
    assert_eq!(
        t.on_message(key, Inbound::Have(PieceIndex(10)), now),
        Err(Violation::HaveOutOfRange(10))
    );
}

#[test]
fn requests_are_checked_and_capped() {
    let mut t = torrent(4, &[0, 1, 2, 3]);
    let (key, outbox) = peer(&mut t);
    let now = Instant::now();
    // While choked, requests are ignored (BEP 3).
    t.on_message(key, Inbound::Request(block(0, 0)), now)
        .unwrap();
    assert!(t.next_upload_run(key, 1 << 20).is_empty());
    t.on_message(key, Inbound::Interested, now).unwrap();
    assert!(!t.peer(key).unwrap().am_choking);
    assert!(outbox.queued_bytes() > 0);
    for b in [block(1, 0), block(1, 16 << 10), block(3, 0)] {
        t.on_message(key, Inbound::Request(b), now).unwrap();
    }
    assert_eq!(
        t.next_upload_run(key, 1 << 20),
        vec![block(1, 0), block(1, 16 << 10)]
    );
    assert_eq!(t.next_upload_run(key, 1 << 20), vec![block(3, 0)]);
    let outside = BlockRef {
        piece: PieceIndex(1),
        offset: PIECE - 1,
        len: 2,
    };
    assert_eq!(
        t.on_message(key, Inbound::Request(outside), now),
        Err(Violation::BadRequest(outside))
    );
    let huge = BlockRef {
        piece: PieceIndex(0),
        offset: 0,
        len: 256 << 10,
    };
    assert_eq!(
        t.on_message(key, Inbound::Request(huge), now),
        Err(Violation::BadRequest(huge))
    );
    for _ in 0..MAX_QUEUED_REQUESTS {
        t.on_message(key, Inbound::Request(block(2, 0)), now)
            .unwrap();
    }
    assert_eq!(
        t.on_message(key, Inbound::Request(block(2, 0)), now),
        Err(Violation::RequestFlood)
    );
}

#[test]
fn requests_for_pieces_we_lack_are_refused() {
    let mut t = torrent(4, &[0]);
    let (key, _) = peer(&mut t);
    let now = Instant::now();
    t.on_message(key, Inbound::Interested, now).unwrap();
    assert_eq!(
        t.on_message(key, Inbound::Request(block(2, 0)), now),
        Err(Violation::RequestForMissingPiece(2))
    );
}

#[test]
fn a_seed_drops_seeds() {
    let mut t = torrent(4, &[0, 1, 2, 3]);
    let (key, _) = peer(&mut t);
    let now = Instant::now();
    t.on_message(key, Inbound::HaveAll, now).unwrap();
    assert_eq!(t.tick(Duration::from_secs(1), now), vec![key]);
}

#[test]
fn both_ends_keep_the_connection_dialled_by_the_higher_peer_id() {
    let (low, high) = (PeerId([1; 20]), PeerId([2; 20]));
    // We have the higher id: our dial wins over their earlier one, which is closed.
    let mut t = torrent(4, &[]);
    let (theirs, their_outbox) = peer(&mut t);
    t.claim_peer_id(theirs, low, high, Dialler::Them).unwrap();
    let (ours, _) = peer(&mut t);
    t.claim_peer_id(ours, low, high, Dialler::Us).unwrap();
    assert!(their_outbox.is_closed());
    // The other end (the lower id) sees the same two connections and refuses its own dial.
    let mut other = torrent(4, &[]);
    let (its_dial, _) = peer(&mut other);
    other
        .claim_peer_id(its_dial, high, low, Dialler::Us)
        .unwrap();
    let (incoming, _) = peer(&mut other);
    other
        .claim_peer_id(incoming, high, low, Dialler::Them)
        .unwrap();
    let (again, _) = peer(&mut other);
    assert!(other
        .claim_peer_id(again, high, low, Dialler::Them)
        .is_err());
    // Once a connection is gone its peer may connect again.
    other.remove_peer(incoming, Instant::now());
    other.remove_peer(again, Instant::now());
    let (later, _) = peer(&mut other);
    other
        .claim_peer_id(later, high, low, Dialler::Them)
        .unwrap();
}

fn donthave(piece: u32) -> Inbound {
    Inbound::Extended {
        id: extended::OUR_DONTHAVE_ID,
        payload: extended::donthave_payload(PieceIndex(piece)).to_vec(),
    }
}

#[test]
fn a_seed_that_takes_back_a_piece_gets_no_more_requests_for_it() {
    let mut t = torrent(4, &[]);
    let (key, _) = peer(&mut t);
    let now = Instant::now();
    t.on_message(key, Inbound::HaveAll, now).unwrap();
    t.on_message(key, Inbound::Unchoke, now).unwrap();
    let asked = |t: &Torrent, piece: u32| {
        t.peer(key)
            .unwrap()
            .requests
            .iter()
            .any(|(b, _)| b.piece == PieceIndex(piece))
    };
    assert!(asked(&t, 2), "all 8 blocks requested");
    t.on_message(key, donthave(2), now).unwrap();
    let p = t.peer(key).unwrap();
    assert!(!p.has_piece(PieceIndex(2)) && p.has_count == 3 && !p.counted_as_seed);
    assert!(!asked(&t, 2), "its requests in piece 2 were given back");
    // The freed pipeline room is never spent on piece 2 again, and a late block of it is
    // not held against the peer.
    t.tick(Duration::from_secs(1), now);
    assert!(!asked(&t, 2));
    let late = ReceivedBlock {
        block: block(2, 0),
        data: Vec::new(),
    };
    assert!(t.on_blocks(key, vec![late], now).1.is_none());
    assert_eq!(
        t.on_message(key, donthave(4), now),
        Err(Violation::DontHaveOutOfRange(4))
    );
    // A second DONT_HAVE, or one with a bad payload, changes nothing.
    t.on_message(key, donthave(2), now).unwrap();
    let bad = Inbound::Extended {
        id: extended::OUR_DONTHAVE_ID,
        payload: vec![0; 3],
    };
    t.on_message(key, bad, now).unwrap();
    assert_eq!(t.peer(key).unwrap().has_count, 3);
}

#[test]
fn a_piece_that_went_unreadable_is_taken_back_from_peers_that_speak_bep_54() {
    let mut t = torrent(4, &[0, 1, 2, 3]);
    let (speaks, speaks_box) = peer(&mut t);
    let (_mute, mute_box) = peer(&mut t);
    let now = Instant::now();
    let handshake = Inbound::Extended {
        id: 0,
        payload: b"d1:md11:lt_donthavei9eee".to_vec(),
    };
    t.on_message(speaks, handshake, now).unwrap();
    let before = (speaks_box.queued_bytes(), mute_box.queued_bytes());
    t.on_piece_unreadable(PieceIndex(1));
    // 4-byte length, id 20, extended id 9, piece index: 10 bytes to the peer that asked.
    assert_eq!(speaks_box.queued_bytes(), before.0 + 10);
    assert_eq!(mute_box.queued_bytes(), before.1);
    assert!(!t.have[1]);
}

#[test]
fn a_run_put_back_is_served_first_unless_the_peer_was_choked() {
    let mut t = torrent(4, &[0, 1, 2, 3]);
    let (key, _) = peer(&mut t);
    let now = Instant::now();
    t.on_message(key, Inbound::Interested, now).unwrap();
    for b in [block(1, 0), block(1, 16 << 10), block(3, 0)] {
        t.on_message(key, Inbound::Request(b), now).unwrap();
    }
    let run = t.next_upload_run(key, 1 << 20);
    assert_eq!(run, vec![block(1, 0), block(1, 16 << 10)]);
    t.put_back_upload_run(key, run.clone());
    assert_eq!(t.next_upload_run(key, 1 << 20), run);
    assert_eq!(t.next_upload_run(key, 1 << 20), vec![block(3, 0)]);
    t.put_back_upload_run(key, vec![block(3, 0)]);
    t.peers.get_mut(&key).unwrap().am_choking = true;
    assert!(t.next_upload_run(key, 1 << 20).is_empty());
}

/// A buffer of `len` bytes, as one chunk.
fn bytes(len: usize) -> Vec<Chunk> {
    let mut buf = BufferPool::new(len, 1).try_take().unwrap();
    buf.set_len_initialized(len);
    vec![Chunk::new(buf.freeze(), 0..len)]
}

#[test]
fn aria2_is_asked_for_several_blocks_per_request_and_its_answers_are_split() {
    let mut t = torrent(8, &[]);
    let (key, outbox) = peer(&mut t);
    let mut aria2 = [b'x'; 20];
    aria2[..10].copy_from_slice(b"A2-1-36-0-");
    t.claim_peer_id(key, PeerId(aria2), PeerId([b'y'; 20]), Dialler::Us)
        .unwrap();
    let now = Instant::now();
    t.on_message(key, Inbound::Bitfield(vec![0xff]), now)
        .unwrap();
    t.on_message(key, Inbound::Unchoke, now).unwrap();
    assert_eq!(
        t.peer(key).unwrap().requests.len(),
        16,
        "16 blocks asked for"
    );
    assert_eq!(
        t.stats.request_messages, 8,
        "two blocks (a whole piece) each"
    );
    assert_eq!(
        outbox.queued_bytes(),
        5 + 8 * 17,
        "INTERESTED, then the requests"
    );
    // The answer for piece 0 comes as one 32 KiB block: both blocks are accepted.
    let whole = ReceivedBlock {
        block: BlockRef {
            piece: PieceIndex(0),
            offset: 0,
            len: PIECE,
        },
        data: bytes(PIECE as usize),
    };
    let (writes, violation) = t.on_blocks(key, vec![whole], now);
    assert!(violation.is_none());
    assert_eq!(writes.len(), 1, "the two halves are written as one run");
    assert_eq!(t.peer(key).unwrap().requests.len(), 14);
    // A Reject of piece 1's request gives both its blocks back.
    let rejected = BlockRef {
        piece: PieceIndex(1),
        offset: 0,
        len: PIECE,
    };
    t.on_message(key, Inbound::Reject(rejected), now).unwrap();
    assert!(t
        .peer(key)
        .unwrap()
        .requests
        .iter()
        .all(|(b, _)| b.piece.0 != 1));
    // An answer one byte short of what was asked leaves a part no request matches.
    let short = ReceivedBlock {
        block: BlockRef {
            piece: PieceIndex(2),
            offset: 0,
            len: PIECE - 1,
        },
        data: bytes(PIECE as usize - 1),
    };
    assert!(matches!(
        t.on_blocks(key, vec![short], now).1,
        Some(Violation::UnrequestedBlock(_))
    ));
}

/// Requests in flight to `key`, in the order sent.
fn in_flight(t: &Torrent, key: PeerKey) -> Vec<BlockRef> {
    t.peer(key)
        .unwrap()
        .requests
        .iter()
        .map(|(b, _)| *b)
        .collect()
}

#[test]
fn endgame_copies_go_one_at_a_time_to_peers_with_nothing_in_flight() {
    let mut t = torrent(2, &[]);
    let now = Instant::now();
    let (a, a_out) = peer_at(&mut t, "127.0.0.1:7001", Dialler::Us);
    let (b, _) = peer_at(&mut t, "127.0.0.1:7002", Dialler::Us);
    for key in [a, b] {
        t.on_message(key, Inbound::Bitfield(vec![0xc0]), now)
            .unwrap();
    }
    t.on_message(a, Inbound::Unchoke, now).unwrap();
    let a_blocks = in_flight(&t, a);
    assert_eq!(a_blocks.len(), 4, "A holds every block: endgame");
    t.on_message(b, Inbound::Unchoke, now).unwrap();
    let copy = in_flight(&t, b);
    assert_eq!(copy.len(), 1, "one copy for B, not four");
    t.refill_requests(b, now);
    assert_eq!(in_flight(&t, b), copy, "no second copy while one is out");
    // B's copy wins: A is told to cancel it, and B, idle again, gets the next copy.
    let sent_to_a = a_out.queued_bytes();
    let won = ReceivedBlock {
        block: copy[0],
        data: bytes(copy[0].len as usize),
    };
    assert!(t.on_blocks(b, vec![won], now).1.is_none());
    assert_eq!(a_out.queued_bytes(), sent_to_a + 17, "a CANCEL to A");
    assert!(!in_flight(&t, a).contains(&copy[0]));
    t.refill_requests(b, now); // as the connection does after each read
    let next = in_flight(&t, b);
    assert_eq!(next.len(), 1);
    assert_ne!(next[0], copy[0]);
    // A's copy of that block, already on its way, is counted as waste, not held against A.
    let late = ReceivedBlock {
        block: copy[0],
        data: bytes(copy[0].len as usize),
    };
    assert!(t.on_blocks(a, vec![late], now).1.is_none());
    assert_eq!(t.stats.wasted_bytes, u64::from(copy[0].len));
}

#[test]
fn other_peers_get_one_block_per_request() {
    let mut t = torrent(8, &[]);
    let (key, outbox) = peer(&mut t);
    t.claim_peer_id(key, PeerId([b'-'; 20]), PeerId([b'y'; 20]), Dialler::Us)
        .unwrap();
    let now = Instant::now();
    t.on_message(key, Inbound::Bitfield(vec![0xff]), now)
        .unwrap();
    t.on_message(key, Inbound::Unchoke, now).unwrap();
    assert_eq!(t.stats.request_messages, 16);
    assert_eq!(
        outbox.queued_bytes(),
        5 + 16 * 17,
        "INTERESTED, then the requests"
    );
}

#[test]
fn blocks_within_a_range_follow_the_block_grid_and_stay_in_the_piece() {
    let layout = Layout::from_lengths(PIECE, [u64::from(PIECE) * 2 + 5000]);
    let cut = |piece, offset, len| -> Vec<(u32, u32)> {
        layout
            .blocks_within(BlockRef {
                piece: PieceIndex(piece),
                offset,
                len,
            })
            .map(|b| (b.offset, b.len))
            .collect()
    };
    assert_eq!(cut(0, 0, PIECE), [(0, 16384), (16384, 16384)]);
    assert_eq!(cut(0, 0, PIECE - 1), [(0, 16384), (16384, 16383)]);
    assert_eq!(cut(2, 0, 5000), [(0, 5000)], "the short last piece");
    assert_eq!(cut(2, 0, PIECE), [(0, PIECE)], "past the piece: whole");
    assert_eq!(cut(9, 0, u32::MAX), [(0, u32::MAX)], "no such piece: whole");
}

fn metadata_request(piece: u32) -> Inbound {
    Inbound::Extended {
        id: extended::OUR_METADATA_ID,
        payload: crate::metadata::MetadataMessage::Request { piece }.encode(),
    }
}

#[test]
fn metadata_requests_are_answered_rejected_past_the_end_and_capped_per_peer() {
    let info: Vec<u8> = (0..20_000u32).map(|i| i as u8).collect();
    let config = TorrentConfig {
        metadata: Some(Arc::from(info.as_slice())),
        ..TorrentConfig::default()
    };
    let layout = Layout::from_lengths(PIECE, [u64::from(PIECE)]);
    let (verifier, _rx) = Verifier::new(
        Arc::new(HashPool::new(1)),
        Arc::new(vec![[0; 20]]),
        HashPlacement::Workers,
    );
    let mut t = Torrent::new(layout, BitVec::repeat(true, 1), verifier, config);
    assert_eq!(t.metadata_size(), Some(20_000));
    let (key, outbox) = peer(&mut t);
    let now = Instant::now();
    // Before its extension handshake we do not know the id to answer with: nothing is sent.
    let before = outbox.queued_bytes();
    t.on_message(key, metadata_request(0), now).unwrap();
    assert_eq!(outbox.queued_bytes(), before);
    let handshake = Inbound::Extended {
        id: 0,
        payload: b"d1:md11:ut_metadatai4eee".to_vec(),
    };
    t.on_message(key, handshake, now).unwrap();
    // The last piece (3,616 bytes) follows its dictionary; past the end, a reject.
    let header = 4 + 1 + 1; // length, id 20, extended id 4
    let reply_len = |piece: u32, data: usize| {
        let dict = crate::metadata::MetadataMessage::Data {
            piece,
            total_size: 20_000,
            data: &[],
        };
        header + dict.encode().len() + data
    };
    let sent = outbox.queued_bytes();
    t.on_message(key, metadata_request(1), now).unwrap();
    assert_eq!(outbox.queued_bytes(), sent + reply_len(1, 20_000 - 16_384));
    let sent = outbox.queued_bytes();
    t.on_message(key, metadata_request(2), now).unwrap();
    let reject = crate::metadata::MetadataMessage::Reject { piece: 2 }.encode();
    assert_eq!(outbox.queued_bytes(), sent + header + reject.len());
    // A peer that asks again and again without reading gets rejects once 256 KiB wait.
    for _ in 0..100 {
        t.on_message(key, metadata_request(0), now).unwrap();
    }
    let queued = outbox.queued_bytes();
    assert!(
        queued < MAX_QUEUED_FOR_METADATA + 2 * reply_len(0, 16_384),
        "{queued}"
    );
    // Garbage under our id is ignored.
    let garbage = Inbound::Extended {
        id: extended::OUR_METADATA_ID,
        payload: b"not bencode".to_vec(),
    };
    t.on_message(key, garbage, now).unwrap();
    assert_eq!(outbox.queued_bytes(), queued);
}

/// A torrent of two pieces with peer exchange on or off.
fn torrent_with_pex(pex: bool) -> Torrent {
    let config = TorrentConfig {
        pex,
        ..TorrentConfig::default()
    };
    let layout = Layout::from_lengths(PIECE, [u64::from(2 * PIECE)]);
    let (verifier, _rx) = Verifier::new(
        Arc::new(HashPool::new(1)),
        Arc::new(vec![[0; 20]; 2]),
        HashPlacement::Workers,
    );
    Torrent::new(layout, BitVec::repeat(false, 2), verifier, config)
}

fn peer_at(t: &mut Torrent, addr: &str, dialler: Dialler) -> (PeerKey, Rc<Outbox>) {
    let outbox = Outbox::new();
    let key = t.add_peer(
        addr.parse().unwrap(),
        dialler,
        Rc::clone(&outbox),
        Instant::now(),
    );
    (key, outbox)
}

fn extension_handshake(t: &mut Torrent, key: PeerKey, payload: &[u8]) {
    let msg = Inbound::Extended {
        id: 0,
        payload: payload.to_vec(),
    };
    t.on_message(key, msg, Instant::now()).unwrap();
}

/// The PEX messages (extended id `id`) queued in `outbox`.
fn pex_sent(outbox: &Outbox, id: u8) -> Vec<crate::pex::PexMessage> {
    let bytes = outbox.queued_control_bytes();
    let decoder = crate::wire::FrameDecoder::new(crate::wire::DEFAULT_MAX_FRAME);
    let mut at = 0;
    let mut found = Vec::new();
    while let Some((msg, used)) = decoder.decode(&bytes[at..]).unwrap() {
        if let Message::Extended { id: got, payload } = msg {
            if got == id {
                found.push(crate::pex::PexMessage::parse(payload).unwrap());
            }
        }
        at += used;
    }
    found
}

#[test]
fn pex_tells_each_peer_of_the_others_it_can_dial_and_keeps_what_peers_tell() {
    use crate::pex::{PexMessage, FLAG_REACHABLE, INTERVAL};
    let mut t = torrent_with_pex(true);
    let (_dialled, _) = peer_at(&mut t, "127.0.0.1:7001", Dialler::Us);
    let (b, b_out) = peer_at(&mut t, "127.0.0.1:40000", Dialler::Them);
    extension_handshake(&mut t, b, b"d1:md6:ut_pexi5ee1:pi7002ee");
    let (c, c_out) = peer_at(&mut t, "127.0.0.1:40001", Dialler::Them);
    extension_handshake(&mut t, c, b"d1:md6:ut_pexi9eee");
    let offer = t.extension_offer(6881);
    assert!(offer.pex && offer.listen_port == Some(6881));

    let now = Instant::now();
    t.tick(Duration::from_secs(1), now);
    let to_b = pex_sent(&b_out, 5);
    assert_eq!(to_b.len(), 1);
    assert_eq!(
        to_b[0].added,
        [("127.0.0.1:7001".parse().unwrap(), FLAG_REACHABLE)],
        "B hears of the peer we dialled, not of itself, not of C (no listening port)"
    );
    let mut to_c: Vec<_> = pex_sent(&c_out, 9)[0].added.clone();
    to_c.sort();
    assert_eq!(
        to_c,
        [
            ("127.0.0.1:7001".parse().unwrap(), FLAG_REACHABLE),
            ("127.0.0.1:7002".parse().unwrap(), 0)
        ]
    );
    // Nothing new within the minute; B's departure reaches C a minute later.
    t.tick(Duration::from_secs(1), now + Duration::from_secs(1));
    assert_eq!(pex_sent(&c_out, 9).len(), 1);
    t.remove_peer(b, now);
    t.tick(Duration::from_secs(1), now + INTERVAL);
    let later = pex_sent(&c_out, 9);
    assert_eq!(later.len(), 2);
    assert_eq!(later[1].dropped, ["127.0.0.1:7002".parse().unwrap()]);

    // What C tells us is kept to dial, but only usable addresses, and not twice a minute.
    let told = PexMessage {
        added: vec![
            ("10.0.0.1:6881".parse().unwrap(), 0),
            ("0.0.0.0:6881".parse().unwrap(), 0),
            ("224.0.0.1:6881".parse().unwrap(), 0),
        ],
        dropped: vec![],
    };
    let msg = || Inbound::Extended {
        id: extended::OUR_PEX_ID,
        payload: told.encode(),
    };
    t.on_message(c, msg(), now).unwrap();
    assert_eq!(t.take_pex_found(), ["10.0.0.1:6881".parse().unwrap()]);
    t.on_message(c, msg(), now + Duration::from_secs(5))
        .unwrap();
    assert!(t.take_pex_found().is_empty(), "too soon after the last");
    let garbage = Inbound::Extended {
        id: extended::OUR_PEX_ID,
        payload: b"d5:added5:abcdee".to_vec(),
    };
    t.on_message(c, garbage, now + INTERVAL).unwrap();
    assert!(t.take_pex_found().is_empty());
}

#[test]
fn loopback_addresses_go_only_to_peers_on_this_host() {
    use crate::pex::FLAG_REACHABLE;
    let mut t = torrent_with_pex(true);
    let (_bridge, _) = peer_at(&mut t, "127.0.0.1:7001", Dialler::Us);
    let (_remote, _) = peer_at(&mut t, "10.0.0.2:7002", Dialler::Us);
    let (local, local_out) = peer_at(&mut t, "127.0.0.1:40000", Dialler::Them);
    extension_handshake(&mut t, local, b"d1:md6:ut_pexi5eee");
    let (far, far_out) = peer_at(&mut t, "10.0.0.3:40001", Dialler::Them);
    extension_handshake(&mut t, far, b"d1:md6:ut_pexi5eee");
    t.tick(Duration::from_secs(1), Instant::now());
    let mut to_local = pex_sent(&local_out, 5)[0].added.clone();
    to_local.sort();
    let both = [
        ("10.0.0.2:7002".parse().unwrap(), FLAG_REACHABLE),
        ("127.0.0.1:7001".parse().unwrap(), FLAG_REACHABLE),
    ];
    assert_eq!(to_local, both);
    let to_far = pex_sent(&far_out, 5)[0].added.clone();
    assert_eq!(to_far, [("10.0.0.2:7002".parse().unwrap(), FLAG_REACHABLE)]);
}

#[test]
fn without_pex_nothing_is_offered_sent_or_taken() {
    let mut t = torrent_with_pex(false);
    assert!(!t.extension_offer(6881).pex);
    let (_dialled, _) = peer_at(&mut t, "127.0.0.1:7001", Dialler::Us);
    let (b, b_out) = peer_at(&mut t, "127.0.0.1:40000", Dialler::Them);
    extension_handshake(&mut t, b, b"d1:md6:ut_pexi5ee1:pi7002ee");
    t.tick(Duration::from_secs(1), Instant::now());
    assert!(pex_sent(&b_out, 5).is_empty());
    let told = crate::pex::PexMessage {
        added: vec![("10.0.0.1:6881".parse().unwrap(), 0)],
        dropped: vec![],
    };
    let msg = Inbound::Extended {
        id: extended::OUR_PEX_ID,
        payload: told.encode(),
    };
    t.on_message(b, msg, Instant::now()).unwrap();
    assert!(t.take_pex_found().is_empty());
}

/// A torrent of `pieces` pieces that wants only `wanted` (a file selection).
fn torrent_wanting(pieces: u32, wanted: &[u32]) -> Torrent {
    let mut bits = BitVec::<u8, Msb0>::repeat(false, pieces as usize);
    for &p in wanted {
        bits.set(p as usize, true);
    }
    let config = TorrentConfig {
        wanted: Some(bits),
        ..TorrentConfig::default()
    };
    let layout = Layout::from_lengths(PIECE, [u64::from(pieces * PIECE)]);
    let (verifier, _rx) = Verifier::new(
        Arc::new(HashPool::new(1)),
        Arc::new(vec![[0; 20]; pieces as usize]),
        HashPlacement::Workers,
    );
    Torrent::new(
        layout,
        BitVec::repeat(false, pieces as usize),
        verifier,
        config,
    )
}

#[test]
fn a_selection_requests_only_wanted_pieces_and_ignores_peers_without_them() {
    let mut t = torrent_wanting(4, &[1, 3]);
    assert!(!t.is_complete());
    assert_eq!(t.wanted_progress(), (0, 2 * u64::from(PIECE)));
    let now = Instant::now();
    let (elsewhere, _) = peer(&mut t);
    t.on_message(elsewhere, Inbound::Bitfield(vec![0b1010_0000]), now)
        .unwrap();
    assert!(
        !t.peer(elsewhere).unwrap().am_interested,
        "pieces 0 and 2 only: nothing we want"
    );
    t.on_message(elsewhere, Inbound::Have(PieceIndex(3)), now)
        .unwrap();
    assert!(
        t.peer(elsewhere).unwrap().am_interested,
        "now it has piece 3"
    );
    let (seed, _) = peer(&mut t);
    t.on_message(seed, Inbound::Bitfield(vec![0xf0]), now)
        .unwrap();
    t.on_message(seed, Inbound::Unchoke, now).unwrap();
    let asked: HashSet<u32> = (t.peer(seed).unwrap().requests.iter())
        .map(|(b, _)| b.piece.0)
        .collect();
    assert_eq!(
        asked,
        HashSet::from([1, 3]),
        "only the wanted pieces are requested"
    );
    assert!(!t.has_every_piece());
}
