//! SHA-1 throughput at the sizes spate hashes (a 16 KiB block, a 256 KiB and a 4 MiB piece):
//! RustCrypto's `sha1` (SHA-NI through cpufeatures), the one spate uses, against ring's
//! SHA-1 in the same run. OpenSSL's figure for the same machine comes from
//! `perf/sha1-openssl` (`openssl speed -evp sha1`); the README puts the three side by side.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sha1::{Digest, Sha1};
use spate::hash::Sha1State;

fn sha1_sizes(c: &mut Criterion) {
    let mut group = c.benchmark_group("sha1");
    for size in [16usize << 10, 256 << 10, 4 << 20] {
        let data = vec![0xA5u8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("rustcrypto", size), &data, |b, d| {
            b.iter(|| Sha1::digest(d))
        });
        group.bench_with_input(BenchmarkId::new("spate", size), &data, |b, d| {
            b.iter(|| {
                let mut h = Sha1State::default();
                h.update(d);
                h.finish()
            })
        });
        group.bench_with_input(BenchmarkId::new("ring", size), &data, |b, d| {
            b.iter(|| ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, d))
        });
    }
    group.finish();
}

/// What a download does with each block: hash it and copy it into the aligned buffer of its
/// direct write. Apart (RustCrypto's digest, then a copy) against spate's `Sha1State`
/// hashing alone and hashing while it copies, over a 1 MiB receive buffer's worth of data;
/// and hashing while copying into a cold destination, one of 32 buffers of 1 MiB in turn, as
/// a download's 32 direct writes in flight have.
fn sha1_and_copy(c: &mut Criterion) {
    let mut group = c.benchmark_group("sha1+copy");
    let size = 1usize << 20;
    let data: Vec<u8> = (0..size).map(|i| (i * 7 + i / 4096) as u8).collect();
    let mut dst = vec![0u8; size];
    group.throughput(Throughput::Bytes(size as u64));
    group.bench_function("rustcrypto then copy", |b| {
        b.iter(|| {
            let d = Sha1::digest(&data);
            dst.copy_from_slice(&data);
            d
        })
    });
    group.bench_function("spate hash only", |b| {
        b.iter(|| {
            let mut h = Sha1State::default();
            h.update(&data);
            h.finish()
        })
    });
    let mut cold = vec![0u8; 32 * size];
    let mut next = 0;
    group.bench_function("spate hash while copying, cold destination", |b| {
        b.iter(|| {
            let dst = &mut cold[next * size..(next + 1) * size];
            next = (next + 1) % 32;
            let mut h = Sha1State::default();
            h.update_copying(&data, dst);
            h.finish()
        })
    });
    group.bench_function("spate hash while copying", |b| {
        b.iter(|| {
            let mut h = Sha1State::default();
            h.update_copying(&data, &mut dst);
            h.finish()
        })
    });
    group.finish();
}

criterion_group!(benches, sha1_sizes, sha1_and_copy);
criterion_main!(benches);
