//! What recording a digest costs: a store + commit of a 1 MiB and a 16 MiB
//! entry (files of 1 MiB) with `Integrity::None` against
//! `Integrity::Record`, the commit alone (where the digest is computed),
//! and what `verify` of such an entry costs.
//!
//! `cargo bench --bench integrity -- --warm-up-time 1 --measurement-time 3`.
//! Set `FSCACHE_BENCH_DIR` to measure on another file system (the default
//! is the system's temporary directory).
//!
//! On ext4 on a virtio disk, a shared 2-core machine whose CPU has the SHA
//! extensions (criterion's estimates, one short run):
//!
//! | entry  | commit, `None` | commit, `Record` | `verify` |
//! |-------:|---------------:|-----------------:|---------:|
//! |  1 MiB |        0.54 ms |          1.28 ms |  0.63 ms |
//! | 16 MiB |        0.75 ms |          13.8 ms |  12.0 ms |
//!
//! Recording costs what reading and hashing the files costs, about
//! 0.8 ms per MiB here (SHA-256 at 1.2-1.3 GiB/s, the files in the page
//! cache); the whole store (`store_commit`, writing the files included)
//! varied from run to run by more than that, with the write-back of the
//! files written before.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fscache::{Eviction, FsCache, Integrity, MaxSize, OpenOptions};

const MIB: usize = 1 << 20;

fn base() -> PathBuf {
    let dir = std::env::var_os("FSCACHE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&dir).expect("create FSCACHE_BENCH_DIR");
    dir
}

fn cache(dir: &tempfile::TempDir, integrity: Integrity) -> FsCache {
    let cache = OpenOptions::new()
        .integrity(integrity)
        .open("fscache-bench", dir.path())
        .expect("open");
    cache.set_maximum_size(MaxSize::Unlimited).expect("max");
    cache
}

/// One MiB that no file system compresses or dedups away.
fn content() -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..MIB)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Store `name` as `mib` files of one MiB and commit it; returns the time
/// the whole took and the time the commit took.
fn put(cache: &FsCache, name: &str, mib: usize, content: &[u8]) -> (Duration, Duration) {
    let start = Instant::now();
    let e = cache.store(name).expect("store");
    for i in 0..mib {
        std::fs::write(e.path().join(format!("f{i}")), content).expect("write");
    }
    let committing = Instant::now();
    let outcome = e.commit().expect("commit");
    let end = Instant::now();
    assert!(outcome.is_stored(), "{name}: {outcome}");
    (end - start, end - committing)
}

/// Time a whole store (`commit_only`: its commit alone, which is where
/// the digest is computed) of entries of 1 and 16 MiB.
fn stores(c: &mut Criterion, group: &str, commit_only: bool) {
    let content = content();
    let mut group = c.benchmark_group(group);
    group.sample_size(10);
    for (label, integrity) in [("none", Integrity::None), ("record", Integrity::Record)] {
        let dir = tempfile::tempdir_in(base()).expect("tempdir");
        let cache = cache(&dir, integrity);
        for mib in [1, 16] {
            group.throughput(Throughput::Bytes((mib * MIB) as u64));
            let mut next = 0u64;
            let id = BenchmarkId::new(label, format!("{mib}MiB"));
            group.bench_with_input(id, &mib, |b, &mib| {
                b.iter_custom(|iters| {
                    let mut spent = Duration::ZERO;
                    for _ in 0..iters {
                        next += 1;
                        let name = format!("e-{mib}-{next}");
                        let (whole, commit) = put(&cache, &name, mib, &content);
                        spent += if commit_only { commit } else { whole };
                        // Untimed: keep the disk use bounded.
                        let gone = cache.evict(&name).expect("evict");
                        assert!(matches!(gone, Eviction::Removed { .. }), "{gone:?}");
                    }
                    spent
                })
            });
        }
    }
    group.finish();
}

fn store_commit(c: &mut Criterion) {
    stores(c, "store_commit", false);
}

fn commit_only(c: &mut Criterion) {
    stores(c, "commit_only", true);
}

fn verify(c: &mut Criterion) {
    let content = content();
    let dir = tempfile::tempdir_in(base()).expect("tempdir");
    let cache = cache(&dir, Integrity::Record);
    let mut group = c.benchmark_group("verify");
    group.sample_size(10);
    for mib in [1, 16] {
        let name = format!("v-{mib}");
        let _ = put(&cache, &name, mib, &content);
        group.throughput(Throughput::Bytes((mib * MIB) as u64));
        group.bench_function(format!("{mib}MiB"), |b| {
            b.iter(|| assert!(cache.verify(&name).expect("verify").is_intact()))
        });
    }
    group.finish();
}

criterion_group!(benches, store_commit, commit_only, verify);
criterion_main!(benches);
