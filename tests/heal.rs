//! The accounting heals itself: a `cache.size` that is too high, holds no
//! number, or is not a regular file is recounted from the entries by the
//! operation that needs it, and a full cache of entries in use does not
//! rescan on every store.

mod common;

use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use common::*;
use fscache::{Commit, FsCache, GcOptions, MaxSize};

const APP: &str = "fscache-tests";

fn put(cache: &FsCache, name: &str, bytes: usize) -> fscache::Result<Commit> {
    let entry = cache.store(name)?;
    std::fs::write(entry.path().join("f"), vec![1u8; bytes]).expect("fill");
    entry.commit().map_err(fscache::Error::from)
}

/// The reproduction from the issue: a maximum of 1 MiB and a `cache.size`
/// that says it is all taken, with no entry to show for it.
fn phantom_cache() -> (tempfile::TempDir, std::path::PathBuf) {
    let (t, root) = new_cache(MaxSize::Bytes(1 << 20));
    std::fs::write(root.join("cache.size"), "1048000").expect("phantom total");
    (t, root)
}

#[test]
fn a_phantom_total_is_recounted_by_the_first_store_that_finds_no_room() -> TestResult {
    let (_t, root) = phantom_cache();
    let cache = FsCache::open(APP, &root)?;
    let outcome = put(&cache, "fits", 4096)?;
    assert!(outcome.is_stored(), "the phantom is healed away: {outcome}");
    assert_eq!(cache.counters().heals, 1);
    assert_exact(&root);
    Ok(())
}

#[test]
fn gc_and_clear_end_with_an_exact_total() -> TestResult {
    for how in ["clear", "gc --max-size 0", "gc --max-age 1d"] {
        let (_t, root) = phantom_cache();
        let cache = FsCache::open(APP, &root)?;
        match how {
            "clear" => drop(cache.clear()?),
            "gc --max-size 0" => drop(cache.gc(&GcOptions {
                max_size: Some(0),
                ..GcOptions::default()
            })?),
            _ => drop(cache.gc(&GcOptions {
                max_age: Some(std::time::Duration::from_secs(86400)),
                ..GcOptions::default()
            })?),
        }
        assert_eq!(size_file(&root), 0, "{how} leaves cache.size exact");
        // And a dry run changes nothing.
        std::fs::write(root.join("cache.size"), "1048000")?;
        drop(cache.gc(&GcOptions {
            max_size: Some(0),
            dry_run: true,
            ..GcOptions::default()
        })?);
        assert_eq!(
            size_file(&root),
            1_048_000,
            "{how}: a dry run writes nothing"
        );
    }
    Ok(())
}

/// What a hand or a hostile tool can put where `cache.size` belongs.
fn plant(root: &Path, outside: &Path, what: &str) {
    let path = root.join("cache.size");
    std::fs::remove_file(&path).expect("remove cache.size");
    match what {
        "symlink" => std::os::unix::fs::symlink(outside, &path).expect("symlink"),
        "directory" => {
            std::fs::create_dir(&path).expect("mkdir");
            std::fs::write(path.join("inside"), "x").expect("a file inside");
        }
        "fifo" => {
            rustix::fs::mknodat(
                rustix::fs::CWD,
                &path,
                rustix::fs::FileType::Fifo,
                rustix::fs::Mode::from_raw_mode(0o644),
                0,
            )
            .expect("mkfifo");
        }
        "socket" => drop(std::os::unix::net::UnixListener::bind(&path).expect("bind")),
        "missing" => {}
        _ => std::fs::write(&path, what).expect("garbage"),
    }
}

#[test]
fn a_cache_size_replaced_by_a_link_directory_fifo_socket_or_garbage_heals_and_is_never_followed(
) -> TestResult {
    for what in [
        "symlink",
        "directory",
        "fifo",
        "socket",
        "missing",
        "garbage",
        "-1",
    ] {
        let outside = tempfile::tempdir()?;
        let target = outside.path().join("precious");
        std::fs::write(&target, "12")?;
        for heal_by in ["store", "resync"] {
            let (_t, root) = new_cache(MaxSize::Unlimited);
            let cache = FsCache::open(APP, &root)?;
            assert!(put(&cache, "kept", 4096)?.is_stored());
            plant(&root, &target, what);
            let context = format!("{what} at cache.size, healed by {heal_by}");
            match heal_by {
                "store" => {
                    let outcome = put(&cache, "new", 4096)?;
                    assert!(outcome.is_stored(), "{context}: {outcome}");
                    assert_eq!(cache.counters().heals, 1, "{context}");
                }
                _ => {
                    let r = cache.resync()?;
                    assert_eq!(r.before, None, "{context}: {r:?}");
                }
            }
            let meta = std::fs::symlink_metadata(root.join("cache.size"))?;
            assert!(
                meta.file_type().is_file() && !meta.file_type().is_fifo(),
                "{context}: a regular file again"
            );
            assert_exact(&root);
            assert_eq!(
                names(&root.join("objects"))
                    .into_iter()
                    .filter(|n| n.starts_with("uuid-"))
                    .count(),
                0,
                "{context}: what was planted is removed, not left aside"
            );
            assert_eq!(
                std::fs::read_to_string(&target)?,
                "12",
                "{context}: never followed"
            );
            let hit = cache.load("kept")?;
            assert!(hit.is_some(), "{context}: entries are untouched");
        }
    }
    Ok(())
}

#[test]
fn a_full_cache_of_entries_in_use_heals_once_not_on_every_store() -> TestResult {
    let (_t, root) = new_cache(MaxSize::Unlimited);
    // Another process stores entries and holds every one of them: nothing
    // can be evicted.
    let mut reader = Worker::spawn(&root);
    for i in 0..8 {
        assert!(reader
            .ask(&format!("store held{i} 4096"))
            .starts_with("storing "));
        assert!(reader.ask("commit").starts_with("stored "));
        let got = reader.ask(&format!("load held{i}"));
        assert!(got.starts_with("hit "), "{got}");
    }
    FsCache::open(APP, &root)?.set_maximum_size(MaxSize::Bytes(size_file(&root)))?;
    let cache = FsCache::open(APP, &root)?;
    for i in 0..20 {
        let outcome = put(&cache, &format!("new{i}"), 4096)?;
        assert!(
            matches!(outcome, Commit::NoRoom { .. }),
            "store {i}: {outcome}"
        );
    }
    assert_eq!(
        cache.counters().heals,
        1,
        "one recount, then the handle waits its interval"
    );
    assert_exact(&root);
    assert_eq!(reader.ask("release"), "released");
    Ok(())
}
