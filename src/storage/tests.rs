//! Storage against real files in a temporary directory, inside a tokio-uring runtime.

use super::*;
use crate::buffer::BufferPool;
use crate::layout::FileSpan;
use std::sync::Arc;

fn spans(sizes: &[(u64, bool)]) -> Vec<FileSpan> {
    let mut offset = 0;
    sizes
        .iter()
        .map(|&(length, pad)| {
            let s = FileSpan {
                offset,
                length,
                pad,
            };
            offset += length;
            s
        })
        .collect()
}

fn storage(dir: &Path, sizes: &[(u64, bool)], config: StorageConfig) -> Storage {
    let paths = (0..sizes.len())
        .map(|i| dir.join(format!("d/f{i}")))
        .collect();
    Storage::from_parts(Layout::from_spans(16, spans(sizes)), paths, config)
}

fn chunk_of(pool: &BufferPool, bytes: &[u8]) -> Chunk {
    let mut b = pool.try_take().unwrap();
    b.extend_from_slice(bytes);
    let n = b.len();
    Chunk::new(Arc::new(b), 0..n)
}

#[test]
fn writes_split_at_file_boundaries_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let sizes = [(5, false), (0, false), (4, true), (30, false)];
    crate::runtime::start(async {
        let config = StorageConfig {
            max_open_files: 1, // forces closing and reopening
            ..StorageConfig::default()
        };
        let s = storage(dir.path(), &sizes, config);
        let pool = BufferPool::new(64, 4);
        let data: Vec<u8> = (0..39u8).collect();
        // Two chunks that together cover bytes 0..39, split mid-file.
        let chunks = vec![chunk_of(&pool, &data[..7]), chunk_of(&pool, &data[7..])];
        s.write(0, chunks).await.unwrap();
        s.sync().await.unwrap();
        s.finalize_sizes().await.unwrap();
        let (res, buf) = s.read(3, 30, Vec::new()).await;
        res.unwrap();
        let mut want = data[3..33].to_vec();
        want[2..6].fill(0); // the padding file reads as zeros
        assert_eq!(buf, want);
    });
    assert_eq!(
        std::fs::read(dir.path().join("d/f0")).unwrap(),
        (0..5).collect::<Vec<u8>>()
    );
    assert_eq!(std::fs::metadata(dir.path().join("d/f1")).unwrap().len(), 0);
    assert!(
        !dir.path().join("d/f2").exists(),
        "padding is never written"
    );
    assert_eq!(
        std::fs::read(dir.path().join("d/f3")).unwrap(),
        (9..39).collect::<Vec<u8>>()
    );
}

#[test]
fn reading_a_missing_file_is_an_error_and_read_only_never_creates() {
    let dir = tempfile::tempdir().unwrap();
    crate::runtime::start(async {
        let config = StorageConfig {
            writable: false,
            ..StorageConfig::default()
        };
        let s = storage(dir.path(), &[(10, false)], config);
        let (res, _) = s.read(0, 10, Vec::new()).await;
        assert_eq!(res.unwrap_err().kind(), io::ErrorKind::NotFound);
    });
    assert!(!dir.path().join("d").exists());
}

/// Allocated bytes and length of `d/f0` after one 1-byte write at its start.
fn after_one_byte(preallocate: bool) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    crate::runtime::start(async {
        let config = StorageConfig {
            preallocate,
            write_paths: WritePaths::Buffered,
            ..StorageConfig::default()
        };
        let s = storage(dir.path(), &[(1 << 20, false)], config);
        let pool = BufferPool::new(16, 1);
        s.write(0, vec![chunk_of(&pool, b"x")]).await.unwrap();
        s.sync().await.unwrap();
    });
    let meta = std::fs::metadata(dir.path().join("d/f0")).unwrap();
    (meta.blocks() * 512, meta.len())
}

#[test]
fn preallocation_reserves_full_size_and_sparse_does_not() {
    let (allocated, len) = after_one_byte(true);
    assert_eq!(len, 1 << 20);
    assert!(allocated >= 1 << 20, "only {allocated} bytes reserved");
    let (allocated, len) = after_one_byte(false);
    assert!(
        len < 1 << 20,
        "a sparse file is not extended before its last byte arrives"
    );
    assert!(
        allocated < 1 << 20,
        "{allocated} bytes allocated for one byte"
    );
}

/// Waits (at most 10 s) until `path` exists with `len` bytes.
fn wait_for_file(path: &Path, len: u64) {
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::metadata(path).map(|m| m.len()).ok() != Some(len) {
        assert!(
            Instant::now() < deadline,
            "{} never reached {len} bytes",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
fn files_created_ahead_are_the_selected_ones_reserved_in_full() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let sizes = [
        (1 << 20, false),
        (4096, true),
        (300_000, false),
        (0, false),
        (8192, false),
    ];
    let config = StorageConfig {
        preallocate: true,
        selected_files: Some(vec![true, true, true, true, false]),
        ..StorageConfig::default()
    };
    let s = storage(dir.path(), &sizes, config);
    s.create_files_ahead();
    for (i, len) in [(0, 1 << 20), (2, 300_000), (3, 0)] {
        let path = dir.path().join(format!("d/f{i}"));
        wait_for_file(&path, len);
        let allocated = std::fs::metadata(&path).unwrap().blocks() * 512;
        assert!(
            allocated >= len,
            "f{i}: {allocated} of {len} bytes reserved"
        );
    }
    // The thread has gone through every job once the last selected file is there.
    assert!(s.ahead.is_reserved(0) && s.ahead.is_reserved(2));
    assert!(
        !dir.path().join("d/f1").exists(),
        "padding is never created"
    );
    assert!(
        !dir.path().join("d/f4").exists(),
        "an unselected file is not created"
    );
}

#[test]
fn files_created_ahead_stop_at_the_downloads_first_open_and_never_when_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let sizes = [(4096, false), (4096, false)];
    let config = StorageConfig {
        preallocate: true,
        ..StorageConfig::default()
    };
    let s = storage(dir.path(), &sizes, config.clone());
    crate::runtime::start(async {
        let pool = BufferPool::new(16, 1);
        s.write(0, vec![chunk_of(&pool, b"x")]).await.unwrap();
    });
    s.create_files_ahead();
    let read_only = StorageConfig {
        writable: false,
        ..config
    };
    let other = tempfile::tempdir().unwrap();
    storage(other.path(), &sizes, read_only).create_files_ahead();
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(
        !dir.path().join("d/f1").exists(),
        "the download opened a file itself, so the thread created nothing"
    );
    assert!(!s.ahead.is_reserved(0) && !s.ahead.is_reserved(1));
    assert!(
        !other.path().join("d").exists(),
        "a read-only torrent creates nothing"
    );
}

/// Runs of blocks written out of order across files whose boundaries fall mid-page: each
/// write's aligned middle goes direct, its partial pages through the page cache, and every
/// byte reads back, with buffered writes alone as the reference, and with the adaptive
/// chooser switching between the two.
#[test]
fn direct_and_buffered_writes_give_the_same_files() {
    const BLOCK: usize = 16 << 10;
    let sizes = [
        (10_000, false),
        (70_001, false),
        (3, false),
        (50_000, false),
    ];
    let total: usize = sizes.iter().map(|s| s.0 as usize).sum();
    let data: Vec<u8> = (0..total).map(|i| (i * 7 + i / 4096) as u8).collect();
    // Adaptive with trials of two writes: both paths are taken within these 130 KB.
    let adaptive = WritePaths::Adaptive {
        trial_bytes: 2 * BLOCK as u64,
    };
    for write_paths in [WritePaths::Direct, WritePaths::Buffered, adaptive] {
        let dir = tempfile::tempdir().unwrap();
        let data = &data;
        crate::runtime::start(async move {
            let config = StorageConfig {
                write_paths,
                ..StorageConfig::default()
            };
            let s = storage(dir.path(), &sizes, config);
            let pool = BufferPool::new(2 * BLOCK, 8);
            // Runs of two blocks, odd ones first, then the even ones.
            let runs: Vec<usize> = (0..total.div_ceil(2 * BLOCK)).collect();
            for &run in runs
                .iter()
                .filter(|r| *r % 2 == 1)
                .chain(runs.iter().filter(|r| *r % 2 == 0))
            {
                let from = run * 2 * BLOCK;
                let to = (from + 2 * BLOCK).min(total);
                let mid = (from + BLOCK).min(to);
                let chunks = vec![
                    chunk_of(&pool, &data[from..mid]),
                    chunk_of(&pool, &data[mid..to]),
                ];
                s.write(from as u64, chunks).await.unwrap();
            }
            s.sync().await.unwrap();
            let (res, buf) = s.read(0, total, Vec::new()).await;
            res.unwrap();
            assert!(buf == *data, "files differ with {write_paths:?} writes");
            // /tmp is ext4 here: most bytes went direct; the rest were partial pages.
            let direct = s.direct_bytes() as usize;
            match write_paths {
                WritePaths::Direct => assert!(
                    direct > total / 2,
                    "only {direct} of {total} bytes went direct"
                ),
                WritePaths::Buffered => assert_eq!(direct, 0),
                WritePaths::Adaptive { .. } => assert!(
                    direct > 0 && direct < total * 3 / 4,
                    "{direct} of {total} bytes went direct"
                ),
            }
        });
    }
}

/// Runs staged as they arrive (their bounce buffers filled partly by hashing through a
/// `CopyPlan`, partly by `copy_rest`) give the same files as plain writes; runs that cross a
/// file boundary are not staged, and neither is one that finds every write slot taken.
#[test]
fn staged_writes_fill_their_bounce_buffers_through_the_hash_pass() {
    use crate::hash::{sha1, CopyPlan, PieceHasher};
    const BLOCK: usize = 16 << 10;
    let sizes = [(10_000, false), (70_001, false), (50_000, false)];
    let total: usize = sizes.iter().map(|s| s.0 as usize).sum();
    let data: Vec<u8> = (0..total).map(|i| (i * 13 + i / 4096) as u8).collect();
    let dir = tempfile::tempdir().unwrap();
    let data = &data;
    crate::runtime::start(async move {
        let s = storage(dir.path(), &sizes, StorageConfig::default());
        let pool = BufferPool::new(BLOCK, 16);
        let mut hasher = PieceHasher::default();
        let (mut staged, mut plain) = (0, 0);
        for (run, from) in (0..total).step_by(2 * BLOCK).enumerate() {
            let to = (from + 2 * BLOCK).min(total);
            let mid = (from + BLOCK).min(to);
            let chunks = vec![
                chunk_of(&pool, &data[from..mid]),
                chunk_of(&pool, &data[mid..to]),
            ];
            let one_file = s
                .layout()
                .segments_at(from as u64, (to - from) as u32)
                .count()
                == 1;
            let Some(mut stage) = s.stage(from as u64, &chunks) else {
                assert!(!one_file, "run {run} lies in one file but was not staged");
                plain += 1;
                hasher.update(&data[from..to]);
                s.write(from as u64, chunks).await.unwrap();
                continue;
            };
            assert!(one_file, "run {run} crosses files but was staged");
            staged += 1;
            let mut plan = CopyPlan::default();
            stage.plan_copy(&chunks, &mut plan);
            if run % 2 == 0 {
                for c in &chunks {
                    plan.hash_through(c.as_slice(), &mut hasher);
                }
            } else {
                hasher.update(&data[from..to]);
            }
            plan.copy_rest();
            s.write_staged(stage, chunks).await.unwrap();
        }
        assert!(staged >= 2 && plain >= 1, "{staged} staged, {plain} plain");
        assert_eq!(
            hasher.finish(),
            sha1(data),
            "the hash pass saw every byte once"
        );
        s.sync().await.unwrap();
        let (res, buf) = s.read(0, total, Vec::new()).await;
        res.unwrap();
        assert!(buf == *data, "staged writes wrote other bytes");
        assert!(s.direct_bytes() as usize > total / 2);

        // 8 KiB at the start of the second file: two whole pages of it.
        let chunks = vec![chunk_of(&pool, &data[10_000..18_192])];
        let held: Vec<_> = (0..WritePaths::Direct.writes_in_flight())
            .map(|_| s.stage(10_000, &chunks).expect("a free write slot"))
            .collect();
        assert!(
            s.stage(10_000, &chunks).is_none(),
            "staged past the write slots"
        );
        drop(held);
        assert!(s.stage(10_000, &chunks).is_some());
    });
}
