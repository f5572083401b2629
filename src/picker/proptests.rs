//! Random sequences of swarm events against a model of the engine: peers join and leave
//! with random bitfields, pick, deliver (sometimes a corrupt piece), reject, get choked and
//! send garbage. After every step the picker must agree with the model; at the end a seed
//! joins and everyone keeps delivering until the torrent is complete.

use super::*;
use crate::types::BLOCK_SIZE;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Debug)]
enum Op {
    Join {
        seed: bool,
        bits: Vec<bool>,
    },
    Leave(usize),
    Have(usize, u32),
    Pick(usize, usize),
    Deliver {
        peer: usize,
        block: usize,
        corrupt: bool,
    },
    Reject(usize, usize),
    Choke(usize),
    Garbage {
        peer: usize,
        piece: u32,
        block: u32,
        len: u32,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let peer = 0..8usize;
    prop_oneof![
        2 => (any::<bool>(), proptest::collection::vec(any::<bool>(), 12))
            .prop_map(|(seed, bits)| Op::Join { seed, bits }),
        1 => peer.clone().prop_map(Op::Leave),
        2 => (peer.clone(), 0..12u32).prop_map(|(p, i)| Op::Have(p, i)),
        4 => (peer.clone(), 1..6usize).prop_map(|(p, n)| Op::Pick(p, n)),
        5 => (peer.clone(), 0..16usize, proptest::bool::weighted(0.15))
            .prop_map(|(peer, block, corrupt)| Op::Deliver { peer, block, corrupt }),
        1 => (peer.clone(), 0..16usize).prop_map(|(p, b)| Op::Reject(p, b)),
        1 => peer.clone().prop_map(Op::Choke),
        1 => (peer, 0..13u32, 0..6u32, prop_oneof![Just(BLOCK_SIZE), 0..200u32])
            .prop_map(|(peer, piece, block, len)| Op::Garbage { peer, piece, block, len }),
    ]
}

/// (piece count, piece length, total length, pieces we have at start)
fn torrent() -> impl Strategy<Value = (u32, u32, u64, Vec<bool>)> {
    let piece_len = prop_oneof![
        Just(BLOCK_SIZE),
        Just(2 * BLOCK_SIZE),
        Just(4 * BLOCK_SIZE),
        Just(3 * BLOCK_SIZE + 100)
    ];
    (
        1..=12u32,
        piece_len,
        0.0..1.0f64,
        proptest::collection::vec(proptest::bool::weighted(0.2), 12),
    )
        .prop_map(|(count, piece_len, fraction, have)| {
            let last = 1 + (fraction * f64::from(piece_len - 1)) as u64;
            let total = u64::from(count - 1) * u64::from(piece_len) + last;
            (count, piece_len, total, have)
        })
}

struct PeerModel {
    seed: bool,
    has: Vec<bool>,
    held: Vec<BlockRef>,
}

/// The engine's view: who is connected, what they have, what we asked them for.
struct Model {
    picker: Picker,
    peers: BTreeMap<PeerKey, PeerModel>,
    next_key: u32,
    suppliers: BTreeMap<PieceIndex, BTreeSet<PeerKey>>,
}

impl Model {
    fn nth_peer(&self, n: usize) -> Option<PeerKey> {
        let len = self.peers.len();
        (len > 0).then(|| *self.peers.keys().nth(n % len).expect("n % len < len"))
    }

    fn apply(&mut self, op: &Op) {
        match op.clone() {
            Op::Join { seed, bits } => self.join(seed, bits),
            Op::Leave(n) => self.with_peer(n, Model::leave),
            Op::Have(n, piece) => self.with_peer(n, |m, k| m.have(k, piece)),
            Op::Pick(n, max) => self.with_peer(n, |m, k| m.pick(k, max)),
            Op::Deliver {
                peer,
                block,
                corrupt,
            } => self.with_peer(peer, |m, k| m.deliver_nth(k, block, corrupt)),
            Op::Reject(n, block) => self.with_peer(n, |m, k| m.reject(k, block)),
            Op::Choke(n) => self.with_peer(n, |m, k| {
                let held = std::mem::take(&mut m.peers.get_mut(&k).unwrap().held);
                m.picker.release_peer(k, &held);
            }),
            Op::Garbage {
                peer,
                piece,
                block,
                len,
            } => self.with_peer(peer, |m, k| m.garbage(k, piece, block, len)),
        }
    }

    fn with_peer(&mut self, n: usize, f: impl FnOnce(&mut Model, PeerKey)) {
        if let Some(key) = self.nth_peer(n) {
            f(self, key);
        }
    }

    fn join(&mut self, seed: bool, mut bits: Vec<bool>) {
        let key = PeerKey(self.next_key);
        self.next_key += 1;
        bits.resize(self.picker.piece_count() as usize, false);
        if seed {
            bits.iter_mut().for_each(|b| *b = true);
            self.picker.seed_joined();
        } else {
            self.picker.peer_has_pieces(pieces_in(&bits));
        }
        self.peers.insert(
            key,
            PeerModel {
                seed,
                has: bits,
                held: Vec::new(),
            },
        );
    }

    fn leave(&mut self, key: PeerKey) {
        let peer = self.peers.remove(&key).unwrap();
        self.picker.release_peer(key, &peer.held);
        if peer.seed {
            self.picker.seed_left();
        } else {
            self.picker.peer_lost(pieces_in(&peer.has));
        }
    }

    fn have(&mut self, key: PeerKey, piece: u32) {
        let peer = self.peers.get_mut(&key).unwrap();
        let Some(bit) = peer.has.get_mut(piece as usize) else {
            return;
        };
        if !*bit {
            *bit = true;
            self.picker.peer_has_piece(PieceIndex(piece));
        }
    }

    /// Picks for `key` as the torrent does (new blocks; in endgame, when there are none,
    /// copies of blocks others hold) and checks what came back against the rules.
    fn pick(&mut self, key: PeerKey, max: usize) {
        let was_endgame = self.picker.in_endgame();
        let peer = &self.peers[&key];
        let has = |p: PieceIndex| peer.has[p.as_usize()];
        let mut fresh = Vec::new();
        self.picker
            .pick_blocks(key, has, peer.seed, max, &mut fresh);
        let mut copies = Vec::new();
        if fresh.is_empty() {
            self.picker
                .pick_duplicates(key, has, peer.seed, max, &mut copies);
        }
        assert!(fresh.len() <= max && copies.len() <= max);
        let held_by_others = |b: &BlockRef| self.peers.values().any(|p| p.held.contains(b));
        for block in fresh.iter().chain(&copies) {
            assert!(peer.has[block.piece.as_usize()], "{key:?} lacks {block:?}");
            assert!(!peer.held.contains(block), "{block:?} twice to {key:?}");
        }
        assert!(
            !fresh.iter().any(held_by_others),
            "pick_blocks handed out a block another peer holds"
        );
        assert!(
            copies.iter().all(held_by_others),
            "pick_duplicates handed out a block nobody holds"
        );
        assert!(copies.is_empty() || was_endgame, "copies outside endgame");
        let held = &mut self.peers.get_mut(&key).unwrap().held;
        held.extend(fresh);
        held.extend(copies);
    }

    fn deliver_nth(&mut self, key: PeerKey, n: usize, corrupt: bool) {
        let held = &self.peers[&key].held;
        if !held.is_empty() {
            self.deliver(key, held[n % held.len()], corrupt);
        }
    }

    /// `key` delivers a block it holds; the outcome must match the model exactly.
    fn deliver(&mut self, key: PeerKey, block: BlockRef, corrupt: bool) {
        self.peers
            .get_mut(&key)
            .unwrap()
            .held
            .retain(|b| *b != block);
        let BlockReceived::Accepted {
            piece_complete,
            mut cancel,
        } = self.picker.on_block_received(block, key)
        else {
            panic!("{block:?} held by {key:?} was not accepted");
        };
        let mut others: Vec<PeerKey> = (self.peers.iter())
            .filter(|(_, p)| p.held.contains(&block))
            .map(|(k, _)| *k)
            .collect();
        cancel.sort();
        others.sort();
        assert_eq!(cancel, others, "cancel list for {block:?}");
        for k in cancel {
            self.peers.get_mut(&k).unwrap().held.retain(|b| *b != block);
        }
        self.suppliers.entry(block.piece).or_default().insert(key);
        if piece_complete {
            self.complete(block.piece, corrupt);
        }
    }

    fn complete(&mut self, piece: PieceIndex, corrupt: bool) {
        let nobody_holds = self
            .peers
            .values()
            .all(|p| p.held.iter().all(|b| b.piece != piece));
        assert!(nobody_holds, "a complete piece still has requests out");
        let suppliers = self.suppliers.remove(&piece).unwrap_or_default();
        if corrupt {
            let struck = self.picker.on_piece_failed(piece);
            assert_eq!(struck, suppliers.into_iter().collect::<Vec<_>>());
        } else {
            self.picker.on_piece_verified(piece);
            assert!(self.picker.has(piece));
        }
    }

    fn reject(&mut self, key: PeerKey, n: usize) {
        let held = &mut self.peers.get_mut(&key).unwrap().held;
        if !held.is_empty() {
            let block = held.remove(n % held.len());
            self.picker.release_block(key, block);
        }
    }

    fn garbage(&mut self, key: PeerKey, piece: u32, block: u32, len: u32) {
        let block = BlockRef {
            piece: PieceIndex(piece),
            offset: block * BLOCK_SIZE,
            len,
        };
        if !self.peers[&key].held.contains(&block) {
            let outcome = self.picker.on_block_received(block, key);
            assert!(
                !matches!(outcome, BlockReceived::Accepted { .. }),
                "{block:?}"
            );
        }
    }

    /// The picker's internals, availability and reservations agree with the model.
    fn check(&self) {
        self.picker.check_invariants();
        let seeds = self.peers.values().filter(|p| p.seed).count() as u32;
        assert_eq!(self.picker.seeds, seeds);
        for piece in 0..self.picker.piece_count() {
            let holders = self
                .peers
                .values()
                .filter(|p| !p.seed && p.has[piece as usize]);
            assert_eq!(
                self.picker.records[piece as usize].avail,
                holders.count() as u32
            );
        }
        for (index, download) in self.picker.downloads.iter() {
            for b in 0..self.picker.block_count(download.piece) {
                let block = self.picker.geometry.block(download.piece, b);
                let mut expected: Vec<PeerKey> = (self.peers.iter())
                    .filter(|(_, p)| p.held.contains(&block))
                    .map(|(k, _)| *k)
                    .collect();
                let mut actual = self.picker.downloads.holders(index, b);
                expected.sort();
                actual.sort();
                assert_eq!(actual, expected, "holders of {block:?}");
            }
        }
    }

    /// A seed joins and every peer keeps picking and delivering: the torrent completes.
    fn finish(&mut self) {
        self.join(true, Vec::new());
        for _ in 0..200 {
            if self.picker.is_complete() {
                return;
            }
            let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
            for &key in &keys {
                self.pick(key, 8);
            }
            for &key in &keys {
                while let Some(&block) = self.peers[&key].held.first() {
                    self.deliver(key, block, false);
                }
            }
            self.check();
        }
        panic!(
            "not complete after 200 rounds: {} missing",
            self.picker.missing_count()
        );
    }
}

fn pieces_in(bits: &[bool]) -> impl Iterator<Item = PieceIndex> + '_ {
    (0..bits.len() as u32)
        .filter(|&i| bits[i as usize])
        .map(PieceIndex)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn random_swarms_keep_the_invariants_and_complete(
        (count, piece_len, total, have) in torrent(),
        seed in any::<u64>(),
        ops in proptest::collection::vec(op(), 0..120),
    ) {
        let mut picker = Picker::new(count, piece_len, total, seed);
        for piece in pieces_in(&have[..count as usize]) {
            picker.mark_have(piece);
        }
        let mut model = Model { picker, peers: BTreeMap::new(), next_key: 1, suppliers: BTreeMap::new() };
        model.check();
        for op in &ops {
            model.apply(op);
            model.check();
        }
        model.finish();
    }
}
