//! How PIECE messages should leave the process: the outbox sends each 13-byte header and its
//! 16 KiB block as two iovecs of one vectored send (no copy in user space). io_uring also
//! offers zero-copy sends (IORING_OP_SENDMSG_ZC), which pin the pages instead of copying
//! them into socket buffers, at the cost of a second completion per send. This measures both
//! over loopback TCP with the same iovecs and flags: 32 blocks per send, one send in flight,
//! a reader thread draining the other end.
//!
//! `cargo bench --bench send`. Kept in the README (Performance): on loopback the kernel
//! copies zero-copy sends anyway, so the notification is pure overhead.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use io_uring::{opcode, types, IoUring};
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BLOCK: usize = 16 << 10;
const BLOCKS_PER_SEND: usize = 32;
const PER_SEND: usize = BLOCKS_PER_SEND * (13 + BLOCK);
/// Bytes one measured iteration sends (and the reader confirms): about 64 MiB.
const ROUND: usize = 128 * PER_SEND;
const CQE_F_MORE: u32 = 1 << 1;
const CQE_F_NOTIF: u32 = 1 << 3;

/// A connected pair: the sending socket, and a reader thread that reports every `ROUND`
/// bytes it has drained.
struct Link {
    sender: TcpStream,
    rounds: mpsc::Receiver<()>,
}

fn link() -> Link {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rounds) = mpsc::channel();
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 256 << 10];
        let mut got = 0usize;
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => got += n,
            }
            while got >= ROUND {
                got -= ROUND;
                if tx.send(()).is_err() {
                    return;
                }
            }
        }
    });
    let sender = TcpStream::connect(addr).unwrap();
    sender.set_nodelay(true).unwrap();
    Link { sender, rounds }
}

/// Sends `ROUND` bytes of PIECE messages; `zero_copy` picks SENDMSG_ZC over SENDMSG.
fn send_round(ring: &mut IoUring, link: &Link, zero_copy: bool, blocks: &[Vec<u8>]) {
    let header = [0u8; 13];
    let mut iov: Vec<libc::iovec> = Vec::with_capacity(2 * BLOCKS_PER_SEND);
    for block in blocks {
        iov.push(libc::iovec {
            iov_base: header.as_ptr() as *mut _,
            iov_len: header.len(),
        });
        iov.push(libc::iovec {
            iov_base: block.as_ptr() as *mut _,
            iov_len: block.len(),
        });
    }
    let per_send: usize = iov.iter().map(|v| v.iov_len).sum();
    assert_eq!(per_send, PER_SEND);
    // SAFETY: zeroed msghdr is valid (no name, no control); iov outlives every send.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = iov.len();
    let fd = types::Fd(link.sender.as_raw_fd());
    let mut sent = 0usize;
    let mut notifications_due = 0usize;
    while sent < ROUND {
        let entry = if zero_copy {
            opcode::SendMsgZc::new(fd, &msg)
                .flags(libc::MSG_WAITALL as u32)
                .build()
        } else {
            opcode::SendMsg::new(fd, &msg)
                .flags(libc::MSG_WAITALL as u32)
                .build()
        };
        // SAFETY: msg and the buffers it points at live until the completions are reaped.
        unsafe { ring.submission().push(&entry).unwrap() };
        let mut result = None;
        while result.is_none() {
            ring.submit_and_wait(1).unwrap();
            for cqe in ring.completion() {
                if cqe.flags() & CQE_F_NOTIF != 0 {
                    notifications_due -= 1;
                    continue;
                }
                if cqe.flags() & CQE_F_MORE != 0 {
                    notifications_due += 1;
                }
                result = Some(cqe.result());
            }
        }
        let n = result.unwrap();
        assert!(
            n >= 0,
            "send failed: {}",
            std::io::Error::from_raw_os_error(-n)
        );
        assert_eq!(n as usize, per_send, "short send despite MSG_WAITALL");
        sent += per_send;
    }
    // The buffers may be reused only once the kernel lets go of them.
    while notifications_due > 0 {
        ring.submit_and_wait(1).unwrap();
        for cqe in ring.completion() {
            if cqe.flags() & CQE_F_NOTIF != 0 {
                notifications_due -= 1;
            }
        }
    }
    link.rounds.recv().unwrap();
}

fn bench_send(c: &mut Criterion) {
    let blocks: Vec<Vec<u8>> = (0..BLOCKS_PER_SEND).map(|i| vec![i as u8; BLOCK]).collect();
    let mut group = c.benchmark_group("loopback_piece_send");
    group.throughput(Throughput::Bytes(ROUND as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    for (name, zero_copy) in [("sendmsg_vectored", false), ("sendmsg_zc", true)] {
        let link = link();
        let mut ring = IoUring::new(64).unwrap();
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let t = Instant::now();
                for _ in 0..iters {
                    send_round(&mut ring, &link, zero_copy, &blocks);
                }
                t.elapsed()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_send);
criterion_main!(benches);
