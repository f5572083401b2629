//! What every torrent of a session shares: one listening socket (an incoming peer is handed
//! to its torrent by the info-hash in its handshake), the hashing threads, the receive and
//! upload buffer pools and the budget for re-reading piece tails (so the memory caps hold for
//! the session, not per torrent), the upload rate limit and our peer id.

use super::peers::PeerSource;
use super::{SessionConfig, SessionError, RECEIVE_BUFFER, UPLOAD_MEMORY};
use crate::buffer::{BufferPool, SizedPools};
use crate::dht::{Dht, DhtConfig};
use crate::hash::HashPool;
use crate::net::{BoundSocket, TcpListener, TcpStream};
use crate::peer::conn::{run_peer, Opening, MAX_UPLOAD_READ, TAIL_READ_BUDGET};
use crate::peer::handshake::answer_handshake;
use crate::ratelimit::RateLimit;
use crate::types::{InfoHash, PeerId, BLOCK_SIZE};
use crate::wire::mse;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::{Shutdown, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// Incoming connections still in their handshake, at most: a storm of idle connections is
/// refused past this, without touching the peers already connected.
const MAX_PENDING_HANDSHAKES: usize = 64;
/// Receive buffer of a peer that sends us no blocks: a few hundred requests fit.
const CONTROL_BUFFER: usize = 16 << 10;
/// Such buffers at once (16 MiB): every connection of a busy session can wait in a read.
const MAX_IDLE_READS: usize = 1024;
/// Files a session holds open at once over all its torrents: well under the usual 1024 soft
/// descriptor limit, leaving room for sockets.
const SESSION_OPEN_FILES: usize = 256;
/// Files each torrent may hold open however many torrents share the session.
const MIN_OPEN_FILES_PER_TORRENT: usize = 4;

/// The torrents taking incoming peers, by info-hash.
type Registry = RefCell<HashMap<InfoHash, Rc<PeerSource>>>;

pub struct Hub {
    pub listen_addr: SocketAddr,
    pub peer_id: PeerId,
    pub hash_pool: Arc<HashPool>,
    pub receive_pool: BufferPool,
    pub control_pool: BufferPool,
    pub upload_pools: SizedPools,
    pub upload_limit: Rc<RateLimit>,
    pub download_limit: Rc<RateLimit>,
    pub tail_reads: Arc<tokio::sync::Semaphore>,
    /// Each torrent's share of the session's open files.
    pub open_files_per_torrent: usize,
    /// Receive buffers each torrent may hold out of the pool for blocks that arrived ahead
    /// of their piece's hash: a quarter of the pool over all torrents.
    pub reorder_buffers_per_torrent: usize,
    /// Block-sized buffers such blocks are copied into when their receive buffer is mostly
    /// empty: an eighth of the memory limit, shared by all torrents.
    pub reorder_copies: BufferPool,
    /// One torrent checks its data at a time: the disk reads in order, and the check's
    /// read-ahead memory is spent once per session rather than once per torrent.
    pub check_turn: tokio::sync::Semaphore,
    registry: Rc<Registry>,
    /// Bound at once (a busy port is reported before any work), listening only once every
    /// torrent has checked its data: until then peers are refused and retry, as they would
    /// with a client not yet started, and "listening" means "ready".
    socket: RefCell<Option<BoundSocket>>,
    /// Torrents still checking their data.
    checking: Cell<usize>,
    accept_task: RefCell<Option<tokio::task::JoinHandle<()>>>,
    /// The session's DHT node, on the listening port (UDP), when asked for.
    pub dht: Option<Rc<Dht>>,
}

impl Hub {
    /// Listens on `config.listen` for a session of `torrents` torrents. Must be called inside
    /// the tokio-uring runtime; the accept loop runs from the last `checked` call until the
    /// hub is dropped.
    pub fn bind(config: &SessionConfig, torrents: usize) -> Result<Rc<Hub>, SessionError> {
        let listen_error = |source| SessionError::Listen {
            addr: config.listen,
            source,
        };
        let socket = BoundSocket::bind(config.listen).map_err(listen_error)?;
        let listen_addr = socket.local_addr().map_err(listen_error)?;
        let copies = config.memory_limit / 8;
        let reorder_copies = BufferPool::with_memory_limit(BLOCK_SIZE as usize, copies);
        let receive_pool = BufferPool::with_memory_limit(
            RECEIVE_BUFFER,
            (config.memory_limit - copies).max(4 * RECEIVE_BUFFER),
        );
        let reorder_buffers_per_torrent = receive_pool.buffers() / 4 / torrents.max(1);
        let dht = config.dht.as_ref().and_then(|dht| {
            let mut dht = dht.clone();
            dht.bootstrap.extend(saved_dht_nodes(&config.out_dir));
            start_dht(&dht, listen_addr)
        });
        Ok(Rc::new(Hub {
            dht,
            listen_addr,
            peer_id: PeerId::generate(),
            hash_pool: Arc::new(HashPool::per_core()),
            receive_pool,
            reorder_buffers_per_torrent,
            reorder_copies,
            control_pool: BufferPool::new(CONTROL_BUFFER, MAX_IDLE_READS),
            upload_pools: SizedPools::new(
                (BLOCK_SIZE as usize, UPLOAD_MEMORY / 4),
                (MAX_UPLOAD_READ as usize, UPLOAD_MEMORY - UPLOAD_MEMORY / 4),
            ),
            upload_limit: Rc::new(RateLimit::new(config.upload_limit)),
            download_limit: Rc::new(RateLimit::new(config.download_limit)),
            open_files_per_torrent: (SESSION_OPEN_FILES / torrents.max(1))
                .max(MIN_OPEN_FILES_PER_TORRENT),
            check_turn: tokio::sync::Semaphore::new(1),
            tail_reads: Arc::new(tokio::sync::Semaphore::new(TAIL_READ_BUDGET / 1024)),
            registry: Rc::default(),
            socket: RefCell::new(Some(socket)),
            checking: Cell::new(torrents),
            accept_task: RefCell::new(None),
        }))
    }

    /// Called once by each torrent when its data check is over; the last one starts
    /// listening and accepting.
    pub fn checked(&self) {
        self.checking.set(self.checking.get().saturating_sub(1));
        if self.checking.get() > 0 {
            return;
        }
        let Some(socket) = self.socket.borrow_mut().take() else {
            return;
        };
        match socket.listen() {
            Ok(listener) => {
                let task = tokio_uring::spawn(accept_loop(listener, Rc::clone(&self.registry)));
                *self.accept_task.borrow_mut() = Some(task);
            }
            // Cannot happen on a bound TCP socket short of running out of memory; the
            // torrents still dial out.
            Err(e) => tracing::error!(addr = %self.listen_addr, error = %e, "cannot listen"),
        }
    }

    /// Routes incoming peers with `info_hash` to `source` until the returned guard drops.
    pub fn register(&self, info_hash: InfoHash, source: Rc<PeerSource>) -> Registration {
        self.registry.borrow_mut().insert(info_hash, source);
        Registration {
            registry: Rc::clone(&self.registry),
            info_hash,
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        if let Some(task) = self.accept_task.borrow_mut().take() {
            task.abort();
        }
    }
}

/// A torrent's place in the registry; dropping it stops routing peers to the torrent.
pub struct Registration {
    registry: Rc<Registry>,
    info_hash: InfoHash,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.borrow_mut().remove(&self.info_hash);
    }
}

/// One accepted connection still in its handshake: counted while it lives.
struct PendingHandshake(Rc<Cell<usize>>);

impl PendingHandshake {
    fn new(count: &Rc<Cell<usize>>) -> PendingHandshake {
        count.set(count.get() + 1);
        PendingHandshake(Rc::clone(count))
    }
}

impl Drop for PendingHandshake {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

/// Accepts incoming peers and hands each, once its handshake names a torrent of ours that
/// has room for it, to that torrent.
async fn accept_loop(listener: TcpListener, registry: Rc<Registry>) {
    let pending = Rc::new(Cell::new(0usize));
    loop {
        let Ok((stream, addr)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let addr = crate::net::canonical(addr);
        if pending.get() >= MAX_PENDING_HANDSHAKES {
            continue; // dropping the stream closes it
        }
        let _ = crate::net::tune_accepted(&stream);
        let handshaking = PendingHandshake::new(&pending);
        tokio_uring::spawn(answer(
            Rc::new(stream),
            addr,
            Rc::clone(&registry),
            handshaking,
        ));
    }
}

/// Reads an incoming peer's handshake, finds its torrent and runs the connection there.
async fn answer(
    stream: Rc<TcpStream>,
    addr: SocketAddr,
    registry: Rc<Registry>,
    handshaking: PendingHandshake,
) {
    // An MSE dialler names its torrent by HASH('req2', info-hash).
    let torrent_named = |key_hash: &[u8; 20]| {
        let torrents = registry.borrow();
        torrents
            .keys()
            .find(|ih| mse::torrent_key_hash(ih) == *key_hash)
            .copied()
    };
    let (theirs, leftover) = match answer_handshake(&stream, torrent_named).await {
        Ok(h) => h,
        Err(e) => {
            // Close now: a refused peer may wait for our close before it retries (aria2
            // falls back from MSE to a plain handshake).
            let _ = stream.shutdown(Shutdown::Both);
            tracing::debug!(%addr, error = %e, "incoming handshake failed");
            return;
        }
    };
    let source = registry.borrow().get(&theirs.info_hash).cloned();
    let Some(source) = source.filter(|s| s.admits(addr)) else {
        let _ = stream.shutdown(Shutdown::Both);
        tracing::debug!(%addr, info_hash = %theirs.info_hash, "incoming peer refused: unknown torrent, full or banned");
        return;
    };
    let ctx = source.context();
    let opening = Opening::Answered { theirs, leftover };
    // The peer counts here until its handshake is over, then in the torrent's peers.
    let result = run_peer(Rc::clone(&ctx), stream, addr, opening, move || {
        drop(handshaking)
    })
    .await;
    tracing::debug!(%addr, ?result, "incoming peer connection ended");
    if let Err(e) = result {
        if e.is_misbehaviour() {
            ctx.torrent.borrow_mut().stats.peers_dropped += 1;
        }
    }
}

/// The session's DHT node on the UDP port of `listen`. A port already taken costs the DHT,
/// not the session.
fn start_dht(config: &DhtConfig, listen: SocketAddr) -> Option<Rc<Dht>> {
    let config = DhtConfig {
        bind: listen,
        ..config.clone()
    };
    match Dht::start(&config) {
        Ok(dht) => Some(Rc::new(dht)),
        Err(e) => {
            tracing::warn!(addr = %config.bind, error = %e, "DHT off: cannot bind its port");
            None
        }
    }
}

/// Where a session keeps the DHT nodes it knew when it ended, one `IP:PORT` a line.
fn dht_nodes_path(out_dir: &std::path::Path) -> std::path::PathBuf {
    out_dir.join(".spate").join("dht.nodes")
}

/// Most DHT nodes saved, and read back.
const SAVED_DHT_NODES: usize = 64;

/// The DHT nodes the last session in `out_dir` knew (lines that are not an address and port
/// are skipped).
fn saved_dht_nodes(out_dir: &std::path::Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(dht_nodes_path(out_dir)) else {
        return Vec::new();
    };
    text.lines()
        .filter(|l| l.parse::<SocketAddr>().is_ok())
        .take(SAVED_DHT_NODES)
        .map(str::to_string)
        .collect()
}

impl Hub {
    /// Saves the DHT nodes we know under `out_dir`, so that the next session joins through
    /// them even when the bootstrap nodes are down. Best effort.
    pub fn save_dht_nodes(&self, out_dir: &std::path::Path) {
        let Some(dht) = &self.dht else {
            return;
        };
        let nodes = dht.known_nodes(SAVED_DHT_NODES);
        if nodes.is_empty() {
            return;
        }
        let text: String = nodes.iter().map(|n| format!("{n}\n")).collect();
        let path = dht_nodes_path(out_dir);
        let tmp = path.with_extension("tmp");
        let saved = std::fs::create_dir_all(out_dir.join(".spate"))
            .and_then(|()| std::fs::write(&tmp, text))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = saved {
            tracing::debug!(path = %path.display(), error = %e, "DHT nodes not saved");
        }
    }
}
