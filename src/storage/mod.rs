//! Storage: one torrent's files on disk, read and written through io_uring (tokio-uring).
//! Owns the file handles (opened lazily, at most `max_open_files` at once, parents created,
//! sparse unless preallocation is asked for) and turns a byte range of the torrent into
//! positioned reads and vectored writes on the right files, splitting at file boundaries.
//! Padding files are never written and read as zeros. A download's files are created (and
//! reserved) ahead by a thread while it waits for its first peers (`ahead`). Paths were checked
//! safe by metainfo; nothing here resolves a path that did not come from there.
//!
//! Must run inside a tokio-uring runtime. Every call takes `&self`, so many reads and writes
//! can be in flight at once from different tasks.

mod ahead;
mod direct;
mod open_files;
mod staged;
mod write_path;

use crate::buffer::{copy_from_chunks, cut_chunks, Chunk};
use crate::layout::Layout;
use crate::metainfo::Info;
use ahead::Ahead;
use direct::{aligned_middle, AlignedBuf, BouncePool};
use open_files::HandleTable;
pub use staged::StagedWrite;
use std::cell::{Cell, RefCell};
use std::io;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;
use tokio_uring::buf::BoundedBuf;
use tokio_uring::fs::File;
pub use write_path::TRIAL_BYTES;
use write_path::{WriteChooser, WritePath};

/// How a torrent's files are opened.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// Most files held open at once; the least recently used is closed past it.
    pub max_open_files: usize,
    /// Reserve every file's full size on first open (fallocate) instead of leaving it sparse.
    /// On by default for downloads: ext4 then has no blocks to allocate under each write, and
    /// direct writes into the reserved extents cost less. `perf/compare --size 2G --piece 1M
    /// --pairs libtorrent:spate`, 6 runs each alternating (2026-12-03, AMD VM): sparse
    /// 331-567 MB/s, median 497, 3.16-5.93 leecher CPU s; reserved 510-629 MB/s, median 573,
    /// 2.89-3.27 CPU s; at 4 GiB 263 against 387 MB/s; 200 files of 1 GiB unchanged. A file
    /// system without fallocate, or without room for the whole file, gets a sparse file.
    pub preallocate: bool,
    /// Open for writing and create missing files and directories (a download), or read only.
    pub writable: bool,
    /// Which path writes take (see `direct` and `write_path`); direct writes fall back to
    /// buffered ones by themselves where the file system refuses them.
    pub write_paths: WritePaths,
    /// Per file, whether the download selected it (None: every file). An unselected file
    /// is never reserved, and is created only if a piece it shares with a selected one is
    /// written into it.
    pub selected_files: Option<Vec<bool>>,
}

/// Which path writes take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WritePaths {
    /// Everything through the page cache.
    Buffered,
    /// The page-aligned part of every write with O_DIRECT, the rest through the page cache.
    Direct,
    /// Each write on whichever of the two served bytes faster lately (`WriteChooser`), each
    /// path tried for `trial_bytes` now and then.
    Adaptive { trial_bytes: u64 },
}

impl WritePaths {
    /// Most writes in flight at once. Each buffered write goes to an io-wq kernel worker, and
    /// many workers writing one file contend on its inode lock (unbounded concurrency cost
    /// several CPU seconds per GiB in the kernel): 4. Direct writes go to the device, and a
    /// virtio disk moves more the more it is given: 1 GiB in 200 files from libtorrent
    /// (`perf/compare --size 1G --files 200 --piece 256K --runs 1`, alternating, 2026-12-05)
    /// took 547-548 MB/s with 4, 674-705 with 8, 712-756 with 16, 916-955 with 32 and 933-937
    /// with 64, and the 2 GiB file 1067-1146 with 4 against 1162-1200 with 32. 32 is also as
    /// many receive buffers as the default memory limit holds.
    pub fn writes_in_flight(self) -> usize {
        match self {
            WritePaths::Direct => 32,
            WritePaths::Buffered | WritePaths::Adaptive { .. } => 4,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            // Well under the usual 1024 soft fd limit, leaving room for sockets.
            max_open_files: 256,
            preallocate: false,
            writable: true,
            write_paths: WritePaths::Direct,
            selected_files: None,
        }
    }
}

/// One torrent's files under a download directory.
pub struct Storage {
    layout: Layout,
    paths: Vec<PathBuf>,
    config: StorageConfig,
    open: HandleTable,
    /// O_DIRECT handles of the files, for the aligned parts of writes.
    direct: HandleTable,
    /// Cleared for good when the file system refuses direct I/O.
    direct_ok: Cell<bool>,
    /// Aligned bounce buffers for direct writes, reused (at most one per write slot).
    bounce: RefCell<BouncePool>,
    /// Bytes written with O_DIRECT so far.
    direct_bytes: Cell<u64>,
    /// Picks the path of each write when `WritePaths::Adaptive`.
    chooser: RefCell<Option<WriteChooser>>,
    /// Files written since the last sync, which `sync` must flush.
    dirty: RefCell<Vec<bool>>,
    /// Bounds the writes in flight: each buffered write goes to an io-wq kernel worker, and
    /// many workers writing one file contend on its inode lock (measured: unbounded
    /// concurrency cost several CPU seconds per GiB in the kernel).
    write_slots: std::sync::Arc<tokio::sync::Semaphore>,
    /// The thread that creates files while the download waits for its peers.
    ahead: std::sync::Arc<Ahead>,
}

impl Storage {
    /// The files of `info` under `root`.
    pub fn new(root: &Path, info: &Info, config: StorageConfig) -> Storage {
        let paths = info.files.iter().map(|f| root.join(&f.path)).collect();
        Storage::from_parts(Layout::new(info), paths, config)
    }

    /// Storage over explicit absolute paths, one per file span of `layout`.
    pub fn from_parts(layout: Layout, paths: Vec<PathBuf>, config: StorageConfig) -> Storage {
        assert_eq!(layout.files().len(), paths.len(), "one path per file");
        let n = paths.len();
        Storage {
            layout,
            paths,
            open: HandleTable::new(n, config.max_open_files),
            direct: HandleTable::new(n, config.max_open_files),
            direct_ok: Cell::new(config.write_paths != WritePaths::Buffered && config.writable),
            bounce: RefCell::new(BouncePool::new(config.write_paths.writes_in_flight())),
            direct_bytes: Cell::new(0),
            chooser: RefCell::new(match config.write_paths {
                WritePaths::Adaptive { trial_bytes } => Some(WriteChooser::new(trial_bytes)),
                _ => None,
            }),
            write_slots: std::sync::Arc::new(tokio::sync::Semaphore::new(
                config.write_paths.writes_in_flight(),
            )),
            config,
            dirty: RefCell::new(vec![false; n]),
            ahead: Ahead::new(n),
        }
    }

    /// Bytes written with O_DIRECT so far (the rest went through the page cache).
    pub fn direct_bytes(&self) -> u64 {
        self.direct_bytes.get()
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn path(&self, file: usize) -> &Path {
        &self.paths[file]
    }

    /// Writes `chunks`, which hold a contiguous run of data, at global offset `start`.
    pub async fn write(&self, start: u64, chunks: Vec<Chunk>) -> io::Result<()> {
        let len: usize = chunks.iter().map(Chunk::len).sum();
        let segments: Vec<_> = self.layout.segments_at(start, len as u32).collect();
        if let [only] = segments.as_slice() {
            if !only.pad {
                return self.write_file(only.file, only.file_offset, chunks).await;
            }
        }
        for seg in segments.into_iter().filter(|s| !s.pad) {
            let part = cut_chunks(&chunks, seg.range_offset as usize, seg.len as usize);
            self.write_file(seg.file, seg.file_offset, part).await?;
        }
        Ok(())
    }

    async fn write_file(&self, file: usize, offset: u64, chunks: Vec<Chunk>) -> io::Result<()> {
        let handle = self.handle(file).await?;
        self.dirty.borrow_mut()[file] = true;
        let _slot = self
            .write_slots
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let len: usize = chunks.iter().map(Chunk::len).sum();
        let path = self
            .write_slotted(&handle, file, offset, len, chunks)
            .await?;
        // Writes without a whole aligned page had no choice to make; their fixed cost would
        // only skew the page cache's measured rate.
        if let (Some(path), Some(chooser)) = (path, self.chooser.borrow_mut().as_mut()) {
            chooser.record(path, len as u64, Instant::now());
        }
        Ok(())
    }

    /// Writes `chunks` (`len` bytes) at `offset` of `file`, holding a write slot; returns
    /// the path the aligned middle took, None if there was none.
    async fn write_slotted(
        &self,
        handle: &File,
        file: usize,
        offset: u64,
        len: usize,
        chunks: Vec<Chunk>,
    ) -> io::Result<Option<WritePath>> {
        let middle = aligned_middle(offset, len as u64);
        let chosen = match self.chooser.borrow_mut().as_mut() {
            Some(chooser) if middle.is_some() => chooser.choose(len as u64, Instant::now()),
            _ => WritePath::Direct,
        };
        let direct = match middle {
            Some(_) if self.direct_ok.get() && chosen == WritePath::Direct => {
                self.direct_handle(file).await
            }
            _ => None,
        };
        let had_middle = middle.is_some();
        let (Some(middle), Some(direct)) = (middle, direct) else {
            write_buffered(handle, offset, chunks).await?;
            return Ok(had_middle.then_some(WritePath::Buffered));
        };
        let (from, to) = (middle.start as usize, middle.end as usize);
        write_edges(handle, offset, &chunks, &(from..to))?;
        let mut bounce = self.bounce.borrow_mut().take(to - from);
        bounce.fill_from(&chunks, from, to - from);
        // The receive buffers go back to the pool now, not when the disk is done: they can
        // take in more blocks while the copy waits for the device.
        drop(chunks);
        let path = self
            .write_direct(&direct, handle, offset + middle.start, bounce)
            .await?;
        Ok(Some(path))
    }

    /// Writes the filled bounce buffer at `offset` (aligned) of the file with O_DIRECT, or,
    /// where the file system refuses that, through the page cache; returns the path taken.
    async fn write_direct(
        &self,
        direct: &File,
        handle: &File,
        offset: u64,
        bounce: AlignedBuf,
    ) -> io::Result<WritePath> {
        let len = bounce.len() as u64;
        let (mut res, mut bounce) = direct.write_all_at(bounce, offset).await;
        let mut path = WritePath::Direct;
        match &res {
            Ok(()) => self.direct_bytes.set(self.direct_bytes.get() + len),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                tracing::debug!("direct writes refused ({e}); writing through the page cache");
                self.direct_ok.set(false);
                (res, bounce) = handle.write_all_at(bounce, offset).await;
                path = WritePath::Buffered;
            }
            Err(_) => {}
        }
        self.bounce.borrow_mut().give_back(bounce);
        res.map(|()| path)
    }

    /// The O_DIRECT handle of `file`, if the file system gives one.
    async fn direct_handle(&self, file: usize) -> Option<Rc<File>> {
        let open = || async move {
            tokio_uring::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_DIRECT)
                .open(&self.paths[file])
                .await
        };
        match self.direct.get_or_open(file, open).await {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::debug!("no direct writes to {}: {e}", self.paths[file].display());
                self.direct_ok.set(false);
                None
            }
        }
    }

    /// Reads `len` bytes at global offset `start` into `buf`, which ends up exactly `len`
    /// long. Padding reads as zeros; a missing or short file is an error (the buffer's
    /// contents are then unspecified).
    pub async fn read<B: ReadBuf>(
        &self,
        start: u64,
        len: usize,
        mut buf: B,
    ) -> (io::Result<()>, B) {
        buf.set_len_initialized(len);
        for seg in self.layout.segments_at(start, len as u32) {
            let from = seg.range_offset as usize;
            let to = from + seg.len as usize;
            if seg.pad {
                buf.as_mut_slice()[from..to].fill(0);
                continue;
            }
            let handle = match self.handle(seg.file).await {
                Ok(h) => h,
                Err(e) => return (Err(e), buf),
            };
            let (res, slice) = handle
                .read_exact_at(buf.slice(from..to), seg.file_offset)
                .await;
            buf = slice.into_inner();
            if let Err(e) = res {
                return (Err(e), buf);
            }
        }
        (Ok(()), buf)
    }

    /// Flushes every file written since the last sync to stable storage.
    pub async fn sync(&self) -> io::Result<()> {
        let dirty: Vec<usize> = (0..self.paths.len())
            .filter(|&i| self.dirty.borrow()[i])
            .collect();
        for file in dirty {
            self.handle(file).await?.sync_data().await?;
            self.dirty.borrow_mut()[file] = false;
        }
        Ok(())
    }

    /// Starts write-back of every file written since the last sync, without waiting for it
    /// (sync_file_range with SYNC_FILE_RANGE_WRITE, on one blocking-pool thread for all the
    /// files, since it can stall when the device queue is full). Called while downloading, so
    /// the disk works alongside the network and the final fsync has little left to do.
    pub fn start_writeback(&self) {
        use std::os::fd::{AsRawFd, BorrowedFd};
        let mut fds = Vec::new();
        for file in 0..self.paths.len() {
            if !self.dirty.borrow()[file] {
                continue;
            }
            let Some(handle) = self.open.get(file) else {
                continue;
            };
            // A duplicate descriptor: the original may be closed while the call runs.
            // SAFETY: the handle is open for the duration of this borrow.
            let borrowed = unsafe { BorrowedFd::borrow_raw(handle.as_raw_fd()) };
            if let Ok(fd) = borrowed.try_clone_to_owned() {
                fds.push(fd);
            }
        }
        if fds.is_empty() {
            return;
        }
        tokio::task::spawn_blocking(move || {
            for fd in fds {
                // SAFETY: a valid descriptor we own; offset 0 and length 0 mean the whole file.
                unsafe { libc::sync_file_range(fd.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
            }
        });
    }

    /// Makes every selected (non-padding) file exist at exactly its torrent size: creates
    /// empty files that no piece touched and trims files that were longer before.
    /// Unselected files are left as they are.
    pub async fn finalize_sizes(&self) -> io::Result<()> {
        for (i, span) in self.layout.files().iter().enumerate() {
            if span.pad || !self.is_selected(i) {
                continue;
            }
            let handle = self.handle(i).await?;
            let meta = handle_metadata_len(&handle)?;
            if meta != span.length {
                set_len(&handle, span.length)?;
            }
        }
        Ok(())
    }

    /// Creates the selected files, and reserves them when preallocating, on a thread of its
    /// own until the download first opens one itself (see `ahead`). For a download that has
    /// checked its data: files made during the check would be read back as zeros.
    pub fn create_files_ahead(&self) {
        if !self.config.writable {
            return;
        }
        let jobs = (self.layout.files().iter().enumerate())
            .filter(|&(i, span)| !span.pad && self.is_selected(i))
            .map(|(file, span)| ahead::Job {
                file,
                path: self.paths[file].clone(),
                reserve: self.reserves(file).then_some(span.length),
            })
            .collect();
        self.ahead.spawn(jobs);
    }

    /// Whether `file` is reserved in full when it is first created (by `ahead` or by
    /// `open_file`): only when preallocating, and only a selected file with bytes in it.
    fn reserves(&self, file: usize) -> bool {
        self.config.preallocate && self.layout.files()[file].length > 0 && self.is_selected(file)
    }

    fn is_selected(&self, file: usize) -> bool {
        (self.config.selected_files.as_ref()).is_none_or(|s| s.get(file).copied().unwrap_or(false))
    }

    /// The open handle of `file`, opening it (and creating it and its parents when
    /// writable) if needed.
    async fn handle(&self, file: usize) -> io::Result<Rc<File>> {
        self.open.get_or_open(file, || self.open_file(file)).await
    }

    async fn open_file(&self, file: usize) -> io::Result<File> {
        let path = &self.paths[file];
        if !self.config.writable {
            return File::open(path).await;
        }
        self.ahead.stop();
        if let Some(parent) = path.parent() {
            tokio_uring::fs::create_dir_all(parent).await?;
        }
        let opened = tokio_uring::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .open(path)
            .await;
        let handle = match opened {
            Ok(h) => h,
            // Data we may not write (a read-only mount, another owner's files, an immutable
            // file) can still be read and seeded; a write to it fails with a clear error.
            Err(e) if is_write_refusal(&e) && path.exists() => return File::open(path).await,
            Err(e) => return Err(e),
        };
        let length = self.layout.files()[file].length;
        if self.reserves(file) && !self.ahead.is_reserved(file) {
            match handle.fallocate(0, length, 0).await {
                Ok(()) => {}
                // No fallocate here, or no room for the whole file: the file stays sparse
                // (keeping whatever part was reserved), so a download still keeps every piece
                // that fits and stops with a clear error only when a write finds no space.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::ENOSPC)) => {
                    tracing::debug!(path = %path.display(), error = %e, "file left sparse");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(handle)
    }
}

impl Drop for Storage {
    /// A download that ends (or fails) before its first write leaves no thread creating its
    /// files behind it.
    fn drop(&mut self) {
        self.ahead.stop();
    }
}

/// Writes the bytes of `chunks` (a run at `offset` of the file) outside its aligned
/// `middle`, through the page cache.
fn write_edges(
    handle: &File,
    offset: u64,
    chunks: &[Chunk],
    middle: &std::ops::Range<usize>,
) -> io::Result<()> {
    let len: usize = chunks.iter().map(Chunk::len).sum();
    if middle.start > 0 {
        write_edge_now(handle, offset, chunks, 0..middle.start)?;
    }
    if middle.end < len {
        write_edge_now(handle, offset + middle.end as u64, chunks, middle.end..len)?;
    }
    Ok(())
}

/// Writes the unaligned head or tail of a direct write (less than one page) through the page
/// cache with a plain pwrite, on this thread. ext4 cannot take a buffered write without
/// blocking, so io_uring hands every one to an io-wq worker: in a torrent whose files do not
/// start on 4 KiB boundaries, each direct write has such an edge at both ends, and each edge
/// cost a worker wake-up and two context switches (`perf/compare --size 1G --files 200
/// --piece 256K --pairs libtorrent:spate`, 6c0cd84: 5.4 switches per MiB against 0.01 for one
/// aligned file, 1.56 CPU s/GiB against 1.09). The page is normally cached already (its other
/// part was written the same way, or the extent is unwritten and needs no read), so the call
/// costs a few microseconds.
///
/// `range` is the edge's place in `chunks` (less than a page: `aligned_middle` leaves no more
/// on either side); `offset` is where it goes in the file.
fn write_edge_now(
    handle: &File,
    offset: u64,
    chunks: &[Chunk],
    range: std::ops::Range<usize>,
) -> io::Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd};
    use std::os::unix::fs::FileExt;
    let mut page = [0u8; direct::DIRECT_ALIGN as usize];
    let edge = &mut page[..range.len()];
    copy_from_chunks(chunks, range.start, edge);
    // SAFETY: the descriptor stays open for the call (`handle` is borrowed), and ManuallyDrop
    // keeps this temporary std::fs::File from closing it.
    let file =
        std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(handle.as_raw_fd()) });
    file.write_all_at(edge, offset)
}

async fn write_buffered(handle: &File, offset: u64, chunks: Vec<Chunk>) -> io::Result<()> {
    let (res, _) = handle.writev_at_all(chunks, Some(offset)).await;
    res.map(|_| ())
}

/// The open failed only because writing is not allowed.
fn is_write_refusal(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::PermissionDenied
        || e.kind() == io::ErrorKind::ReadOnlyFilesystem
        || e.raw_os_error() == Some(libc::EPERM)
}

/// A buffer `Storage::read` can fill: its length can be set without zeroing bytes that were
/// initialised before (recycled buffers are read into again and again; zeroing 4 GiB of them
/// during a check would cost a tenth of a second of CPU for nothing).
pub trait ReadBuf: tokio_uring::buf::IoBufMut {
    /// Makes the buffer `len` bytes long; bytes never initialised before are zeroed.
    fn set_len_initialized(&mut self, len: usize);
    fn as_mut_slice(&mut self) -> &mut [u8];
}

impl ReadBuf for Vec<u8> {
    fn set_len_initialized(&mut self, len: usize) {
        if self.len() >= len {
            self.truncate(len);
        } else {
            self.resize(len, 0);
        }
    }
    fn as_mut_slice(&mut self) -> &mut [u8] {
        self
    }
}

impl ReadBuf for crate::buffer::PoolBuf {
    fn set_len_initialized(&mut self, len: usize) {
        self.set_len_initialized(len);
    }
    fn as_mut_slice(&mut self) -> &mut [u8] {
        self.as_mut_slice()
    }
}

fn handle_metadata_len(handle: &File) -> io::Result<u64> {
    use std::os::fd::AsRawFd;
    // SAFETY: fstat on a valid open descriptor into a zeroed struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(handle.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.st_size as u64)
}

fn set_len(handle: &File, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: ftruncate on a valid open descriptor.
    if unsafe { libc::ftruncate(handle.as_raw_fd(), len as libc::off_t) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
