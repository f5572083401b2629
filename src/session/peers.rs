//! Where peers come from and how connections are kept up: a bounded queue of addresses
//! (given on the command line, from trackers, or retried), a connect loop that keeps at most
//! `max_peers` connections with a few connects in flight, and the admission check for incoming
//! peers (accepted by the session's hub). Addresses come from `--peer`, trackers, the DHT and
//! peer exchange (taken from the torrent each turn of the loop). Peers that broke the
//! protocol, and our own address, are not retried; banned addresses are refused.
//!
//! What a peer says about other peers (PEX) is hearsay: any peer can name thousands of
//! addresses that never answer, and each such dial holds a connect slot until its timeout.
//! So hearsay waits in its own queue, dialled only when no firsthand address (command line,
//! tracker, DHT) is waiting, with at most half the connect slots, and is forgotten after its
//! first failed connect; an address a firsthand source also names is firsthand.

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
/// Of those, at most this many may be hearsay, so a flood of it leaves room for the rest.
const MAX_KNOWN_HEARSAY: usize = 1000;
/// Connects to hearsay addresses in flight at once: the other half is kept for firsthand ones.
const MAX_CONNECTING_HEARSAY: usize = MAX_CONNECTING / 2;
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
    /// Only peers named it (PEX), no firsthand source.
    hearsay: bool,
}

impl Known {
    /// Failed connects in a row after which the address is forgotten.
    fn failures_allowed(&self) -> u32 {
        if self.hearsay {
            1
        } else {
            MAX_FAILURES
        }
    }
}

/// Where an address was learned.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Origin {
    /// The command line, a tracker or the DHT.
    Firsthand,
    /// Another peer, through peer exchange.
    Hearsay,
}

pub struct PeerSource {
    ctx: Rc<ConnContext>,
    max_peers: usize,
    /// Firsthand addresses waiting for a dial, dialled first.
    queue: RefCell<VecDeque<SocketAddr>>,
    /// Hearsay addresses waiting for a dial.
    hearsay_queue: RefCell<VecDeque<SocketAddr>>,
    known: RefCell<HashMap<SocketAddr, Known>>,
    /// How many entries of `known` are hearsay.
    known_hearsay: Cell<usize>,
    retries: RefCell<Vec<(Instant, SocketAddr)>>,
    connecting: Cell<usize>,
    connecting_hearsay: Cell<usize>,
    wake: Notify,
}

impl PeerSource {
    pub fn new(ctx: Rc<ConnContext>, max_peers: usize) -> Rc<PeerSource> {
        Rc::new(PeerSource {
            ctx,
            max_peers,
            queue: RefCell::new(VecDeque::new()),
            hearsay_queue: RefCell::new(VecDeque::new()),
            known: RefCell::new(HashMap::new()),
            known_hearsay: Cell::new(0),
            retries: RefCell::new(Vec::new()),
            connecting: Cell::new(0),
            connecting_hearsay: Cell::new(0),
            wake: Notify::new(),
        })
    }

    /// Queues firsthand addresses we have not seen yet (or knew only as hearsay).
    pub fn add(&self, addrs: impl IntoIterator<Item = SocketAddr>) {
        self.add_from(Origin::Firsthand, addrs);
    }

    /// Queues addresses from `origin` that we have not seen yet; a firsthand source naming
    /// a hearsay address makes it firsthand.
    pub fn add_from(&self, origin: Origin, addrs: impl IntoIterator<Item = SocketAddr>) {
        let hearsay = origin == Origin::Hearsay;
        let mut known = self.known.borrow_mut();
        for addr in addrs {
            if let Some(k) = known.get_mut(&addr) {
                if k.hearsay && !hearsay {
                    k.hearsay = false;
                    self.known_hearsay.set(self.known_hearsay.get() - 1);
                    // Its place in the hearsay queue (if any) is skipped from now on.
                    if !k.busy && !k.refused {
                        self.queue.borrow_mut().push_back(addr);
                    }
                }
                continue;
            }
            if known.len() >= MAX_KNOWN_PEERS
                || (hearsay && self.known_hearsay.get() >= MAX_KNOWN_HEARSAY)
            {
                break;
            }
            known.insert(
                addr,
                Known {
                    hearsay,
                    ..Known::default()
                },
            );
            if hearsay {
                self.known_hearsay.set(self.known_hearsay.get() + 1);
            }
            self.queue_for(hearsay).push_back(addr);
        }
        self.wake.notify_one();
    }

    fn queue_for(&self, hearsay: bool) -> std::cell::RefMut<'_, VecDeque<SocketAddr>> {
        if hearsay {
            self.hearsay_queue.borrow_mut()
        } else {
            self.queue.borrow_mut()
        }
    }

    /// Never dials `addrs` again (the bridges of web seeds, once they stop).
    pub fn retire(&self, addrs: &[SocketAddr]) {
        let mut known = self.known.borrow_mut();
        for addr in addrs {
            if let Some(k) = known.get_mut(addr) {
                k.refused = true;
            }
        }
    }

    /// Forgets `addr` (`known` is the caller's borrow of `self.known`).
    fn forget(&self, known: &mut HashMap<SocketAddr, Known>, addr: SocketAddr) {
        if known.remove(&addr).is_some_and(|k| k.hearsay) {
            self.known_hearsay.set(self.known_hearsay.get() - 1);
        }
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

    /// The next address to dial: firsthand first, then hearsay while it holds fewer than its
    /// share of the connect slots. Entries that were promoted, forgotten or are connected
    /// already are skipped.
    fn next_to_dial(&self) -> Option<(SocketAddr, bool)> {
        let known = self.known.borrow();
        let usable = |addr: &SocketAddr, hearsay: bool| {
            known
                .get(addr)
                .is_some_and(|k| k.hearsay == hearsay && !k.busy && !k.refused)
        };
        let mut queue = self.queue.borrow_mut();
        while let Some(addr) = queue.pop_front() {
            if usable(&addr, false) {
                return Some((addr, false));
            }
        }
        if self.connecting_hearsay.get() >= MAX_CONNECTING_HEARSAY {
            return None;
        }
        let mut hearsay = self.hearsay_queue.borrow_mut();
        while let Some(addr) = hearsay.pop_front() {
            if usable(&addr, true) {
                return Some((addr, true));
            }
        }
        None
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
        if k.failures >= k.failures_allowed() {
            // Forgotten: its slot in `known` goes to addresses still worth trying (a tracker,
            // the DHT or a peer may name it again later).
            self.forget(&mut known, addr);
            return;
        }
        let delay = RETRY_BASE * 2u32.pow(k.failures.min(4));
        self.retries
            .borrow_mut()
            .push((Instant::now() + delay, addr));
    }

    fn take_due_retries(&self) {
        let now = Instant::now();
        let known = self.known.borrow();
        self.retries.borrow_mut().retain(|&(at, addr)| {
            if at > now {
                return true;
            }
            if let Some(k) = known.get(&addr) {
                self.queue_for(k.hearsay).push_back(addr);
            }
            false
        });
    }
}

/// Keeps connections up to the cap from the queue of addresses.
pub async fn connect_loop(source: Rc<PeerSource>) {
    loop {
        source.take_due_retries();
        let exchanged = source.ctx.torrent.borrow_mut().take_pex_found();
        if !exchanged.is_empty() {
            source.add_from(Origin::Hearsay, exchanged);
        }
        while source.room() {
            let Some((addr, hearsay)) = source.next_to_dial() else {
                break;
            };
            // A complete torrent still dials: it only runs on while seeding, and a seed
            // must reach leechers that cannot connect in (`spate seed --peer`).
            if source.ctx.torrent.borrow().is_banned(addr) {
                continue;
            }
            if let Some(k) = source.known.borrow_mut().get_mut(&addr) {
                k.busy = true;
            }
            source.connecting.set(source.connecting.get() + 1);
            if hearsay {
                source
                    .connecting_hearsay
                    .set(source.connecting_hearsay.get() + 1);
            }
            tokio_uring::spawn(connect_and_run(Rc::clone(&source), addr, hearsay));
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), source.wake.notified()).await;
    }
}

async fn connect_and_run(source: Rc<PeerSource>, addr: SocketAddr, hearsay: bool) {
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
    if hearsay {
        source
            .connecting_hearsay
            .set(source.connecting_hearsay.get() - 1);
    }
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
