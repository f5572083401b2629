//! Disk throughput through the storage layer: write then read a file (1 GiB by default;
//! SPATE_BENCH_DISK_MIB sets another size) in 16 KiB blocks at piece offsets, with N
//! operations in flight, beside a plain `pwrite`/`pread` loop over the same blocks in the same
//! run. Also: blocks coalesced into 256 KiB and 1 MiB vectored writes (16 or 64 blocks of one
//! receive buffer per write; downloads make writes of up to 1 MiB). Reads and writes hit the page cache:
//! this measures the CPU cost of the I/O path, not the device. When `fio` is installed, the
//! same writes (block size, depth, fresh sparse file, buffered) through
//! `fio --ioengine=io_uring` run in the same group as the reference the storage layer must stay
//! within 10% of. Downloads write with O_DIRECT (32 writes of up to 1 MiB in flight, into
//! preallocated files), so that path has its own pair: storage's direct writes against
//! `fio --direct=1` with the same block size, depth and preallocation; those measure the
//! device, and storage's copy into aligned bounce buffers on the way.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures_util::stream::{FuturesUnordered, StreamExt};
use spate::buffer::{BufferPool, Chunk};
use spate::layout::Layout;
use spate::storage::{Storage, StorageConfig, WritePaths};
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

/// How a bench writes: through the page cache like the `fio --direct=0` references, or
/// the way downloads do (O_DIRECT into a preallocated file) like `fio --direct=1`.
#[derive(Clone, Copy)]
enum WriteWay {
    Buffered,
    Direct,
}

fn storage_at(path: &Path, total: u64, how: WriteWay) -> Storage {
    let layout = Layout::from_lengths(PIECE, [total]);
    let config = match how {
        WriteWay::Buffered => StorageConfig {
            write_paths: WritePaths::Buffered,
            ..StorageConfig::default()
        },
        WriteWay::Direct => StorageConfig {
            write_paths: WritePaths::Direct,
            preallocate: true,
            ..StorageConfig::default()
        },
    };
    Storage::from_parts(layout, vec![path.to_path_buf()], config)
}

/// Writes `total` bytes in writes of `blocks_per_write` 16 KiB blocks, `in_flight` at once.
fn storage_write(
    path: &Path,
    total: u64,
    blocks_per_write: usize,
    in_flight: usize,
    how: WriteWay,
) -> Duration {
    spate::runtime::start(async {
        let storage = storage_at(path, total, how);
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
        // Direct writes are on the device when they complete; buffered ones are in the page
        // cache, as fio's are when it reports (it does not fsync).
        start.elapsed()
    })
}

fn storage_read(path: &Path, total: u64, in_flight: usize) -> Duration {
    spate::runtime::start(async {
        let storage = storage_at(path, total, WriteWay::Buffered);
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

/// Writes `total` bytes to a fresh file with fio's io_uring engine, `block` bytes per write,
/// `depth` in flight; returns the time fio measured for the writes alone (its own process
/// start-up excluded). None when fio is not installed.
fn fio_write(
    path: &Path,
    total: u64,
    block: usize,
    depth: usize,
    how: WriteWay,
) -> Option<Duration> {
    let (direct, fallocate) = match how {
        WriteWay::Buffered => ("--direct=0", "--fallocate=none"),
        WriteWay::Direct => ("--direct=1", "--fallocate=native"),
    };
    let out = std::process::Command::new("fio")
        .args([
            "--name=spate-bench",
            "--rw=write",
            "--ioengine=io_uring",
            direct,
            fallocate,
            "--output-format=json",
        ])
        .arg(format!("--filename={}", path.display()))
        .arg(format!("--size={total}"))
        .arg(format!("--bs={block}"))
        .arg(format!("--iodepth={depth}"))
        .output()
        .ok()?;
    if !out.status.success() {
        panic!("fio failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("fio JSON");
    let bytes_per_s = report["jobs"][0]["write"]["bw_bytes"]
        .as_f64()
        .expect("fio reports write bandwidth");
    Some(Duration::from_secs_f64(total as f64 / bytes_per_s))
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
                    .map(|_| storage_write(fresh(&path), total, 1, in_flight, WriteWay::Buffered))
                    .sum()
            })
        });
    }
    for (name, blocks, in_flight) in [
        ("storage_writev_256k", 16, 4usize),
        ("storage_writev_256k", 16, 16),
        ("storage_writev_1m", 64, 4),
    ] {
        group.bench_function(BenchmarkId::new(name, in_flight), |b| {
            b.iter_custom(|n| {
                (0..n)
                    .map(|_| {
                        storage_write(fresh(&path), total, blocks, in_flight, WriteWay::Buffered)
                    })
                    .sum()
            })
        });
    }
    // The references the storage layer is held to: the same writes through fio.
    let fio_present = fio_write(fresh(&path), 1 << 20, BLOCK, 1, WriteWay::Buffered).is_some();
    if !fio_present {
        eprintln!("fio not found: no fio reference in this run (apt install fio)");
    }
    for (name, block, depth) in [
        ("fio_uring_16k", BLOCK, 16),
        ("fio_uring_256k", 16 * BLOCK, 4),
        ("fio_uring_1m", 64 * BLOCK, 4),
    ] {
        if !fio_present {
            break;
        }
        group.bench_function(BenchmarkId::new(name, depth), |b| {
            b.iter_custom(|n| {
                (0..n)
                    .map(|_| {
                        fio_write(fresh(&path), total, block, depth, WriteWay::Buffered)
                            .expect("fio ran before")
                    })
                    .sum()
            })
        });
    }
    group.finish();
    // What downloads do: 1 MiB runs of 64 blocks, 32 direct writes in flight
    // (`WritePaths::writes_in_flight`), against fio's direct writes of the same size and depth.
    let mut group = c.benchmark_group("disk_write_direct");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10))
        .throughput(Throughput::Bytes(total));
    group.bench_function(BenchmarkId::new("storage_direct_1m", 32), |b| {
        b.iter_custom(|n| {
            (0..n)
                .map(|_| storage_write(fresh(&path), total, 64, 32, WriteWay::Direct))
                .sum()
        })
    });
    if fio_present {
        group.bench_function(BenchmarkId::new("fio_uring_direct_1m", 32), |b| {
            b.iter_custom(|n| {
                (0..n)
                    .map(|_| {
                        fio_write(fresh(&path), total, 64 * BLOCK, 32, WriteWay::Direct)
                            .expect("fio ran before")
                    })
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
