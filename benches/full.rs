//! A full cache has no slow store: the mean, median and slowest store into
//! a full cache of N entries, beside stores into an unlimited cache made
//! in the same run.
//!
//! `cargo bench --bench full`; `FSCACHE_BENCH_SIZES=1000,10000,100000`
//! chooses the cache sizes (default 1000,10000). Every store is timed on
//! its own, so that the one that pays for an eviction shows as itself.

use std::time::{Duration, Instant};

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use fscache::{FsCache, MaxSize};

#[path = "common/place.rs"]
mod place;
#[path = "common/ratio.rs"]
mod ratio;

/// A small entry: one 4 KiB file.
fn put(cache: &FsCache, name: &str) -> Duration {
    let start = Instant::now();
    let e = cache.store(name).expect("store");
    std::fs::write(e.path().join("f"), [7u8; 4096]).expect("write");
    let outcome = e.commit().expect("commit");
    assert!(outcome.is_stored(), "{name}: {outcome}");
    start.elapsed()
}

/// A cache holding `n` entries whose maximum is exactly what they take.
fn full_cache(n: usize) -> (std::path::PathBuf, FsCache) {
    let dir = place::kept_dir(&format!("full{n}"));
    let cache = FsCache::open("fscache-bench", &dir).expect("open");
    cache.set_maximum_size(MaxSize::Unlimited).expect("max");
    let start = Instant::now();
    for i in 0..n {
        put(&cache, &format!("seed-{i}"));
    }
    // A new handle, so that the filler's reservation is given back.
    drop(cache);
    let cache = FsCache::open("fscache-bench", &dir).expect("open");
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

/// Every single store's time, by group, for the medians and maxima.
static ALL: std::sync::Mutex<Vec<(String, Vec<Duration>)>> = std::sync::Mutex::new(Vec::new());

fn keep(id: &str, took: Duration) {
    let mut all = ALL.lock().unwrap_or_else(|p| p.into_inner());
    match all.iter_mut().find(|(k, _)| k == id) {
        Some((_, v)) => v.push(took),
        None => all.push((id.to_owned(), vec![took])),
    }
}

fn store_into_full_cache(c: &mut Criterion) {
    let mut group = c.benchmark_group("full");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Elements(1));
    for n in sizes() {
        let (_full_dir, full) = full_cache(n);
        let unlimited_dir = place::kept_dir(&format!("unlimited{n}"));
        let unlimited = FsCache::open("fscache-bench", &unlimited_dir).expect("open");
        unlimited.set_maximum_size(MaxSize::Unlimited).expect("max");
        let mut next = 0u64;
        let evicted_before = full.counters().evicted;
        for (what, cache) in [("unlimited", &unlimited), ("full", &full)] {
            let id = format!("{what}/{n}");
            group.bench_function(BenchmarkId::new(what, n), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        next += 1;
                        let took = put(cache, &format!("new-{next}"));
                        keep(&id, took);
                        total += took;
                    }
                    ratio::record(&id, total, iters);
                    total
                })
            });
        }
        let stores = full.counters().stored;
        let evicted = full.counters().evicted - evicted_before;
        println!("full {n}: {evicted} entries evicted by {stores} stores");
        // The removal a full store pays for: one entry evicted, from the
        // unlimited cache's stores of the same size, in the same run.
        let id = format!("removal/{n}");
        let mut victims = (1..=next).map(|i| format!("new-{i}"));
        group.bench_function(BenchmarkId::new("removal", n), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let Some(name) = victims.next() else { break };
                    let start = Instant::now();
                    let gone = unlimited.evict(&name).expect("evict");
                    let took = start.elapsed();
                    if matches!(gone, fscache::Eviction::Removed { .. }) {
                        keep(&id, took);
                        ratio::record(&id, took, 1);
                    }
                    total += took;
                }
                total
            })
        });
        if let (Some(full), Some(unlimited), Some(removal)) = (
            ratio::mean(&format!("full/{n}")),
            ratio::mean(&format!("unlimited/{n}")),
            ratio::mean(&id),
        ) {
            println!(
                "full {n}: a full store costs {:.2}x an unlimited store plus a removal",
                full.as_secs_f64() / (unlimited + removal).as_secs_f64()
            );
        }
    }
    group.finish();
}

criterion_group!(benches, store_into_full_cache);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    let mut all = ALL.lock().unwrap_or_else(|p| p.into_inner());
    for (id, times) in all.iter_mut() {
        times.sort();
        let median = times[times.len() / 2];
        let p99 = times[times.len() * 99 / 100];
        let p999 = times[times.len() * 999 / 1000];
        let max = times[times.len() - 1];
        let mean = ratio::mean(id).unwrap_or_default();
        println!(
            "full {id:<16} stores {:>7}  mean {:>8.1} µs  median {:>8.1} µs  p99 {:>8.1} µs  p99.9 {:>8.1} µs  max {:>9.1} µs  max/median {:>5.1}",
            times.len(),
            mean.as_secs_f64() * 1e6,
            median.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e6,
            p999.as_secs_f64() * 1e6,
            max.as_secs_f64() * 1e6,
            max.as_secs_f64() / median.as_secs_f64(),
        );
    }
}
