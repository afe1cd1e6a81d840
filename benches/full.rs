//! Whether a full cache gets slower as it holds more entries: the mean
//! store into a full cache, each charged its share of eviction rounds.
//! (Eviction frees down to a low watermark, so the scan of all entries is
//! paid once per many stores; the store that pays it is slow, see
//! BENCHMARKS.md.)
//!
//! `cargo bench --bench full`; `FSCACHE_BENCH_SIZES=1000,10000,100000`
//! chooses the cache sizes for the full-cache group (default 1000,10000).

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fscache::{FsCache, MaxSize};

/// A small entry: one 100-byte file (a block of data plus the data dir).
fn put(cache: &FsCache, name: &str) {
    let e = cache.store(name).expect("store");
    std::fs::write(e.path().join("f"), [7u8; 100]).expect("write");
    let outcome = e.commit().expect("commit");
    assert!(outcome.is_stored(), "{name}: {outcome}");
}

/// A cache holding `n` entries whose maximum is exactly what they take.
fn full_cache(n: usize) -> (tempfile::TempDir, FsCache) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = FsCache::open("fscache-bench", dir.path()).expect("open");
    cache.set_maximum_size(MaxSize::Unlimited).expect("max");
    let start = Instant::now();
    for i in 0..n {
        put(&cache, &format!("seed-{i}"));
    }
    let full = cache.accounted_size().expect("size");
    cache.set_maximum_size(MaxSize::Bytes(full)).expect("max");
    eprintln!("filled {n} entries ({full} bytes) in {:?}", start.elapsed());
    (dir, cache)
}

fn sizes() -> Vec<usize> {
    std::env::var("FSCACHE_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1000, 10_000])
}

/// One iteration is one whole eviction cycle: the stores that the low
/// watermark (90%) makes room for, the last of which triggers the next
/// eviction round. Timing whole cycles charges every store its share of the
/// round's scan and removals; timing single stores would mostly miss them.
fn store_into_full_cache(c: &mut Criterion) {
    let mut group = c.benchmark_group("store_into_full_cache");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10));
    for n in sizes() {
        let (_dir, cache) = full_cache(n);
        let cycle = (n / 10).max(1) as u64;
        group.throughput(Throughput::Elements(cycle));
        let mut next = 0u64;
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter_custom(|cycles| {
                let start = Instant::now();
                for _ in 0..cycles * cycle {
                    next += 1;
                    put(&cache, &format!("new-{next}"));
                }
                start.elapsed()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, store_into_full_cache);
criterion_main!(benches);
