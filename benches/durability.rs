//! What durability costs: a store + commit with `Durability::None` against
//! `Durability::Sync`, and the two ways of making a fresh tree durable that
//! `Durability::Sync` chooses between (an fsync of every file and directory,
//! or one `syncfs`), for trees of 1, 10, 100 and 1000 small files.
//!
//! `cargo bench --bench durability -- --warm-up-time 1 --measurement-time 3`.
//! The numbers depend on the file system and the disk under it: set
//! `FSCACHE_BENCH_DIR` to a directory on the file system to measure (the
//! default is the system's temporary directory, which may be a tmpfs, where
//! syncing costs nothing). The file system type is printed first.

// Measuring the raw primitives is the point here.
#![allow(clippy::disallowed_methods)]

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use fscache::{Durability, FsCache, MaxSize};

/// Where the trees and caches go.
fn base() -> PathBuf {
    let dir = std::env::var_os("FSCACHE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&dir).expect("create FSCACHE_BENCH_DIR");
    dir
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir_in(base()).expect("tempdir")
}

/// Print the file system being measured, as `stat -f -c %T` names it.
fn say_where() {
    let dir = base();
    let kind = std::process::Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(&dir)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|e| format!("unknown ({e})"));
    eprintln!("measuring in {} ({kind})", dir.display());
}

const SIZES: [usize; 4] = [1, 10, 100, 1000];

/// `n` files of 100 bytes in `root`, ten to a directory.
fn fill(root: &Path, n: usize) {
    for i in 0..n {
        let dir = root.join(format!("d{}", i / 10));
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join(format!("f{i}")), [7u8; 100]).expect("write");
    }
}

/// The directories and files of `root`, directories first.
fn tree(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![root.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if out[i].is_dir() {
            for e in std::fs::read_dir(&out[i]).expect("read_dir") {
                out.push(e.expect("entry").path());
            }
        }
        i += 1;
    }
    out
}

/// Flush what earlier iterations left dirty (the removal of their trees),
/// so that it is not charged to the next one.
fn settle(dir: &Path) {
    let fd = std::fs::File::open(dir).expect("open");
    rustix::fs::syncfs(fd.as_fd()).expect("syncfs");
}

/// A fresh, unsynced tree of `n` files.
fn fresh(n: usize) -> tempfile::TempDir {
    let t = tempdir();
    settle(t.path());
    fill(t.path(), n);
    t
}

fn sync_tree(c: &mut Criterion) {
    say_where();
    let mut group = c.benchmark_group("sync_tree");
    group.sample_size(10);
    for n in SIZES {
        group.bench_with_input(BenchmarkId::new("fsync_each", n), &n, |b, &n| {
            b.iter_batched(
                || fresh(n),
                |t| {
                    for path in tree(t.path()) {
                        let f = std::fs::File::open(&path).expect("open");
                        rustix::fs::fsync(f.as_fd()).expect("fsync");
                    }
                    t
                },
                BatchSize::PerIteration,
            )
        });
        group.bench_with_input(BenchmarkId::new("fdatasync_files", n), &n, |b, &n| {
            b.iter_batched(
                || fresh(n),
                |t| {
                    for path in tree(t.path()) {
                        let f = std::fs::File::open(&path).expect("open");
                        if path.is_dir() {
                            rustix::fs::fsync(f.as_fd()).expect("fsync");
                        } else {
                            rustix::fs::fdatasync(f.as_fd()).expect("fdatasync");
                        }
                    }
                    t
                },
                BatchSize::PerIteration,
            )
        });
        // What a syncfs costs when another program (a build writing next
        // to the cache, say) has left data unwritten on the file system.
        group.bench_with_input(
            BenchmarkId::new("syncfs_32M_dirty_elsewhere", n),
            &n,
            |b, &n| {
                b.iter_batched(
                    || {
                        let t = fresh(n);
                        let noise: Vec<u8> = (0..32u32 << 20)
                            .map(|i| i.wrapping_mul(2_654_435_761) as u8)
                            .collect();
                        std::fs::write(t.path().join("elsewhere"), noise).expect("write");
                        t
                    },
                    |t| {
                        let f = std::fs::File::open(t.path()).expect("open");
                        rustix::fs::syncfs(f.as_fd()).expect("syncfs");
                        t
                    },
                    BatchSize::PerIteration,
                )
            },
        );
        group.bench_with_input(BenchmarkId::new("syncfs", n), &n, |b, &n| {
            b.iter_batched(
                || fresh(n),
                |t| {
                    let f = std::fs::File::open(t.path()).expect("open");
                    rustix::fs::syncfs(f.as_fd()).expect("syncfs");
                    t
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

/// Store an entry of `files` files and commit it.
fn put(cache: &FsCache, name: &str, files: usize) {
    let e = cache.store(name).expect("store");
    fill(e.path(), files);
    let outcome = e.commit().expect("commit");
    assert!(outcome.is_stored(), "{name}: {outcome}");
}

fn store_commit(c: &mut Criterion) {
    let mut group = c.benchmark_group("store_commit");
    group.sample_size(10).warm_up_time(Duration::from_secs(1));
    for (label, durability) in [("none", Durability::None), ("sync", Durability::Sync)] {
        let dir = tempdir();
        let cache = fscache::OpenOptions::new()
            .durability(durability)
            .open("fscache-bench", dir.path())
            .expect("open");
        cache.set_maximum_size(MaxSize::Unlimited).expect("max");
        settle(dir.path());
        for files in [1, 100] {
            let mut next = 0u64;
            group.bench_with_input(BenchmarkId::new(label, files), &files, |b, &files| {
                b.iter(|| {
                    next += 1;
                    put(&cache, &format!("e-{files}-{next}"), files);
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, sync_tree, store_commit);
criterion_main!(benches);
