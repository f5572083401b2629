//! The built-in tracker's I/O (`spate tracker`): HTTP announce/scrape on a TCP listener, BEP 15
//! on a UDP socket, and the periodic expiry of silent peers, all around one `TrackerState`
//! (the pure core in `tracker::server`). It runs inside `tokio_uring::start` but uses tokio's
//! own readiness-based sockets: every read here sits under a timeout or a `select!`, which
//! is only safe when dropping a pending read loses nothing (see DESIGN.md). It never blocks
//! the thread, never holds the state across an await, and bounds every connection in number
//! and in time. `spawn_tracker_thread` runs it on a thread of its own (tests, embedding).

use crate::net;
use crate::tracker::{
    decode_udp_request, encode_announce_reply, encode_failure, encode_scrape,
    encode_udp_announce_reply, encode_udp_connect_reply, encode_udp_error, encode_udp_scrape_reply,
    http_response, parse_announce_query, parse_request_head, parse_scrape_query, parse_whitelist,
    query_wants_compact, udp_connection_id, udp_connection_id_valid, RequestHead, ServerConfig,
    TrackerError, TrackerState, UdpRequest, WhitelistError, MAX_REQUEST_HEAD, MAX_SCRAPE_HASHES,
};
use crate::types::InfoHash;
use std::cell::RefCell;
use std::collections::HashSet;
use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinSet;

/// HTTP connections served at once; connections accepted beyond it are closed at once. Each
/// holds an 8 KiB head buffer and a task for at most `HTTP_READ_TIMEOUT` plus
/// `HTTP_WRITE_TIMEOUT`, so this bounds the memory and the time slow clients can take.
pub const MAX_HTTP_CONNECTIONS: usize = 256;
/// Time a client has to send its whole request head; a slower one gets 408.
pub const HTTP_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Time to send the response and see the client close, after which the connection is dropped.
pub const HTTP_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// After the response, bytes the client still sends are read and dropped for this long (and
/// up to `MAX_LINGER_BYTES`), so that closing with unread input does not reset the
/// connection and destroy the response before the client has read it.
const LINGER_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_LINGER_BYTES: usize = 64 * 1024;
/// Receive buffer for UDP requests. The largest valid one is a scrape of 74 hashes (1,496
/// bytes); an announce is 98 bytes plus BEP 41 options, which are ignored.
pub const MAX_UDP_PACKET: usize = 2048;
/// Pause after an accept or receive error that is not about one connection (EMFILE, ENOBUFS),
/// so that a persistent error does not spin the thread.
const SOCKET_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// How long `spawn_tracker_thread` waits for the thread's runtime to come up.
const THREAD_START_LIMIT: Duration = Duration::from_secs(10);
/// How long stopping a `RunningTracker` waits for its thread before leaving it behind.
pub const THREAD_STOP_LIMIT: Duration = Duration::from_secs(5);
/// Largest whitelist file read: room for the most hashes a whitelist may hold, with comments.
const MAX_WHITELIST_FILE_BYTES: u64 = 128 << 20;

/// Where the tracker listens and how it behaves. At least one of `http` and `udp` is needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackerServerConfig {
    /// HTTP announces and scrapes (`/announce`, `/scrape`); port 0 picks a free port.
    pub http: Option<SocketAddr>,
    /// UDP announces and scrapes (BEP 15); port 0 picks a free port.
    pub udp: Option<SocketAddr>,
    /// The swarm table's caps, interval and whitelist.
    pub state: ServerConfig,
}

impl Default for TrackerServerConfig {
    /// HTTP on 127.0.0.1:6969 (the usual tracker port, loopback until told otherwise), no UDP.
    fn default() -> Self {
        TrackerServerConfig {
            http: Some(SocketAddr::from(([127, 0, 0, 1], 6969))),
            udp: None,
            state: ServerConfig::default(),
        }
    }
}

/// Serves until `shutdown` is notified, then returns `Ok`. Errors are for binding (naming the
/// address) and for a config that serves nothing or has a zero interval. Stop it with
/// `notify_one`: the permit is kept, so a stop that comes before the server waits for it is
/// not lost. Open connections are dropped when it returns.
pub async fn serve(config: TrackerServerConfig, shutdown: Rc<Notify>) -> io::Result<()> {
    BoundTracker::bind(&config)?.serve(shutdown).await
}

/// A tracker whose sockets are bound and listening but not served yet: binding comes first
/// so that the caller learns the real ports (port 0) and sees binding errors at once.
#[derive(Debug)]
pub struct BoundTracker {
    http: Option<std::net::TcpListener>,
    udp: Option<std::net::UdpSocket>,
    state: ServerConfig,
}

impl BoundTracker {
    /// Checks `config` and binds its sockets (no runtime needed).
    pub fn bind(config: &TrackerServerConfig) -> io::Result<BoundTracker> {
        check_config(config)?;
        let http = config
            .http
            .map(|addr| net::listen_std(addr).map_err(|e| bind_error("HTTP", addr, e)))
            .transpose()?;
        let udp = config
            .udp
            .map(|addr| net::bind_udp_std(addr).map_err(|e| bind_error("UDP", addr, e)))
            .transpose()?;
        Ok(BoundTracker {
            http,
            udp,
            state: config.state.clone(),
        })
    }

    /// The address the HTTP listener got, if there is one.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The address the UDP socket got, if there is one.
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.udp.as_ref().and_then(|s| s.local_addr().ok())
    }

    /// Serves until `shutdown` is notified (see `serve`). Must run inside a tokio runtime
    /// with IO and time enabled, on a `LocalSet` (as `tokio_uring::start` provides).
    pub async fn serve(self, shutdown: Rc<Notify>) -> io::Result<()> {
        self.register()?.run(shutdown).await;
        Ok(())
    }

    /// Hands the sockets to the current runtime's reactor.
    fn register(self) -> io::Result<LiveTracker> {
        let http = self.http.map(TcpListener::from_std).transpose()?;
        let udp = self.udp.map(UdpSocket::from_std).transpose()?;
        Ok(LiveTracker {
            http,
            udp,
            state: self.state,
        })
    }
}

fn check_config(config: &TrackerServerConfig) -> io::Result<()> {
    if config.http.is_none() && config.udp.is_none() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the tracker needs an HTTP or a UDP address to listen on",
        ));
    }
    if config.state.interval == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the announce interval must be at least 1 s",
        ));
    }
    Ok(())
}

fn bind_error(what: &str, addr: SocketAddr, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("cannot listen on {addr} ({what}): {e}"))
}

type SharedState = Rc<RefCell<TrackerState>>;

/// The sockets, registered with the runtime, and the table they serve.
struct LiveTracker {
    http: Option<TcpListener>,
    udp: Option<UdpSocket>,
    state: ServerConfig,
}

impl LiveTracker {
    async fn run(self, shutdown: Rc<Notify>) {
        let LiveTracker { http, udp, state } = self;
        let every = Duration::from_secs(state.interval.into());
        let state: SharedState = Rc::new(RefCell::new(TrackerState::new(state)));
        let secret: [u8; 16] = rand::random();
        let http = {
            let state = Rc::clone(&state);
            async move {
                match http {
                    Some(listener) => accept_http(listener, state).await,
                    None => std::future::pending().await,
                }
            }
        };
        let udp = {
            let state = Rc::clone(&state);
            async move {
                match udp {
                    Some(socket) => answer_udp(socket, state, secret).await,
                    None => std::future::pending().await,
                }
            }
        };
        // The loops never end by themselves; dropping them at shutdown drops the listener,
        // the socket and (with the JoinSet) every open connection.
        tokio::select! {
            _ = shutdown.notified() => {}
            _ = http => {}
            _ = udp => {}
            _ = expire_peers(Rc::clone(&state), every) => {}
        }
        tracing::info!("tracker stopped");
    }
}

/// Drops peers that stopped announcing, once per announce interval.
async fn expire_peers(state: SharedState, every: Duration) {
    let start = tokio::time::Instant::now() + every;
    let mut ticks = tokio::time::interval_at(start, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let mut table = state.borrow_mut();
        table.expire(Instant::now());
        tracing::debug!(
            torrents = table.torrent_count(),
            peers = table.peer_count(),
            "expired silent peers"
        );
    }
}

// ---------------------------------------------------------------------------------------
// HTTP

/// Accepts connections and gives each a task, at most `MAX_HTTP_CONNECTIONS` at once.
async fn accept_http(listener: TcpListener, state: SharedState) {
    let mut connections = JoinSet::new();
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) if is_per_connection_error(&e) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "tracker: accept failed");
                tokio::time::sleep(SOCKET_ERROR_PAUSE).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        if connections.len() >= MAX_HTTP_CONNECTIONS {
            tracing::debug!(%remote, "tracker: too many connections, closing a new one");
            drop(stream);
            continue;
        }
        connections.spawn_local(answer_http_connection(stream, remote, Rc::clone(&state)));
    }
}

/// Errors that concern one connection only (it died while queued), not the listener.
fn is_per_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// What reading a request head gave.
enum HeadRead {
    Request(RequestHead),
    /// The head is refused; answer with this response and close.
    Refused(Vec<u8>),
    /// The client closed (or failed) before sending anything: nothing to answer.
    Gone,
}

/// One request, one response, then close: read the head within `HTTP_READ_TIMEOUT`, answer,
/// and send the answer within `HTTP_WRITE_TIMEOUT`.
async fn answer_http_connection(mut stream: TcpStream, remote: SocketAddr, state: SharedState) {
    let read = tokio::time::timeout(HTTP_READ_TIMEOUT, read_request_head(&mut stream)).await;
    let response = match read {
        Err(_elapsed) => http_response(408, b"request head not received in time\n"),
        Ok(HeadRead::Gone) => return,
        Ok(HeadRead::Refused(response)) => response,
        Ok(HeadRead::Request(head)) => {
            tracing::debug!(%remote, method = %head.method, path = %head.path, "tracker: HTTP request");
            let mut state = state.borrow_mut();
            answer_http_request(&head, remote.ip(), &mut state, Instant::now())
        }
    };
    let sent = tokio::time::timeout(HTTP_WRITE_TIMEOUT, send_and_close(&mut stream, &response));
    if sent.await.is_err() {
        tracing::debug!(%remote, "tracker: client did not take the response in time");
    }
}

/// Reads until a whole request head is in, at most `MAX_REQUEST_HEAD` bytes.
async fn read_request_head(stream: &mut TcpStream) -> HeadRead {
    let mut buf = vec![0u8; MAX_REQUEST_HEAD];
    let mut len = 0;
    loop {
        let n = match stream.read(&mut buf[len..]).await {
            Ok(n) => n,
            Err(_) => return HeadRead::Gone,
        };
        if n == 0 {
            return if len == 0 {
                HeadRead::Gone
            } else {
                HeadRead::Refused(http_response(400, b"incomplete request head\n"))
            };
        }
        len += n;
        match parse_request_head(&buf[..len]) {
            Ok(Some(head)) => return HeadRead::Request(head),
            Err(e) => {
                let body = format!("{e}\n");
                return HeadRead::Refused(http_response(e.status(), body.as_bytes()));
            }
            // The parser refuses a full buffer, so there is always room to read into here.
            Ok(None) => debug_assert!(len < buf.len()),
        }
    }
}

/// Sends `response`, half-closes, then drops what the client still sends until it closes
/// (bounded by `LINGER_TIMEOUT` and `MAX_LINGER_BYTES`).
async fn send_and_close(stream: &mut TcpStream, response: &[u8]) {
    if stream.write_all(response).await.is_err() || stream.shutdown().await.is_err() {
        return;
    }
    let drain = async {
        let mut sink = [0u8; 4096];
        let mut drained = 0;
        while drained < MAX_LINGER_BYTES {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIMEOUT, drain).await;
}

/// The whole HTTP response to one request from `remote`: bencoded bodies with status 200
/// (failures included, as clients expect), 404 for other paths, 405 for other methods.
fn answer_http_request(
    head: &RequestHead,
    remote: IpAddr,
    state: &mut TrackerState,
    now: Instant,
) -> Vec<u8> {
    if head.method != "GET" {
        return http_response(405, b"this tracker only answers GET\n");
    }
    let body = match head.path.as_str() {
        "/announce" => announce_body(&head.query, remote, state, now),
        "/scrape" => match parse_scrape_query(&head.query) {
            Ok(hashes) => encode_scrape(&state.scrape(&hashes)),
            Err(reason) => encode_failure(&reason),
        },
        _ => {
            return http_response(
                404,
                b"not found: this tracker serves /announce and /scrape\n",
            )
        }
    };
    http_response(200, &body)
}

fn announce_body(query: &str, remote: IpAddr, state: &mut TrackerState, now: Instant) -> Vec<u8> {
    let reply = parse_announce_query(query, remote).and_then(|a| state.announce(now, a));
    match reply {
        Ok(reply) => encode_announce_reply(&reply, query_wants_compact(query)),
        Err(reason) => encode_failure(&reason),
    }
}

// ---------------------------------------------------------------------------------------
// UDP

/// Answers datagrams one by one: each is decoded, answered from the table and forgotten.
async fn answer_udp(socket: UdpSocket, state: SharedState, secret: [u8; 16]) {
    let started = Instant::now();
    let mut buf = vec![0u8; MAX_UDP_PACKET];
    loop {
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(e) => {
                tracing::debug!(error = %e, "tracker: UDP receive failed");
                tokio::time::sleep(SOCKET_ERROR_PAUSE).await;
                continue;
            }
        };
        let minute = started.elapsed().as_secs() / 60;
        let clock = UdpClock {
            now: Instant::now(),
            minute,
        };
        let reply = answer_udp_packet(&mut state.borrow_mut(), &secret, &buf[..n], from, clock);
        if let Some(reply) = reply {
            if let Err(e) = socket.send_to(&reply, from).await {
                tracing::debug!(%from, error = %e, "tracker: UDP send failed");
            }
        }
    }
}

/// The time as the UDP side needs it: the instant for the table, the minute for connection
/// ids (counted from the server's start; the secret is new at every start anyway).
#[derive(Debug, Clone, Copy)]
struct UdpClock {
    now: Instant,
    minute: u64,
}

/// The reply to one datagram from `from`, or `None` when it is too short to carry a
/// transaction id (an error packet could not be matched to anything).
fn answer_udp_packet(
    state: &mut TrackerState,
    secret: &[u8; 16],
    packet: &[u8],
    from: SocketAddr,
    clock: UdpClock,
) -> Option<Vec<u8>> {
    let request = match decode_udp_request(packet) {
        Ok(request) => request,
        Err(e) => {
            let tid = packet.get(12..16)?;
            let tid = u32::from_be_bytes(tid.try_into().expect("the slice is 4 bytes"));
            return Some(encode_udp_error(tid, &udp_refusal(&e)));
        }
    };
    let tid = request.tid();
    if let Some(conn_id) = request.conn_id() {
        if !udp_connection_id_valid(secret, from.ip(), conn_id, clock.minute) {
            return Some(encode_udp_error(tid, "unknown or expired connection id"));
        }
    }
    let reply = match &request {
        UdpRequest::Connect { .. } => {
            let conn_id = udp_connection_id(secret, from.ip(), clock.minute);
            encode_udp_connect_reply(tid, conn_id).to_vec()
        }
        UdpRequest::Announce { .. } => {
            let announce = request
                .to_server_announce(from.ip())
                .expect("an announce request converts to an announce");
            let ipv6 = from.ip().to_canonical().is_ipv6();
            match state.announce(clock.now, announce) {
                Ok(reply) => encode_udp_announce_reply(tid, &reply, ipv6),
                Err(reason) => encode_udp_error(tid, &reason),
            }
        }
        UdpRequest::Scrape { hashes, .. } => encode_udp_scrape_reply(tid, &state.scrape(hashes)),
    };
    Some(reply)
}

/// A short reason for a request that could not be decoded. Kept short on purpose: error
/// packets go to unverified source addresses, so they must not be much larger than requests.
fn udp_refusal(e: &TrackerError) -> String {
    match e {
        TrackerError::Truncated { .. } => "request too short".into(),
        TrackerError::BadProtocolId => "connect request lacks the protocol id".into(),
        TrackerError::UnexpectedAction(action) => format!("unknown action {action}"),
        TrackerError::TooManyHashes(_) => {
            format!("too many info-hashes, at most {MAX_SCRAPE_HASHES}")
        }
        _ => "malformed request".into(),
    }
}

// ---------------------------------------------------------------------------------------
// Whitelist file

/// Why a whitelist file could not be used; both name the file.
#[derive(Debug, thiserror::Error)]
pub enum WhitelistFileError {
    #[error("cannot read whitelist {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("whitelist {}, {source}", path.display())]
    Invalid {
        path: PathBuf,
        source: WhitelistError,
    },
}

/// Reads a whitelist file: one hex info-hash a line, `#` comments (see `parse_whitelist`).
pub fn load_whitelist(path: &Path) -> Result<HashSet<InfoHash>, WhitelistFileError> {
    let read_error = |source| WhitelistFileError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut text = String::new();
    file.take(MAX_WHITELIST_FILE_BYTES)
        .read_to_string(&mut text)
        .map_err(read_error)?;
    if text.len() as u64 >= MAX_WHITELIST_FILE_BYTES {
        let too_big = io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {} MiB", MAX_WHITELIST_FILE_BYTES >> 20),
        );
        return Err(read_error(too_big));
    }
    parse_whitelist(&text).map_err(|source| WhitelistFileError::Invalid {
        path: path.to_owned(),
        source,
    })
}

// ---------------------------------------------------------------------------------------
// A tracker on its own thread

/// A tracker serving on a thread of its own; dropping it stops the server and joins the
/// thread (waiting at most `THREAD_STOP_LIMIT`).
#[derive(Debug)]
pub struct RunningTracker {
    /// Where the HTTP listener is bound (the real port, also when 0 was asked for).
    pub http_addr: Option<SocketAddr>,
    /// Where the UDP socket is bound.
    pub udp_addr: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<io::Result<()>>>,
}

/// Binds the sockets of `config` on the calling thread, then serves them on a new thread in
/// its own `tokio_uring` runtime. Returns once the server is up: binding and runtime errors
/// come back here, not later.
pub fn spawn_tracker_thread(config: TrackerServerConfig) -> io::Result<RunningTracker> {
    let bound = BoundTracker::bind(&config)?;
    let (http_addr, udp_addr) = (bound.http_addr(), bound.udp_addr());
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel::<io::Result<()>>(1);
    let thread = std::thread::Builder::new()
        .name("spate-tracker".into())
        .spawn(move || serve_on_this_thread(bound, stop_rx, ready_tx))?;
    match ready_rx.recv_timeout(THREAD_START_LIMIT) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            // The thread died or hangs before reporting; dropping `stop_tx` asks it to stop.
            return Err(io::Error::other("the tracker thread did not start"));
        }
    }
    Ok(RunningTracker {
        http_addr,
        udp_addr,
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}

/// The tracker thread: a runtime, the sockets registered with it (both reported through
/// `ready`), then the server until `stop` fires or its sender is dropped.
fn serve_on_this_thread(
    bound: BoundTracker,
    stop: oneshot::Receiver<()>,
    ready: std::sync::mpsc::SyncSender<io::Result<()>>,
) -> io::Result<()> {
    let runtime = match tokio_uring::Runtime::new(&tokio_uring::builder()) {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = ready.send(Err(e));
            return Ok(());
        }
    };
    runtime.block_on(async move {
        let live = match bound.register() {
            Ok(live) => live,
            Err(e) => {
                let _ = ready.send(Err(e));
                return Ok(());
            }
        };
        let _ = ready.send(Ok(()));
        let shutdown = Rc::new(Notify::new());
        let notify = Rc::clone(&shutdown);
        tokio::task::spawn_local(async move {
            let _ = stop.await;
            notify.notify_one();
        });
        live.run(shutdown).await;
        Ok(())
    })
}

impl RunningTracker {
    /// Stops the server and waits for its thread (at most `THREAD_STOP_LIMIT`).
    pub fn stop(mut self) -> io::Result<()> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        let deadline = Instant::now() + THREAD_STOP_LIMIT;
        while !thread.is_finished() {
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the tracker thread did not stop in time; left running",
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the tracker thread panicked")))
    }
}

impl Drop for RunningTracker {
    fn drop(&mut self) {
        if let Err(e) = self.stop_and_join() {
            tracing::warn!(error = %e, "stopping the tracker");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::decode_scrape_response;
    use crate::tracker::udp::{decode_connect_response, encode_connect, encode_scrape_request};

    fn state() -> TrackerState {
        TrackerState::with_seed(ServerConfig::default(), 3)
    }

    fn get(target: &str) -> RequestHead {
        let text = format!("GET {target} HTTP/1.1\r\n\r\n");
        parse_request_head(text.as_bytes()).unwrap().unwrap()
    }

    fn clock(minute: u64) -> UdpClock {
        UdpClock {
            now: Instant::now(),
            minute,
        }
    }

    #[test]
    fn http_requests_are_routed() {
        let mut s = state();
        let ip: IpAddr = [127, 0, 0, 1].into();
        let now = Instant::now();
        let not_found = answer_http_request(&get("/announce.php"), ip, &mut s, now);
        assert!(not_found.starts_with(b"HTTP/1.1 404 "));
        let mut post = get("/announce");
        post.method = "POST".into();
        assert!(answer_http_request(&post, ip, &mut s, now).starts_with(b"HTTP/1.1 405 "));
        let bad = answer_http_request(&get("/announce?port=1"), ip, &mut s, now);
        assert!(bad.starts_with(b"HTTP/1.1 200 OK"));
        assert!(bad.ends_with(b"d14:failure reason17:missing info_hashe"));
        let scrape = answer_http_request(&get("/scrape"), ip, &mut s, now);
        assert!(scrape.ends_with(b"not supportede"), "{scrape:?}");
    }

    #[test]
    fn udp_connect_then_scrape_with_the_id() {
        let mut s = state();
        let secret = [5u8; 16];
        let from: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        let reply = answer_udp_packet(&mut s, &secret, &encode_connect(7), from, clock(3));
        let conn_id = decode_connect_response(&reply.unwrap(), 7).unwrap();
        let hashes = [InfoHash([1; 20])];
        let scrape = encode_scrape_request(conn_id, 8, &hashes).unwrap();
        // Still valid a minute later, from any port of the same IP (clients may open a new
        // socket per exchange), but not from another IP.
        let new_port: SocketAddr = "192.0.2.1:4001".parse().unwrap();
        let reply = answer_udp_packet(&mut s, &secret, &scrape, new_port, clock(4)).unwrap();
        assert_eq!(
            decode_scrape_response(&reply, 8, &hashes).unwrap()[0].complete,
            0
        );
        let other: SocketAddr = "192.0.2.2:4000".parse().unwrap();
        let reply = answer_udp_packet(&mut s, &secret, &scrape, other, clock(4)).unwrap();
        assert!(matches!(
            decode_scrape_response(&reply, 8, &hashes),
            Err(TrackerError::Failure(m)) if m.contains("connection id")
        ));
        let late = answer_udp_packet(&mut s, &secret, &scrape, from, clock(5)).unwrap();
        assert!(decode_scrape_response(&late, 8, &hashes).is_err());
    }

    #[test]
    fn undecodable_udp_packets_get_short_errors_when_they_carry_a_tid() {
        let mut s = state();
        let secret = [5u8; 16];
        let from: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        assert_eq!(
            answer_udp_packet(&mut s, &secret, &[0; 15], from, clock(0)),
            None
        );
        let mut packet = encode_connect(0xabcd).to_vec();
        packet[11] = 9; // action 9
        let reply = answer_udp_packet(&mut s, &secret, &packet, from, clock(0)).unwrap();
        assert_eq!(&reply[..8], &[0, 0, 0, 3, 0, 0, 0xab, 0xcd]);
        assert_eq!(&reply[8..], b"unknown action 9");
        packet[11] = 1; // an announce cut short
        let reply = answer_udp_packet(&mut s, &secret, &packet, from, clock(0)).unwrap();
        assert_eq!(&reply[8..], b"request too short");
        assert!(reply.len() < 64);
    }

    #[test]
    fn whitelist_files_name_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("allowed.txt");
        std::fs::write(&path, format!("{}\n\nzz\n", "0".repeat(40))).unwrap();
        let err = load_whitelist(&path).unwrap_err().to_string();
        assert!(
            err.contains("allowed.txt") && err.contains("line 3"),
            "{err}"
        );
        std::fs::write(&path, format!("# one\n{}\n", "0".repeat(40))).unwrap();
        assert_eq!(
            load_whitelist(&path).unwrap(),
            [InfoHash([0; 20])].into_iter().collect()
        );
        let missing = load_whitelist(&dir.path().join("nope")).unwrap_err();
        assert!(
            missing.to_string().contains("cannot read whitelist"),
            "{missing}"
        );
    }

    #[test]
    fn configs_that_serve_nothing_are_refused() {
        let nothing = TrackerServerConfig {
            http: None,
            udp: None,
            state: ServerConfig::default(),
        };
        assert_eq!(
            BoundTracker::bind(&nothing).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        let mut zero = TrackerServerConfig {
            http: Some("127.0.0.1:0".parse().unwrap()),
            ..nothing
        };
        zero.state.interval = 0;
        assert!(BoundTracker::bind(&zero).is_err());
    }
}
