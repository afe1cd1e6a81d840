//! One definition of a committed entry (`layout::committed`): a named
//! directory whose `object.lock` is a regular file, whose `object.info`
//! parses, and whose `data` is a directory. Load, stats, the sweep, resync
//! and eviction all hold to it.

#![allow(clippy::disallowed_methods)] // the tests break entries by hand

mod common;

use std::path::Path;

use common::*;
use fscache::{FsCache, MaxSize};

const APP: &str = "fscache-tests";

/// A way an entry can fail the definition, and whether a sweep may remove
/// it (it may only if it can lock it, or if the directory is lockless and
/// empty).
struct Defect {
    what: &'static str,
    apply: fn(&Path),
    swept: bool,
}

fn mkfifo(path: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .expect("mkfifo");
}

const DEFECTS: &[Defect] = &[
    Defect {
        what: "a fifo at object.lock",
        apply: |e| {
            std::fs::remove_file(e.join("object.lock")).unwrap();
            mkfifo(&e.join("object.lock"));
        },
        swept: false,
    },
    Defect {
        what: "a symlink at object.lock",
        apply: |e| {
            std::fs::remove_file(e.join("object.lock")).unwrap();
            std::os::unix::fs::symlink("/etc/hostname", e.join("object.lock")).unwrap();
        },
        swept: false,
    },
    Defect {
        what: "garbage in object.info",
        apply: |e| std::fs::write(e.join("object.info"), "{\"size\": \"12\"}").unwrap(),
        swept: true,
    },
    Defect {
        what: "a directory at object.info",
        apply: |e| {
            std::fs::remove_file(e.join("object.info")).unwrap();
            std::fs::create_dir(e.join("object.info")).unwrap();
        },
        swept: true,
    },
    Defect {
        what: "no object.info",
        apply: |e| std::fs::remove_file(e.join("object.info")).unwrap(),
        swept: true,
    },
    Defect {
        what: "a symlink at data",
        apply: |e| {
            std::fs::remove_dir_all(e.join("data")).unwrap();
            std::os::unix::fs::symlink("/etc", e.join("data")).unwrap();
        },
        swept: true,
    },
    Defect {
        what: "a file at data",
        apply: |e| {
            std::fs::remove_dir_all(e.join("data")).unwrap();
            std::fs::write(e.join("data"), "x").unwrap();
        },
        swept: true,
    },
    Defect {
        what: "a removal cut short after the lock (empty and lockless)",
        apply: |e| {
            for f in ["object.info", "object.lock"] {
                std::fs::remove_file(e.join(f)).unwrap();
            }
            std::fs::remove_dir_all(e.join("data")).unwrap();
        },
        swept: true,
    },
];

#[test]
fn load_stats_sweep_resync_and_eviction_agree_on_what_an_entry_is() -> TestResult {
    for defect in DEFECTS {
        let context = defect.what;
        let (_t, root) = new_cache(MaxSize::Unlimited);
        let cache = FsCache::open(APP, &root)?;
        for name in ["good", "bad"] {
            let entry = cache.store(name)?;
            std::fs::write(entry.path().join("f"), name)?;
            assert!(entry.commit().map_err(fscache::Error::from)?.is_stored());
        }
        (defect.apply)(&root.join("objects/bad"));

        // load
        let miss = cache.load("bad")?;
        assert!(miss.is_none(), "{context}: load misses it");
        let hit = cache.load("good")?;
        assert!(hit.is_some(), "{context}: the good entry loads");
        drop(hit);

        // stats
        let stats = cache.stats()?;
        assert_eq!(
            (stats.entries, stats.invalid_entries),
            (1, 1),
            "{context}: stats counts it invalid: {stats:?}"
        );

        // sweep
        let r = cache.sweep_orphans()?;
        let gone = !root.join("objects/bad").exists();
        assert_eq!(gone, defect.swept, "{context}: swept? {r:?}");
        assert_eq!(
            r.invalid_entries,
            u64::from(defect.swept),
            "{context}: {r:?}"
        );
        // An object.info that no longer reads as one cannot give its size
        // back: the total may overcount, never undercount.
        let recorded: u64 = info_sizes(&root).iter().map(|(_, s)| s).sum();
        assert!(size_file(&root) >= recorded, "{context}");

        // resync counts every object.info present that parses, valid
        // entry or not, since whoever removes it gives that back
        std::fs::write(root.join("cache.size"), "999999")?;
        let r = cache.resync()?;
        assert_eq!(r.before, Some(999_999), "{context}");
        assert_exact(&root);

        // eviction: a store into a full cache evicts the good entry and
        // fits; what is left of the bad one never counts as an entry
        cache.set_maximum_size(MaxSize::Bytes(size_file(&root)))?;
        let entry = cache.store("new")?;
        std::fs::write(entry.path().join("f"), "good")?;
        let outcome = entry.commit().map_err(fscache::Error::from)?;
        assert!(outcome.is_stored(), "{context}: {outcome}");
        let stats = cache.stats()?;
        assert_eq!(stats.entries, 1, "{context}: only the new entry: {stats:?}");
        let miss = cache.load("good")?;
        assert!(miss.is_none(), "{context}: the good entry was evicted");
        assert_exact(&root);
    }
    Ok(())
}

#[test]
fn sizes_no_file_system_could_measure_make_an_entry_invalid_and_no_total_overflows() -> TestResult {
    let (_t, root) = new_cache(MaxSize::Unlimited);
    let cache = FsCache::open(APP, &root)?;
    for name in ["huge-a", "huge-b", "largest", "small"] {
        let entry = cache.store(name)?;
        std::fs::write(entry.path().join("f"), name)?;
        assert!(entry.commit().map_err(fscache::Error::from)?.is_stored());
    }
    for (name, size) in [
        ("huge-a", u64::MAX),
        ("huge-b", fscache::MAX_ENTRY_SIZE + 1),
        ("largest", fscache::MAX_ENTRY_SIZE),
    ] {
        std::fs::write(
            root.join("objects").join(name).join("object.info"),
            format!(r#"{{"size": {size}}}"#),
        )?;
    }
    // In a debug build, a wrapped sum would panic here.
    let stats = cache.stats()?;
    assert_eq!(
        (stats.entries, stats.invalid_entries),
        (2, 2),
        "the two huge ones are invalid: {stats:?}"
    );
    let hit = cache.load("huge-a")?;
    assert!(hit.is_none(), "an invalid entry is a miss");
    let plan = cache.gc(&fscache::GcOptions {
        max_size: Some(0),
        dry_run: true,
        ..Default::default()
    })?;
    // Invalid entries are the sweep's; the first valid one alone covers
    // what cache.size accounts.
    let planned: Vec<_> = plan.removed.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(planned, ["largest"], "{plan:?}");
    let r = cache.resync()?;
    assert_eq!(r.sweep.invalid_entries, 2, "{r:?}");
    assert!(r.after >= fscache::MAX_ENTRY_SIZE, "{r:?}");
    assert_exact(&root);
    let report = cache.clear()?;
    assert_eq!(report.removed, 2, "{report:?}");
    assert_eq!(size_file(&root), 0, "clear ends exact");
    Ok(())
}
