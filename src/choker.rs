//! Upload choker: decides which peers of one torrent we upload to.
//!
//! Owns: the choice of who is unchoked — `upload_slots - 1` regular slots
//! ranked by rate (peers' upload to us while downloading, our upload to them
//! while seeding; snubbed peers get no regular slot while downloading), one
//! optimistic slot rotated every `optimistic_interval` with recently connected
//! peers weighted 3x, the rechoke timer and the optimistic role. Slots nobody
//! else can use are lent to the remaining interested peers, so with fewer
//! interested peers than slots every interested peer is unchoked.
//!
//! Never does: I/O, reading a clock (time comes in as [`Instant`]), sending
//! choke/unchoke messages, measuring rates, or deciding our own interest.
//! It only returns [`Decision`]s: the transitions relative to each
//! [`PeerSnapshot::choked`], which the caller applies. Peers that are not
//! interested are always choked. Work per call is O(n log n) in the peers.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// A peer connected within this many optimistic intervals counts as new.
const NEW_PEER_INTERVALS: u32 = 3;
/// Weight of a new peer in the optimistic draw (an old peer weighs 1).
const NEW_PEER_WEIGHT: u64 = 3;

/// Tuning of the choker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChokerConfig {
    /// Peers unchoked at once, the optimistic one included.
    pub upload_slots: usize,
    /// Time between regular rechoke rounds.
    pub rechoke_interval: Duration,
    /// Time an optimistic unchoke is kept before it rotates.
    pub optimistic_interval: Duration,
    /// A peer we want data from that sent no block for this long is snubbed.
    pub snub_timeout: Duration,
}

impl Default for ChokerConfig {
    fn default() -> Self {
        ChokerConfig {
            upload_slots: 4,
            rechoke_interval: Duration::from_secs(10),
            optimistic_interval: Duration::from_secs(30),
            snub_timeout: Duration::from_secs(60),
        }
    }
}

/// What the choker needs to know about one connected peer. Ids are unique.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerSnapshot {
    pub id: u32,
    /// The peer wants our data.
    pub interested: bool,
    /// We currently choke the peer.
    pub choked: bool,
    /// Its upload to us, in bytes per second.
    pub download_rate: f64,
    /// Our upload to it, in bytes per second.
    pub upload_rate: f64,
    pub connected_at: Instant,
    /// When it last sent us a block; `None` if it never did.
    pub last_block_at: Option<Instant>,
    /// We want data from the peer.
    pub we_are_interested: bool,
}

/// Transitions to apply: only peers whose choke state must change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    /// Peers currently choked that must be unchoked.
    pub unchoke: Vec<u32>,
    /// Peers currently unchoked that must be choked.
    pub choke: Vec<u32>,
}

impl Decision {
    /// True when nothing has to change.
    pub fn is_empty(&self) -> bool {
        self.unchoke.is_empty() && self.choke.is_empty()
    }

    /// The transitions that take `peers` to "exactly `target` unchoked".
    fn towards(peers: &[PeerSnapshot], target: &HashSet<u32>) -> Decision {
        let mut decision = Decision::default();
        for peer in peers {
            match (target.contains(&peer.id), peer.choked) {
                (true, true) => decision.unchoke.push(peer.id),
                (false, false) => decision.choke.push(peer.id),
                _ => {}
            }
        }
        decision
    }
}

#[derive(Debug, Clone, Copy)]
struct Optimistic {
    id: u32,
    since: Instant,
}

/// The choking state machine of one torrent.
#[derive(Debug, Clone)]
pub struct Choker {
    config: ChokerConfig,
    rng: SmallRng,
    last_rechoke: Option<Instant>,
    optimistic: Option<Optimistic>,
}

impl Choker {
    /// A choker whose random choices are fully determined by `seed`.
    pub fn new(config: ChokerConfig, seed: u64) -> Choker {
        Choker {
            config,
            rng: SmallRng::seed_from_u64(seed),
            last_rechoke: None,
            optimistic: None,
        }
    }

    pub fn config(&self) -> &ChokerConfig {
        &self.config
    }

    /// The peer holding the optimistic slot, if any.
    pub fn optimistic_peer(&self) -> Option<u32> {
        self.optimistic.map(|o| o.id)
    }

    /// When the next rechoke round is due; `None` means right away.
    pub fn next_rechoke_at(&self) -> Option<Instant> {
        self.last_rechoke
            .and_then(|last| last.checked_add(self.config.rechoke_interval))
    }

    /// True when a rechoke round is due at `now`.
    pub fn due(&self, now: Instant) -> bool {
        match self.last_rechoke {
            None => true,
            Some(last) => now.saturating_duration_since(last) >= self.config.rechoke_interval,
        }
    }

    /// A full rechoke round: picks the regular slots by rate, keeps or
    /// rotates the optimistic slot, lends spare slots and chokes the rest.
    pub fn rechoke(&mut self, now: Instant, seeding: bool, peers: &[PeerSnapshot]) -> Decision {
        self.last_rechoke = Some(now);
        let slots = self.config.upload_slots;
        if slots == 0 {
            self.optimistic = None;
            return Decision::towards(peers, &HashSet::new());
        }
        let ranked = self.rank(now, seeding, peers);
        let mut target: HashSet<u32> = ranked
            .iter()
            .take_while(|p| !self.regular_excluded(now, seeding, p))
            .take(slots - 1)
            .map(|p| p.id)
            .collect();
        self.update_optimistic(now, &ranked, &target);
        if let Some(optimistic) = self.optimistic {
            target.insert(optimistic.id);
        }
        // Spare slots go to the best of the rest, snubbed peers last.
        for peer in &ranked {
            if target.len() >= slots {
                break;
            }
            target.insert(peer.id);
        }
        Decision::towards(peers, &target)
    }

    /// `id` just became interested: unchoke it at once if a slot is free
    /// (counting interested peers we do not choke). `peers` must already
    /// show it interested. Spare slots are lent regardless of snubbing, as
    /// in [`Choker::rechoke`], so `_seeding` does not change the outcome.
    pub fn on_peer_interested(
        &mut self,
        now: Instant,
        _seeding: bool,
        peers: &[PeerSnapshot],
        id: u32,
    ) -> Decision {
        let Some(peer) = peers.iter().find(|p| p.id == id) else {
            return Decision::default();
        };
        if !peer.interested || !peer.choked {
            return Decision::default();
        }
        if free_slots(self.config.upload_slots, peers) == 0 {
            return Decision::default();
        }
        if self.optimistic.is_none() {
            self.optimistic = Some(Optimistic { id, since: now });
        }
        Decision {
            unchoke: vec![id],
            choke: Vec::new(),
        }
    }

    /// An unchoked peer left or lost interest: its slot goes at once to the best choked
    /// interested peers rather than at the next round (a seed serving a queue of leechers
    /// would otherwise idle for up to a rechoke interval each time one finishes).
    pub fn on_slot_freed(
        &mut self,
        now: Instant,
        seeding: bool,
        peers: &[PeerSnapshot],
    ) -> Decision {
        let free = free_slots(self.config.upload_slots, peers);
        let unchoke = self
            .rank(now, seeding, peers)
            .into_iter()
            .filter(|p| p.choked)
            .take(free)
            .map(|p| p.id)
            .collect();
        Decision {
            unchoke,
            choke: Vec::new(),
        }
    }

    /// `id` disconnected: its slot is free at the next decision and, if it
    /// held the optimistic slot, the next round picks a new one at once.
    pub fn on_peer_gone(&mut self, id: u32) {
        if self.optimistic.is_some_and(|o| o.id == id) {
            self.optimistic = None;
        }
    }

    /// Interested peers, best first: peers barred from regular slots last,
    /// then by rate, then already unchoked first (fast uploads keep their
    /// slots), then longest connected, then id.
    fn rank<'a>(
        &self,
        now: Instant,
        seeding: bool,
        peers: &'a [PeerSnapshot],
    ) -> Vec<&'a PeerSnapshot> {
        let mut ranked: Vec<(bool, f64, &PeerSnapshot)> = peers
            .iter()
            .filter(|p| p.interested)
            .map(|p| (self.regular_excluded(now, seeding, p), rate(seeding, p), p))
            .collect();
        ranked.sort_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| b.1.total_cmp(&a.1))
                .then_with(|| a.2.choked.cmp(&b.2.choked))
                .then_with(|| a.2.connected_at.cmp(&b.2.connected_at))
                .then_with(|| a.2.id.cmp(&b.2.id))
        });
        ranked.into_iter().map(|(_, _, p)| p).collect()
    }

    /// Snubbed peers get no regular slot while we are downloading.
    fn regular_excluded(&self, now: Instant, seeding: bool, peer: &PeerSnapshot) -> bool {
        !seeding && self.is_snubbed(now, peer)
    }

    /// We want its data and it sent no block for `snub_timeout`.
    fn is_snubbed(&self, now: Instant, peer: &PeerSnapshot) -> bool {
        let since = peer.last_block_at.unwrap_or(peer.connected_at);
        peer.we_are_interested && now.saturating_duration_since(since) >= self.config.snub_timeout
    }

    /// Keeps the optimistic peer until its interval ends (or it leaves,
    /// loses interest, or earns a regular slot); otherwise draws a new one.
    fn update_optimistic(
        &mut self,
        now: Instant,
        ranked: &[&PeerSnapshot],
        regular: &HashSet<u32>,
    ) {
        let previous = self.optimistic.take();
        if let Some(o) = previous {
            let fresh = now.saturating_duration_since(o.since) < self.config.optimistic_interval;
            if fresh && !regular.contains(&o.id) && ranked.iter().any(|p| p.id == o.id) {
                self.optimistic = Some(o);
                return;
            }
        }
        let previous_id = previous.map(|o| o.id);
        let rest: Vec<&PeerSnapshot> = ranked
            .iter()
            .copied()
            .filter(|p| !regular.contains(&p.id))
            .collect();
        let choked: Vec<&PeerSnapshot> = rest
            .iter()
            .copied()
            .filter(|p| p.choked && Some(p.id) != previous_id)
            .collect();
        let pool = if choked.is_empty() { &rest } else { &choked };
        self.optimistic = self
            .draw_weighted(now, pool)
            .map(|id| Optimistic { id, since: now });
    }

    /// A random peer of `pool`, peers connected in the last
    /// `NEW_PEER_INTERVALS` optimistic intervals weighted `NEW_PEER_WEIGHT`.
    fn draw_weighted(&mut self, now: Instant, pool: &[&PeerSnapshot]) -> Option<u32> {
        let window = self
            .config
            .optimistic_interval
            .saturating_mul(NEW_PEER_INTERVALS);
        let weight = |p: &PeerSnapshot| {
            if now.saturating_duration_since(p.connected_at) < window {
                NEW_PEER_WEIGHT
            } else {
                1
            }
        };
        let total: u64 = pool.iter().map(|p| weight(p)).sum();
        if total == 0 {
            return None;
        }
        let mut roll = self.rng.gen_range(0..total);
        for peer in pool {
            let w = weight(peer);
            if roll < w {
                return Some(peer.id);
            }
            roll -= w;
        }
        None
    }
}

/// Upload slots not held by an interested peer we do not choke.
fn free_slots(slots: usize, peers: &[PeerSnapshot]) -> usize {
    let used = peers.iter().filter(|p| p.interested && !p.choked).count();
    slots.saturating_sub(used)
}

/// The rate a peer is ranked by; NaN counts as zero.
fn rate(seeding: bool, peer: &PeerSnapshot) -> f64 {
    let r = if seeding {
        peer.upload_rate
    } else {
        peer.download_rate
    };
    if r.is_nan() {
        0.0
    } else {
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// An old, interested, choked peer that sends us nothing we want.
    fn peer(base: Instant, id: u32) -> PeerSnapshot {
        PeerSnapshot {
            id,
            interested: true,
            choked: true,
            download_rate: 0.0,
            upload_rate: 0.0,
            connected_at: base,
            last_block_at: None,
            we_are_interested: false,
        }
    }

    fn choker(slots: usize, seed: u64) -> Choker {
        let config = ChokerConfig {
            upload_slots: slots,
            ..ChokerConfig::default()
        };
        Choker::new(config, seed)
    }

    fn apply(peers: &mut [PeerSnapshot], decision: &Decision) {
        for p in peers.iter_mut() {
            if decision.unchoke.contains(&p.id) {
                p.choked = false;
            }
            if decision.choke.contains(&p.id) {
                p.choked = true;
            }
        }
    }

    fn unchoked(peers: &[PeerSnapshot]) -> Vec<u32> {
        let mut ids: Vec<u32> = peers.iter().filter(|p| !p.choked).map(|p| p.id).collect();
        ids.sort_unstable();
        ids
    }

    #[test]
    fn leeching_ranks_by_download_rate() {
        let base = Instant::now();
        let now = base + secs(1000);
        let mut peers: Vec<PeerSnapshot> = (1..=8).map(|id| peer(base, id)).collect();
        for p in &mut peers {
            p.download_rate = f64::from(p.id) * 100.0;
            p.upload_rate = f64::from(100 - p.id);
        }
        let mut c = choker(4, 1);
        let d = c.rechoke(now, false, &peers);
        apply(&mut peers, &d);
        let on = unchoked(&peers);
        assert_eq!(on.len(), 4);
        for id in [6, 7, 8] {
            assert!(on.contains(&id), "{id} missing from {on:?}");
        }
        let opt = c.optimistic_peer().unwrap();
        assert!(opt <= 5 && on.contains(&opt));
    }

    #[test]
    fn seeding_ranks_by_upload_rate() {
        let base = Instant::now();
        let now = base + secs(1000);
        let mut peers: Vec<PeerSnapshot> = (1..=8).map(|id| peer(base, id)).collect();
        for p in &mut peers {
            p.download_rate = f64::from(p.id) * 100.0;
            p.upload_rate = f64::from(100 - p.id);
        }
        let mut c = choker(4, 1);
        let d = c.rechoke(now, true, &peers);
        apply(&mut peers, &d);
        let on = unchoked(&peers);
        assert_eq!(on.len(), 4);
        for id in [1, 2, 3] {
            assert!(on.contains(&id), "{id} missing from {on:?}");
        }
    }

    #[test]
    fn equal_rates_keep_unchoked_then_longest_connected() {
        let base = Instant::now();
        let now = base + secs(1000);
        let mut peers: Vec<PeerSnapshot> = (1..=4).map(|id| peer(base, id)).collect();
        peers[0].connected_at = base + secs(50); // younger
        peers[3].choked = false; // already holds a slot
        let mut c = choker(3, 7); // two regular slots
        let d = c.rechoke(now, true, &peers);
        apply(&mut peers, &d);
        let on = unchoked(&peers);
        assert!(on.contains(&4) && on.contains(&2), "{on:?}");
    }

    #[test]
    fn snubbed_peer_loses_regular_slot_while_downloading() {
        let base = Instant::now();
        let now = base + secs(1000);
        let mut peers: Vec<PeerSnapshot> = (1..=5).map(|id| peer(base, id)).collect();
        for p in &mut peers {
            p.download_rate = f64::from(p.id) * 100.0;
            p.we_are_interested = true;
            p.last_block_at = Some(now - secs(5));
            p.choked = p.id < 2;
        }
        // Peer 5 is the fastest on record but sent nothing for 61 s.
        peers[4].last_block_at = Some(now - secs(61));
        peers[4].choked = false;
        let mut c = choker(4, 3);
        let d = c.rechoke(now, false, &peers);
        assert!(d.choke.contains(&5), "{d:?}");
        apply(&mut peers, &d);
        assert_eq!(unchoked(&peers), vec![1, 2, 3, 4]);
        // While seeding, snubbing does not matter.
        let mut c = choker(4, 3);
        for p in &mut peers {
            p.upload_rate = p.download_rate;
        }
        let d = c.rechoke(now, true, &peers);
        apply(&mut peers, &d);
        assert!(unchoked(&peers).contains(&5));
    }

    #[test]
    fn snub_measured_from_connection_when_no_block() {
        let base = Instant::now();
        let c = choker(4, 0);
        let mut p = peer(base, 1);
        p.we_are_interested = true;
        assert!(!c.is_snubbed(base + secs(59), &p));
        assert!(c.is_snubbed(base + secs(60), &p));
        p.we_are_interested = false;
        assert!(!c.is_snubbed(base + secs(600), &p));
    }

    #[test]
    fn snubbed_peers_fill_spare_slots() {
        let base = Instant::now();
        let now = base + secs(1000);
        let mut peers: Vec<PeerSnapshot> = (1..=3).map(|id| peer(base, id)).collect();
        for p in &mut peers {
            p.we_are_interested = true; // all snubbed: no block ever
        }
        let mut c = choker(4, 0);
        let d = c.rechoke(now, false, &peers);
        apply(&mut peers, &d);
        assert_eq!(unchoked(&peers), vec![1, 2, 3]);
    }

    #[test]
    fn optimistic_rotates_after_interval_not_before() {
        let base = Instant::now();
        let t0 = base + secs(1000);
        let mut peers: Vec<PeerSnapshot> = (1..=6).map(|id| peer(base, id)).collect();
        peers[0].download_rate = 1000.0;
        let mut c = choker(2, 11);
        let d = c.rechoke(t0, false, &peers);
        apply(&mut peers, &d);
        let first = c.optimistic_peer().unwrap();
        assert_eq!(unchoked(&peers), {
            let mut v = vec![1, first];
            v.sort_unstable();
            v
        });
        for t in [10, 20, 29] {
            let d = c.rechoke(t0 + secs(t), false, &peers);
            assert!(d.is_empty(), "at {t}s: {d:?}");
            assert_eq!(c.optimistic_peer(), Some(first));
        }
        let d = c.rechoke(t0 + secs(30), false, &peers);
        let second = c.optimistic_peer().unwrap();
        assert_ne!(second, first);
        assert_eq!(d.choke, vec![first]);
        assert_eq!(d.unchoke, vec![second]);
    }

    #[test]
    fn due_follows_rechoke_interval() {
        let base = Instant::now();
        let mut c = choker(4, 0);
        assert!(c.due(base));
        assert_eq!(c.next_rechoke_at(), None);
        c.rechoke(base, false, &[]);
        assert!(!c.due(base + secs(9)));
        assert!(c.due(base + secs(10)));
        assert_eq!(c.next_rechoke_at(), Some(base + secs(10)));
    }

    #[test]
    fn new_peers_favoured_for_optimistic() {
        let base = Instant::now();
        let now = base + secs(1000);
        let mut peers: Vec<PeerSnapshot> = (1..=5).map(|id| peer(base, id)).collect();
        peers[0].download_rate = 1000.0; // takes the single regular slot
        peers[4].connected_at = now - secs(60); // new: within 3 x 30 s
        let trials = 2000;
        let mut new_wins = 0;
        for seed in 0..trials {
            let mut c = choker(2, seed);
            c.rechoke(now, false, &peers);
            if c.optimistic_peer() == Some(5) {
                new_wins += 1;
            }
        }
        // Weighted: 3 / (1 + 1 + 1 + 3) = 0.5; uniform would be 0.25.
        let share = f64::from(new_wins) / trials as f64;
        assert!((0.44..0.56).contains(&share), "share {share}");
    }

    #[test]
    fn not_interested_peers_are_choked() {
        let base = Instant::now();
        let now = base + secs(1000);
        let mut peers: Vec<PeerSnapshot> = (1..=4).map(|id| peer(base, id)).collect();
        peers[0].interested = false;
        peers[0].choked = false;
        peers[0].download_rate = 1e9;
        peers[1].interested = false;
        let mut c = choker(4, 0);
        let d = c.rechoke(now, false, &peers);
        assert_eq!(d.choke, vec![1]);
        let mut unchoke = d.unchoke.clone();
        unchoke.sort_unstable();
        assert_eq!(unchoke, vec![3, 4]);
    }

    #[test]
    fn zero_slots_unchoke_nobody() {
        let base = Instant::now();
        let mut peers: Vec<PeerSnapshot> = (1..=3).map(|id| peer(base, id)).collect();
        peers[2].choked = false;
        let mut c = choker(0, 0);
        let d = c.rechoke(base, false, &peers);
        assert_eq!(d.choke, vec![3]);
        assert!(d.unchoke.is_empty());
        apply(&mut peers, &d);
        assert!(c.on_peer_interested(base, false, &peers, 1).is_empty());
    }

    #[test]
    fn one_slot_is_the_optimistic_one() {
        let base = Instant::now();
        let mut peers: Vec<PeerSnapshot> = (1..=3).map(|id| peer(base, id)).collect();
        let mut c = choker(1, 5);
        let d = c.rechoke(base + secs(1000), false, &peers);
        apply(&mut peers, &d);
        assert_eq!(unchoked(&peers), vec![c.optimistic_peer().unwrap()]);
    }

    #[test]
    fn on_peer_interested_fills_free_slot_only() {
        let base = Instant::now();
        let now = base + secs(1000);
        let mut peers: Vec<PeerSnapshot> = (1..=5).map(|id| peer(base, id)).collect();
        for p in &mut peers[1..] {
            p.interested = false;
        }
        let mut c = choker(3, 0);
        let d = c.rechoke(now, false, &peers);
        apply(&mut peers, &d);
        assert_eq!(unchoked(&peers), vec![1]);
        for id in [2, 3] {
            peers[id as usize - 1].interested = true;
            let d = c.on_peer_interested(now + secs(1), false, &peers, id);
            assert_eq!(d.unchoke, vec![id]);
            assert!(d.choke.is_empty());
            apply(&mut peers, &d);
        }
        peers[3].interested = true;
        let d = c.on_peer_interested(now + secs(2), false, &peers, 4);
        assert!(d.is_empty(), "slots full: {d:?}");
        assert_eq!(unchoked(&peers), vec![1, 2, 3]);
        // Not (yet) interested in the snapshot: nothing happens.
        assert!(c.on_peer_interested(now, false, &peers, 5).is_empty());
    }

    #[test]
    fn a_freed_slot_goes_at_once_to_the_fastest_choked_peer() {
        let base = Instant::now();
        let now = base + secs(1000);
        let mut peers: Vec<PeerSnapshot> = (1..=6).map(|id| peer(base, id)).collect();
        for p in &mut peers {
            p.upload_rate = f64::from(p.id);
        }
        let mut c = choker(2, 0);
        let d = c.rechoke(now, true, &peers);
        apply(&mut peers, &d);
        assert_eq!(unchoked(&peers).len(), 2);
        // Slots full: nothing to do.
        assert!(c.on_slot_freed(now, true, &peers).is_empty());
        // Both unchoked peers finish (not interested any more, choked by the caller).
        for p in peers.iter_mut() {
            if !p.choked {
                p.interested = false;
                p.choked = true;
            }
        }
        let best_choked: Vec<u32> = {
            let mut rest: Vec<&PeerSnapshot> = peers.iter().filter(|p| p.interested).collect();
            rest.sort_by(|a, b| b.upload_rate.total_cmp(&a.upload_rate));
            rest.iter().take(2).map(|p| p.id).collect()
        };
        let d = c.on_slot_freed(now + secs(1), true, &peers);
        assert!(d.choke.is_empty());
        let mut got = d.unchoke.clone();
        got.sort_unstable();
        let mut want = best_choked;
        want.sort_unstable();
        assert_eq!(got, want);
    }

    #[test]
    fn peer_gone_frees_its_slot() {
        let base = Instant::now();
        let now = base + secs(1000);
        let mut peers: Vec<PeerSnapshot> = (1..=2).map(|id| peer(base, id)).collect();
        peers[0].download_rate = 100.0;
        let mut c = choker(2, 0);
        let d = c.rechoke(now, false, &peers);
        apply(&mut peers, &d);
        assert_eq!(c.optimistic_peer(), Some(2));
        peers.push(peer(base, 3));
        assert!(c.on_peer_interested(now, false, &peers, 3).is_empty());
        c.on_peer_gone(2);
        peers.retain(|p| p.id != 2);
        assert_eq!(c.optimistic_peer(), None);
        let d = c.on_peer_interested(now + secs(1), false, &peers, 3);
        assert_eq!(d.unchoke, vec![3]);
    }

    #[test]
    fn gone_optimistic_replaced_before_interval() {
        let base = Instant::now();
        let now = base + secs(1000);
        let mut peers: Vec<PeerSnapshot> = (1..=4).map(|id| peer(base, id)).collect();
        peers[0].download_rate = 100.0;
        let mut c = choker(2, 9);
        let d = c.rechoke(now, false, &peers);
        apply(&mut peers, &d);
        let opt = c.optimistic_peer().unwrap();
        c.on_peer_gone(opt);
        peers.retain(|p| p.id != opt);
        let d = c.rechoke(now + secs(10), false, &peers);
        assert!(d.choke.is_empty());
        assert_eq!(d.unchoke.len(), 1);
        assert_eq!(c.optimistic_peer(), Some(d.unchoke[0]));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Rechoke { dt: u64, seeding: bool },
        Interested { idx: usize, dt: u64 },
        Gone { idx: usize },
        Flip { idx: usize },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u64..40, any::<bool>()).prop_map(|(dt, seeding)| Op::Rechoke { dt, seeding }),
            (0usize..32, 0u64..40).prop_map(|(idx, dt)| Op::Interested { idx, dt }),
            (0usize..32).prop_map(|idx| Op::Gone { idx }),
            (0usize..32).prop_map(|idx| Op::Flip { idx }),
        ]
    }

    type PeerSpec = (bool, bool, u8, u8, u64, Option<u64>, bool);

    fn peer_spec() -> impl Strategy<Value = PeerSpec> {
        (
            any::<bool>(),
            any::<bool>(),
            any::<u8>(),
            any::<u8>(),
            0u64..400,
            proptest::option::of(0u64..400),
            any::<bool>(),
        )
    }

    fn build(base: Instant, specs: &[PeerSpec]) -> Vec<PeerSnapshot> {
        let specs = specs.iter().enumerate();
        specs
            .map(
                |(i, &(interested, choked, down, up, conn, block, weint))| PeerSnapshot {
                    id: i as u32,
                    interested,
                    choked,
                    download_rate: f64::from(down),
                    upload_rate: f64::from(up),
                    connected_at: base + secs(conn),
                    last_block_at: block.map(|b| base + secs(b)),
                    we_are_interested: weint,
                },
            )
            .collect()
    }

    fn check_transitions(peers: &[PeerSnapshot], d: &Decision) {
        let mut seen = HashSet::new();
        for id in d.unchoke.iter().chain(&d.choke) {
            assert!(seen.insert(*id), "duplicate {id} in {d:?}");
            let p = peers.iter().find(|p| p.id == *id).expect("unknown id");
            assert_eq!(p.choked, d.unchoke.contains(id), "not a transition: {id}");
        }
    }

    fn interested_unchoked(peers: &[PeerSnapshot]) -> usize {
        peers.iter().filter(|p| p.interested && !p.choked).count()
    }

    /// Applies `op`'s event to `peers` and returns the choker's answer.
    fn step(c: &mut Choker, peers: &mut Vec<PeerSnapshot>, now: &mut Instant, op: &Op) -> Decision {
        match *op {
            Op::Rechoke { dt, seeding } => {
                *now += secs(dt);
                c.rechoke(*now, seeding, peers)
            }
            Op::Interested { idx, dt } if idx < peers.len() => {
                *now += secs(dt);
                peers[idx].interested = true;
                let id = peers[idx].id;
                c.on_peer_interested(*now, false, peers, id)
            }
            Op::Gone { idx } if idx < peers.len() => {
                c.on_peer_gone(peers.remove(idx).id);
                Decision::default()
            }
            Op::Flip { idx } if idx < peers.len() => {
                peers[idx].interested = !peers[idx].interested;
                Decision::default()
            }
            _ => Decision::default(),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn decisions_respect_slots(
            specs in proptest::collection::vec(peer_spec(), 0..24),
            ops in proptest::collection::vec(op(), 1..30),
            slots in 0usize..7,
            seed in any::<u64>(),
        ) {
            let base = Instant::now();
            let mut peers = build(base, &specs);
            let mut c = choker(slots, seed);
            let mut now = base + secs(100);
            for op in ops {
                let d = step(&mut c, &mut peers, &mut now, &op);
                check_transitions(&peers, &d);
                // Interest changes happen before the choker is consulted.
                let before = interested_unchoked(&peers);
                apply(&mut peers, &d);
                let after = interested_unchoked(&peers);
                prop_assert!(after <= slots.max(before));
                if let Op::Rechoke { .. } = op {
                    let interested = peers.iter().filter(|p| p.interested).count();
                    prop_assert_eq!(after, slots.min(interested));
                    prop_assert!(peers.iter().all(|p| p.interested || p.choked));
                }
            }
        }
    }
}
