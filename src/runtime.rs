//! The io_uring runtime every command runs on: tokio-uring, with its ring set up for the one
//! thread that both submits and reaps. `IORING_SETUP_COOP_TASKRUN` lets completions wait
//! for that thread's next entry into the kernel (it enters for every batch of submissions)
//! instead of interrupting it in user space for each one; see README "Where the time goes".

use std::future::Future;

/// Runs `future` to completion on a fresh io_uring runtime on this thread. A kernel that
/// refuses the flag (before 5.19) gets a plain ring.
///
/// The runtime is never dropped: every caller is a command about to exit. tokio-uring 0.5
/// frees the buffers of operations still in flight when its driver is dropped, before their
/// cancellations complete (`Driver::drop` swaps each `Lifecycle::Ignored(buffer)` for an empty
/// one), so a socket read still pending at exit (a peer sending to a leecher that just
/// finished) let the kernel write into freed heap memory: a leecher of the 20-leecher load
/// test aborted with "free(): corrupted unsorted chunks" at exit. The process's end releases
/// the ring and its buffers instead.
pub fn start<F: Future>(future: F) -> F::Output {
    let mut ring = tokio_uring::uring_builder();
    ring.setup_coop_taskrun();
    let mut builder = tokio_uring::builder();
    builder.uring_builder(&ring);
    let runtime = tokio_uring::Runtime::new(&builder)
        .or_else(|_| tokio_uring::Runtime::new(&tokio_uring::builder()))
        .expect("creating an io_uring instance (is io_uring disabled, or RLIMIT_MEMLOCK too low?)");
    let output = runtime.block_on(future);
    std::mem::forget(runtime);
    output
}
