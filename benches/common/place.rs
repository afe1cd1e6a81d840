//! Where a bench makes its caches: below `$FSCACHE_BENCH_DIR` (default
//! `/var/tmp`, a real disk; `/tmp` may be a tmpfs), and kept when the bench
//! ends. Deleting a cache of many entries leaves the disk discarding their
//! blocks for minutes, which slows whatever is measured next (the next
//! bench's first figures fell to a fifth); so each is left, its path
//! printed, for whoever measures to remove once done.

#![allow(dead_code)]

use std::path::PathBuf;

/// A new directory for a bench's cache, kept after the bench.
pub fn kept_dir(what: &str) -> PathBuf {
    let base = std::env::var_os("FSCACHE_BENCH_DIR").unwrap_or_else(|| "/var/tmp".into());
    let dir = tempfile::Builder::new()
        .prefix(&format!("fscache-bench-{what}-"))
        .tempdir_in(base)
        .expect("bench directory")
        .keep();
    eprintln!(
        "{what}: cache at {} (kept; remove it when done measuring)",
        dir.display()
    );
    dir
}
