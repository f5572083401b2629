//! Direct (O_DIRECT) writes for `Storage`: the page-aligned middle of each write goes to the
//! disk from an aligned bounce buffer, skipping the page cache; the unaligned head and tail
//! (file starts and ends that are not on a 4 KiB boundary) stay buffered. Every 4 KiB page of
//! a file is so written either only directly or only through the page cache.
//!
//! Why (measured on the 2-vCPU VM of the README, ext4 on virtio, `fio --ioengine=io_uring
//! --bs=256k --iodepth=8 --end_fsync=1`, 2 GiB): buffered 329 MB/s, direct 1335 MB/s. Each
//! buffered write lands in a freshly allocated page-cache page, which on this VM costs more
//! than the copy itself (`copy_folio_from_iter_atomic` was 36% of a leecher's CPU samples),
//! and the download's closing fsync then waits for all of it. The bounce copy is one memcpy
//! between two buffers that stay in the CPU cache, in place of the kernel's copy into new
//! pages, so the block path still copies each byte once.

use crate::buffer::{for_each_part, Chunk};
use std::alloc::{alloc_zeroed, dealloc, Layout as AllocLayout};
use std::ops::Range;

/// Alignment of direct writes: offset, length and memory (the ext4 block and the page size;
/// devices ask for at most this).
pub const DIRECT_ALIGN: u64 = 4096;

/// The part of `offset..offset + len` that starts and ends on `DIRECT_ALIGN` boundaries, as
/// offsets relative to `offset`; None if no whole aligned block fits.
pub fn aligned_middle(offset: u64, len: u64) -> Option<Range<u64>> {
    let start = offset.next_multiple_of(DIRECT_ALIGN);
    let end = (offset + len) / DIRECT_ALIGN * DIRECT_ALIGN;
    (end > start).then(|| start - offset..end - offset)
}

/// Bounce buffers are allocated in multiples of this, so writes of nearby sizes share them.
const BOUNCE_GRANULE: usize = 256 << 10;

/// Aligned bounce buffers kept between writes, at most `cap` (one per write slot). A buffer
/// too small for a write is never reused for it, so the pool keeps the largest it has seen:
/// when it lent a large buffer to a small write and kept only small ones, every large write
/// allocated a fresh buffer and dropped one on return, and on the README's VM each fresh
/// megabyte cost page faults in the copy (99% of a leecher's page faults, 2k a second at
/// 600 MB/s, with the bounce memcpy at 13% of its CPU samples).
pub struct BouncePool {
    free: Vec<AlignedBuf>,
    cap: usize,
    allocated: u64,
}

impl BouncePool {
    pub fn new(cap: usize) -> BouncePool {
        BouncePool {
            free: Vec::new(),
            cap: cap.max(1),
            allocated: 0,
        }
    }

    /// The smallest free buffer that holds `len` bytes, or a new one rounded up to
    /// `BOUNCE_GRANULE`.
    pub fn take(&mut self, len: usize) -> AlignedBuf {
        match self.smallest_holding(len) {
            Some(i) => self.free.swap_remove(i),
            None => {
                self.allocated += 1;
                AlignedBuf::with_capacity(len.max(1).next_multiple_of(BOUNCE_GRANULE))
            }
        }
    }

    /// Keeps `buf` for later; when full, drops the smallest buffer instead.
    pub fn give_back(&mut self, buf: AlignedBuf) {
        self.free.push(buf);
        if self.free.len() > self.cap {
            let smallest = self.smallest_holding(0).expect("the pool is not empty");
            self.free.swap_remove(smallest);
        }
    }

    /// Index of the smallest free buffer of at least `len` bytes.
    fn smallest_holding(&self, len: usize) -> Option<usize> {
        (self.free.iter().enumerate())
            .filter(|(_, b)| b.capacity() >= len)
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i)
    }

    /// Buffers allocated so far.
    #[cfg(test)]
    fn allocated(&self) -> u64 {
        self.allocated
    }
}

/// A heap buffer aligned to `DIRECT_ALIGN`, for O_DIRECT writes.
pub struct AlignedBuf {
    ptr: *mut u8,
    cap: usize,
    len: usize,
}

impl AlignedBuf {
    pub fn with_capacity(cap: usize) -> AlignedBuf {
        let cap = (cap.max(1) as u64).next_multiple_of(DIRECT_ALIGN) as usize;
        let layout = Self::layout(cap);
        // SAFETY: the layout has a non-zero size. Zeroed, so that every byte up to `cap` is
        // initialised and `as_mut_slice` may hand it out.
        let ptr = unsafe { alloc_zeroed(layout) };
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        AlignedBuf { ptr, cap, len: 0 }
    }

    fn layout(cap: usize) -> AllocLayout {
        AllocLayout::from_size_align(cap, DIRECT_ALIGN as usize).expect("a valid aligned layout")
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Bytes filled.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Makes the buffer `len` bytes long (keeping whatever those bytes hold), to be filled
    /// through `as_mut_slice`.
    pub fn set_len(&mut self, len: usize) {
        assert!(len <= self.cap, "bounce buffer too small");
        self.len = len;
    }

    /// The `len` bytes of the buffer.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: the allocation is `cap >= len` bytes, all initialised (zeroed when made),
        // and owned by `self`, which this borrow holds exclusively.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    /// Replaces the contents with `len` bytes of `chunks` starting `from` bytes in.
    pub fn fill_from(&mut self, chunks: &[Chunk], from: usize, len: usize) {
        assert!(len <= self.cap, "bounce buffer too small");
        let mut at = 0;
        for_each_part(chunks, from, len, |c, range| {
            let bytes = &c.as_slice()[range];
            // SAFETY: the parts add up to exactly `len <= cap` bytes (`for_each_part`), and the
            // source is a live slice that cannot overlap our own allocation.
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.add(at), bytes.len()) };
            at += bytes.len();
        });
        self.len = len;
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `with_capacity` with this very layout.
        unsafe { dealloc(self.ptr, Self::layout(self.cap)) }
    }
}

// SAFETY: the allocation is owned by the value, never moved or freed while an operation owns
// it, and `len` bytes of it are initialised.
unsafe impl tokio_uring::buf::IoBuf for AlignedBuf {
    fn stable_ptr(&self) -> *const u8 {
        self.ptr
    }
    fn bytes_init(&self) -> usize {
        self.len
    }
    fn bytes_total(&self) -> usize {
        self.cap
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::BufferPool;

    #[test]
    fn the_aligned_middle_leaves_partial_pages_out() {
        assert_eq!(aligned_middle(0, 16384), Some(0..16384));
        assert_eq!(aligned_middle(100, 8192), Some(3996..8092));
        assert_eq!(aligned_middle(100, 4000), None);
        assert_eq!(aligned_middle(4096, 5000), Some(0..4096));
        assert_eq!(aligned_middle(0, 0), None);
    }

    #[test]
    fn the_bounce_pool_stops_allocating_once_it_holds_the_largest_sizes() {
        let mut pool = BouncePool::new(2);
        // Two writes in flight at a time, of sizes that vary as receive buffers do.
        let sizes = [
            1 << 20,
            64 << 10,
            (1 << 20) + 16384,
            300 << 10,
            900 << 10,
            16384,
        ];
        for round in 0..50 {
            let a = pool.take(sizes[round % sizes.len()]);
            let b = pool.take(sizes[(round * 7 + 3) % sizes.len()]);
            assert!(a.capacity() >= sizes[round % sizes.len()]);
            pool.give_back(b);
            pool.give_back(a);
        }
        assert!(pool.allocated() <= 4, "allocated {}", pool.allocated());
        assert!(pool.free.len() <= 2);
    }

    #[test]
    fn fill_copies_across_chunks_into_aligned_memory() {
        let pool = BufferPool::new(8, 2);
        let mut a = pool.try_take().unwrap();
        a.extend_from_slice(b"abcdefgh");
        let mut b = pool.try_take().unwrap();
        b.extend_from_slice(b"ijklmnop");
        let chunks = [Chunk::new(a.freeze(), 2..8), Chunk::new(b.freeze(), 0..5)];
        let mut buf = AlignedBuf::with_capacity(10);
        assert_eq!(buf.capacity(), 4096);
        assert_eq!(buf.ptr as usize % DIRECT_ALIGN as usize, 0);
        buf.fill_from(&chunks, 3, 6);
        use tokio_uring::buf::IoBuf;
        let got = unsafe { std::slice::from_raw_parts(buf.stable_ptr(), buf.bytes_init()) };
        assert_eq!(got, b"fghijk");
    }
}
