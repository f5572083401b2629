//! Fetching a magnet link's info dictionary from peers (BEP 9), before the download proper.
//! Peers come from the link (`x.pe`), the command line, the link's trackers (announced to
//! every few seconds until the dictionary arrives) and, when asked for, the DHT; up to `PARALLEL` are asked at once,
//! each for every piece over one connection of its own, and the first dictionary whose
//! SHA-1 is the info-hash wins. A peer that cannot or will not send it is asked again later;
//! one that sends a dictionary with another hash is not asked again. The session then runs
//! as it does for a .torrent file, starting with the peers found here.

use crate::announce::{http_client, AnnounceConfig, Announcer, HttpConfig, TransferStats};
use crate::dht::{Dht, DhtConfig};
use crate::metadata::{MetadataAssembler, MetadataError, MetadataMessage};
use crate::net::TcpStream;
use crate::peer::conn::{PeerError, OUR_EXTENSIONS};
use crate::peer::extended;
use crate::peer::handshake::{dial_encrypted, read_handshake, Watchdog};
use crate::tracker::Event;
use crate::types::{InfoHash, PeerId};
use crate::wire::{FrameDecoder, Handshake, Message, DEFAULT_MAX_FRAME};
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{Shutdown, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio_uring::buf::BoundedBuf;

/// Peers asked at once. Each may hold a buffer of the dictionary's size (at most
/// `metadata::MAX_METADATA_SIZE`).
const PARALLEL: usize = 4;
/// How long one peer has to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one peer has, from its handshake, to send the whole dictionary.
const ASK_TIMEOUT: Duration = Duration::from_secs(30);
/// How soon a peer that failed (down, busy, without the dictionary yet) is asked again.
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// Announces while waiting are at least this far apart, whatever the tracker asks.
const MIN_ANNOUNCE_GAP: Duration = Duration::from_secs(5);
/// Left to download, as told to trackers before the torrent's size is known: not zero, so
/// that trackers do not take us for a seed and leave us out of other seeds' peer lists.
const UNKNOWN_LEFT: u64 = 16 << 10;
/// Bytes one read may add to a connection's buffer.
const READ_CHUNK: usize = 64 << 10;
/// Peers remembered at most (each tried once in a while).
const MAX_PEERS: usize = 1000;

/// Where to look for the dictionary, and who we are.
#[derive(Debug, Clone)]
pub struct MagnetFetch {
    pub info_hash: InfoHash,
    /// The link's trackers (each its own tier, as libtorrent and Transmission take them).
    pub trackers: Vec<String>,
    /// Peers from the link and the command line.
    pub peers: Vec<SocketAddr>,
    pub peer_id: PeerId,
    /// The port the session will listen on, told to trackers.
    pub port: u16,
    pub use_trackers: bool,
    /// Also search the DHT (a node of its own on a free port, for the search only).
    pub dht: Option<DhtConfig>,
}

/// How the search is going, for a progress line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchStatus {
    pub peers_known: usize,
    pub asks: usize,
    pub failures: usize,
}

/// The dictionary and where it came from.
#[derive(Debug)]
pub struct Fetched {
    pub info: Vec<u8>,
    /// Every peer heard of, the one that sent the dictionary first: the session's first
    /// peers.
    pub peers: Vec<SocketAddr>,
}

/// Why asking one peer gave nothing.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error("{0}")]
    Peer(#[from] PeerError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("the peer does not speak the extension protocol")]
    NoExtensions,
    #[error("the peer does not offer the metadata")]
    NotOffered,
    #[error("the peer rejected a request for metadata piece {0}")]
    Rejected(u32),
    #[error("metadata: {0}")]
    Metadata(#[from] MetadataError),
}

impl AskError {
    /// True when the peer sent something wrong (it is not asked again), not merely lacked
    /// what we wanted or went away.
    fn is_misbehaviour(&self) -> bool {
        match self {
            AskError::Peer(e) => e.is_misbehaviour(),
            AskError::Metadata(_) => true,
            _ => false,
        }
    }
}

/// Searches until a peer sends the dictionary; `stop` ends the search early (None then).
pub async fn fetch_metadata(
    fetch: &MagnetFetch,
    stop: impl std::future::Future<Output = ()>,
    mut on_status: impl FnMut(&FetchStatus),
) -> Option<Fetched> {
    let (found_tx, mut found_rx) = tokio::sync::mpsc::channel::<Vec<SocketAddr>>(4);
    let announcer = (fetch.use_trackers && !fetch.trackers.is_empty())
        .then(|| tokio_uring::spawn(announce_until_dropped(fetch.clone(), found_tx.clone())));
    let dht_search = fetch.dht.clone().map(|config| {
        tokio_uring::spawn(search_dht_until_dropped(config, fetch.info_hash, found_tx))
    });
    let (done_tx, mut done_rx) =
        tokio::sync::mpsc::channel::<(SocketAddr, Result<Vec<u8>, AskError>)>(PARALLEL);
    let mut peers = PeerList::default();
    peers.add(fetch.peers.iter().copied(), Instant::now());
    let mut status = FetchStatus::default();
    let mut in_flight = 0;
    let mut retry = tokio::time::interval(Duration::from_secs(1));
    tokio::pin!(stop);
    let result = loop {
        while in_flight < PARALLEL {
            let Some(addr) = peers.next_to_ask(Instant::now()) else {
                break;
            };
            in_flight += 1;
            status.asks += 1;
            let (fetch, done) = (fetch.clone(), done_tx.clone());
            tokio_uring::spawn(async move {
                let result = ask_peer(addr, &fetch).await;
                let _ = done.send((addr, result)).await;
            });
        }
        status.peers_known = peers.len();
        on_status(&status);
        tokio::select! {
            Some((addr, result)) = done_rx.recv() => {
                in_flight -= 1;
                match result {
                    Ok(info) => break Some(Fetched { info, peers: peers.all_with_first(addr) }),
                    Err(e) => {
                        tracing::debug!(%addr, error = %e, "no metadata from this peer");
                        status.failures += 1;
                        peers.failed(addr, e.is_misbehaviour(), Instant::now());
                    }
                }
            }
            Some(found) = found_rx.recv() => peers.add(found, Instant::now()),
            _ = retry.tick() => {}
            _ = &mut stop => break None,
        }
    };
    for task in announcer.into_iter().chain(dht_search) {
        task.abort();
    }
    result
}

/// Announces to the link's trackers now and every so often, sending each peer list on.
/// Ends when the receiver is gone.
async fn announce_until_dropped(
    fetch: MagnetFetch,
    found: tokio::sync::mpsc::Sender<Vec<SocketAddr>>,
) {
    let client = match http_client(&HttpConfig::default()) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "trackers disabled");
            return;
        }
    };
    let config = AnnounceConfig::new(fetch.info_hash, fetch.peer_id, fetch.port);
    let tiers = fetch.trackers.iter().map(|t| vec![t.clone()]).collect();
    let mut announcer = Announcer::new(config, tiers, client);
    let stats = TransferStats {
        left: UNKNOWN_LEFT,
        ..TransferStats::default()
    };
    let mut event = Event::Started;
    loop {
        match announcer.announce(event, stats).await {
            Ok(outcome) => {
                event = Event::None;
                if found.send(outcome.peers).await.is_err() {
                    return;
                }
            }
            Err(e) => tracing::warn!(error = %e, "announce failed"),
        }
        if found.is_closed() {
            return;
        }
        let delay = announcer
            .next_announce_delay(Instant::now())
            .min(Duration::from_secs(60))
            .max(MIN_ANNOUNCE_GAP);
        tokio::time::sleep(delay).await;
    }
}

/// Searches the DHT for the info-hash every few seconds, sending each peer list on, until
/// aborted or the receiver is gone. The node binds a free port of `config.bind`'s address:
/// the session's own node takes the listening port afterwards.
async fn search_dht_until_dropped(
    config: DhtConfig,
    info_hash: InfoHash,
    found: tokio::sync::mpsc::Sender<Vec<SocketAddr>>,
) {
    let mut bind = config.bind;
    bind.set_port(0);
    let dht = match Dht::start(&DhtConfig { bind, ..config }) {
        Ok(dht) => dht,
        Err(e) => {
            tracing::warn!(error = %e, "DHT search off");
            return;
        }
    };
    loop {
        let peers = dht.search(info_hash, None).await;
        tracing::debug!(
            peers = peers.len(),
            nodes = dht.nodes(),
            "DHT search for metadata"
        );
        if !peers.is_empty() && found.send(peers).await.is_err() {
            return;
        }
        tokio::time::sleep(MIN_ANNOUNCE_GAP).await;
    }
}

/// The peers heard of, when each may be asked next.
#[derive(Default)]
struct PeerList {
    order: Vec<SocketAddr>,
    next_ask: HashMap<SocketAddr, Instant>,
    asking: HashSet<SocketAddr>,
    queue: VecDeque<SocketAddr>,
}

impl PeerList {
    fn len(&self) -> usize {
        self.order.len()
    }

    fn add(&mut self, found: impl IntoIterator<Item = SocketAddr>, now: Instant) {
        for addr in found {
            if self.order.len() >= MAX_PEERS || self.next_ask.contains_key(&addr) {
                continue;
            }
            self.order.push(addr);
            self.next_ask.insert(addr, now);
            self.queue.push_back(addr);
        }
    }

    /// A peer not being asked whose turn has come, oldest first.
    fn next_to_ask(&mut self, now: Instant) -> Option<SocketAddr> {
        if self.queue.is_empty() {
            let due = self
                .order
                .iter()
                .filter(|a| !self.asking.contains(a) && self.next_ask[a] <= now);
            self.queue.extend(due);
        }
        let addr = self.queue.pop_front()?;
        self.asking.insert(addr);
        Some(addr)
    }

    fn failed(&mut self, addr: SocketAddr, for_good: bool, now: Instant) {
        self.asking.remove(&addr);
        let again = if for_good {
            now + Duration::from_secs(24 * 3600)
        } else {
            now + RETRY_AFTER
        };
        self.next_ask.insert(addr, again);
    }

    /// Every peer, `first` first.
    fn all_with_first(&self, first: SocketAddr) -> Vec<SocketAddr> {
        std::iter::once(first)
            .chain(self.order.iter().copied().filter(|&a| a != first))
            .collect()
    }
}

/// Connects to `addr` and asks it for the whole dictionary.
async fn ask_peer(addr: SocketAddr, fetch: &MagnetFetch) -> Result<Vec<u8>, AskError> {
    let ours = Handshake {
        reserved: OUR_EXTENSIONS.reserved(),
        info_hash: fetch.info_hash,
        peer_id: fetch.peer_id,
    };
    let stream = Rc::new(crate::net::connect(addr, CONNECT_TIMEOUT).await?);
    let (res, _) = stream.write_all(ours.encode().to_vec()).await;
    let greeted = match res {
        Ok(()) => read_handshake(&stream).await,
        Err(e) => Err(e.into()),
    };
    let (stream, (theirs, leftover)) = match greeted {
        Ok(h) => (stream, h),
        // A peer that hangs up on a plain handshake may take only encrypted ones.
        Err(PeerError::Io(_)) => {
            let _ = stream.shutdown(Shutdown::Both);
            let stream = Rc::new(crate::net::connect(addr, CONNECT_TIMEOUT).await?);
            let h = dial_encrypted(&stream, fetch.info_hash, &ours.encode()).await?;
            (stream, h)
        }
        Err(e) => return Err(e.into()),
    };
    let result = exchange(&stream, fetch.info_hash, &theirs, leftover).await;
    let _ = stream.shutdown(Shutdown::Both);
    result
}

/// After the handshakes: the extension handshakes, then every piece of the dictionary.
async fn exchange(
    stream: &Rc<TcpStream>,
    info_hash: InfoHash,
    theirs: &Handshake,
    leftover: Vec<u8>,
) -> Result<Vec<u8>, AskError> {
    if theirs.info_hash != info_hash {
        return Err(PeerError::Handshake(format!("unknown info-hash {}", theirs.info_hash)).into());
    }
    if !theirs.supports_extended() {
        return Err(AskError::NoExtensions);
    }
    let _watchdog = Watchdog::start_for(stream, ASK_TIMEOUT);
    let mut out = Vec::new();
    Message::Extended {
        id: 0,
        payload: &extended::our_handshake(extended::Offer::default()),
    }
    .encode_into(&mut out);
    send(stream, out).await?;
    let mut reader = ExtendedReader::new(leftover);
    let (their_id, size) = loop {
        let (id, payload) = reader.next(stream).await?;
        if id == 0 {
            let offer = extended::TheirOffer::read(&payload);
            let their_id = offer.metadata_id.ok_or(AskError::NotOffered)?;
            let size = offer.metadata_size.ok_or(AskError::NotOffered)?;
            break (their_id, size);
        }
    };
    let mut assembler = MetadataAssembler::new(info_hash, size)?;
    let mut out = Vec::new();
    for piece in assembler.missing() {
        let request = MetadataMessage::Request { piece }.encode();
        Message::Extended {
            id: their_id,
            payload: &request,
        }
        .encode_into(&mut out);
    }
    send(stream, out).await?;
    while !assembler.is_complete() {
        let (id, payload) = reader.next(stream).await?;
        if id != extended::OUR_METADATA_ID {
            continue;
        }
        match MetadataMessage::parse(&payload)? {
            MetadataMessage::Data {
                piece,
                total_size,
                data,
            } => assembler.add(piece, total_size, data)?,
            MetadataMessage::Reject { piece } => return Err(AskError::Rejected(piece)),
            MetadataMessage::Request { .. } => {} // we offer nothing yet
        }
    }
    Ok(assembler.finish()?)
}

async fn send(stream: &TcpStream, bytes: Vec<u8>) -> Result<(), AskError> {
    let (res, _) = stream.write_all(bytes).await;
    Ok(res?)
}

/// Reads frames off a connection and hands over the extended ones (id and payload),
/// skipping every other message.
struct ExtendedReader {
    buf: Vec<u8>,
    decoder: FrameDecoder,
}

impl ExtendedReader {
    fn new(leftover: Vec<u8>) -> ExtendedReader {
        ExtendedReader {
            buf: leftover,
            decoder: FrameDecoder::new(DEFAULT_MAX_FRAME),
        }
    }

    async fn next(&mut self, stream: &TcpStream) -> Result<(u8, Vec<u8>), AskError> {
        loop {
            while let Some((message, used)) =
                self.decoder.decode(&self.buf).map_err(PeerError::from)?
            {
                let extended = match message {
                    Message::Extended { id, payload } => Some((id, payload.to_vec())),
                    _ => None,
                };
                self.buf.drain(..used);
                if let Some(found) = extended {
                    return Ok(found);
                }
            }
            let filled = self.buf.len();
            self.buf.reserve(READ_CHUNK);
            let (res, slice) = stream
                .read(std::mem::take(&mut self.buf).slice(filled..))
                .await;
            self.buf = slice.into_inner();
            if res? == 0 {
                let eof = std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "closed before sending the metadata",
                );
                return Err(AskError::Io(eof));
            }
        }
    }
}
