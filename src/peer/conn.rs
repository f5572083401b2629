//! Runs one peer connection: the handshake (with a watchdog, since a tokio-uring read must
//! never sit under a timeout), then three tasks over the socket: the reader (receive buffer ->
//! inbox -> torrent handlers -> disk writes), the writer (outbox -> socket) and the uploader
//! (queued requests -> disk reads -> outbox). The connection ends when the reader sees EOF,
//! an error or a protocol violation, or when the torrent closes the peer's outbox; the writer
//! then shuts the socket down so every task ends.

use super::extended;
use super::handshake::{dial_encrypted, read_handshake};
use super::inbox::{Event, Inbox};
use super::outbox::{run_writer, Outbox};
use crate::buffer::{BufferPool, PoolBuf, SizedPools};
use crate::hash::CopyPlan;
use crate::net::TcpStream;
use crate::picker::PeerKey;
use crate::ratelimit::RateLimit;
use crate::storage::{StagedWrite, Storage};
use crate::torrent::{
    Dialler, DuplicateConnection, TailBytes, TailRead, Torrent, Violation, WriteJob,
};
use crate::types::{BlockRef, InfoHash, PeerId};
use crate::wire::{Extensions, Handshake, Message, WireError, DEFAULT_MAX_FRAME};
use std::cell::RefCell;
use std::net::{Shutdown, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Notify;
use tokio_uring::buf::BoundedBuf;

/// Bytes of PIECE data queued for one peer before its uploader waits for the socket to
/// drain: enough to keep a fast link busy, small enough that a peer that never reads
/// cannot make us hold more.
const MAX_QUEUED_UPLOAD: usize = 2 << 20;
/// Upload buffer memory one peer may pin with reads queued or in flight: a peer that never
/// reads holds at most this much, so it cannot drain the upload pools every peer shares.
/// Four long-run buffers, or 64 single-block ones for a leecher that asks a block at a time.
const MAX_PINNED_UPLOAD: usize = 1 << 20;
/// The smallest read a download limit cuts reads to (one block and its header).
const MIN_LIMITED_READ: usize = 16 << 10;
/// We advertise the extension protocol (BEP 10) only.
pub const OUR_EXTENSIONS: Extensions = Extensions {
    extended: true,
    fast: false,
    dht: false,
};

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad handshake: {0}")]
    Handshake(String),
    #[error("protocol: {0}")]
    Wire(#[from] WireError),
    #[error("{0}")]
    Violation(#[from] Violation),
    #[error("connected to ourselves")]
    SelfConnection,
    #[error("{0}")]
    Duplicate(#[from] DuplicateConnection),
}

impl PeerError {
    /// True when the peer broke the protocol (counted), not merely went away.
    pub fn is_misbehaviour(&self) -> bool {
        matches!(
            self,
            PeerError::Wire(_) | PeerError::Violation(_) | PeerError::Handshake(_)
        )
    }
}

/// A disk error that stops the download, shared by every task that writes.
#[derive(Default)]
pub struct FatalSlot {
    error: RefCell<Option<String>>,
    pub notify: Notify,
}

impl FatalSlot {
    pub fn set(&self, message: String) {
        let mut e = self.error.borrow_mut();
        if e.is_none() {
            *e = Some(message);
        }
        self.notify.notify_one();
    }

    pub fn get(&self) -> Option<String> {
        self.error.borrow().clone()
    }
}

/// What every connection of one torrent shares.
pub struct ConnContext {
    pub torrent: Rc<RefCell<Torrent>>,
    pub storage: Rc<Storage>,
    pub pool: BufferPool,
    /// Small receive buffers for peers that send us no blocks (choking us, or nothing we
    /// want): requests, HAVEs and keep-alives.
    pub control_pool: BufferPool,
    /// Buffers for disk reads that serve uploads (one run of blocks each).
    pub upload_pools: SizedPools,
    /// The session's upload rate limit, shared by every uploader.
    pub upload_limit: Rc<RateLimit>,
    /// The session's download rate limit: each reader waits at it after every read.
    pub download_limit: Rc<RateLimit>,
    pub info_hash: InfoHash,
    pub peer_id: PeerId,
    /// The port the session accepts connections on (told to peers, for peer exchange).
    pub listen_port: u16,
    pub fatal: Rc<FatalSlot>,
    /// Bounds the memory of pieces re-read from disk to finish their hash, from the read to
    /// the end of the hash (`TAIL_READ_BUDGET` bytes, in KiB permits).
    pub tail_reads: Arc<tokio::sync::Semaphore>,
}

/// Bytes of piece tails being re-read from disk at once, over all peers of a session: blocks
/// that arrive out of order are hashed from disk after the write, into a buffer of their own.
pub const TAIL_READ_BUDGET: usize = 8 << 20;

/// How a connection began: we dialled the peer, or it dialled us and its handshake (read
/// by whoever accepted it, to find the torrent) came with whatever bytes followed it.
pub enum Opening {
    Dialled,
    /// Dialled with the MSE/PE handshake (the peer closed a plain one).
    DialledEncrypted,
    Answered {
        theirs: Handshake,
        leftover: Vec<u8>,
    },
}

/// Runs a connection to `addr` until it ends. `handshake_done` runs (or is dropped, if the
/// handshake fails) as soon as the handshake is over.
pub async fn run_peer(
    ctx: Rc<ConnContext>,
    stream: Rc<TcpStream>,
    addr: SocketAddr,
    opening: Opening,
    handshake_done: impl FnOnce(),
) -> Result<(), PeerError> {
    let dialler = match opening {
        Opening::Dialled | Opening::DialledEncrypted => Dialler::Us,
        Opening::Answered { .. } => Dialler::Them,
    };
    let (handshake, leftover) = match exchange_handshakes(&ctx, &stream, opening).await {
        Ok(h) => h,
        Err(e) => {
            // Close now: a refused peer (aria2 opens with MSE) waits for our close before it
            // retries with a plain handshake.
            let _ = stream.shutdown(Shutdown::Both);
            return Err(e);
        }
    };
    handshake_done();
    let outbox = Outbox::new();
    // add_peer queues our BITFIELD, which must be the first message after the handshake.
    let key = ctx
        .torrent
        .borrow_mut()
        .add_peer(addr, dialler, Rc::clone(&outbox), Instant::now());
    let claim =
        (ctx.torrent.borrow_mut()).claim_peer_id(key, handshake.peer_id, ctx.peer_id, dialler);
    if let Err(duplicate) = claim {
        ctx.torrent.borrow_mut().remove_peer(key, Instant::now());
        let _ = stream.shutdown(Shutdown::Both);
        return Err(duplicate.into());
    }
    if handshake.supports_extended() {
        let offer = ctx.torrent.borrow().extension_offer(ctx.listen_port);
        outbox.send(&Message::Extended {
            id: 0,
            payload: &extended::our_handshake(offer),
        });
    }
    let writer = tokio_uring::spawn({
        let (stream, outbox) = (Rc::clone(&stream), Rc::clone(&outbox));
        async move {
            if let Err(e) = run_writer(Rc::clone(&stream), outbox).await {
                tracing::debug!(%addr, error = %e, "write failed");
            }
            let _ = stream.shutdown(Shutdown::Both);
        }
    });
    let upload_wake = Rc::new(Notify::new());
    let uploader = tokio_uring::spawn(run_uploader(
        Rc::clone(&ctx),
        key,
        Rc::clone(&outbox),
        Rc::clone(&upload_wake),
    ));
    let result = read_loop(&ctx, &stream, key, leftover, &upload_wake).await;
    ctx.torrent.borrow_mut().remove_peer(key, Instant::now());
    outbox.close();
    upload_wake.notify_one();
    let _ = stream.shutdown(Shutdown::Both);
    let _ = writer.await;
    let _ = uploader.await;
    result
}

/// Sends our handshake (behind MSE if the opening says so) and, on a connection we dialled,
/// reads the peer's; returns theirs and any bytes that followed it.
async fn exchange_handshakes(
    ctx: &ConnContext,
    stream: &Rc<TcpStream>,
    opening: Opening,
) -> Result<(Handshake, Vec<u8>), PeerError> {
    let ours = Handshake {
        reserved: OUR_EXTENSIONS.reserved(),
        info_hash: ctx.info_hash,
        peer_id: ctx.peer_id,
    };
    let (theirs, leftover) = match opening {
        // Behind MSE, ours goes out as the offer's initial payload.
        Opening::DialledEncrypted => dial_encrypted(stream, ctx.info_hash, &ours.encode()).await?,
        plain => {
            let (res, _) = stream.write_all(ours.encode().to_vec()).await;
            res?;
            match plain {
                Opening::Answered { theirs, leftover } => (theirs, leftover),
                _ => read_handshake(stream).await?,
            }
        }
    };
    if theirs.info_hash != ctx.info_hash {
        return Err(PeerError::Handshake(format!(
            "unknown info-hash {}",
            theirs.info_hash
        )));
    }
    if theirs.peer_id == ctx.peer_id {
        return Err(PeerError::SelfConnection);
    }
    Ok((theirs, leftover))
}

/// Reads until EOF, error or violation, handing what arrives to the torrent.
async fn read_loop(
    ctx: &Rc<ConnContext>,
    stream: &TcpStream,
    key: PeerKey,
    leftover: Vec<u8>,
    upload_wake: &Notify,
) -> Result<(), PeerError> {
    let mut inbox = Inbox::new(DEFAULT_MAX_FRAME);
    let mut events = Vec::new();
    if !leftover.is_empty() {
        let mut first = ctx.control_pool.take().await;
        first.extend_from_slice(&leftover[..leftover.len().min(first.capacity())]);
        inbox.feed(first.freeze(), &mut events)?;
        handle_events(ctx, key, &mut events, upload_wake)?;
    }
    loop {
        // An idle peer's read waits with its buffer: only a peer that may send us blocks
        // gets a large one, so idle peers cannot drain the pool the downloads need.
        let sends_blocks = ctx
            .torrent
            .borrow()
            .peer(key)
            .is_some_and(|p| p.am_interested && !p.peer_choking);
        let pool = if sends_blocks {
            &ctx.pool
        } else {
            &ctx.control_pool
        };
        let buf = pool.take().await;
        let step = ctx.download_limit.step().unwrap_or(usize::MAX);
        let room = buf.capacity().min(step.max(MIN_LIMITED_READ));
        let (res, buf) = stream.read(buf.slice(..room)).await;
        let buf = buf.into_inner();
        let n = res?;
        if n == 0 {
            return Ok(());
        }
        inbox.feed(buf.freeze(), &mut events)?;
        handle_events(ctx, key, &mut events, upload_wake)?;
        ctx.download_limit.admit(n as u64).await;
    }
}

/// Applies one buffer's events to the torrent and starts the disk writes they produce.
fn handle_events(
    ctx: &Rc<ConnContext>,
    key: PeerKey,
    events: &mut Vec<Event>,
    upload_wake: &Notify,
) -> Result<(), PeerError> {
    let now = Instant::now();
    let mut blocks = Vec::new();
    let mut torrent = ctx.torrent.borrow_mut();
    for event in events.drain(..) {
        match event {
            Event::Block(b) => blocks.push(b),
            Event::Message(m) => {
                tracing::trace!(peer = key.0, message = ?m, "received");
                let is_request = matches!(m, crate::peer::inbox::Inbound::Request(_));
                torrent.on_message(key, m, now)?;
                if is_request {
                    upload_wake.notify_one();
                }
            }
        }
    }
    if !blocks.is_empty() {
        let (jobs, violation) = torrent.on_blocks(key, blocks, now);
        start_writes(ctx, &torrent, jobs);
        if let Some(v) = violation {
            return Err(v.into());
        }
    }
    torrent.refill_requests(key, now);
    Ok(())
}

/// Hashes the blocks just accepted and starts the writes of their runs. A run that can take
/// a write slot and its bounce buffer now is staged, and the hashing pass fills the buffer
/// (`CopyPlan`); the others copy when their write task runs.
fn start_writes(ctx: &Rc<ConnContext>, torrent: &Torrent, jobs: Vec<WriteJob>) {
    let mut staged: Vec<_> = (jobs.iter())
        .map(|job| ctx.storage.stage(job.start, &job.chunks))
        .collect();
    let mut plan = CopyPlan::default();
    for (job, stage) in jobs.iter().zip(&mut staged) {
        if let Some(stage) = stage {
            stage.plan_copy(&job.chunks, &mut plan);
        }
    }
    torrent.hash_received(&mut plan);
    plan.copy_rest();
    for (job, stage) in jobs.into_iter().zip(staged) {
        tokio_uring::spawn(write_job(Rc::clone(ctx), job, stage));
    }
}

/// Writes one run of blocks, then starts verification of the pieces it completed.
async fn write_job(ctx: Rc<ConnContext>, job: WriteJob, staged: Option<StagedWrite>) {
    let started = Instant::now();
    let written = match staged {
        Some(staged) => ctx.storage.write_staged(staged, job.chunks).await,
        None => ctx.storage.write(job.start, job.chunks).await,
    };
    if let Err(e) = written {
        ctx.fatal
            .set(format!("writing to {}: {e}", ctx.storage.path(0).display()));
        return;
    }
    let tails =
        ctx.torrent
            .borrow_mut()
            .on_write_done(&job.pieces, started.elapsed(), Instant::now());
    for tail in tails {
        read_tail(&ctx, tail).await;
    }
}

async fn read_tail(ctx: &ConnContext, tail: TailRead) {
    let kib = (tail.len.div_ceil(1024)).min(TAIL_READ_BUDGET / 1024) as u32;
    let budget = Arc::clone(&ctx.tail_reads)
        .acquire_many_owned(kib)
        .await
        .expect("never closed");
    let (res, data) = ctx.storage.read(tail.start, tail.len, Vec::new()).await;
    match res {
        Ok(()) => {
            let bytes = TailBytes { data, budget };
            ctx.torrent.borrow_mut().on_tail_read(tail, bytes)
        }
        Err(e) => ctx
            .fatal
            .set(format!("reading back piece {}: {e}", tail.piece)),
    }
}

/// Largest single disk read serving a run of contiguous requests (the large upload
/// buffers' size).
pub const MAX_UPLOAD_READ: u32 = 256 << 10;

/// Serves the peer's requests. Each turn takes every run of contiguous requested blocks
/// queued (up to the peer's share of upload memory), reads them from disk at once, and
/// queues them in request order, holding back while too much is queued for a slow reader.
/// Leechers that send one REQUEST per block received (rqbit) leave runs of a block or two:
/// reading them one at a time would cost a loop turn each, so they are read side by side.
async fn run_uploader(ctx: Rc<ConnContext>, key: PeerKey, outbox: Rc<Outbox>, wake: Rc<Notify>) {
    loop {
        if outbox.is_closed() {
            return;
        }
        while (outbox.queued_bytes() > MAX_QUEUED_UPLOAD
            || outbox.pinned_bytes() >= MAX_PINNED_UPLOAD)
            && !outbox.is_closed()
        {
            outbox.drained().await;
        }
        let room = MAX_PINNED_UPLOAD - outbox.pinned_bytes().min(MAX_PINNED_UPLOAD);
        let batch = take_upload_batch(&ctx, key, room).await;
        if batch.is_empty() {
            wake.notified().await;
            continue;
        }
        let len: u32 = batch.iter().map(|(run, _)| run_len(run)).sum();
        ctx.upload_limit.admit(len.into()).await;
        let reads = futures_util::future::join_all(
            batch.into_iter().map(|(run, buf)| read_run(&ctx, run, buf)),
        )
        .await;
        for (run, (res, data)) in reads {
            if res.is_ok() {
                queue_run(&ctx, key, &outbox, &run, data);
            } else {
                serve_piece_by_piece(&ctx, key, &outbox, &run).await;
            }
        }
    }
}

/// The runs of `key`'s requests to read next, each with its buffer, pinning at most about
/// `room` bytes of upload memory (always at least one run). Only the first buffer is waited
/// for: a run with no free buffer goes back to the queue, so no uploader holds buffers while
/// waiting for more.
async fn take_upload_batch(
    ctx: &ConnContext,
    key: PeerKey,
    room: usize,
) -> Vec<(Vec<BlockRef>, PoolBuf)> {
    let mut batch = Vec::new();
    let mut pinned = 0;
    while batch.is_empty() || pinned < room {
        let run = ctx
            .torrent
            .borrow_mut()
            .next_upload_run(key, MAX_UPLOAD_READ);
        if run.is_empty() {
            break;
        }
        let pool = ctx.upload_pools.for_len(run_len(&run) as usize);
        let buf = if batch.is_empty() {
            pool.take().await
        } else if let Some(buf) = pool.try_take() {
            buf
        } else {
            ctx.torrent.borrow_mut().put_back_upload_run(key, run);
            break;
        };
        pinned += pool.buf_size();
        batch.push((run, buf));
    }
    batch
}

/// Bytes in a run of blocks (at most MAX_UPLOAD_READ, so it fits a u32).
fn run_len(run: &[BlockRef]) -> u32 {
    run.iter().map(|b| b.len).sum()
}

/// Reads the bytes of one run of contiguous blocks into `buf`.
async fn read_run(
    ctx: &ConnContext,
    run: Vec<BlockRef>,
    buf: PoolBuf,
) -> (Vec<BlockRef>, (std::io::Result<()>, PoolBuf)) {
    let first = run[0];
    let start = ctx.torrent.borrow().layout().piece_offset(first.piece) + u64::from(first.offset);
    let read = ctx.storage.read(start, run_len(&run) as usize, buf).await;
    (run, read)
}

fn queue_run(ctx: &ConnContext, key: PeerKey, outbox: &Outbox, run: &[BlockRef], data: PoolBuf) {
    outbox.send_blocks(run, data.freeze());
    ctx.torrent
        .borrow_mut()
        .record_upload(key, run_len(run).into());
}

/// Some piece of `run` is unreadable: serves it piece by piece, so only the pieces that
/// fail are marked missing.
async fn serve_piece_by_piece(ctx: &ConnContext, key: PeerKey, outbox: &Outbox, run: &[BlockRef]) {
    for piece in run.chunk_by(|a, b| a.piece == b.piece) {
        let buf = ctx
            .upload_pools
            .for_len(run_len(piece) as usize)
            .take()
            .await;
        let (piece, (res, data)) = read_run(ctx, piece.to_vec(), buf).await;
        match res {
            Ok(()) => queue_run(ctx, key, outbox, &piece, data),
            Err(e) => {
                let index = piece[0].piece;
                tracing::warn!(
                    "cannot read piece {index} to upload ({e}); marked missing, fetching it again from peers"
                );
                ctx.torrent.borrow_mut().on_piece_unreadable(index);
            }
        }
    }
}
