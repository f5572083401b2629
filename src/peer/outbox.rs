//! The send side of one peer connection: a queue of encoded messages and a writer loop that
//! drains it with vectored writes. Control messages are coalesced into one buffer so a burst
//! of REQUESTs or HAVEs goes out in one send; a PIECE goes out as its 13-byte header plus the
//! block buffer read from disk, never copied into a frame. The queue is bounded by the
//! caller: `queued_bytes` tells how much is waiting, and `drained` wakes whoever holds back
//! until it shrinks.

use crate::buffer::PoolBuf;
use crate::net::TcpStream;
use crate::types::BlockRef;
use crate::wire::{piece_header, Message};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_uring::buf::BoundedBuf;

/// A coalesced control buffer is closed once it reaches this size, so one write never waits
/// behind an ever-growing buffer.
const MAX_CONTROL_BATCH: usize = 64 << 10;
/// Most buffers handed to one writev (the kernel's IOV_MAX is 1024).
const MAX_IOVECS: usize = 64;

/// Bytes queued for sending: an owned buffer, or a slice of a pooled buffer shared by several
/// blocks (one disk read serving a run of contiguous requests).
pub enum OutBuf {
    Owned(Vec<u8>),
    Shared {
        buf: Arc<PoolBuf>,
        start: usize,
        end: usize,
    },
}

impl OutBuf {
    fn len(&self) -> usize {
        match self {
            OutBuf::Owned(v) => v.len(),
            OutBuf::Shared { start, end, .. } => end - start,
        }
    }
}

// SAFETY: both variants point at heap memory that is neither moved nor freed while the
// operation owns the OutBuf (the Vec is owned, or kept alive by the Arc).
unsafe impl tokio_uring::buf::IoBuf for OutBuf {
    fn stable_ptr(&self) -> *const u8 {
        match self {
            OutBuf::Owned(v) => v.as_ptr(),
            OutBuf::Shared { buf, start, .. } => buf.as_slice()[*start..].as_ptr(),
        }
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
    fn bytes_total(&self) -> usize {
        self.len()
    }
}

struct Item {
    bytes: OutBuf,
    control: bool,
    /// For the last slice of a pooled upload buffer, the buffer's capacity: once this slice
    /// is written, the buffer is free and no longer pinned by this peer.
    frees: usize,
}

/// Outgoing messages of one connection.
#[derive(Default)]
pub struct Outbox {
    items: RefCell<VecDeque<Item>>,
    queued: Cell<usize>,
    /// Capacity of the pooled upload buffers queued (not yet fully written).
    pinned: Cell<usize>,
    /// When the write in progress started; None while idle.
    writing_since: Cell<Option<Instant>>,
    closed: Cell<bool>,
    wake_writer: Notify,
    drained: Notify,
}

impl Outbox {
    pub fn new() -> Rc<Outbox> {
        Rc::new(Outbox::default())
    }

    /// Queues a control message (anything but PIECE).
    pub fn send(&self, m: &Message<'_>) {
        let mut items = self.items.borrow_mut();
        let coalesce = match items.back_mut() {
            Some(Item {
                bytes: OutBuf::Owned(last),
                control: true,
                ..
            }) if last.len() < MAX_CONTROL_BATCH => Some(last),
            _ => None,
        };
        let before = match coalesce {
            Some(last) => {
                let before = last.len();
                m.encode_into(last);
                last.len() - before
            }
            None => {
                let mut bytes = Vec::with_capacity(m.encoded_len().max(256));
                m.encode_into(&mut bytes);
                let n = bytes.len();
                items.push_back(Item {
                    bytes: OutBuf::Owned(bytes),
                    control: true,
                    frees: 0,
                });
                n
            }
        };
        self.queued.set(self.queued.get() + before);
        self.wake_writer.notify_one();
    }

    /// Queues PIECE messages for `blocks`, a run of contiguous blocks whose bytes are `data`
    /// (one read from disk): each is its 13-byte header, then its slice of `data`.
    pub fn send_blocks(&self, blocks: &[BlockRef], data: Arc<PoolBuf>) {
        let mut items = self.items.borrow_mut();
        let mut at = 0usize;
        for block in blocks {
            let len = block.len as usize;
            let header = piece_header(block.piece, block.offset, block.len).to_vec();
            self.queued.set(self.queued.get() + header.len() + len);
            items.push_back(Item {
                bytes: OutBuf::Owned(header),
                control: false,
                frees: 0,
            });
            items.push_back(Item {
                bytes: OutBuf::Shared {
                    buf: Arc::clone(&data),
                    start: at,
                    end: at + len,
                },
                control: false,
                frees: if at + len == data.len() {
                    data.capacity()
                } else {
                    0
                },
            });
            at += len;
        }
        self.pinned.set(self.pinned.get() + data.capacity());
        self.wake_writer.notify_one();
    }

    /// The bytes of every control message queued, in order (for tests that read what a
    /// connection would send).
    #[cfg(test)]
    pub fn queued_control_bytes(&self) -> Vec<u8> {
        let items = self.items.borrow();
        let owned = items.iter().filter(|i| i.control).map(|i| &i.bytes);
        owned
            .flat_map(|b| match b {
                OutBuf::Owned(v) => v.as_slice(),
                OutBuf::Shared { .. } => &[],
            })
            .copied()
            .collect()
    }

    /// Bytes queued and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.queued.get()
    }

    /// Waits until the writer has made progress (or the connection closed).
    pub async fn drained(&self) {
        if !self.closed.get() {
            self.drained.notified().await;
        }
    }

    /// Ends the writer loop once the queue is empty, and wakes waiters.
    pub fn close(&self) {
        self.closed.set(true);
        self.wake_writer.notify_one();
        self.drained.notify_waiters();
    }

    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// Bytes of pooled upload buffers still queued (their capacity, not their fill).
    pub fn pinned_bytes(&self) -> usize {
        self.pinned.get()
    }

    /// How long the current write has been waiting for the peer to read, if one is.
    pub fn write_stalled_for(&self, now: Instant) -> Duration {
        self.writing_since
            .get()
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t))
    }

    /// Takes up to MAX_IOVECS items; also returns the pooled bytes they free once written.
    fn take_batch(&self) -> (Vec<OutBuf>, usize) {
        let mut items = self.items.borrow_mut();
        let n = items.len().min(MAX_IOVECS);
        let mut freed = 0;
        let bufs = items
            .drain(..n)
            .map(|i| {
                freed += i.frees;
                i.bytes
            })
            .collect();
        (bufs, freed)
    }
}

/// Writes everything queued on `outbox` to `stream` until the outbox is closed or a write
/// fails.
pub async fn run_writer(stream: Rc<TcpStream>, outbox: Rc<Outbox>) -> io::Result<()> {
    loop {
        let (batch, freed) = outbox.take_batch();
        if batch.is_empty() {
            if outbox.is_closed() {
                return Ok(());
            }
            outbox.wake_writer.notified().await;
            continue;
        }
        let total: usize = batch.iter().map(OutBuf::len).sum();
        outbox.writing_since.set(Some(Instant::now()));
        // Each partial write restarts the stall clock: a slow reader is not a stalled one.
        write_all_vectored(&stream, batch, || {
            outbox.writing_since.set(Some(Instant::now()))
        })
        .await?;
        outbox.writing_since.set(None);
        outbox.queued.set(outbox.queued.get() - total);
        outbox.pinned.set(outbox.pinned.get() - freed);
        outbox.drained.notify_waiters();
    }
}

/// Writes every byte of `bufs`, resubmitting what a short write left; `progressed` is called
/// after each short write.
async fn write_all_vectored(
    stream: &TcpStream,
    bufs: Vec<OutBuf>,
    progressed: impl Fn(),
) -> io::Result<()> {
    // Explicit ends: for a Vec, `slice(..)` would reach to its capacity, not its length.
    let mut pending: Vec<_> = bufs
        .into_iter()
        .map(|b| {
            let len = b.len();
            b.slice(..len)
        })
        .collect();
    while !pending.is_empty() {
        let (res, returned) = stream.writev(pending).await;
        let mut written = res?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        pending = Vec::with_capacity(returned.len());
        for slice in returned {
            let len = slice.end() - slice.begin();
            if written >= len {
                written -= len;
                continue;
            }
            let begin = slice.begin() + written;
            let end = slice.end();
            written = 0;
            pending.push(slice.into_inner().slice(begin..end));
        }
        if !pending.is_empty() {
            progressed();
        }
    }
    Ok(())
}
