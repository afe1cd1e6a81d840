//! What a store and a load cost, and whether a full cache gets slower as it
//! holds more entries (it must not: eviction frees down to a low watermark,
//! so the scan of all entries is paid once per many stores).
//!
//! `cargo bench --bench store`; `FSCACHE_BENCH_SIZES=1000,10000,100000`
//! chooses the cache sizes for the full-cache group (default 1000,10000).

use std::hint::black_box;
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

fn load_and_store(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = FsCache::open("fscache-bench", dir.path()).expect("open");
    cache.set_maximum_size(MaxSize::Unlimited).expect("max");
    put(&cache, "hot");
    c.bench_function("load_hit", |b| {
        b.iter(|| black_box(cache.load("hot").expect("load").expect("hit")))
    });
    c.bench_function("load_floor_raw_syscalls", |b| load_floor(b, dir.path()));
    c.bench_function("load_miss", |b| {
        b.iter(|| black_box(cache.load("cold").expect("load")))
    });
    let mut next = 0u64;
    c.bench_function("store_commit_unlimited", |b| {
        b.iter(|| {
            next += 1;
            put(&cache, &format!("s-{next}"));
        })
    });
    c.bench_function("stage", |b| {
        b.iter(|| black_box(cache.stage().expect("stage")))
    });
}

/// The floor a load cannot go below: the same system calls the protocol
/// needs (open beneath, lock, fstat + stat for the safe-open check, stat of
/// `object.info` and `data`, set the atime, unlock, close), made directly.
fn load_floor(b: &mut criterion::Bencher<'_>, root: &std::path::Path) {
    use nix::fcntl::{fcntl, FcntlArg};
    use nix::libc;
    use rustix::fs::{
        openat, openat2, statat, AtFlags, Mode, OFlags, ResolveFlags, Timespec, Timestamps,
    };
    let objects = openat(
        rustix::fs::CWD,
        root.join("objects"),
        OFlags::RDONLY | OFlags::DIRECTORY,
        Mode::empty(),
    )
    .expect("open objects");
    let lock = |l_type: libc::c_int| libc::flock {
        l_type: l_type as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS;
    let now = Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_NOW,
        },
        last_modification: Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT,
        },
    };
    b.iter(|| {
        let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NONBLOCK;
        let fd = openat2(&objects, "hot/object.lock", flags, Mode::empty(), resolve).expect("open");
        fcntl(&fd, FcntlArg::F_OFD_SETLK(&lock(libc::F_RDLCK))).expect("lock");
        black_box(rustix::fs::fstat(&fd).expect("fstat"));
        black_box(statat(&objects, "hot/object.lock", AtFlags::SYMLINK_NOFOLLOW).expect("stat"));
        black_box(statat(&objects, "hot/object.info", AtFlags::SYMLINK_NOFOLLOW).expect("stat"));
        black_box(statat(&objects, "hot/data", AtFlags::SYMLINK_NOFOLLOW).expect("stat"));
        rustix::fs::futimens(&fd, &now).expect("futimens");
        fcntl(&fd, FcntlArg::F_OFD_SETLK(&lock(libc::F_UNLCK))).expect("unlock");
    })
}

criterion_group!(benches, load_and_store, store_into_full_cache);
criterion_main!(benches);
