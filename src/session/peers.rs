//! Where peers come from and how connections are kept up: a bounded queue of addresses
//! (given on the command line, from trackers, or retried), a connect loop that keeps at most
//! `max_peers` connections with a few connects in flight, and the admission check for incoming
//! peers (accepted by the session's hub). Addresses come from `--peer`, trackers, the DHT and
//! peer exchange (taken from the torrent each turn of the loop). Peers that broke the
//! protocol, and our own address, are not retried; banned addresses are refused.

use crate::peer::conn::{run_peer, ConnContext, Opening, PeerError};
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Connects in flight at once: enough to fill a swarm quickly without a SYN storm.
const MAX_CONNECTING: usize = 8;
/// Addresses remembered at once (queued or known); trackers can return thousands.
const MAX_KNOWN_PEERS: usize = 4000;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Failed or closed connections are retried after this, doubling per failure up to 16x ...
const RETRY_BASE: Duration = Duration::from_secs(1);
/// ... this many times in a row before the address is forgotten.
const MAX_FAILURES: u32 = 6;

#[derive(Default)]
struct Known {
    failures: u32,
    /// Connected or connecting right now.
    busy: bool,
    /// Broke the protocol: never again.
    refused: bool,
    /// Closed our plain handshake but took an encrypted (MSE) one: dial it that way.
    encrypted: bool,
}

pub struct PeerSource {
    ctx: Rc<ConnContext>,
    max_peers: usize,
    queue: RefCell<VecDeque<SocketAddr>>,
    known: RefCell<HashMap<SocketAddr, Known>>,
    retries: RefCell<Vec<(Instant, SocketAddr)>>,
    connecting: Cell<usize>,
    wake: Notify,
}

impl PeerSource {
    pub fn new(ctx: Rc<ConnContext>, max_peers: usize) -> Rc<PeerSource> {
        Rc::new(PeerSource {
            ctx,
            max_peers,
            queue: RefCell::new(VecDeque::new()),
            known: RefCell::new(HashMap::new()),
            retries: RefCell::new(Vec::new()),
            connecting: Cell::new(0),
            wake: Notify::new(),
        })
    }

    /// Queues addresses we have not seen yet.
    pub fn add(&self, addrs: impl IntoIterator<Item = SocketAddr>) {
        let mut known = self.known.borrow_mut();
        let mut queue = self.queue.borrow_mut();
        for addr in addrs {
            if known.len() >= MAX_KNOWN_PEERS {
                break;
            }
            if let std::collections::hash_map::Entry::Vacant(slot) = known.entry(addr) {
                slot.insert(Known::default());
                queue.push_back(addr);
            }
        }
        self.wake.notify_one();
    }

    pub fn torrent(&self) -> std::cell::Ref<'_, crate::torrent::Torrent> {
        self.ctx.torrent.borrow()
    }

    pub fn context(&self) -> Rc<ConnContext> {
        Rc::clone(&self.ctx)
    }

    /// Whether an incoming peer from `addr` may join: not banned, and below the peer cap.
    pub fn admits(&self, addr: SocketAddr) -> bool {
        let t = self.ctx.torrent.borrow();
        t.peer_count() < self.max_peers && !t.is_banned(addr)
    }

    fn room(&self) -> bool {
        let connected = self.ctx.torrent.borrow().peer_count();
        connected + self.connecting.get() < self.max_peers && self.connecting.get() < MAX_CONNECTING
    }

    /// Closes every connection.
    pub fn disconnect_all(&self) {
        self.ctx.torrent.borrow().close_all_peers();
    }

    fn schedule_retry(&self, addr: SocketAddr, failed: bool) {
        let mut known = self.known.borrow_mut();
        let Some(k) = known.get_mut(&addr) else {
            return;
        };
        k.busy = false;
        if failed {
            k.failures += 1;
        } else {
            k.failures = 0;
        }
        if k.refused {
            return; // kept, so that it is never dialled again
        }
        if k.failures >= MAX_FAILURES {
            // Forgotten: its slot in `known` goes to addresses still worth trying (a tracker,
            // the DHT or a peer may name it again later).
            known.remove(&addr);
            return;
        }
        let delay = RETRY_BASE * 2u32.pow(k.failures.min(4));
        self.retries
            .borrow_mut()
            .push((Instant::now() + delay, addr));
    }

    fn take_due_retries(&self) {
        let now = Instant::now();
        let mut retries = self.retries.borrow_mut();
        let mut queue = self.queue.borrow_mut();
        retries.retain(|&(at, addr)| {
            if at <= now {
                queue.push_back(addr);
                false
            } else {
                true
            }
        });
    }
}

/// Keeps connections up to the cap from the queue of addresses.
pub async fn connect_loop(source: Rc<PeerSource>) {
    loop {
        source.take_due_retries();
        let exchanged = source.ctx.torrent.borrow_mut().take_pex_found();
        if !exchanged.is_empty() {
            source.add(exchanged);
        }
        while source.room() {
            let Some(addr) = source.queue.borrow_mut().pop_front() else {
                break;
            };
            // A complete torrent still dials: it only runs on while seeding, and a seed
            // must reach leechers that cannot connect in (`spate seed --peer`).
            let banned = source.ctx.torrent.borrow().is_banned(addr);
            let mut known = source.known.borrow_mut();
            let k = known.entry(addr).or_default();
            if banned || k.busy || k.refused {
                continue;
            }
            k.busy = true;
            source.connecting.set(source.connecting.get() + 1);
            tokio_uring::spawn(connect_and_run(Rc::clone(&source), addr));
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), source.wake.notified()).await;
    }
}

async fn connect_and_run(source: Rc<PeerSource>, addr: SocketAddr) {
    let encrypted = source
        .known
        .borrow()
        .get(&addr)
        .is_some_and(|k| k.encrypted);
    let first = if encrypted {
        Opening::DialledEncrypted
    } else {
        Opening::Dialled
    };
    let connected = dial(&source, addr, first).await;
    source.connecting.set(source.connecting.get() - 1);
    let (mut result, mut greeted) = match connected {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(%addr, error = %e, "connect failed");
            source.schedule_retry(addr, true);
            source.wake.notify_one();
            return;
        }
    };
    // A peer that hangs up on a plain handshake may take only encrypted ones (libtorrent
    // and qBittorrent set to require encryption): dial it again at once, with MSE.
    if !encrypted && !greeted && matches!(&result, Err(PeerError::Io(_))) {
        tracing::debug!(%addr, "plain handshake closed; dialling again with MSE");
        match dial(&source, addr, Opening::DialledEncrypted).await {
            Ok((r, g)) => (result, greeted) = (r, g),
            Err(e) => tracing::debug!(%addr, error = %e, "connect failed"),
        }
        if let Some(k) = source.known.borrow_mut().get_mut(&addr) {
            k.encrypted = greeted;
        }
    } else if encrypted && !greeted {
        // It no longer got through with MSE (or is down): the next try is plain again.
        if let Some(k) = source.known.borrow_mut().get_mut(&addr) {
            k.encrypted = false;
        }
    }
    tracing::debug!(%addr, ?result, "peer connection ended");
    if let Err(e) = &result {
        if e.is_misbehaviour() {
            source.ctx.torrent.borrow_mut().stats.peers_dropped += 1;
        }
        // Our own address (a peer or tracker passed it on) is never worth another try.
        if e.is_misbehaviour() || matches!(e, PeerError::SelfConnection) {
            if let Some(k) = source.known.borrow_mut().get_mut(&addr) {
                k.refused = true;
            }
        }
    }
    source.schedule_retry(addr, result.is_err());
    source.wake.notify_one();
}

/// Connects to `addr` and runs the connection with `opening`; returns how it ended and
/// whether the handshake got through.
async fn dial(
    source: &PeerSource,
    addr: SocketAddr,
    opening: Opening,
) -> std::io::Result<(Result<(), PeerError>, bool)> {
    let stream = crate::net::connect(addr, CONNECT_TIMEOUT).await?;
    let greeted = Cell::new(false);
    let result = run_peer(
        Rc::clone(&source.ctx),
        Rc::new(stream),
        addr,
        opening,
        || greeted.set(true),
    )
    .await;
    Ok((result, greeted.get()))
}
