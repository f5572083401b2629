//! Layout mapping cost: splitting every 16 KiB block of a torrent into file segments, for a
//! single file and for 10,000 small files, where the binary search over files matters.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use spate::layout::Layout;
use spate::types::PieceIndex;

fn layout_of(sizes: impl Iterator<Item = u64>) -> Layout {
    Layout::from_lengths(256 << 10, sizes)
}

fn map_all_blocks(l: &Layout) -> usize {
    let mut n = 0;
    for p in 0..l.piece_count() {
        let piece = PieceIndex(p);
        let len = l.piece_len(piece);
        for off in (0..len).step_by(16 << 10) {
            n += l.segments(piece, off, (16 << 10).min(len - off)).count();
        }
    }
    n
}

fn layout(c: &mut Criterion) {
    let mut group = c.benchmark_group("layout_segments");
    let cases = [
        ("one_file_1GiB", layout_of(std::iter::once(1u64 << 30))),
        (
            "10k_files_1GiB",
            layout_of((0..10_000u64).map(|i| 107_374 + (i % 3))),
        ),
    ];
    for (name, l) in &cases {
        group.throughput(Throughput::Elements(l.total_length().div_ceil(16 << 10)));
        group.bench_with_input(BenchmarkId::from_parameter(name), l, |b, l| {
            b.iter(|| map_all_blocks(l))
        });
    }
    group.finish();
}

criterion_group!(benches, layout);
criterion_main!(benches);
