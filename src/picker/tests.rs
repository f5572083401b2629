//! Short scenario tests. Torrents are written libtorrent-style as availability strings:
//! one character per piece, a digit is how many non-seed peers have it, `*` is a piece we
//! already have.

use super::*;
use crate::types::BLOCK_SIZE;
use std::collections::HashSet;

const A: PeerKey = PeerKey(1);
const B: PeerKey = PeerKey(2);
const C: PeerKey = PeerKey(3);
const D: PeerKey = PeerKey(4);

/// One piece per character of `avail`, each `blocks` blocks long.
fn setup_blocks(avail: &str, blocks: u32, seed: u64) -> Picker {
    let n = avail.len() as u32;
    let piece_len = blocks * BLOCK_SIZE;
    let mut p = Picker::new(n, piece_len, u64::from(n) * u64::from(piece_len), seed);
    for (i, c) in avail.chars().enumerate() {
        let piece = PieceIndex(i as u32);
        if c == '*' {
            p.mark_have(piece);
            p.peer_has_piece(piece);
        } else {
            for _ in 0..c.to_digit(10).expect("availability digit") {
                p.peer_has_piece(piece);
            }
        }
    }
    p.check_invariants();
    p
}

fn setup(avail: &str) -> Picker {
    setup_blocks(avail, 1, 7)
}

fn pick_as_seed(p: &mut Picker, peer: PeerKey, max: usize) -> Vec<BlockRef> {
    let mut out = Vec::new();
    p.pick_blocks(peer, |_| false, true, max, &mut out);
    p.check_invariants();
    out
}

fn pick_copies(p: &mut Picker, peer: PeerKey, max: usize) -> Vec<BlockRef> {
    let mut out = Vec::new();
    p.pick_duplicates(peer, |_| false, true, max, &mut out);
    p.check_invariants();
    out
}

fn pick_with(p: &mut Picker, peer: PeerKey, has: &[u32], max: usize) -> Vec<BlockRef> {
    let mut out = Vec::new();
    p.pick_blocks(peer, |piece| has.contains(&piece.0), false, max, &mut out);
    p.check_invariants();
    out
}

fn pieces_of(blocks: &[BlockRef]) -> Vec<u32> {
    blocks.iter().map(|b| b.piece.0).collect()
}

fn block(piece: u32, index: u32) -> BlockRef {
    BlockRef {
        piece: PieceIndex(piece),
        offset: index * BLOCK_SIZE,
        len: BLOCK_SIZE,
    }
}

fn accept(p: &mut Picker, b: BlockRef, from: PeerKey) -> (bool, Vec<PeerKey>) {
    match p.on_block_received(b, from) {
        BlockReceived::Accepted {
            piece_complete,
            cancel,
        } => (piece_complete, cancel),
        other => panic!("{b:?} from {from:?} was {other:?}"),
    }
}

#[test]
fn rarest_first_follows_availability() {
    let mut p = setup("****3132");
    let order: Vec<u32> = (0..4)
        .flat_map(|_| pieces_of(&pick_as_seed(&mut p, A, 1)))
        .collect();
    assert_eq!(order[..2], [5, 7]);
    assert_eq!(
        order[2..].iter().copied().collect::<HashSet<_>>(),
        HashSet::from([4, 6])
    );
}

#[test]
fn rarest_first_breaks_ties_at_random() {
    let mut firsts = HashSet::new();
    for seed in 0..40 {
        let mut p = setup_blocks("****11112", 1, seed);
        let first = pieces_of(&pick_as_seed(&mut p, A, 1))[0];
        assert!(
            (4..8).contains(&first),
            "picked {first}, not one of the rarest"
        );
        firsts.insert(first);
    }
    assert!(
        firsts.len() >= 3,
        "ties always broken the same way: {firsts:?}"
    );
}

#[test]
fn random_pieces_until_four_are_complete() {
    let picks_common_piece = |avail: &str| {
        (0..60).any(|seed| {
            let mut p = setup_blocks(avail, 1, seed);
            pieces_of(&pick_as_seed(&mut p, A, 1)) == [9]
        })
    };
    assert!(
        picks_common_piece("***1111119"),
        "three pieces: still random"
    );
    assert!(
        !picks_common_piece("****111119"),
        "four pieces: rarest first"
    );
}

#[test]
fn availability_changes_reorder_pieces() {
    let mut p = setup("****0000");
    p.peer_has_pieces([4, 5, 6, 7].map(PieceIndex));
    p.peer_has_pieces([4, 5, 7].map(PieceIndex));
    p.peer_has_pieces([4, 7].map(PieceIndex));
    p.peer_lost([4, 5].map(PieceIndex));
    p.check_invariants();
    // Now 4:2 5:1 6:1 7:3, then piece 6 loses its only peer.
    p.peer_lost([6].map(PieceIndex));
    assert_eq!(p.availability(PieceIndex(6)), 0);
    assert_eq!(pieces_of(&pick_with(&mut p, A, &[4, 5, 6, 7], 1)), [5]);
    assert_eq!(pieces_of(&pick_as_seed(&mut p, B, 1)), [6]);
    assert_eq!(pieces_of(&pick_as_seed(&mut p, B, 2)), [4, 7]);
}

#[test]
fn partial_pieces_come_before_rarer_ones() {
    let mut p = setup_blocks("****1222", 4, 3);
    let first = pick_with(&mut p, A, &[5, 6, 7], 2);
    let started = first[0].piece.0;
    assert_eq!(pieces_of(&first), [started, started]);
    let second = pick_as_seed(&mut p, B, 3);
    assert_eq!(
        pieces_of(&second),
        [started, started, 4],
        "finish the started piece first"
    );
    assert_eq!(
        (second[0].offset, second[1].offset),
        (2 * BLOCK_SIZE, 3 * BLOCK_SIZE)
    );
}

#[test]
fn a_peer_prefers_pieces_it_started() {
    // Piece 2 is nobody's, which keeps endgame away.
    let mut p = setup_blocks("110", 4, 1);
    assert_eq!(pieces_of(&pick_with(&mut p, C, &[0], 1)), [0]);
    assert_eq!(
        pieces_of(&pick_with(&mut p, A, &[1], 1)),
        [1],
        "piece 0 is not A's to take"
    );
    p.peer_has_piece(PieceIndex(0));
    assert_eq!(pieces_of(&pick_with(&mut p, A, &[0, 1], 4)), [1, 1, 1, 0]);
    assert_eq!(pieces_of(&pick_with(&mut p, C, &[0], 4)), [0, 0]);
}

#[test]
fn no_block_is_reserved_twice_outside_endgame() {
    let mut p = Picker::new(10, 3 * BLOCK_SIZE, 9 * 3 * u64::from(BLOCK_SIZE) + 100, 5);
    let mut seen = HashSet::new();
    let peers = [A, B, C, D];
    for round in 0.. {
        if p.in_endgame() {
            break;
        }
        // One block per call: a call that takes the last free block stops there.
        for b in pick_as_seed(&mut p, peers[round % 4], 1) {
            assert!(seen.insert(b), "{b:?} reserved twice");
        }
    }
    assert_eq!(seen.len(), 9 * 3 + 1);
}

#[test]
fn endgame_duplicates_fewest_holders_first_and_cancels_the_rest() {
    let mut p = setup_blocks("22", 2, 1);
    assert!(
        pick_copies(&mut p, A, 10).is_empty(),
        "no copies before endgame"
    );
    let all = pick_as_seed(&mut p, A, 10);
    assert_eq!(all.len(), 4);
    assert!(p.in_endgame());
    assert!(
        pick_as_seed(&mut p, B, 10).is_empty(),
        "a plain pick never hands out a block another peer holds"
    );
    let b1 = pick_copies(&mut p, B, 1);
    let c1 = pick_copies(&mut p, C, 1);
    assert_ne!(b1, c1, "C gets a block with one holder, not B's with two");
    assert!(
        pick_copies(&mut p, A, 10).is_empty(),
        "never twice to the same peer"
    );
    let b_rest = pick_copies(&mut p, B, 10);
    assert_eq!(b_rest.len(), 3);
    assert!(!b_rest.contains(&b1[0]));
    let (_, mut cancel) = accept(&mut p, c1[0], B);
    cancel.sort();
    assert_eq!(cancel, [A, C]);
    assert_eq!(p.on_block_received(c1[0], A), BlockReceived::Duplicate);
    assert_eq!(p.on_block_received(c1[0], D), BlockReceived::Duplicate);
    let other = all
        .iter()
        .find(|b| **b != c1[0] && **b != b1[0])
        .copied()
        .unwrap();
    assert_eq!(p.on_block_received(other, D), BlockReceived::Unrequested);
    p.check_invariants();
}

#[test]
fn released_blocks_go_back_to_the_pool() {
    let mut p = setup_blocks("****12", 4, 2);
    let a = pick_as_seed(&mut p, A, 2);
    assert_eq!(pieces_of(&a), [4, 4]);
    p.release_peer(A, &a);
    p.check_invariants();
    assert_eq!(p.on_block_received(a[0], A), BlockReceived::Unrequested);
    assert!(!p.in_endgame());
    let b = pick_as_seed(&mut p, B, 4);
    assert_eq!(
        b,
        (0..4).map(|i| block(4, i)).collect::<Vec<_>>(),
        "the piece stayed partial"
    );
    p.release_block(B, b[2]);
    assert_eq!(pick_as_seed(&mut p, C, 1), [b[2]]);
    assert_eq!(p.on_block_received(b[2], B), BlockReceived::Unrequested);
    assert!(matches!(
        p.on_block_received(b[2], C),
        BlockReceived::Accepted { .. }
    ));
}

#[test]
fn a_failed_piece_is_fetched_again_and_its_suppliers_named() {
    let mut p = setup_blocks("2", 2, 4);
    let a = pick_as_seed(&mut p, A, 1);
    let b = pick_as_seed(&mut p, B, 1);
    assert_eq!(accept(&mut p, a[0], A), (false, vec![]));
    assert_eq!(accept(&mut p, b[0], B), (true, vec![]));
    assert_eq!(p.on_piece_failed(PieceIndex(0)), [A, B]);
    p.check_invariants();
    assert!(!p.has(PieceIndex(0)));
    assert_eq!(p.on_block_received(a[0], A), BlockReceived::Unrequested);
    let again = pick_as_seed(&mut p, C, 10);
    assert_eq!(again, [block(0, 0), block(0, 1)]);
    accept(&mut p, again[0], C);
    assert_eq!(accept(&mut p, again[1], C), (true, vec![]));
    p.on_piece_verified(PieceIndex(0));
    assert!(p.is_complete() && p.has(PieceIndex(0)));
    assert_eq!(p.on_block_received(again[0], C), BlockReceived::Duplicate);
}

#[test]
fn short_last_piece_and_short_last_blocks() {
    let piece_len = BLOCK_SIZE + 5;
    let total = 2 * u64::from(piece_len) + 7;
    let mut p = Picker::new(3, piece_len, total, 1);
    assert_eq!(
        (0..4)
            .map(|i| p.block_count(PieceIndex(i)))
            .collect::<Vec<_>>(),
        [2, 2, 1, 0]
    );
    assert_eq!(p.piece_len(PieceIndex(2)), 7);
    assert_eq!(p.block_len(PieceIndex(0), 1), 5);
    assert_eq!(p.block_len(PieceIndex(2), 0), 7);
    assert_eq!(p.block_len(PieceIndex(2), 1), 0);
    let blocks = pick_as_seed(&mut p, A, 100);
    assert_eq!(blocks.iter().map(|b| u64::from(b.len)).sum::<u64>(), total);
    let last = *blocks.iter().find(|b| b.piece == PieceIndex(2)).unwrap();
    assert_eq!((last.offset, last.len), (0, 7));
    let padded = BlockRef {
        len: BLOCK_SIZE,
        ..last
    };
    assert_eq!(p.on_block_received(padded, A), BlockReceived::Unrequested);
    assert_eq!(accept(&mut p, last, A), (true, vec![]));
}

#[test]
fn a_peer_gets_no_block_of_a_piece_it_lacks() {
    let mut p = setup_blocks("****2222", 2, 9);
    assert_eq!(pieces_of(&pick_with(&mut p, A, &[6], 10)), [6, 6]);
    assert!(pick_with(&mut p, A, &[6], 10).is_empty());
    assert!(!p.in_endgame());
    let b = pick_with(&mut p, B, &[4, 6], 10);
    assert_eq!(
        pieces_of(&b),
        [4, 4],
        "no endgame yet, so no copy of A's blocks"
    );
}

#[test]
fn seeds_are_one_counter() {
    let mut p = setup("****0120");
    p.seed_joined();
    p.seed_joined();
    let avail: Vec<u32> = (0..8).map(|i| p.availability(PieceIndex(i))).collect();
    assert_eq!(avail, [3, 3, 3, 3, 2, 3, 4, 2]);
    assert_eq!(
        pieces_of(&pick_with(&mut p, A, &[5, 6], 1)),
        [5],
        "only what A has"
    );
    let mut rarest = pieces_of(&pick_as_seed(&mut p, B, 2));
    rarest.sort();
    assert_eq!(rarest, [4, 7], "seeds leave the order alone");
    p.seed_left();
    p.seed_left();
    p.seed_left();
    assert_eq!(p.availability(PieceIndex(4)), 0);
    p.check_invariants();
}

#[test]
fn blocks_that_are_not_ours_are_unrequested() {
    let mut p = setup_blocks("1", 2, 1);
    pick_as_seed(&mut p, A, 2);
    let bad = [
        BlockRef {
            piece: PieceIndex(1),
            ..block(0, 0)
        },
        BlockRef {
            offset: 1,
            ..block(0, 0)
        },
        BlockRef {
            len: 1,
            ..block(0, 0)
        },
        BlockRef {
            len: 0,
            ..block(0, 0)
        },
        block(0, 2),
        BlockRef {
            piece: PieceIndex(u32::MAX),
            offset: u32::MAX,
            len: u32::MAX,
        },
    ];
    for b in bad {
        assert_eq!(
            p.on_block_received(b, A),
            BlockReceived::Unrequested,
            "{b:?}"
        );
        p.release_block(A, b);
    }
    p.release_peer(A, &bad);
    p.peer_has_piece(PieceIndex(9));
    p.peer_lost([PieceIndex(9)]);
    assert!(!p.has(PieceIndex(9)));
    assert_eq!(p.on_piece_failed(PieceIndex(9)), []);
    p.on_piece_verified(PieceIndex(9));
    p.check_invariants();
}

#[test]
fn unrequested_from_another_peer_then_duplicate() {
    let mut p = setup_blocks("1", 1, 1);
    let a = pick_as_seed(&mut p, A, 1);
    assert_eq!(p.on_block_received(a[0], B), BlockReceived::Unrequested);
    assert_eq!(accept(&mut p, a[0], A), (true, vec![]));
    assert_eq!(p.on_block_received(a[0], A), BlockReceived::Duplicate);
}

#[test]
fn counts_and_resume() {
    let mut p = setup("1111");
    p.mark_have(PieceIndex(2));
    p.mark_have(PieceIndex(2));
    assert!(p.has(PieceIndex(2)) && !p.has(PieceIndex(1)));
    assert_eq!((p.have_count(), p.missing_count()), (1, 3));
    for i in [0, 1, 3] {
        p.on_piece_verified(PieceIndex(i));
    }
    assert!(p.is_complete() && !p.in_endgame());
    assert!(pick_as_seed(&mut p, A, 5).is_empty());
    p.check_invariants();
}

#[test]
fn an_empty_torrent_is_complete() {
    let mut p = Picker::new(0, BLOCK_SIZE, 0, 1);
    assert!(p.is_complete() && !p.in_endgame());
    assert!(pick_as_seed(&mut p, A, 5).is_empty());
}

#[test]
#[should_panic(expected = "cannot hold")]
fn sizes_that_do_not_fit_are_refused() {
    Picker::new(2, BLOCK_SIZE, 3 * u64::from(BLOCK_SIZE), 1);
}

#[test]
fn a_seed_fetches_a_large_torrent_block_by_block() {
    // Rarest-first over 20,000 pieces and 30 distinct availabilities, one block per call.
    let n = 20_000u32;
    let mut p = Picker::new(
        n,
        2 * BLOCK_SIZE,
        u64::from(n) * 2 * u64::from(BLOCK_SIZE),
        3,
    );
    for k in 1..30 {
        p.peer_has_pieces((0..n).filter(|i| i % k == 0).map(PieceIndex));
    }
    let mut out = Vec::new();
    while !p.in_endgame() {
        let before = out.len();
        p.pick_blocks(A, |_| false, true, 1, &mut out);
        assert_eq!(out.len(), before + 1);
        if p.have_count() < RANDOM_FIRST_PIECES && out.len() % 2 == 0 {
            p.on_piece_verified(out[before].piece);
        }
    }
    assert_eq!(out.len() as u32, 2 * n);
}

#[test]
fn a_peer_that_serves_runs_gets_consecutive_pieces_where_it_can() {
    let mut p = setup("0000000000*000");
    let mut out = Vec::new();
    // From piece 3 on: 4, 5 ... 9; 10 we have, so the next one is the usual choice.
    p.pick_runs(A, |_| false, true, 6, Some(PieceIndex(3)), &mut out);
    let pieces: Vec<u32> = out.iter().map(|b| b.piece.0).collect();
    assert_eq!(pieces, [4, 5, 6, 7, 8, 9]);
    out.clear();
    p.pick_runs(A, |_| false, true, 2, Some(PieceIndex(9)), &mut out);
    assert!(out.iter().all(|b| b.piece.0 != 10), "{out:?}");
    assert_eq!(out.len(), 2);
    // Without a piece to follow, the first new piece is the usual choice and the next
    // ones follow it, stepping over a piece another peer started.
    for seed in 0..20 {
        let mut q = setup_blocks("00000000", 1, seed);
        let taken = pick_as_seed(&mut q, B, 1)[0].piece.0;
        out.clear();
        q.pick_runs(A, |_| false, true, 3, None, &mut out);
        let got: Vec<u32> = out.iter().map(|b| b.piece.0).collect();
        assert!(!got.contains(&taken));
        for i in 1..got.len() {
            let next = got[i - 1] + 1;
            if next < 8 && next != taken && !got[..i].contains(&next) {
                assert_eq!(got[i], next, "seed {seed}: {got:?} (B took {taken})");
            }
        }
        q.check_invariants();
    }
    p.check_invariants();
}

#[test]
fn sequential_mode_starts_pieces_first_to_last_and_a_failed_one_comes_first_again() {
    let mut p = setup("31113111");
    p.set_sequential(true);
    let pieces = |out: Vec<BlockRef>| out.iter().map(|b| b.piece.0).collect::<Vec<_>>();
    assert_eq!(pieces(pick_as_seed(&mut p, A, 3)), [0, 1, 2]);
    p.on_block_received(block(1, 0), A);
    p.on_piece_failed(PieceIndex(1));
    assert_eq!(pieces(pick_as_seed(&mut p, B, 2)), [1, 3]);
    // A peer that lacks the next pieces gets the first one it has.
    let mut out = Vec::new();
    p.pick_blocks(C, |piece| piece.0 >= 6, false, 1, &mut out);
    assert_eq!(pieces(out), [6]);
    p.check_invariants();
}
