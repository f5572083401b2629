//! The bridges between our session and a torrent's web seeds. Each web seed gets a listening
//! socket on 127.0.0.1; the session dials it as it dials any peer, and the bridge answers as
//! a seed: our handshake, a full bitfield, UNCHOKE. It reads the session's REQUESTs, fetches
//! each run of consecutive blocks with one HTTP range request per file the run touches, and
//! sends the blocks back as PIECEs. A failed fetch (an HTTP error, a short or long body, a
//! server that ignores ranges) chokes the session for a while, doubling up to five minutes,
//! so its requests go to other peers meanwhile; bad data fails the piece's hash and the
//! session bans the bridge's address like any peer's. The bridges run on a thread of their
//! own (a tokio runtime with reqwest), never on the session's io_uring thread.

use super::{fetch_run, file_urls, MAX_FETCH};
use crate::announce::http::{http_client, HttpConfig};
use crate::layout::Layout;
use crate::metainfo::Metainfo;
use crate::types::{BlockRef, InfoHash, PeerId};
use crate::wire::{
    piece_header, FrameDecoder, Handshake, Message, HANDSHAKE_LEN, PIECE_HEADER_LEN,
};
use futures_util::stream::{FuturesUnordered, StreamExt};
use reqwest::StatusCode;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::rc::Rc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// One fetch (up to `MAX_FETCH`, one range request per file) must finish within this.
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);
/// The session's handshake must come within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A keep-alive goes to the session after this long without a message.
const KEEPALIVE: Duration = Duration::from_secs(60);
/// The first pause after a failed fetch; each failure in a row doubles it, up to the most.
const FIRST_BACKOFF: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Requests queued at once; the session never asks for more than its window (500).
const MAX_QUEUED: usize = 4096;
/// Fetches in flight to one server at once, each on a connection of its own (Transmission
/// opens up to four per web seed): with small pieces a fetch is often a single piece, and
/// one at a time left the download waiting on the server's latency.
const MAX_FETCHES: usize = 4;
/// The largest block the session may ask for.
const MAX_BLOCK: u32 = 128 << 10;
/// Web seeds bridged per torrent; the rest of a long `url-list` is ignored.
pub const MAX_WEB_SEEDS: usize = 4;

/// The running bridges of one torrent's web seeds; dropping it stops them.
pub struct WebSeeds {
    addrs: Vec<SocketAddr>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl WebSeeds {
    /// Starts a bridge for each of `meta`'s web seeds (at most `MAX_WEB_SEEDS`) that the
    /// session, as `session_id`, is to dial. URLs other than http(s) are skipped.
    pub fn start(meta: &Metainfo, session_id: PeerId) -> io::Result<WebSeeds> {
        let client = http_client(&HttpConfig {
            timeout: FETCH_TIMEOUT,
            ..HttpConfig::default()
        })
        .map_err(io::Error::other)?;
        let layout = Layout::new(&meta.info);
        let mut bridges = Vec::new();
        let mut addrs = Vec::new();
        let usable = (meta.web_seeds.iter())
            .filter(|u| u.starts_with("http://") || u.starts_with("https://"));
        for url in usable.take(MAX_WEB_SEEDS) {
            let listener = StdListener::bind("127.0.0.1:0")?;
            listener.set_nonblocking(true)?;
            addrs.push(listener.local_addr()?);
            let seed = WebSeed {
                url: url.clone(),
                file_urls: file_urls(url, &meta.info),
                layout: layout.clone(),
                info_hash: meta.info_hash,
                peer_id: bridge_peer_id(session_id),
                client: client.clone(),
            };
            bridges.push((listener, seed));
        }
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("spate-webseed".into())
            .spawn(move || run(bridges, stopped))?;
        Ok(WebSeeds {
            addrs,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The addresses the session dials, one per web seed.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }
}

impl Drop for WebSeeds {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A peer id for a bridge: the session's own would make it refuse the connection as one to
/// itself.
fn bridge_peer_id(session_id: PeerId) -> PeerId {
    let mut id = PeerId::generate();
    if id == session_id {
        id.0[19] ^= 1;
    }
    id.0[..8].copy_from_slice(b"-SPWEB0-");
    id
}

/// The bridges' thread: serves every bridge until `stopped` fires (or its sender is gone).
fn run(bridges: Vec<(StdListener, WebSeed)>, stopped: tokio::sync::oneshot::Receiver<()>) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::warn!(error = %e, "web seeds off: no runtime");
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        for (listener, seed) in bridges {
            match TcpListener::from_std(listener) {
                Ok(listener) => drop(tokio::task::spawn_local(accept_loop(listener, seed))),
                Err(e) => tracing::warn!(url = %seed.url, error = %e, "web seed off"),
            }
        }
        let _ = stopped.await;
    });
}

/// One web seed: where its files are and how to reach it.
struct WebSeed {
    url: String,
    file_urls: Vec<String>,
    layout: Layout,
    info_hash: InfoHash,
    peer_id: PeerId,
    client: reqwest::Client,
}

async fn accept_loop(listener: TcpListener, seed: WebSeed) {
    let seed = Rc::new(seed);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let seed = Rc::clone(&seed);
        tokio::task::spawn_local(async move {
            if let Err(e) = serve(stream, &seed).await {
                tracing::debug!(url = %seed.url, error = %e, "web seed bridge connection ended");
            }
        });
    }
}

/// Requests read from the session and not yet fetched, and those being fetched.
#[derive(Default)]
struct Queue {
    waiting: RefCell<VecDeque<BlockRef>>,
    /// The requests being fetched, each with whether the session cancelled it meanwhile.
    fetching: RefCell<Vec<(BlockRef, bool)>>,
    wake: Notify,
}

/// Serves one connection from the session: the handshake, then requests until the session
/// hangs up or has every piece.
async fn serve(stream: TcpStream, seed: &WebSeed) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let (mut rd, mut wr) = stream.into_split();
    let mut theirs = [0u8; HANDSHAKE_LEN];
    tokio::time::timeout(HANDSHAKE_TIMEOUT, rd.read_exact(&mut theirs))
        .await
        .map_err(|_| io::Error::other("no handshake"))??;
    let theirs = Handshake::decode(&theirs).map_err(io::Error::other)?;
    if theirs.info_hash != seed.info_hash {
        return Err(io::Error::other("handshake for another torrent"));
    }
    let ours = Handshake {
        reserved: [0; 8],
        info_hash: seed.info_hash,
        peer_id: seed.peer_id,
    };
    let mut hello = ours.encode().to_vec();
    Message::Bitfield(&full_bitfield(seed.layout.piece_count())).encode_into(&mut hello);
    Message::Unchoke.encode_into(&mut hello);
    wr.write_all(&hello).await?;
    let queue = Queue::default();
    tokio::select! {
        read = read_requests(&mut rd, seed, &queue) => read,
        served = serve_requests(&mut wr, seed, &queue) => served,
    }
}

/// A bitfield with every piece set and the spare bits clear.
fn full_bitfield(pieces: u32) -> Vec<u8> {
    let mut bits = vec![0xFF; pieces.div_ceil(8) as usize];
    if !pieces.is_multiple_of(8) {
        if let Some(last) = bits.last_mut() {
            *last = 0xFF << (8 - pieces % 8);
        }
    }
    bits
}

/// Reads the session's messages, queueing its requests, until it hangs up or has every
/// piece (it then wants nothing more from us).
async fn read_requests(rd: &mut OwnedReadHalf, seed: &WebSeed, queue: &Queue) -> io::Result<()> {
    let decoder = FrameDecoder::default();
    let pieces = seed.layout.piece_count() as usize;
    let mut has = vec![false; pieces];
    let mut have_count = 0;
    let mut buf = Vec::new();
    let mut read = vec![0u8; 64 << 10];
    loop {
        let n = rd.read(&mut read).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&read[..n]);
        let mut used = 0;
        while let Some((msg, len)) = decoder.decode(&buf[used..]).map_err(io::Error::other)? {
            used += len;
            match msg {
                Message::Request(block) => {
                    check_request(seed, block)?;
                    let mut waiting = queue.waiting.borrow_mut();
                    if waiting.len() >= MAX_QUEUED {
                        return Err(io::Error::other("too many requests queued"));
                    }
                    waiting.push_back(block);
                    queue.wake.notify_one();
                }
                Message::Cancel(block) => cancel(queue, block),
                Message::Have(piece) => {
                    if let Some(h) = has.get_mut(piece.as_usize()) {
                        have_count += usize::from(!*h);
                        *h = true;
                    }
                }
                Message::Bitfield(bits) => {
                    for (i, h) in has.iter_mut().enumerate() {
                        *h = bits.get(i / 8).is_some_and(|b| b & (0x80 >> (i % 8)) != 0);
                    }
                    have_count = has.iter().filter(|&&h| h).count();
                }
                Message::HaveAll => have_count = pieces,
                _ => {}
            }
            if have_count == pieces {
                return Ok(());
            }
        }
        buf.drain(..used);
    }
}

fn check_request(seed: &WebSeed, block: BlockRef) -> io::Result<()> {
    let fits = block.piece.0 < seed.layout.piece_count()
        && block.len > 0
        && block.len <= MAX_BLOCK
        && u64::from(block.offset) + u64::from(block.len)
            <= u64::from(seed.layout.piece_len(block.piece));
    if fits {
        Ok(())
    } else {
        Err(io::Error::other(format!("bad request {block:?}")))
    }
}

/// Drops a request the session no longer wants, or marks it if its fetch has begun.
fn cancel(queue: &Queue, block: BlockRef) {
    let mut waiting = queue.waiting.borrow_mut();
    if let Some(i) = waiting.iter().position(|&b| b == block) {
        waiting.remove(i);
    } else if let Some(f) = (queue.fetching.borrow_mut().iter_mut()).find(|(b, _)| *b == block) {
        f.1 = true;
    }
}

/// Fetches the queued requests run by run, `MAX_FETCHES` at once, and sends each run's
/// blocks as it arrives; chokes the session for a while after a failed fetch.
async fn serve_requests(wr: &mut OwnedWriteHalf, seed: &WebSeed, queue: &Queue) -> io::Result<()> {
    let mut backoff = FIRST_BACKOFF;
    let mut in_flight = FuturesUnordered::new();
    loop {
        while in_flight.len() < MAX_FETCHES {
            let Some(run) = queue.next_run(seed) else {
                break;
            };
            in_flight.push(async move {
                let start = seed.offset_of(&run[0]);
                let len: u64 = run.iter().map(|b| u64::from(b.len)).sum();
                let fetched = seed.fetch(start, len).await;
                (run, start, fetched)
            });
        }
        if in_flight.is_empty() {
            let woken = tokio::time::timeout(KEEPALIVE, queue.wake.notified()).await;
            if woken.is_err() {
                wr.write_all(&[0; 4]).await?;
            }
            continue;
        }
        let (run, start, fetched) = tokio::select! {
            Some(done) = in_flight.next() => done,
            _ = queue.wake.notified() => continue,
        };
        let data = match fetched {
            Ok(data) => data,
            Err(e) => {
                drop(std::mem::take(&mut in_flight));
                queue.fetching.borrow_mut().clear();
                if backoff == FIRST_BACKOFF {
                    tracing::warn!(url = %seed.url, error = %e, pause = ?backoff, "web seed failed");
                } else {
                    tracing::debug!(url = %seed.url, error = %e, pause = ?backoff, "web seed failed");
                }
                // A choked peer's requests are void (BEP 3): the session asks others.
                send(wr, Message::Choke).await?;
                queue.waiting.borrow_mut().clear();
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                queue.waiting.borrow_mut().clear();
                send(wr, Message::Unchoke).await?;
                continue;
            }
        };
        backoff = FIRST_BACKOFF;
        let mut out = Vec::with_capacity(data.len() + run.len() * PIECE_HEADER_LEN);
        for block in run {
            if queue.take_fetched(block) {
                let at = (seed.offset_of(&block) - start) as usize;
                out.extend_from_slice(&piece_header(block.piece, block.offset, block.len));
                out.extend_from_slice(&data[at..at + block.len as usize]);
            }
        }
        wr.write_all(&out).await?;
    }
}

async fn send(wr: &mut OwnedWriteHalf, message: Message<'_>) -> io::Result<()> {
    let mut frame = Vec::new();
    message.encode_into(&mut frame);
    wr.write_all(&frame).await
}

impl Queue {
    /// Takes the next run of waiting requests to fetch, marking them in flight.
    fn next_run(&self, seed: &WebSeed) -> Option<Vec<BlockRef>> {
        let mut waiting = self.waiting.borrow_mut();
        let picked = fetch_run(waiting.make_contiguous(), |b| seed.offset_of(b));
        if picked.is_empty() {
            return None;
        }
        let run: Vec<BlockRef> = picked.iter().map(|&i| waiting[i]).collect();
        let mut at = 0;
        waiting.retain(|_| {
            at += 1;
            !picked.contains(&(at - 1))
        });
        (self.fetching.borrow_mut()).extend(run.iter().map(|&b| (b, false)));
        Some(run)
    }

    /// Ends `block`'s fetch; false if the session cancelled it meanwhile.
    fn take_fetched(&self, block: BlockRef) -> bool {
        let mut fetching = self.fetching.borrow_mut();
        match fetching.iter().position(|(b, _)| *b == block) {
            Some(i) => !fetching.swap_remove(i).1,
            None => false,
        }
    }
}

impl WebSeed {
    fn offset_of(&self, block: &BlockRef) -> u64 {
        self.layout.piece_offset(block.piece) + u64::from(block.offset)
    }

    /// The torrent's bytes `start..start + len` (at most `MAX_FETCH`): padding as zeros, the
    /// rest from the server, one range request per file.
    async fn fetch(&self, start: u64, len: u64) -> io::Result<Vec<u8>> {
        debug_assert!(len <= MAX_FETCH);
        let mut out = Vec::with_capacity(len as usize);
        for seg in self.layout.segments_at(start, len as u32) {
            if seg.pad {
                out.resize(out.len() + seg.len as usize, 0);
            } else {
                self.fetch_range(seg.file, seg.file_offset, u64::from(seg.len), &mut out)
                    .await?;
            }
        }
        Ok(out)
    }

    /// Appends bytes `offset..offset + len` of `file` from the server to `out`.
    async fn fetch_range(
        &self,
        file: usize,
        offset: u64,
        len: u64,
        out: &mut Vec<u8>,
    ) -> io::Result<()> {
        let url = &self.file_urls[file];
        let last = offset + len - 1;
        let fail = |what: String| io::Error::other(format!("{url}: {what}"));
        let mut response = (self.client.get(url))
            .header(reqwest::header::RANGE, format!("bytes={offset}-{last}"))
            .send()
            .await
            .map_err(|e| fail(e.to_string()))?;
        let whole_file = offset == 0 && len == self.layout.files()[file].length;
        match response.status() {
            StatusCode::PARTIAL_CONTENT => {
                let range = response.headers().get(reqwest::header::CONTENT_RANGE);
                let range = range.and_then(|v| v.to_str().ok()).unwrap_or("");
                if !content_range_is(range, offset, last) {
                    return Err(fail(format!("asked for {offset}-{last}, got {range:?}")));
                }
            }
            // A server that ignores ranges is usable only for a whole file.
            StatusCode::OK if whole_file => {}
            StatusCode::OK => return Err(fail("ranges not supported".into())),
            status => return Err(fail(format!("HTTP {status}"))),
        }
        let want = out.len() + len as usize;
        while let Some(chunk) = response.chunk().await.map_err(|e| fail(e.to_string()))? {
            if out.len() + chunk.len() > want {
                return Err(fail("longer body than asked for".into()));
            }
            out.extend_from_slice(&chunk);
        }
        if out.len() != want {
            return Err(fail("body ended early".into()));
        }
        Ok(())
    }
}

/// True if a Content-Range header says `bytes first-last/...`.
fn content_range_is(header: &str, first: u64, last: u64) -> bool {
    let Some(range) = header.strip_prefix("bytes ") else {
        return false;
    };
    let span = range.split('/').next().unwrap_or("");
    span == format!("{first}-{last}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bitfield_leaves_the_spare_bits_clear() {
        assert_eq!(full_bitfield(8), [0xFF]);
        assert_eq!(full_bitfield(9), [0xFF, 0x80]);
        assert_eq!(full_bitfield(15), [0xFF, 0xFE]);
        assert!(crate::wire::validate_bitfield(&full_bitfield(13), 13).is_ok());
    }

    #[test]
    fn content_ranges_must_match_what_was_asked() {
        assert!(content_range_is("bytes 0-99/1000", 0, 99));
        assert!(content_range_is("bytes 100-199/*", 100, 199));
        assert!(!content_range_is("bytes 0-199/1000", 0, 99));
        assert!(!content_range_is("0-99/1000", 0, 99));
        assert!(!content_range_is("", 0, 99));
    }
}
