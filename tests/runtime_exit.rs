//! The io_uring runtime's end: a socket read still in flight when a command's future
//! returns must keep its buffer, since the kernel may write into it until the read's
//! cancellation completes. tokio-uring 0.5 frees such buffers when its driver is dropped
//! (see `spate::runtime::start`); this binary counts the frees of one buffer size with its
//! own allocator to prove spate's runtime never does.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// A buffer size nothing else in this test binary allocates.
const WATCHED_LEN: usize = 98_317;

static WATCHED_FREES: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, counting the frees of `WATCHED_LEN`-byte blocks.
struct CountingFrees;

unsafe impl GlobalAlloc for CountingFrees {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.size() == WATCHED_LEN {
            WATCHED_FREES.fetch_add(1, Ordering::SeqCst);
        }
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingFrees = CountingFrees;

#[test]
fn a_read_still_in_flight_when_the_command_returns_keeps_its_buffer() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (send_now, wait_for_exit) = mpsc::channel::<()>();
    let peer = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        // A peer that keeps sending after the command is done, as a seeder does to a
        // leecher that has just finished.
        wait_for_exit.recv_timeout(Duration::from_secs(30)).unwrap();
        let _ = stream.write_all(&[7u8; 4 * WATCHED_LEN]);
    });

    spate::runtime::start(async move {
        let stream = tokio_uring::net::TcpStream::connect(addr).await.unwrap();
        tokio_uring::spawn(async move {
            let buffer = Vec::with_capacity(WATCHED_LEN);
            let _ = stream.read(buffer).await;
        });
        // Give the task a turn to submit its read; nothing will answer it.
        tokio::time::sleep(Duration::from_millis(50)).await;
    });

    assert_eq!(
        WATCHED_FREES.load(Ordering::SeqCst),
        0,
        "the buffer of a read the kernel still holds was freed at the runtime's end"
    );
    send_now.send(()).unwrap();
    peer.join().unwrap();
}
