//! The pure core of the built-in tracker (`spate tracker`): the swarm table (`TrackerState`)
//! with announce, scrape and expiry. Its neighbours in this folder turn bytes into requests
//! and replies into bytes: `http_query` (announce/scrape query strings and bencoded bodies),
//! `udp_packets` (BEP 15 requests and replies), `connection_id` (stateless UDP connection
//! ids) and `whitelist` (the operator's list of allowed torrents). Every table is bounded by
//! a named cap. No sockets, no clocks: `tracker_server` owns those.

mod connection_id;
mod http_query;
mod udp_packets;
mod whitelist;

pub use connection_id::{udp_connection_id, udp_connection_id_valid};
pub use http_query::{
    encode_announce_reply, encode_failure, encode_scrape, parse_announce_query, parse_scrape_query,
    query_wants_compact,
};
pub use udp_packets::{
    decode_udp_request, encode_udp_announce_reply, encode_udp_connect_reply, encode_udp_error,
    encode_udp_scrape_reply, UdpRequest,
};
pub use whitelist::{parse_whitelist, WhitelistError, MAX_WHITELIST_LEN};

use super::response::ScrapeEntry;
use super::udp::MAX_SCRAPE_HASHES;
use super::Event;
use crate::types::{InfoHash, PeerId};
use rand::rngs::StdRng;
use rand::seq::{IteratorRandom, SliceRandom};
use rand::SeedableRng;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Default cap on torrents tracked at once; announces for new torrents beyond it fail.
pub const DEFAULT_MAX_TORRENTS: usize = 100_000;
/// Default cap on peers kept per torrent; new peers beyond it get peers but are not stored.
pub const DEFAULT_MAX_PEERS_PER_TORRENT: usize = 10_000;
/// Longest query string the parsers look at; longer ones are refused.
pub const MAX_QUERY_LEN: usize = 8 * 1024;
/// Most info-hashes in one HTTP scrape, the same as one UDP scrape.
pub const MAX_HTTP_SCRAPE_HASHES: usize = MAX_SCRAPE_HASHES;
/// Longest message put into a UDP error packet, in bytes.
pub const MAX_UDP_ERROR_LEN: usize = 512;

/// How the tracker behaves; all maps are bounded by these caps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Seconds between announces we ask clients for; peers silent for two intervals expire.
    pub interval: u32,
    /// Cap on the torrent table.
    pub max_torrents: usize,
    /// Cap on each torrent's peer table.
    pub max_peers_per_torrent: usize,
    /// Peers returned when the client does not say how many it wants.
    pub numwant_default: u32,
    /// Most peers returned in one reply, whatever the client asks.
    pub numwant_max: u32,
    /// If set, only these torrents are tracked (the set is the operator's, so bounded by them).
    pub whitelist: Option<HashSet<InfoHash>>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            interval: 60,
            max_torrents: DEFAULT_MAX_TORRENTS,
            max_peers_per_torrent: DEFAULT_MAX_PEERS_PER_TORRENT,
            numwant_default: 50,
            numwant_max: 200,
            whitelist: None,
        }
    }
}

/// One announce as the tracker sees it, whether it came over HTTP or UDP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAnnounce {
    pub info_hash: InfoHash,
    pub peer_id: PeerId,
    /// The connection's source address with the port the client announced.
    pub addr: SocketAddr,
    pub left: u64,
    pub event: Event,
    pub numwant: Option<u32>,
}

/// A peer handed out in a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerPeer {
    pub peer_id: PeerId,
    pub addr: SocketAddr,
}

/// What an announce gets back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerReply {
    pub interval: u32,
    /// Seeds.
    pub complete: u32,
    /// Leechers.
    pub incomplete: u32,
    pub peers: Vec<ServerPeer>,
}

#[derive(Debug, Clone)]
struct PeerEntry {
    peer_id: PeerId,
    seed: bool,
    last_seen: Instant,
}

/// One torrent: its peers by address (so an announce can only touch its own entry) and how
/// many times it was completed.
#[derive(Debug, Default)]
struct Swarm {
    /// Bounded by `ServerConfig::max_peers_per_torrent`.
    peers: HashMap<SocketAddr, PeerEntry>,
    downloaded: u64,
}

impl Swarm {
    /// (seeds, leechers).
    fn counts(&self) -> (u32, u32) {
        let seeds = self.peers.values().filter(|p| p.seed).count();
        (to_u32(seeds), to_u32(self.peers.len() - seeds))
    }

    /// Records the announce. A completed event counts once per download: only when the peer
    /// was not already known as a seed. A new peer is not stored when the swarm is full.
    fn upsert(&mut self, now: Instant, a: &ServerAnnounce, max_peers: usize) {
        let was_seed = self.peers.get(&a.addr).is_some_and(|p| p.seed);
        if a.event == Event::Completed && !was_seed {
            self.downloaded = self.downloaded.saturating_add(1);
        }
        if !self.peers.contains_key(&a.addr) && self.peers.len() >= max_peers {
            return;
        }
        let entry = PeerEntry {
            peer_id: a.peer_id,
            seed: a.left == 0,
            last_seen: now,
        };
        self.peers.insert(a.addr, entry);
    }

    /// Up to `want` random peers other than the asker; seeds get no seeds.
    fn sample(&self, a: &ServerAnnounce, want: usize, rng: &mut StdRng) -> Vec<ServerPeer> {
        let asker_is_seed = a.left == 0;
        let mut peers = self
            .peers
            .iter()
            .filter(|(addr, p)| **addr != a.addr && p.peer_id != a.peer_id)
            .filter(|(_, p)| !(asker_is_seed && p.seed))
            .map(|(addr, p)| ServerPeer {
                peer_id: p.peer_id,
                addr: *addr,
            })
            .choose_multiple(rng, want);
        peers.shuffle(rng);
        peers
    }
}

/// The tracker's memory: every torrent and its peers.
#[derive(Debug)]
pub struct TrackerState {
    config: ServerConfig,
    /// Bounded by `ServerConfig::max_torrents`.
    torrents: HashMap<InfoHash, Swarm>,
    rng: StdRng,
}

impl TrackerState {
    pub fn new(config: ServerConfig) -> Self {
        Self::with_rng(config, StdRng::from_entropy())
    }

    /// Like `new`, with a fixed seed for the peer sampling (tests, reproducible runs).
    pub fn with_seed(config: ServerConfig, seed: u64) -> Self {
        Self::with_rng(config, StdRng::seed_from_u64(seed))
    }

    fn with_rng(config: ServerConfig, rng: StdRng) -> Self {
        TrackerState {
            config,
            torrents: HashMap::new(),
            rng,
        }
    }

    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Torrents currently tracked.
    pub fn torrent_count(&self) -> usize {
        self.torrents.len()
    }

    /// Peers currently stored, over all torrents.
    pub fn peer_count(&self) -> usize {
        self.torrents.values().map(|s| s.peers.len()).sum()
    }

    /// Handles one announce. The error is a failure reason to send back to the client.
    pub fn announce(&mut self, now: Instant, a: ServerAnnounce) -> Result<ServerReply, String> {
        if let Some(list) = &self.config.whitelist {
            if !list.contains(&a.info_hash) {
                return Err("torrent is not allowed on this tracker".into());
            }
        }
        if a.addr.port() == 0 {
            return Err("invalid port 0".into());
        }
        let interval = self.config.interval;
        if a.event == Event::Stopped {
            let swarm = self.torrents.get_mut(&a.info_hash);
            let (complete, incomplete) = swarm.map_or((0, 0), |s| {
                s.peers.remove(&a.addr);
                s.counts()
            });
            let peers = Vec::new();
            return Ok(ServerReply {
                interval,
                complete,
                incomplete,
                peers,
            });
        }
        let known = self.torrents.contains_key(&a.info_hash);
        if !known && self.torrents.len() >= self.config.max_torrents {
            return Err("tracker is full: too many torrents".into());
        }
        let want = a
            .numwant
            .unwrap_or(self.config.numwant_default)
            .min(self.config.numwant_max);
        let swarm = self.torrents.entry(a.info_hash).or_default();
        swarm.upsert(now, &a, self.config.max_peers_per_torrent);
        let peers = swarm.sample(&a, usize::try_from(want).unwrap_or(0), &mut self.rng);
        let (complete, incomplete) = swarm.counts();
        Ok(ServerReply {
            interval,
            complete,
            incomplete,
            peers,
        })
    }

    /// Drops peers not seen for two intervals, then torrents left without peers.
    pub fn expire(&mut self, now: Instant) {
        let timeout = Duration::from_secs(2 * u64::from(self.config.interval));
        for swarm in self.torrents.values_mut() {
            swarm
                .peers
                .retain(|_, p| now.saturating_duration_since(p.last_seen) <= timeout);
        }
        self.torrents.retain(|_, s| !s.peers.is_empty());
    }

    /// Numbers for each requested torrent, in request order; unknown torrents are all zero.
    pub fn scrape(&self, hashes: &[InfoHash]) -> Vec<ScrapeEntry> {
        hashes
            .iter()
            .map(|h| {
                let swarm = self.torrents.get(h);
                let (complete, incomplete) = swarm.map_or((0, 0), Swarm::counts);
                let downloaded = swarm.map_or(0, |s| s.downloaded);
                ScrapeEntry {
                    info_hash: *h,
                    complete,
                    downloaded: u32::try_from(downloaded).unwrap_or(u32::MAX),
                    incomplete,
                }
            })
            .collect()
    }
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod fixtures {
    use super::*;

    pub(super) fn hash(n: u8) -> InfoHash {
        InfoHash([n; 20])
    }

    pub(super) fn pid(n: u8) -> PeerId {
        PeerId([n; 20])
    }

    pub(super) fn ann(h: u8, peer: u8, left: u64, event: Event) -> ServerAnnounce {
        ServerAnnounce {
            info_hash: hash(h),
            peer_id: pid(peer),
            addr: SocketAddr::new([10, 0, 0, peer].into(), 6881),
            left,
            event,
            numwant: None,
        }
    }

    pub(super) fn state() -> TrackerState {
        TrackerState::with_seed(ServerConfig::default(), 7)
    }

    pub(super) fn reply_with_peers() -> ServerReply {
        ServerReply {
            interval: 60,
            complete: 2,
            incomplete: 3,
            peers: vec![
                ServerPeer {
                    peer_id: pid(1),
                    addr: "10.0.0.1:6881".parse().unwrap(),
                },
                ServerPeer {
                    peer_id: pid(2),
                    addr: "[2001:db8::2]:51413".parse().unwrap(),
                },
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

    #[test]
    fn announce_counts_seeds_and_leechers_and_excludes_asker() {
        let mut s = state();
        let t = Instant::now();
        let r = s.announce(t, ann(1, 1, 100, Event::Started)).unwrap();
        assert_eq!((r.complete, r.incomplete, r.peers.len()), (0, 1, 0));
        assert_eq!(r.interval, 60);
        s.announce(t, ann(1, 2, 0, Event::Started)).unwrap();
        let r = s.announce(t, ann(1, 3, 50, Event::None)).unwrap();
        assert_eq!((r.complete, r.incomplete), (1, 2));
        let mut got: Vec<u8> = r.peers.iter().map(|p| p.peer_id.0[0]).collect();
        got.sort();
        assert_eq!(got, vec![1, 2]);
        // A seed is not sent other seeds.
        let r = s.announce(t, ann(1, 4, 0, Event::None)).unwrap();
        assert!(r.peers.iter().all(|p| p.peer_id != pid(2)));
        assert_eq!(r.peers.len(), 2);
    }

    #[test]
    fn stopped_removes_the_peer() {
        let mut s = state();
        let t = Instant::now();
        s.announce(t, ann(1, 1, 10, Event::Started)).unwrap();
        s.announce(t, ann(1, 2, 10, Event::Started)).unwrap();
        let r = s.announce(t, ann(1, 1, 10, Event::Stopped)).unwrap();
        assert_eq!((r.incomplete, r.peers.len()), (1, 0));
        let r = s.announce(t, ann(1, 3, 10, Event::None)).unwrap();
        assert_eq!(r.peers.len(), 1);
        assert_eq!(r.peers[0].peer_id, pid(2));
        // Stopping on an unknown torrent creates nothing.
        s.announce(t, ann(9, 1, 10, Event::Stopped)).unwrap();
        assert_eq!(s.torrent_count(), 1);
    }

    #[test]
    fn numwant_is_honoured_and_capped() {
        let cfg = ServerConfig {
            numwant_default: 3,
            numwant_max: 5,
            ..ServerConfig::default()
        };
        let mut s = TrackerState::with_seed(cfg, 1);
        let t = Instant::now();
        for p in 1..=20 {
            s.announce(t, ann(1, p, 10, Event::None)).unwrap();
        }
        let mut a = ann(1, 100, 10, Event::None);
        assert_eq!(s.announce(t, a.clone()).unwrap().peers.len(), 3);
        a.numwant = Some(2);
        assert_eq!(s.announce(t, a.clone()).unwrap().peers.len(), 2);
        a.numwant = Some(1000);
        assert_eq!(s.announce(t, a.clone()).unwrap().peers.len(), 5);
        a.numwant = Some(0);
        assert!(s.announce(t, a).unwrap().peers.is_empty());
    }

    #[test]
    fn whitelist_and_caps_refuse() {
        let cfg = ServerConfig {
            whitelist: Some([hash(1), hash(2)].into_iter().collect()),
            max_torrents: 1,
            max_peers_per_torrent: 2,
            ..ServerConfig::default()
        };
        let mut s = TrackerState::with_seed(cfg, 1);
        let t = Instant::now();
        let err = s.announce(t, ann(3, 1, 10, Event::None)).unwrap_err();
        assert!(err.contains("not allowed"));
        s.announce(t, ann(1, 1, 10, Event::None)).unwrap();
        let err = s.announce(t, ann(2, 1, 10, Event::None)).unwrap_err();
        assert!(err.contains("full"));
        s.announce(t, ann(1, 2, 10, Event::None)).unwrap();
        let r = s.announce(t, ann(1, 3, 10, Event::None)).unwrap();
        assert_eq!(r.peers.len(), 2, "a peer over the cap still gets peers");
        assert_eq!(s.peer_count(), 2, "but is not stored");
    }

    #[test]
    fn expiry_drops_silent_peers_and_empty_torrents() {
        let mut s = state();
        let t = Instant::now();
        s.announce(t, ann(1, 1, 10, Event::None)).unwrap();
        s.announce(t + Duration::from_secs(100), ann(2, 2, 10, Event::None))
            .unwrap();
        s.expire(t + Duration::from_secs(120));
        assert_eq!((s.torrent_count(), s.peer_count()), (2, 2));
        s.expire(t + Duration::from_secs(121));
        assert_eq!((s.torrent_count(), s.peer_count()), (1, 1));
        assert_eq!(s.scrape(&[hash(1)])[0].incomplete, 0);
    }

    #[test]
    fn scrape_counts_completed_once() {
        let mut s = state();
        let t = Instant::now();
        s.announce(t, ann(1, 1, 10, Event::Started)).unwrap();
        s.announce(t, ann(1, 1, 0, Event::Completed)).unwrap();
        s.announce(t, ann(1, 1, 0, Event::Completed)).unwrap();
        s.announce(t, ann(1, 2, 5, Event::None)).unwrap();
        let got = s.scrape(&[hash(1), hash(9)]);
        let want = vec![
            ScrapeEntry {
                info_hash: hash(1),
                complete: 1,
                downloaded: 1,
                incomplete: 1,
            },
            ScrapeEntry {
                info_hash: hash(9),
                complete: 0,
                downloaded: 0,
                incomplete: 0,
            },
        ];
        assert_eq!(got, want);
    }
}
