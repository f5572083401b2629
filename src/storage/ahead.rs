//! Creating a download's files before it needs them. A download first waits for its peers
//! (a handshake, an unchoke; aria2 answers a dial only on its once-a-second loop turn), and
//! a thread of its own uses that wait to create the selected files in torrent order and
//! reserve their space, which a transfer would otherwise stall on: ext4 searching for a free
//! inode (long after many deletes) and the fallocate, each on an io-wq worker. It stops at
//! the download's first open of a file of its own, so it never competes with a transfer
//! already under way; from there the event loop creates whatever is left.
//!
//! For 200 files it took 13.5 ms (a debug log line says how many files and how long). 1 GiB in 200
//! files at 256 KiB pieces, alternating single runs against a build without it (`perf/compare
//! --runs 1 --pairs aria2:spate,libtorrent:spate`, 2026-12-07, a noisy hour): faster in 16 of 22
//! pairs, by about 5% on average (aria2 → spate 358-483 against 325-462 MB/s, means 443 and 416;
//! libtorrent → spate 564-853 against 671-786, means 763 and 733). With one 2 GiB file there is one
//! fallocate to move (18 ms), and 11 pairs were within the hour's noise either way. A first version
//! that went on creating files after the download's first open was slower from libtorrent, which
//! starts sending at once, in 4 pairs of 4; hence the stop.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// One file for the thread to create.
pub(super) struct Job {
    pub file: usize,
    pub path: PathBuf,
    /// Bytes to reserve with fallocate, when the download reserves its files.
    pub reserve: Option<u64>,
}

/// What the thread and the event loop share.
pub(super) struct Ahead {
    stop: AtomicBool,
    /// Per file, set once the thread has reserved its full size.
    reserved: Box<[AtomicBool]>,
}

impl Ahead {
    pub fn new(files: usize) -> Arc<Ahead> {
        Arc::new(Ahead {
            stop: AtomicBool::new(false),
            reserved: (0..files).map(|_| AtomicBool::new(false)).collect(),
        })
    }

    /// The download opens files itself from now on; the thread ends before its next file.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Whether the thread reserved `file` (so its open needs no fallocate).
    pub fn is_reserved(&self, file: usize) -> bool {
        self.reserved[file].load(Ordering::Acquire)
    }

    /// Starts the thread on `jobs`. Failures are left for the download's own open of the
    /// file, which reports them (or leaves a file that cannot be reserved sparse).
    pub fn spawn(self: &Arc<Self>, jobs: Vec<Job>) {
        let ahead = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("spate-files".into())
            .spawn(move || ahead.create(jobs));
        if let Err(e) = spawned {
            tracing::debug!("not creating files ahead: {e}");
        }
    }

    fn create(&self, jobs: Vec<Job>) {
        let started = std::time::Instant::now();
        let total = jobs.len();
        let made = self.create_until_stopped(jobs);
        let elapsed = started.elapsed();
        tracing::debug!(made, total, ?elapsed, "files created ahead");
    }

    /// Creates the files of `jobs` in order until stopped; returns how many it went through.
    fn create_until_stopped(&self, jobs: Vec<Job>) -> usize {
        use std::os::fd::AsRawFd;
        let mut made = 0;
        for job in jobs {
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            made += 1;
            if let Some(parent) = job.path.parent() {
                if std::fs::create_dir_all(parent).is_err() {
                    continue;
                }
            }
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&job.path);
            let (Ok(file), Some(len)) = (file, job.reserve) else {
                continue;
            };
            let Ok(len) = libc::off_t::try_from(len) else {
                continue;
            };
            // SAFETY: a descriptor we own, open for the duration of the call.
            if unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) } == 0 {
                self.reserved[job.file].store(true, Ordering::Release);
            }
        }
        made
    }
}
