//! Piece hashing. `HashPlacement` says whether a download's arriving blocks are hashed on the
//! I/O thread or off it. `HashPool` owns a fixed set of worker threads, each with its own
//! bounded job queue: `submit` spreads independent jobs (whole pieces for `create` and
//! `verify`), `submit_to` pins a job to one worker by key so that the blocks of one piece are
//! hashed in arrival order by the thread that holds that piece's running SHA-1 state.
//!
//! Whole buffers are hashed with RustCrypto's `sha1`, which uses the SHA-NI instructions
//! through cpufeatures: on this machine 1.6-1.9 GB/s per core, equal to OpenSSL, against 0.44
//! GB/s for ring's portable SHA-1 (benches/hash.rs measures them side by side). A download's
//! pieces use `Sha1State` (`copying`), the same SHA-NI rounds with the one thing the crate
//! cannot do: copy the bytes it hashes in the same pass (`CopyPlan`; `cargo bench --bench
//! hash -- sha1+copy`: hashing 1 MiB then copying it 566 us, hashing while copying 522 us,
//! hashing alone 520 us).

mod copy_plan;
mod copying;

pub use copy_plan::CopyPlan;
pub use copying::Sha1State;
use sha1::{Digest, Sha1};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

/// SHA-1 of one buffer.
pub fn sha1(data: &[u8]) -> [u8; 20] {
    Sha1::digest(data).into()
}

/// SHA-1 over several slices in order, as if they were one buffer.
pub fn sha1_of_slices<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> [u8; 20] {
    let mut h = Sha1::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// A running SHA-1 over a piece whose bytes arrive in order.
#[derive(Clone, Default)]
pub struct PieceHasher {
    state: Sha1State,
    /// Bytes hashed so far: the next byte expected is at this offset in the piece.
    pub hashed: u32,
}

impl PieceHasher {
    pub fn update(&mut self, bytes: &[u8]) {
        self.state.update(bytes);
        self.hashed += bytes.len() as u32;
    }

    /// Hashes `src` and copies it to `dst` in the same pass (see `Sha1State`).
    pub fn update_copying(&mut self, src: &[u8], dst: &mut [u8]) {
        self.state.update_copying(src, dst);
        self.hashed += src.len() as u32;
    }

    pub fn finish(self) -> [u8; 20] {
        self.state.finish()
    }
}

/// Where the blocks of a download are hashed as they arrive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashPlacement {
    /// On the I/O thread right after the block is received, while its bytes are still in
    /// that core's cache: no job, no wake-up, no handover per block.
    IoThread,
    /// On the hashing threads, leaving the I/O thread only the network and the disk.
    Workers,
}

impl HashPlacement {
    /// `IoThread` on machines of one or two cores, `Workers` on larger ones. With two cores
    /// a hashing thread has no core of its own (the kernel's network and disk work and the
    /// peer take the other), so handing it each block only adds switches. Measured on 2
    /// vCPUs, libtorrent seeding 2 GiB to spate, alternating: 6-10% less leecher CPU and
    /// half the context switches per MiB on the I/O thread (see the README). On more cores
    /// the threads hash in parallel with the receive path, which one I/O thread cannot.
    pub fn for_this_machine() -> HashPlacement {
        if available_cores() <= 2 {
            HashPlacement::IoThread
        } else {
            HashPlacement::Workers
        }
    }
}

fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Jobs one worker may have queued; enough to keep it busy across an I/O round trip while
/// keeping the memory the queued jobs pin bounded. Submitting to a full queue blocks.
pub const QUEUE_PER_WORKER: usize = 256;

/// A fixed set of hashing threads.
pub struct HashPool {
    queues: Vec<crossbeam_channel::Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
    next: AtomicUsize,
}

impl HashPool {
    /// Starts `threads` workers (at least one).
    pub fn new(threads: usize) -> HashPool {
        let mut queues = Vec::new();
        let mut handles = Vec::new();
        for i in 0..threads.max(1) {
            let (tx, rx) = crossbeam_channel::bounded::<Job>(QUEUE_PER_WORKER);
            queues.push(tx);
            let handle = std::thread::Builder::new()
                .name(format!("spate-hash-{i}"))
                .spawn(move || {
                    for job in rx {
                        job();
                    }
                })
                .expect("spawning a hashing thread");
            handles.push(handle);
        }
        HashPool {
            queues,
            threads: handles,
            next: AtomicUsize::new(0),
        }
    }

    /// One worker per core the machine has.
    pub fn per_core() -> HashPool {
        HashPool::new(available_cores())
    }

    pub fn workers(&self) -> usize {
        self.queues.len()
    }

    /// Runs `job` on the next worker in turn.
    pub fn submit(&self, job: impl FnOnce() + Send + 'static) {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        self.submit_to(i, job);
    }

    /// Runs `job` on worker `key % workers`, after every job given earlier to that worker.
    pub fn submit_to(&self, key: usize, job: impl FnOnce() + Send + 'static) {
        let queue = &self.queues[key % self.queues.len()];
        // Sending fails only if the worker died, which means a job panicked: a bug.
        queue
            .send(Box::new(job))
            .expect("hash worker thread is alive");
    }
}

impl Drop for HashPool {
    fn drop(&mut self) {
        self.queues.clear(); // closes the queues so the workers end
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digest() {
        assert_eq!(
            crate::types::hex(&sha1(b"abc")),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(sha1_of_slices([&b"a"[..], b"bc"]), sha1(b"abc"));
        let mut h = PieceHasher::default();
        h.update(b"ab");
        h.update(b"c");
        assert_eq!(h.hashed, 3);
        assert_eq!(h.finish(), sha1(b"abc"));
    }

    #[test]
    fn pinned_jobs_run_in_order() {
        let pool = HashPool::new(2);
        let (tx, rx) = std::sync::mpsc::channel();
        for i in 0..100 {
            let tx = tx.clone();
            pool.submit_to(1, move || tx.send(i).unwrap());
        }
        drop(pool);
        let got: Vec<i32> = rx.try_iter().collect();
        assert_eq!(got, (0..100).collect::<Vec<_>>());
    }
}
