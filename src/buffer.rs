//! Pooled I/O buffers with a hard cap on the memory they hold. A socket read fills a
//! `PoolBuf`; freezing it gives an `Arc` that `Chunk`s point into, so the same bytes can be
//! written to disk and hashed without a copy. A buffer goes back to the pool when its last
//! chunk is dropped, whichever thread drops it. When every buffer is out, `take` waits: that
//! is the back-pressure that stops socket reads and keeps memory bounded.

use std::ops::Range;
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A bounded set of equally sized buffers.
#[derive(Clone)]
pub struct BufferPool {
    inner: Arc<PoolInner>,
}

impl std::fmt::Debug for BufferPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufferPool")
            .field("buf_size", &self.inner.buf_size)
            .field("buffers", &self.inner.count)
            .finish()
    }
}

struct PoolInner {
    buf_size: usize,
    count: usize,
    permits: Arc<Semaphore>,
    /// Buffers returned to the pool, reused before new ones are allocated.
    free: Mutex<Vec<Vec<u8>>>,
}

impl BufferPool {
    /// A pool of at most `count` buffers of `buf_size` bytes each, allocated on demand.
    pub fn new(buf_size: usize, count: usize) -> BufferPool {
        BufferPool {
            inner: Arc::new(PoolInner {
                buf_size,
                count: count.max(1),
                permits: Arc::new(Semaphore::new(count.max(1))),
                free: Mutex::new(Vec::new()),
            }),
        }
    }

    /// A pool whose buffers add up to at most `limit_bytes`.
    pub fn with_memory_limit(buf_size: usize, limit_bytes: usize) -> BufferPool {
        BufferPool::new(buf_size, limit_bytes / buf_size)
    }

    pub fn buf_size(&self) -> usize {
        self.inner.buf_size
    }

    /// Buffers the pool may hand out at once.
    pub fn buffers(&self) -> usize {
        self.inner.count
    }

    /// Buffers that could be taken right now without waiting.
    pub fn available(&self) -> usize {
        self.inner.permits.available_permits()
    }

    /// Takes an empty buffer, waiting while all are in use.
    pub async fn take(&self) -> PoolBuf {
        let permit = Arc::clone(&self.inner.permits)
            .acquire_owned()
            .await
            .expect("the pool's semaphore is never closed");
        self.wrap(permit)
    }

    /// Takes an empty buffer if one is free now.
    pub fn try_take(&self) -> Option<PoolBuf> {
        let permit = Arc::clone(&self.inner.permits).try_acquire_owned().ok()?;
        Some(self.wrap(permit))
    }

    fn wrap(&self, permit: OwnedSemaphorePermit) -> PoolBuf {
        let recycled = self.inner.free.lock().expect("pool lock").pop();
        let mut data = recycled.unwrap_or_else(|| Vec::with_capacity(self.inner.buf_size));
        data.clear(); // socket reads fill from the start; disk reads re-extend without zeroing
        PoolBuf {
            data,
            pool: Arc::clone(&self.inner),
            _permit: permit,
        }
    }
}

/// Disk-read buffers in two sizes, so that a read of one block does not pin a buffer sized
/// for a long run: a read of at most the small size takes a small buffer, a longer one a large
/// buffer. Each size has its own share of the memory cap.
#[derive(Clone)]
pub struct SizedPools {
    small: BufferPool,
    large: BufferPool,
}

impl SizedPools {
    /// `small_bytes` of `small_size` buffers and `large_bytes` of `large_size` ones.
    pub fn new(
        (small_size, small_bytes): (usize, usize),
        (large_size, large_bytes): (usize, usize),
    ) -> SizedPools {
        assert!(
            small_size <= large_size,
            "the small buffers are the smaller"
        );
        SizedPools {
            small: BufferPool::with_memory_limit(small_size, small_bytes),
            large: BufferPool::with_memory_limit(large_size, large_bytes),
        }
    }

    /// The pool a read of `len` bytes takes its buffer from.
    pub fn for_len(&self, len: usize) -> &BufferPool {
        if len <= self.small.buf_size() {
            &self.small
        } else {
            &self.large
        }
    }
}

/// A buffer on loan from a pool. `len()` bytes are filled; capacity is the pool's size.
pub struct PoolBuf {
    data: Vec<u8>,
    pool: Arc<PoolInner>,
    _permit: OwnedSemaphorePermit,
}

impl PoolBuf {
    pub fn as_slice(&self) -> &[u8] {
        &self.data
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.data.capacity()
    }

    /// Appends bytes (for carrying a partial frame over from the previous buffer).
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        assert!(
            self.data.len() + bytes.len() <= self.data.capacity(),
            "pool buffer overflow"
        );
        self.data.extend_from_slice(bytes);
    }

    /// Makes the buffer `len` bytes long (at most its capacity), zeroing only bytes never
    /// initialised before.
    pub fn set_len_initialized(&mut self, len: usize) {
        assert!(len <= self.data.capacity(), "pool buffer overflow");
        if self.data.len() >= len {
            self.data.truncate(len);
        } else {
            self.data.resize(len, 0);
        }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.data
    }

    /// Makes the buffer shareable so chunks can point into it.
    pub fn freeze(self) -> Arc<PoolBuf> {
        Arc::new(self)
    }
}

impl Drop for PoolBuf {
    fn drop(&mut self) {
        let data = std::mem::take(&mut self.data);
        if let Ok(mut free) = self.pool.free.lock() {
            free.push(data);
        }
        // The permit is released after this, so a waiter finds the buffer on the free list.
    }
}

/// A shared view of part of a frozen buffer.
#[derive(Clone)]
pub struct Chunk {
    buf: Arc<PoolBuf>,
    start: usize,
    end: usize,
}

impl Chunk {
    pub fn new(buf: Arc<PoolBuf>, range: Range<usize>) -> Chunk {
        assert!(
            range.start <= range.end && range.end <= buf.len(),
            "chunk out of bounds"
        );
        Chunk {
            buf,
            start: range.start,
            end: range.end,
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.buf.as_slice()[self.start..self.end]
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Identifies the buffer this chunk points into (equal for chunks of one buffer).
    pub fn buffer_id(&self) -> usize {
        Arc::as_ptr(&self.buf) as usize
    }

    /// Bytes the read that filled this chunk's buffer put there.
    pub fn buffer_len(&self) -> usize {
        self.buf.len()
    }

    /// What this chunk's buffer could hold.
    pub fn buffer_capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// A sub-view, `range` relative to this chunk.
    pub fn slice(&self, range: Range<usize>) -> Chunk {
        assert!(
            range.start <= range.end && range.end <= self.len(),
            "sub-chunk out of bounds"
        );
        Chunk {
            buf: Arc::clone(&self.buf),
            start: self.start + range.start,
            end: self.start + range.end,
        }
    }
}

/// Cuts `len` bytes starting `from` bytes into a run of chunks (which together hold a
/// contiguous stretch of data) into sub-chunks.
pub fn cut_chunks(chunks: &[Chunk], from: usize, len: usize) -> Vec<Chunk> {
    let mut out = Vec::new();
    for_each_part(chunks, from, len, |c, range| out.push(c.slice(range)));
    out
}

/// Copies `dst.len()` bytes starting `from` bytes into a run of chunks into `dst`, without
/// making sub-chunks.
pub fn copy_from_chunks(chunks: &[Chunk], from: usize, dst: &mut [u8]) {
    let mut at = 0;
    for_each_part(chunks, from, dst.len(), |c, range| {
        let n = range.len();
        dst[at..at + n].copy_from_slice(&c.as_slice()[range]);
        at += n;
    });
}

/// Calls `part` with each chunk that holds some of the `len` bytes starting `from` bytes in,
/// and the range of that chunk's bytes (relative to the chunk) they take, in order.
///
/// # Panics
/// If the chunks hold fewer than `from + len` bytes.
pub fn for_each_part<'a>(
    chunks: &'a [Chunk],
    from: usize,
    len: usize,
    mut part: impl FnMut(&'a Chunk, std::ops::Range<usize>),
) {
    let mut skip = from;
    let mut want = len;
    for c in chunks {
        if want == 0 {
            break;
        }
        if skip >= c.len() {
            skip -= c.len();
            continue;
        }
        let take = (c.len() - skip).min(want);
        part(c, skip..skip + take);
        want -= take;
        skip = 0;
    }
    assert_eq!(want, 0, "a range past the end of the chunks");
}

// SAFETY (both impls): the pointer is the heap allocation of a Vec that is neither moved
// nor reallocated while an operation holds the buffer, because the op owns the buffer.
unsafe impl tokio_uring::buf::IoBuf for PoolBuf {
    fn stable_ptr(&self) -> *const u8 {
        self.data.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.data.len()
    }
    fn bytes_total(&self) -> usize {
        self.data.capacity()
    }
}

unsafe impl tokio_uring::buf::IoBufMut for PoolBuf {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.data.as_mut_ptr()
    }
    unsafe fn set_init(&mut self, pos: usize) {
        if self.data.len() < pos {
            self.data.set_len(pos);
        }
    }
}

// SAFETY: the Arc keeps the buffer alive and unmoved; chunks are read-only views.
unsafe impl tokio_uring::buf::IoBuf for Chunk {
    fn stable_ptr(&self) -> *const u8 {
        self.as_slice().as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
    fn bytes_total(&self) -> usize {
        self.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_caps_buffers_and_recycles_them() {
        let pool = BufferPool::new(8, 2);
        let mut a = pool.try_take().unwrap();
        let b = pool.try_take().unwrap();
        assert!(pool.try_take().is_none());
        a.extend_from_slice(b"abcdefgh");
        let frozen = a.freeze();
        let c1 = Chunk::new(Arc::clone(&frozen), 2..6);
        drop(frozen);
        assert!(
            pool.try_take().is_none(),
            "a live chunk keeps its buffer out"
        );
        assert_eq!(c1.slice(1..3).as_slice(), b"de");
        drop(c1);
        drop(b);
        assert_eq!(pool.available(), 2);
        assert!(pool.try_take().unwrap().is_empty());
    }

    #[test]
    fn sized_pools_give_each_read_the_smallest_buffer_that_holds_it() {
        let pools = SizedPools::new((16, 32), (64, 64));
        assert_eq!(pools.for_len(1).buf_size(), 16);
        assert_eq!(pools.for_len(16).buf_size(), 16);
        assert_eq!(pools.for_len(17).buf_size(), 64);
        // Each size keeps its own cap: two small buffers, one large.
        let small = [pools.for_len(1).try_take(), pools.for_len(1).try_take()];
        assert!(small.iter().all(Option::is_some));
        assert!(pools.for_len(1).try_take().is_none());
        assert!(pools.for_len(64).try_take().is_some());
    }

    #[test]
    fn cut_chunks_spans_buffers() {
        let pool = BufferPool::new(4, 2);
        let mut a = pool.try_take().unwrap();
        a.extend_from_slice(b"abcd");
        let mut b = pool.try_take().unwrap();
        b.extend_from_slice(b"efgh");
        let chunks = [Chunk::new(a.freeze(), 1..4), Chunk::new(b.freeze(), 0..3)];
        let cut = cut_chunks(&chunks, 2, 3);
        let bytes: Vec<u8> = cut.iter().flat_map(|c| c.as_slice().to_vec()).collect();
        assert_eq!(bytes, b"def");
    }
}
