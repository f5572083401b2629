//! What a DHT node holds for others: the tokens that admit an `announce_peer` (a hash of
//! the asker's IP and a secret that changes every five minutes, the previous secret still
//! accepted, so only a node that asked us recently from that address can announce), and the
//! peers announced to us, per info-hash, bounded and forgotten after 30 minutes. Pure: the
//! caller passes the time.

use crate::types::InfoHash;
use sha1::{Digest, Sha1};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// How often the token secret changes.
const SECRET_LIFETIME: Duration = Duration::from_secs(300);
/// How long an announced peer is kept without announcing again.
const PEER_LIFETIME: Duration = Duration::from_secs(30 * 60);
/// Info-hashes we hold peers for, at most.
const MAX_TORRENTS: usize = 2000;
/// Peers per info-hash, at most.
const MAX_PEERS_PER_TORRENT: usize = 200;
/// Peers handed out in one answer (a KRPC datagram must stay small).
pub const PEERS_PER_ANSWER: usize = 50;

pub struct Tokens {
    current: [u8; 16],
    previous: [u8; 16],
    rotated_at: Instant,
}

impl Tokens {
    pub fn new(now: Instant) -> Tokens {
        Tokens {
            current: rand::random(),
            previous: rand::random(),
            rotated_at: now,
        }
    }

    fn rotate_if_due(&mut self, now: Instant) {
        if now.duration_since(self.rotated_at) >= SECRET_LIFETIME {
            self.previous = self.current;
            self.current = rand::random();
            self.rotated_at = now;
        }
    }

    fn token_with(secret: &[u8; 16], ip: IpAddr) -> Vec<u8> {
        let mut h = Sha1::new();
        h.update(secret);
        match ip {
            IpAddr::V4(ip) => h.update(ip.octets()),
            IpAddr::V6(ip) => h.update(ip.octets()),
        }
        h.finalize()[..8].to_vec()
    }

    /// The token to give a node at `ip`.
    pub fn issue(&mut self, ip: IpAddr, now: Instant) -> Vec<u8> {
        self.rotate_if_due(now);
        Tokens::token_with(&self.current, ip)
    }

    /// Whether `token` is one we gave `ip` within the last two secrets' lifetimes.
    pub fn accepts(&mut self, ip: IpAddr, token: &[u8], now: Instant) -> bool {
        self.rotate_if_due(now);
        token == Tokens::token_with(&self.current, ip)
            || token == Tokens::token_with(&self.previous, ip)
    }
}

#[derive(Default)]
pub struct PeerStore {
    torrents: HashMap<InfoHash, Vec<(SocketAddr, Instant)>>,
}

impl PeerStore {
    /// Records `peer` for `info_hash`; refused (false) when the store is full.
    pub fn add(&mut self, info_hash: InfoHash, peer: SocketAddr, now: Instant) -> bool {
        if !self.torrents.contains_key(&info_hash) && self.torrents.len() >= MAX_TORRENTS {
            self.expire(now);
            if self.torrents.len() >= MAX_TORRENTS {
                return false;
            }
        }
        let peers = self.torrents.entry(info_hash).or_default();
        peers.retain(|(_, at)| now.duration_since(*at) < PEER_LIFETIME);
        if let Some(p) = peers.iter_mut().find(|(a, _)| *a == peer) {
            p.1 = now;
            return true;
        }
        if peers.len() >= MAX_PEERS_PER_TORRENT {
            // The oldest announce gives way.
            let oldest = (0..peers.len())
                .min_by_key(|&i| peers[i].1)
                .expect("not empty");
            peers.swap_remove(oldest);
        }
        peers.push((peer, now));
        true
    }

    /// Up to `PEERS_PER_ANSWER` live peers for `info_hash`, the most recent first.
    pub fn peers(&self, info_hash: &InfoHash, now: Instant) -> Vec<SocketAddr> {
        let Some(peers) = self.torrents.get(info_hash) else {
            return Vec::new();
        };
        let mut live: Vec<_> = peers
            .iter()
            .filter(|(_, at)| now.duration_since(*at) < PEER_LIFETIME)
            .collect();
        live.sort_by_key(|(_, at)| std::cmp::Reverse(*at));
        live.into_iter()
            .take(PEERS_PER_ANSWER)
            .map(|(a, _)| *a)
            .collect()
    }

    fn expire(&mut self, now: Instant) {
        self.torrents.retain(|_, peers| {
            peers.retain(|(_, at)| now.duration_since(*at) < PEER_LIFETIME);
            !peers.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn tokens_are_per_address_and_live_for_two_secrets() {
        let t0 = Instant::now();
        let mut tokens = Tokens::new(t0);
        let a = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        let b = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
        let tok = tokens.issue(a, t0);
        assert!(tokens.accepts(a, &tok, t0));
        assert!(!tokens.accepts(b, &tok, t0), "another address");
        assert!(!tokens.accepts(a, b"forged", t0));
        let v6 = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
        assert!(
            !tokens.accepts(v6, &tok, t0),
            "not the IPv4 address's token"
        );
        let v6_tok = tokens.issue(IpAddr::V6(Ipv6Addr::LOCALHOST), t0);
        assert!(tokens.accepts(IpAddr::V6(Ipv6Addr::LOCALHOST), &v6_tok, t0));
        let later = t0 + SECRET_LIFETIME;
        assert!(tokens.accepts(a, &tok, later), "one rotation later");
        let much_later = later + SECRET_LIFETIME;
        assert!(!tokens.accepts(a, &tok, much_later), "two rotations later");
    }

    #[test]
    fn peers_are_bounded_refreshed_and_expire() {
        let t0 = Instant::now();
        let mut store = PeerStore::default();
        let h = InfoHash([7; 20]);
        for i in 0..(MAX_PEERS_PER_TORRENT as u16 + 10) {
            let at = t0 + Duration::from_millis(u64::from(i));
            assert!(store.add(h, SocketAddr::from((Ipv4Addr::LOCALHOST, 1000 + i)), at));
        }
        let now = t0 + Duration::from_secs(1);
        let got = store.peers(&h, now);
        assert_eq!(got.len(), PEERS_PER_ANSWER);
        assert_eq!(
            got[0].port(),
            1000 + MAX_PEERS_PER_TORRENT as u16 + 9,
            "newest first"
        );
        assert_eq!(store.torrents[&h].len(), MAX_PEERS_PER_TORRENT);
        assert!(store
            .peers(&h, t0 + PEER_LIFETIME + Duration::from_secs(1))
            .is_empty());
        assert!(store.peers(&InfoHash([8; 20]), now).is_empty());
    }

    #[test]
    fn the_number_of_torrents_is_capped() {
        let t0 = Instant::now();
        let mut store = PeerStore::default();
        let peer = SocketAddr::from((Ipv4Addr::LOCALHOST, 1));
        for i in 0..MAX_TORRENTS as u32 {
            let mut h = [0u8; 20];
            h[..4].copy_from_slice(&i.to_be_bytes());
            assert!(store.add(InfoHash(h), peer, t0));
        }
        assert!(!store.add(InfoHash([0xff; 20]), peer, t0));
        // Once the old ones expire there is room again.
        assert!(store.add(InfoHash([0xff; 20]), peer, t0 + PEER_LIFETIME));
    }
}
