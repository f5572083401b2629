//! Disk throughput through the storage layer: write then read a file (1 GiB by default;
//! SPATE_BENCH_DISK_MIB sets another size) in 16 KiB blocks at piece offsets, with N
//! operations in flight, beside a plain `pwrite`/`pread` loop over the same blocks in the same
//! run. Also: blocks coalesced into 256 KiB vectored writes (16 blocks of one receive buffer
//! per write), which is how the download engine writes. Reads and writes hit the page cache:
//! this measures the CPU cost of the I/O path, not the device.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures_util::stream::{FuturesUnordered, StreamExt};
use spate::buffer::{BufferPool, Chunk};
use spate::layout::Layout;
use spate::storage::{Storage, StorageConfig};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const BLOCK: usize = 16 << 10;
const PIECE: u32 = 1 << 20;

fn total_bytes() -> u64 {
    let mib: u64 = std::env::var("SPATE_BENCH_DISK_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    mib << 20
}

fn storage_at(path: &Path, total: u64) -> Storage {
    let layout = Layout::from_lengths(PIECE, [total]);
    Storage::from_parts(layout, vec![path.to_path_buf()], StorageConfig::default())
}

/// Writes `total` bytes in writes of `blocks_per_write` 16 KiB blocks, `in_flight` at once.
fn storage_write(path: &Path, total: u64, blocks_per_write: usize, in_flight: usize) -> Duration {
    tokio_uring::start(async {
        let storage = storage_at(path, total);
        let pool = BufferPool::new(BLOCK * blocks_per_write, in_flight + 1);
        let write_len = (BLOCK * blocks_per_write) as u64;
        let start = Instant::now();
        let mut ops = FuturesUnordered::new();
        let mut offset = 0u64;
        while offset < total || !ops.is_empty() {
            while offset < total && ops.len() < in_flight {
                let mut buf = pool.take().await;
                buf.extend_from_slice(&vec![0x5Au8; write_len as usize]);
                let frozen = Arc::new(buf);
                let chunks: Vec<Chunk> = (0..blocks_per_write)
                    .map(|i| Chunk::new(Arc::clone(&frozen), i * BLOCK..(i + 1) * BLOCK))
                    .collect();
                let at = offset;
                let s = &storage;
                ops.push(async move { s.write(at, chunks).await });
                offset += write_len;
            }
            if let Some(r) = ops.next().await {
                r.expect("write");
            }
        }
        start.elapsed()
    })
}

fn storage_read(path: &Path, total: u64, in_flight: usize) -> Duration {
    tokio_uring::start(async {
        let storage = storage_at(path, total);
        let start = Instant::now();
        let mut ops = FuturesUnordered::new();
        let mut offset = 0u64;
        while offset < total || !ops.is_empty() {
            while offset < total && ops.len() < in_flight {
                let s = &storage;
                let at = offset;
                ops.push(async move { s.read(at, BLOCK, Vec::with_capacity(BLOCK)).await });
                offset += BLOCK as u64;
            }
            if let Some((r, _)) = ops.next().await {
                r.expect("read");
            }
        }
        start.elapsed()
    })
}

/// Each write pass starts from a fresh file, as a download does: writing into page-cache
/// pages that already exist is several times cheaper than allocating them.
fn fresh(path: &Path) -> &Path {
    let _ = std::fs::remove_file(path);
    path
}

fn pwrite_loop(path: &Path, total: u64) -> Duration {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .unwrap();
    let block = vec![0x5Au8; BLOCK];
    let start = Instant::now();
    for offset in (0..total).step_by(BLOCK) {
        f.write_all_at(&block, offset).unwrap();
    }
    start.elapsed()
}

fn pread_loop(path: &Path, total: u64) -> Duration {
    let f = std::fs::File::open(path).unwrap();
    let mut block = vec![0u8; BLOCK];
    let start = Instant::now();
    for offset in (0..total).step_by(BLOCK) {
        f.read_exact_at(&mut block, offset).unwrap();
    }
    start.elapsed()
}

fn disk(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(std::env::var("SPATE_BENCH_DIR").unwrap_or_else(|_| ".".into()))
        .unwrap();
    let path = dir.path().join("bench.bin");
    let total = total_bytes();
    let mut group = c.benchmark_group("disk_write");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10))
        .throughput(Throughput::Bytes(total));
    group.bench_function("std_pwrite_16k", |b| {
        b.iter_custom(|n| (0..n).map(|_| pwrite_loop(fresh(&path), total)).sum())
    });
    for in_flight in [1usize, 16, 64] {
        group.bench_function(BenchmarkId::new("storage_16k", in_flight), |b| {
            b.iter_custom(|n| {
                (0..n)
                    .map(|_| storage_write(fresh(&path), total, 1, in_flight))
                    .sum()
            })
        });
    }
    for in_flight in [4usize, 16] {
        group.bench_function(BenchmarkId::new("storage_writev_256k", in_flight), |b| {
            b.iter_custom(|n| {
                (0..n)
                    .map(|_| storage_write(fresh(&path), total, 16, in_flight))
                    .sum()
            })
        });
    }
    group.finish();
    pwrite_loop(fresh(&path), total); // the read group reads a whole, written file
    let mut group = c.benchmark_group("disk_read");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10))
        .throughput(Throughput::Bytes(total));
    group.bench_function("std_pread_16k", |b| {
        b.iter_custom(|n| (0..n).map(|_| pread_loop(&path, total)).sum())
    });
    for in_flight in [1usize, 16, 64] {
        group.bench_function(BenchmarkId::new("storage_16k", in_flight), |b| {
            b.iter_custom(|n| (0..n).map(|_| storage_read(&path, total, in_flight)).sum())
        });
    }
    group.finish();
}

criterion_group!(benches, disk);
criterion_main!(benches);
