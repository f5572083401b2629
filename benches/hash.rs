//! SHA-1 throughput at the sizes spate hashes (a 16 KiB block, a 256 KiB and a 4 MiB piece):
//! RustCrypto's `sha1` (SHA-NI through cpufeatures), the one spate uses, against ring's
//! SHA-1 in the same run. OpenSSL's figure for the same machine comes from
//! `perf/sha1-openssl` (`openssl speed -evp sha1`); the README puts the three side by side.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sha1::{Digest, Sha1};

fn sha1_sizes(c: &mut Criterion) {
    let mut group = c.benchmark_group("sha1");
    for size in [16usize << 10, 256 << 10, 4 << 20] {
        let data = vec![0xA5u8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("rustcrypto", size), &data, |b, d| {
            b.iter(|| Sha1::digest(d))
        });
        group.bench_with_input(BenchmarkId::new("ring", size), &data, |b, d| {
            b.iter(|| ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, d))
        });
    }
    group.finish();
}

criterion_group!(benches, sha1_sizes);
criterion_main!(benches);
