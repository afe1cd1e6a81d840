//! Each basic operation beside its floor (the bare protocol's system calls,
//! made directly; see `common/floor.rs`), in one run, ending with a table
//! of ratios: store of one 4 KiB file, load hit plus reading that file,
//! miss, stage.
//!
//! `cargo bench --bench protocol`. Entries are never deleted between
//! measured iterations: on some disks a big delete slows later file
//! creation for minutes (see BENCHMARKS.md).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, Criterion};
use fscache::{FsCache, MaxSize};

#[path = "common/floor.rs"]
mod floor;
#[path = "common/place.rs"]
mod place;
#[path = "common/ratio.rs"]
mod ratio;

const PAYLOAD: [u8; 4096] = [7u8; 4096];

fn open_cache() -> (std::path::PathBuf, FsCache) {
    let dir = place::kept_dir("protocol");
    let cache = FsCache::open("fscache-bench", &dir).expect("open");
    cache.set_maximum_size(MaxSize::Unlimited).expect("max");
    (dir, cache)
}

fn store(cache: &FsCache, name: &str) {
    let e = cache.store(name).expect("store");
    let fd = rustix::fs::open(
        e.path().join("f"),
        rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CREATE | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::from_raw_mode(0o644),
    )
    .expect("create");
    rustix::io::write(&fd, &PAYLOAD).expect("write");
    drop(fd);
    assert!(e.commit().expect("commit").is_stored());
}

fn load_read(cache: &FsCache, name: &str, buf: &mut [u8]) -> usize {
    let hit = cache.load(name).expect("load").expect("hit");
    let fd = rustix::fs::open(
        hit.path().join("f"),
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .expect("open");
    rustix::io::read(&fd, buf).expect("read")
}

fn group(c: &mut Criterion) {
    let (dir, cache) = open_cache();
    let mut floor = floor::Floor::new(&dir);
    store(&cache, "hot");
    let mut buf = [0u8; 8192];
    let mut g = c.benchmark_group("protocol");
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    // Interleaved, so that a file system that drifts as it fills moves both.
    let mut next = 0u64;
    for round in 0..2 {
        g.bench_function(format!("store_4k/floor/{round}"), |b| {
            b.iter_custom(|n| {
                ratio::timed("store/floor", n, || {
                    next += 1;
                    floor.store(&format!("floor-{next}"), &PAYLOAD);
                })
            })
        });
        g.bench_function(format!("store_4k/fscache/{round}"), |b| {
            b.iter_custom(|n| {
                ratio::timed("store/ours", n, || {
                    next += 1;
                    store(&cache, &format!("ours-{next}"));
                })
            })
        });
    }
    for round in 0..2 {
        g.bench_function(format!("load_hit_read/floor/{round}"), |b| {
            b.iter_custom(|n| {
                ratio::timed("load/floor", n, || {
                    black_box(floor.load_read("hot", &mut buf));
                })
            })
        });
        g.bench_function(format!("load_hit_read/fscache/{round}"), |b| {
            b.iter_custom(|n| {
                ratio::timed("load/ours", n, || {
                    black_box(load_read(&cache, "hot", &mut buf));
                })
            })
        });
        g.bench_function(format!("miss/floor/{round}"), |b| {
            b.iter_custom(|n| {
                ratio::timed("miss/floor", n, || {
                    assert!(floor.miss("cold"));
                })
            })
        });
        g.bench_function(format!("miss/fscache/{round}"), |b| {
            b.iter_custom(|n| {
                ratio::timed("miss/ours", n, || {
                    assert!(cache.load("cold").expect("load").is_none());
                })
            })
        });
        g.bench_function(format!("stage/floor/{round}"), |b| {
            b.iter_custom(|n| ratio::timed("stage/floor", n, || floor.stage()))
        });
        g.bench_function(format!("stage/fscache/{round}"), |b| {
            b.iter_custom(|n| {
                ratio::timed("stage/ours", n, || {
                    drop(black_box(cache.stage().expect("stage")))
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, group);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    ratio::report("store 4 KiB", "store/ours", "store/floor");
    ratio::report("load hit + read 4 KiB", "load/ours", "load/floor");
    ratio::report("miss", "miss/ours", "miss/floor");
    ratio::report("stage", "stage/ours", "stage/floor");
}
