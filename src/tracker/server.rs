//! The pure core of the built-in tracker (`spate tracker`): the swarm table (`TrackerState`)
//! with announce, scrape and expiry; parsing HTTP announce/scrape queries; encoding the HTTP
//! bodies; decoding UDP requests and encoding UDP replies (BEP 15); and stateless UDP
//! connection ids. Every table is bounded by a named cap. No sockets, no clocks.

use super::response::ScrapeEntry;
use super::udp::{
    concat, Reader, ACTION_ANNOUNCE, ACTION_CONNECT, ACTION_ERROR, ACTION_SCRAPE,
    ANNOUNCE_REPLY_HEADER_LEN, MAX_SCRAPE_HASHES, PROTOCOL_ID, REPLY_HEADER_LEN, SCRAPE_ENTRY_LEN,
};
use super::{Event, TrackerError};
use crate::types::{InfoHash, PeerId};
use rand::rngs::StdRng;
use rand::seq::{IteratorRandom, SliceRandom};
use rand::SeedableRng;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
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

// ---------------------------------------------------------------------------------------
// HTTP queries

/// Parses an HTTP announce query (the part after '?'). `info_hash` and `peer_id` are
/// percent-decoded and must be exactly 20 bytes; `port` and `left` are required. The peer's
/// address is `remote` (IPv4-mapped IPv6 turned into IPv4): an `ip` parameter is ignored,
/// so nobody can announce someone else. The error is a failure reason for the client.
pub fn parse_announce_query(query: &str, remote: IpAddr) -> Result<ServerAnnounce, String> {
    let params = query_params(query)?;
    let info_hash = InfoHash(param_20(&params, "info_hash")?);
    let peer_id = PeerId(param_20(&params, "peer_id")?);
    let port: u16 = param_number(&params, "port")?.ok_or("missing port")?;
    if port == 0 {
        return Err("invalid port 0".into());
    }
    let left: u64 = param_number(&params, "left")?.ok_or("missing left")?;
    let event = param(&params, "event").map_or(Event::None, Event::from_http);
    // A bad numwant (say, -1) is not worth refusing the announce: use the default.
    let numwant = param_number::<u32>(&params, "numwant").ok().flatten();
    Ok(ServerAnnounce {
        info_hash,
        peer_id,
        addr: SocketAddr::new(remote.to_canonical(), port),
        left,
        event,
        numwant,
    })
}

/// Parses an HTTP scrape query: one to `MAX_HTTP_SCRAPE_HASHES` `info_hash` parameters of
/// 20 bytes each. A scrape of everything (no `info_hash`) is not offered.
pub fn parse_scrape_query(query: &str) -> Result<Vec<InfoHash>, String> {
    let params = query_params(query)?;
    let mut hashes = Vec::new();
    for (key, value) in &params {
        if key.as_slice() != b"info_hash" {
            continue;
        }
        let hash = <[u8; 20]>::try_from(value.as_slice())
            .map_err(|_| "info_hash must be 20 bytes".to_string())?;
        hashes.push(InfoHash(hash));
    }
    if hashes.is_empty() {
        return Err("missing info_hash: scraping everything is not supported".into());
    }
    if hashes.len() > MAX_HTTP_SCRAPE_HASHES {
        return Err(format!(
            "too many info_hash, at most {MAX_HTTP_SCRAPE_HASHES}"
        ));
    }
    Ok(hashes)
}

/// Whether the client accepts compact peers: yes unless it says `compact=0`.
pub fn query_wants_compact(query: &str) -> bool {
    let params = query_params(query).unwrap_or_default();
    param(&params, "compact") != Some(b"0".as_slice())
}

type Params = Vec<(Vec<u8>, Vec<u8>)>;

/// Splits and percent-decodes `k=v&k=v`. '+' stays '+', as in the binary values clients send.
fn query_params(query: &str) -> Result<Params, String> {
    if query.len() > MAX_QUERY_LEN {
        return Err(format!("query longer than {MAX_QUERY_LEN} bytes"));
    }
    let mut out = Vec::new();
    for part in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = part.split_once('=').unwrap_or((part, ""));
        let key = percent_decode(key).ok_or("invalid percent-encoding in a parameter name")?;
        let value = percent_decode(value).ok_or_else(|| {
            let name = String::from_utf8_lossy(&key);
            format!("invalid percent-encoding in {name}")
        })?;
        out.push((key, value));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hi = hex_digit(*bytes.get(i + 1)?)?;
            let lo = hex_digit(*bytes.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Some(out)
}

fn hex_digit(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// The first value of parameter `name`.
fn param<'a>(params: &'a Params, name: &str) -> Option<&'a [u8]> {
    params
        .iter()
        .find(|(k, _)| k.as_slice() == name.as_bytes())
        .map(|(_, v)| v.as_slice())
}

fn param_20(params: &Params, name: &str) -> Result<[u8; 20], String> {
    let value = param(params, name).ok_or_else(|| format!("missing {name}"))?;
    <[u8; 20]>::try_from(value).map_err(|_| format!("{name} must be 20 bytes"))
}

/// A decimal parameter: `Ok(None)` when absent, an error when present but not a number.
fn param_number<T: FromStr>(params: &Params, name: &str) -> Result<Option<T>, String> {
    let Some(value) = param(params, name) else {
        return Ok(None);
    };
    let parsed = std::str::from_utf8(value).ok().and_then(|s| s.parse().ok());
    parsed.map(Some).ok_or_else(|| format!("invalid {name}"))
}

// ---------------------------------------------------------------------------------------
// HTTP bodies (bencode, keys in sorted order)

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(bytes.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(bytes);
}

fn put_int(out: &mut Vec<u8>, n: u64) {
    out.push(b'i');
    out.extend_from_slice(n.to_string().as_bytes());
    out.push(b'e');
}

/// Appends `addr` in compact form: 4 or 16 address bytes, then the port, big-endian.
fn put_compact(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => out.extend_from_slice(&ip.octets()),
        IpAddr::V6(ip) => out.extend_from_slice(&ip.octets()),
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

/// The bencoded announce reply. Compact: IPv4 peers in `peers`, IPv6 peers in `peers6`
/// (BEP 7, 23); otherwise `peers` is a list of `{ip, peer id, port}` dictionaries.
pub fn encode_announce_reply(reply: &ServerReply, compact: bool) -> Vec<u8> {
    let mut out = b"d".to_vec();
    put_bytes(&mut out, b"complete");
    put_int(&mut out, reply.complete.into());
    put_bytes(&mut out, b"incomplete");
    put_int(&mut out, reply.incomplete.into());
    put_bytes(&mut out, b"interval");
    put_int(&mut out, reply.interval.into());
    put_bytes(&mut out, b"peers");
    if compact {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for p in &reply.peers {
            put_compact(if p.addr.is_ipv4() { &mut v4 } else { &mut v6 }, p.addr);
        }
        put_bytes(&mut out, &v4);
        if !v6.is_empty() {
            put_bytes(&mut out, b"peers6");
            put_bytes(&mut out, &v6);
        }
    } else {
        out.push(b'l');
        for p in &reply.peers {
            out.push(b'd');
            put_bytes(&mut out, b"ip");
            put_bytes(&mut out, p.addr.ip().to_string().as_bytes());
            put_bytes(&mut out, b"peer id");
            put_bytes(&mut out, &p.peer_id.0);
            put_bytes(&mut out, b"port");
            put_int(&mut out, p.addr.port().into());
            out.push(b'e');
        }
        out.push(b'e');
    }
    out.push(b'e');
    out
}

/// The bencoded failure reply: `{"failure reason": reason}`.
pub fn encode_failure(reason: &str) -> Vec<u8> {
    let mut out = b"d".to_vec();
    put_bytes(&mut out, b"failure reason");
    put_bytes(&mut out, reason.as_bytes());
    out.push(b'e');
    out
}

/// The bencoded scrape reply: `files` maps each info-hash to its three numbers. Sorted by
/// info-hash as bencode requires; a hash listed twice appears once.
pub fn encode_scrape(entries: &[ScrapeEntry]) -> Vec<u8> {
    let mut sorted = entries.to_vec();
    sorted.sort_by_key(|e| e.info_hash);
    sorted.dedup_by_key(|e| e.info_hash);
    let mut out = b"d".to_vec();
    put_bytes(&mut out, b"files");
    out.push(b'd');
    for e in &sorted {
        put_bytes(&mut out, &e.info_hash.0);
        out.push(b'd');
        put_bytes(&mut out, b"complete");
        put_int(&mut out, e.complete.into());
        put_bytes(&mut out, b"downloaded");
        put_int(&mut out, e.downloaded.into());
        put_bytes(&mut out, b"incomplete");
        put_int(&mut out, e.incomplete.into());
        out.push(b'e');
    }
    out.extend_from_slice(b"ee");
    out
}

// ---------------------------------------------------------------------------------------
// UDP (BEP 15), server side

/// A decoded UDP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UdpRequest {
    Connect {
        tid: u32,
    },
    Announce {
        conn_id: u64,
        tid: u32,
        info_hash: InfoHash,
        peer_id: PeerId,
        downloaded: u64,
        left: u64,
        uploaded: u64,
        event: Event,
        key: u32,
        /// `None` when the client sent a negative number ("tracker's choice").
        numwant: Option<u32>,
        port: u16,
    },
    Scrape {
        conn_id: u64,
        tid: u32,
        /// 1 to `MAX_SCRAPE_HASHES`.
        hashes: Vec<InfoHash>,
    },
}

impl UdpRequest {
    /// The transaction id to echo in the reply.
    pub fn tid(&self) -> u32 {
        match self {
            UdpRequest::Connect { tid }
            | UdpRequest::Announce { tid, .. }
            | UdpRequest::Scrape { tid, .. } => *tid,
        }
    }

    /// The connection id to check; `None` for a connect request.
    pub fn conn_id(&self) -> Option<u64> {
        match self {
            UdpRequest::Connect { .. } => None,
            UdpRequest::Announce { conn_id, .. } | UdpRequest::Scrape { conn_id, .. } => {
                Some(*conn_id)
            }
        }
    }

    /// The announce for `TrackerState::announce`: the packet's source IP `remote` with the
    /// announced port (the packet's IP field is ignored). `None` unless this is an announce.
    pub fn to_server_announce(&self, remote: IpAddr) -> Option<ServerAnnounce> {
        let UdpRequest::Announce {
            info_hash,
            peer_id,
            left,
            event,
            numwant,
            port,
            ..
        } = self
        else {
            return None;
        };
        Some(ServerAnnounce {
            info_hash: *info_hash,
            peer_id: *peer_id,
            addr: SocketAddr::new(remote.to_canonical(), *port),
            left: *left,
            event: *event,
            numwant: *numwant,
        })
    }
}

/// Decodes a request packet. Bytes after a 98-byte announce (BEP 41 options) are ignored.
pub fn decode_udp_request(buf: &[u8]) -> Result<UdpRequest, TrackerError> {
    let mut r = Reader::new(buf);
    let conn_id = r.u64()?;
    let action = r.u32()?;
    let tid = r.u32()?;
    match action {
        ACTION_CONNECT if conn_id == PROTOCOL_ID => Ok(UdpRequest::Connect { tid }),
        ACTION_CONNECT => Err(TrackerError::BadProtocolId),
        ACTION_ANNOUNCE => decode_udp_announce(conn_id, tid, &mut r),
        ACTION_SCRAPE => decode_udp_scrape(conn_id, tid, r.rest()),
        other => Err(TrackerError::UnexpectedAction(other)),
    }
}

fn decode_udp_announce(
    conn_id: u64,
    tid: u32,
    r: &mut Reader<'_>,
) -> Result<UdpRequest, TrackerError> {
    let info_hash = InfoHash(r.array()?);
    let peer_id = PeerId(r.array()?);
    let downloaded = r.u64()?;
    let left = r.u64()?;
    let uploaded = r.u64()?;
    let event = Event::from_udp(r.u32()?);
    let _ip_ignored = r.u32()?;
    let key = r.u32()?;
    let numwant = u32::try_from(r.i32()?).ok();
    let port = r.u16()?;
    Ok(UdpRequest::Announce {
        conn_id,
        tid,
        info_hash,
        peer_id,
        downloaded,
        left,
        uploaded,
        event,
        key,
        numwant,
        port,
    })
}

fn decode_udp_scrape(conn_id: u64, tid: u32, rest: &[u8]) -> Result<UdpRequest, TrackerError> {
    if rest.is_empty() || !rest.len().is_multiple_of(20) {
        let why = format!("{} bytes is not a positive multiple of 20", rest.len());
        return Err(TrackerError::Malformed(format!(
            "scrape info-hashes: {why}"
        )));
    }
    let count = rest.len() / 20;
    if count > MAX_SCRAPE_HASHES {
        return Err(TrackerError::TooManyHashes(count));
    }
    let hashes = rest
        .chunks_exact(20)
        .map(|c| {
            let mut h = [0u8; 20];
            h.copy_from_slice(c);
            InfoHash(h)
        })
        .collect();
    Ok(UdpRequest::Scrape {
        conn_id,
        tid,
        hashes,
    })
}

/// The connect reply: action 0, transaction id, connection id.
pub fn encode_udp_connect_reply(tid: u32, conn_id: u64) -> [u8; 16] {
    concat(&[
        &ACTION_CONNECT.to_be_bytes(),
        &tid.to_be_bytes(),
        &conn_id.to_be_bytes(),
    ])
}

/// The announce reply. `ipv6` says whether the request came over IPv6: then peers are 18
/// bytes each and only IPv6 peers are listed, else 6 bytes and only IPv4 peers.
pub fn encode_udp_announce_reply(tid: u32, reply: &ServerReply, ipv6: bool) -> Vec<u8> {
    let per_peer = if ipv6 { 18 } else { 6 };
    let mut out = Vec::with_capacity(ANNOUNCE_REPLY_HEADER_LEN + per_peer * reply.peers.len());
    out.extend_from_slice(&ACTION_ANNOUNCE.to_be_bytes());
    out.extend_from_slice(&tid.to_be_bytes());
    out.extend_from_slice(&reply.interval.to_be_bytes());
    out.extend_from_slice(&reply.incomplete.to_be_bytes());
    out.extend_from_slice(&reply.complete.to_be_bytes());
    for p in reply.peers.iter().filter(|p| p.addr.is_ipv6() == ipv6) {
        put_compact(&mut out, p.addr);
    }
    out
}

/// The scrape reply: seeders, completed, leechers for each entry, in order.
pub fn encode_udp_scrape_reply(tid: u32, entries: &[ScrapeEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(REPLY_HEADER_LEN + SCRAPE_ENTRY_LEN * entries.len());
    out.extend_from_slice(&ACTION_SCRAPE.to_be_bytes());
    out.extend_from_slice(&tid.to_be_bytes());
    for e in entries {
        out.extend_from_slice(&e.complete.to_be_bytes());
        out.extend_from_slice(&e.downloaded.to_be_bytes());
        out.extend_from_slice(&e.incomplete.to_be_bytes());
    }
    out
}

/// The error reply: action 3, transaction id, the message (cut to `MAX_UDP_ERROR_LEN` bytes
/// at a character boundary).
pub fn encode_udp_error(tid: u32, message: &str) -> Vec<u8> {
    let mut end = message.len().min(MAX_UDP_ERROR_LEN);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = Vec::with_capacity(REPLY_HEADER_LEN + end);
    out.extend_from_slice(&ACTION_ERROR.to_be_bytes());
    out.extend_from_slice(&tid.to_be_bytes());
    out.extend_from_slice(&message.as_bytes()[..end]);
    out
}

// ---------------------------------------------------------------------------------------
// Stateless connection ids

/// The connection id for `addr` during `minute` (any counter of minutes the caller keeps):
/// SipHash-2-4 keyed with `secret` over the minute and the address. Without the secret the
/// id cannot be guessed, so a client must have received our connect reply at that address,
/// which is all BEP 15 asks of it. Not meant as a general-purpose MAC. No table needed.
pub fn udp_connection_id(secret: &[u8; 16], addr: SocketAddr, minute: u64) -> u64 {
    let ip = match addr.ip().to_canonical() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    };
    let msg: [u8; 26] = concat(&[&minute.to_le_bytes(), &ip, &addr.port().to_le_bytes()]);
    siphash24(secret, &msg)
}

/// Whether `conn_id` was issued to `addr` this minute or the previous one, which gives every
/// id a lifetime of at least one full minute.
pub fn udp_connection_id_valid(
    secret: &[u8; 16],
    addr: SocketAddr,
    conn_id: u64,
    now_minute: u64,
) -> bool {
    conn_id == udp_connection_id(secret, addr, now_minute)
        || now_minute
            .checked_sub(1)
            .is_some_and(|prev| conn_id == udp_connection_id(secret, addr, prev))
}

fn le_u64(bytes: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(bytes);
    u64::from_le_bytes(word)
}

fn sip_round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13) ^ v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16) ^ v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21) ^ v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17) ^ v[2];
    v[2] = v[2].rotate_left(32);
}

/// SipHash-2-4 (Aumasson and Bernstein), written out so ids stay stable across Rust releases.
fn siphash24(key: &[u8; 16], msg: &[u8]) -> u64 {
    let (k0, k1) = (le_u64(&key[..8]), le_u64(&key[8..]));
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    let chunks = msg.chunks_exact(8);
    let tail = chunks.remainder();
    let mut last = (msg.len() as u64 & 0xff) << 56;
    for (i, &b) in tail.iter().enumerate() {
        last |= u64::from(b) << (8 * i);
    }
    for m in chunks.map(le_u64).chain(std::iter::once(last)) {
        v[3] ^= m;
        sip_round(&mut v);
        sip_round(&mut v);
        v[0] ^= m;
    }
    v[2] ^= 0xff;
    for _ in 0..4 {
        sip_round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::announce::{percent_encode, AnnounceRequest};
    use crate::tracker::response::parse_announce_response;
    use crate::tracker::udp::{
        decode_announce_response, decode_connect_response, decode_scrape_response, encode_announce,
        encode_connect, encode_scrape_request,
    };

    fn hash(n: u8) -> InfoHash {
        InfoHash([n; 20])
    }

    fn pid(n: u8) -> PeerId {
        PeerId([n; 20])
    }

    fn ann(h: u8, peer: u8, left: u64, event: Event) -> ServerAnnounce {
        ServerAnnounce {
            info_hash: hash(h),
            peer_id: pid(peer),
            addr: SocketAddr::new([10, 0, 0, peer].into(), 6881),
            left,
            event,
            numwant: None,
        }
    }

    fn state() -> TrackerState {
        TrackerState::with_seed(ServerConfig::default(), 7)
    }

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

    #[test]
    fn parses_announce_query() {
        let q = format!(
            "info_hash={}&peer_id={}&port=51413&uploaded=0&downloaded=0&left=77\
             &event=started&numwant=-1&compact=1&ip=1.2.3.4",
            percent_encode(&[0xab; 20]),
            percent_encode(b"-SP0100-abcdefghij+l"),
        );
        let remote: IpAddr = "::ffff:192.0.2.5".parse().unwrap();
        let a = parse_announce_query(&q, remote).unwrap();
        assert_eq!(a.info_hash, InfoHash([0xab; 20]));
        assert_eq!(a.peer_id, PeerId(*b"-SP0100-abcdefghij+l"));
        assert_eq!(a.addr, "192.0.2.5:51413".parse().unwrap());
        assert_eq!((a.left, a.event, a.numwant), (77, Event::Started, None));
        assert!(query_wants_compact(&q));
        assert!(!query_wants_compact("compact=0"));
    }

    #[test]
    fn refuses_bad_announce_queries() {
        let ip: IpAddr = [127, 0, 0, 1].into();
        let ok_hash = format!("info_hash={}", "%01".repeat(20));
        let ok_peer = format!("peer_id={}", "a".repeat(20));
        let cases = [
            (format!("{ok_peer}&port=1&left=0"), "missing info_hash"),
            (
                format!("info_hash=abc&{ok_peer}&port=1&left=0"),
                "info_hash must be 20",
            ),
            (format!("{ok_hash}&{ok_peer}&left=0"), "missing port"),
            (format!("{ok_hash}&{ok_peer}&port=0&left=0"), "invalid port"),
            (
                format!("{ok_hash}&{ok_peer}&port=99999&left=0"),
                "invalid port",
            ),
            (format!("{ok_hash}&{ok_peer}&port=1"), "missing left"),
            (
                format!("{ok_hash}%G1&{ok_peer}&port=1&left=0"),
                "percent-encoding",
            ),
        ];
        for (q, want) in cases {
            let err = parse_announce_query(&q, ip).unwrap_err();
            assert!(err.contains(want), "{q}: {err}");
        }
    }

    #[test]
    fn parses_scrape_query() {
        let one = format!("info_hash={}", "%02".repeat(20));
        assert_eq!(parse_scrape_query(&one), Ok(vec![hash(2)]));
        assert!(parse_scrape_query("").is_err());
        assert!(parse_scrape_query("info_hash=short").is_err());
        let many = vec![one; MAX_HTTP_SCRAPE_HASHES + 1].join("&");
        assert!(parse_scrape_query(&many).unwrap_err().contains("too many"));
    }

    fn reply_with_peers() -> ServerReply {
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

    #[test]
    fn http_bodies_parse_back() {
        let reply = reply_with_peers();
        let want: Vec<SocketAddr> = reply.peers.iter().map(|p| p.addr).collect();
        for compact in [true, false] {
            let body = encode_announce_reply(&reply, compact);
            let r = parse_announce_response(&body).unwrap();
            assert_eq!(
                (r.interval, r.complete, r.incomplete),
                (60, Some(2), Some(3))
            );
            assert_eq!(r.peers, want, "compact={compact}");
        }
        let compact = encode_announce_reply(&reply, true);
        assert!(compact.starts_with(b"d8:completei2e10:incompletei3e8:intervali60e5:peers6:"));
        let err = parse_announce_response(&encode_failure("no such torrent"));
        assert_eq!(err, Err(TrackerError::Failure("no such torrent".into())));
    }

    #[test]
    fn scrape_body_parses_back() {
        let mut s = state();
        s.announce(Instant::now(), ann(5, 1, 0, Event::Completed))
            .unwrap();
        let entries = s.scrape(&[hash(5), hash(3), hash(5)]);
        let body = encode_scrape(&entries);
        let parsed = crate::tracker::response::parse_scrape_response(&body).unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0].info_hash, hash(3));
        assert_eq!((parsed[1].complete, parsed[1].downloaded), (1, 1));
    }

    #[test]
    fn udp_connect_round_trip() {
        let secret = [9u8; 16];
        let client: SocketAddr = "192.0.2.7:40000".parse().unwrap();
        let packet = encode_connect(0x1234_5678);
        let req = decode_udp_request(&packet).unwrap();
        assert_eq!(req, UdpRequest::Connect { tid: 0x1234_5678 });
        let id = udp_connection_id(&secret, client, 1000);
        let reply = encode_udp_connect_reply(req.tid(), id);
        assert_eq!(decode_connect_response(&reply, 0x1234_5678), Ok(id));
        assert_eq!(
            decode_connect_response(&reply, 0x1234_5679),
            Err(TrackerError::TransactionMismatch {
                expected: 0x1234_5679,
                got: 0x1234_5678
            })
        );
        let mut bad = packet;
        bad[0] ^= 1;
        assert_eq!(decode_udp_request(&bad), Err(TrackerError::BadProtocolId));
    }

    fn client_request() -> AnnounceRequest {
        AnnounceRequest {
            info_hash: hash(1),
            peer_id: pid(50),
            port: 7000,
            uploaded: 3,
            downloaded: 2,
            left: 1,
            event: Event::Started,
            numwant: Some(10),
            key: 0xfeed,
            tracker_id: None,
        }
    }

    #[test]
    fn udp_announce_round_trip() {
        let packet = encode_announce(77, 5, &client_request());
        let req = decode_udp_request(&packet).unwrap();
        let want = UdpRequest::Announce {
            conn_id: 77,
            tid: 5,
            info_hash: hash(1),
            peer_id: pid(50),
            downloaded: 2,
            left: 1,
            uploaded: 3,
            event: Event::Started,
            key: 0xfeed,
            numwant: Some(10),
            port: 7000,
        };
        assert_eq!(req, want);
        let mut s = state();
        let t = Instant::now();
        s.announce(t, ann(1, 1, 0, Event::None)).unwrap();
        let remote: IpAddr = [192, 0, 2, 50].into();
        let a = req.to_server_announce(remote).unwrap();
        assert_eq!(a.addr, "192.0.2.50:7000".parse().unwrap());
        let reply = s.announce(t, a).unwrap();
        let bytes = encode_udp_announce_reply(req.tid(), &reply, false);
        let mut expected = vec![0, 0, 0, 1, 0, 0, 0, 5, 0, 0, 0, 60, 0, 0, 0, 1, 0, 0, 0, 1];
        expected.extend_from_slice(&[10, 0, 0, 1, 0x1a, 0xe1]);
        assert_eq!(bytes, expected);
        let r = decode_announce_response(&bytes, 5, false).unwrap();
        assert_eq!(
            (r.interval, r.complete, r.incomplete),
            (60, Some(1), Some(1))
        );
        assert_eq!(r.peers, vec!["10.0.0.1:6881".parse().unwrap()]);
        assert!(matches!(
            decode_announce_response(&bytes, 6, false),
            Err(TrackerError::TransactionMismatch { .. })
        ));
    }

    #[test]
    fn udp_announce_reply_ipv6_lists_only_ipv6() {
        let bytes = encode_udp_announce_reply(1, &reply_with_peers(), true);
        let r = decode_announce_response(&bytes, 1, true).unwrap();
        assert_eq!(r.peers, vec!["[2001:db8::2]:51413".parse().unwrap()]);
    }

    #[test]
    fn udp_scrape_and_error_round_trip() {
        let hashes = [hash(1), hash(2)];
        let packet = encode_scrape_request(8, 9, &hashes).unwrap();
        let req = decode_udp_request(&packet).unwrap();
        let want = UdpRequest::Scrape {
            conn_id: 8,
            tid: 9,
            hashes: hashes.to_vec(),
        };
        assert_eq!(req, want);
        let mut s = state();
        s.announce(Instant::now(), ann(2, 1, 0, Event::Completed))
            .unwrap();
        let entries = s.scrape(&hashes);
        let bytes = encode_udp_scrape_reply(9, &entries);
        assert_eq!(decode_scrape_response(&bytes, 9, &hashes), Ok(entries));
        let err = encode_udp_error(9, "connection id expired");
        assert_eq!(
            decode_scrape_response(&err, 9, &hashes),
            Err(TrackerError::Failure("connection id expired".into()))
        );
        let long = "é".repeat(MAX_UDP_ERROR_LEN);
        assert!(encode_udp_error(1, &long).len() <= REPLY_HEADER_LEN + MAX_UDP_ERROR_LEN);
    }

    #[test]
    fn udp_scrape_request_limits() {
        let mut p = encode_scrape_request(1, 1, &[]).unwrap();
        assert!(matches!(
            decode_udp_request(&p),
            Err(TrackerError::Malformed(_))
        ));
        p.extend_from_slice(&[0; 20 * (MAX_SCRAPE_HASHES + 1)]);
        assert_eq!(
            decode_udp_request(&p),
            Err(TrackerError::TooManyHashes(MAX_SCRAPE_HASHES + 1))
        );
        let p = [0u8, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 9, 0, 0, 0, 1];
        assert_eq!(
            decode_udp_request(&p),
            Err(TrackerError::UnexpectedAction(9))
        );
    }

    #[test]
    fn connection_ids_are_stateless_and_expire() {
        let secret = [42u8; 16];
        let a: SocketAddr = "192.0.2.1:1000".parse().unwrap();
        let b: SocketAddr = "192.0.2.2:1000".parse().unwrap();
        let id = udp_connection_id(&secret, a, 10);
        assert!(udp_connection_id_valid(&secret, a, id, 10));
        assert!(udp_connection_id_valid(&secret, a, id, 11));
        assert!(!udp_connection_id_valid(&secret, a, id, 12));
        assert!(!udp_connection_id_valid(&secret, a, id, 9));
        assert!(!udp_connection_id_valid(&secret, b, id, 10));
        assert!(!udp_connection_id_valid(&[43u8; 16], a, id, 10));
        let mapped: SocketAddr = "[::ffff:192.0.2.1]:1000".parse().unwrap();
        assert!(udp_connection_id_valid(&secret, mapped, id, 10));
        let id0 = udp_connection_id(&secret, a, 0);
        assert!(udp_connection_id_valid(&secret, a, id0, 0));
    }

    #[test]
    fn siphash_matches_reference_vectors() {
        let key: [u8; 16] = std::array::from_fn(|i| i as u8);
        assert_eq!(siphash24(&key, b""), 0x726f_db47_dd0e_0e31);
        let msg: Vec<u8> = (0..15).collect();
        assert_eq!(siphash24(&key, &msg), 0xa129_ca61_49be_45e5);
    }
}
