//! A plan of operations on a real cache in a fresh directory, over four
//! names, checking the on-disk invariants after every step.
//!
//! The plan runs in one thread and drops every guard before the next step,
//! so nothing is ever in use, nothing is left half done, and the accounting
//! must be exact (FORMAT.md, "Invariants we add").

#![no_main]

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use arbitrary::Arbitrary;
use fscache::{Commit, Eviction, FsCache, GcOptions, MaxSize, SweepReport};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// Long plans find little that short ones do not, and cost time.
const MAX_STEPS: usize = 64;

/// Start with room for about three of the largest entries, so that short
/// plans already evict (a new cache's maximum is 0: it stores nothing).
const INITIAL_MAX: u64 = 256 << 10;

#[derive(Arbitrary, Debug)]
enum Op {
    Store {
        key: u8,
        bytes: u16,
    },
    StoreAbort {
        key: u8,
    },
    Load {
        key: u8,
    },
    Evict {
        key: u8,
    },
    Gc {
        max: u16,
    },
    Sweep,
    Resync,
    Clear,
    Stage,
    SetMax(Max),
    /// A hostile hand writes a size near (or past) the largest one the
    /// format may record into an entry's `object.info`: the entry becomes
    /// invalid if it is past it, and no total may overflow either way.
    Inflate {
        key: u8,
        by: u8,
    },
}

#[derive(Arbitrary, Clone, Copy, Debug)]
enum Max {
    Bytes(u32),
    Unlimited,
}

/// What a successful commit of a name stored. The entry may have been
/// evicted since, so this is only checked against hits.
#[derive(Clone, Copy, Debug)]
struct Stored {
    size: u64,
    bytes: u16,
}

fn key_name(key: u8) -> String {
    format!("k{}", key % 4)
}

fuzz_target!(|plan: Vec<Op>| {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let cache = FsCache::open("fscache-fuzz", dir.path()).expect("open a fresh cache");
    ok(
        cache.set_maximum_size(MaxSize::Bytes(INITIAL_MAX)),
        "set the initial maximum",
    );
    let mut model = HashMap::new();
    let mut size = check(dir.path(), "the fresh cache", false);
    // An entry made invalid by a size past the limit was accounted with
    // its old size: the total overcounts until something recounts.
    let mut saturated = false;
    for (step, op) in plan.iter().take(MAX_STEPS).enumerate() {
        let ctx = format!("step {step} {op:?}");
        let stored = run(&cache, &mut model, op, size, saturated, &ctx);
        match op {
            Op::Inflate { .. } => saturated = true,
            Op::Resync | Op::Clear | Op::Gc { .. } => saturated = false,
            _ => {}
        }
        let now = check(dir.path(), &ctx, saturated);
        if let Some(max) = maximum(dir.path()) {
            // Lowering the maximum evicts nothing, so an over-full cache is
            // allowed until the next commit, as long as it does not grow.
            // A hand that inflates a size may pass it too.
            let by_hand = matches!(op, Op::Inflate { .. });
            assert!(
                now <= max || (!stored && now <= size) || by_hand,
                "{ctx}: cache.size went from {size} to {now}, past the maximum {max}"
            );
        }
        size = now;
    }
});

/// Run one step; returns whether it committed an entry. `tainted`: an
/// entry may have been made invalid by hand, and the total overcount it.
fn run(
    cache: &FsCache,
    model: &mut HashMap<String, Stored>,
    op: &Op,
    size: u64,
    tainted: bool,
    ctx: &str,
) -> bool {
    // What a sweep may find: invalid entries, once some were made so.
    let swept_ok = |report: &SweepReport| {
        let mut expected = SweepReport::default();
        if tainted {
            expected.invalid_entries = report.invalid_entries;
        }
        *report == expected
    };
    let objects = cache.path().join("objects");
    match *op {
        Op::Store { key, bytes } => {
            let name = key_name(key);
            let entry = ok(cache.store(&name), ctx);
            fill(entry.path(), bytes);
            match ok(entry.commit().map_err(fscache::Error::from), ctx) {
                Commit::Stored { size } => {
                    assert!(objects.join(&name).is_dir(), "{ctx}: stored, but not there");
                    model.insert(name, Stored { size, bytes });
                    return true;
                }
                Commit::NameTaken => {
                    assert!(objects.join(&name).is_dir(), "{ctx}: name taken by nothing");
                }
                Commit::TooLarge { size, max } => {
                    assert!(
                        !max.admits(size),
                        "{ctx}: {size} fits {max:?}, yet too large"
                    );
                }
                Commit::NoRoom { .. } => {}
                other => panic!("{ctx}: unexpected commit outcome {other:?}"),
            }
        }
        Op::StoreAbort { key } => {
            let entry = ok(cache.store(&key_name(key)), ctx);
            fill(entry.path(), 100);
            ok(entry.abort(), ctx);
        }
        Op::Load { key } => {
            let name = key_name(key);
            if let Some(hit) = ok(cache.load(&name), ctx) {
                let info = hit.info();
                let Some(want) = model.get(&name) else {
                    panic!("{ctx}: a hit for a name never stored: {info:?}");
                };
                assert_eq!(
                    info.size, want.size,
                    "{ctx}: the hit's size is not the committed one"
                );
                let len = std::fs::metadata(hit.path().join("blob")).map(|m| m.len());
                assert_eq!(
                    len.ok(),
                    Some(u64::from(want.bytes)),
                    "{ctx}: the hit's content changed"
                );
            }
        }
        Op::Evict { key } => {
            let name = key_name(key);
            match ok(cache.evict(&name), ctx) {
                Eviction::Removed { size } => {
                    // An invalid entry has no size to give back.
                    let want = model.get(&name).map(|s| s.size).map(|s| {
                        if s > fscache::MAX_ENTRY_SIZE {
                            0
                        } else {
                            s
                        }
                    });
                    assert_eq!(Some(size), want, "{ctx}: evicted a size never committed");
                    assert!(
                        !objects.join(&name).exists(),
                        "{ctx}: evicted, but still there"
                    );
                }
                Eviction::NotFound => {
                    assert!(!objects.join(&name).exists(), "{ctx}: not found, but there");
                }
                Eviction::InUse => panic!("{ctx}: in use, though no guard is held"),
                other => panic!("{ctx}: {other:?}, though the cache is all ours"),
            }
        }
        Op::Gc { max } => {
            let options = GcOptions {
                max_size: Some(max.into()),
                ..GcOptions::default()
            };
            let report = ok(cache.gc(&options), ctx);
            assert_eq!(
                report.in_use, 0,
                "{ctx}: entries in use, though no guard is held"
            );
            assert!(
                swept_ok(&report.sweep),
                "{ctx}: gc swept {:?}",
                report.sweep
            );
            assert!(report.unremovable.is_empty(), "{ctx}: gc left debris");
            let now = ok(cache.accounted_size(), ctx);
            assert!(now <= max.into(), "{ctx}: gc left {now} bytes, above {max}");
        }
        Op::Sweep => {
            let report = ok(cache.sweep_orphans(), ctx);
            assert!(swept_ok(&report), "{ctx}: found {report:?}");
        }
        Op::Resync => {
            let report = ok(cache.resync(), ctx);
            assert!(
                report.before == Some(report.after)
                    || (tainted && report.before > Some(report.after)),
                "{ctx}: the accounting had drifted: {report:?}"
            );
            assert!(
                swept_ok(&report.sweep),
                "{ctx}: resync swept {:?}",
                report.sweep
            );
        }
        Op::Clear => {
            let report = ok(cache.clear(), ctx);
            assert_eq!(
                report.in_use, 0,
                "{ctx}: entries in use, though no guard is held"
            );
            assert!(
                swept_ok(&report.sweep),
                "{ctx}: clear swept {:?}",
                report.sweep
            );
            assert!(report.unremovable.is_empty(), "{ctx}: clear left debris");
            assert!(
                report.freed == size || (tainted && report.freed < size),
                "{ctx}: clear freed another amount than was accounted"
            );
            assert_eq!(
                listing(&objects),
                BTreeSet::new(),
                "{ctx}: clear left entries"
            );
        }
        Op::Stage => {
            let stage = ok(cache.stage(), ctx);
            fill(stage.path(), 100);
            ok(stage.close(), ctx);
        }
        Op::Inflate { key, by } => {
            let name = key_name(key);
            let info = objects.join(&name).join("object.info");
            if let Some(stored) = model.get_mut(&name).filter(|_| info.exists()) {
                // Around the limit: `by` below 128 stays valid.
                let size = (fscache::MAX_ENTRY_SIZE - 127).saturating_add(u64::from(by));
                let size = if by == u8::MAX { u64::MAX } else { size };
                // What the hand accounts: the old size out, the new one in
                // (none, past the limit, where the entry turns invalid).
                let before = check(cache.path(), ctx, tainted);
                let old = read_json(&info, ctx)
                    .get("size")
                    .and_then(Value::as_u64)
                    .filter(|s| *s <= fscache::MAX_ENTRY_SIZE)
                    .unwrap_or(0);
                let total =
                    before
                        .saturating_sub(old)
                        .saturating_add(if size <= fscache::MAX_ENTRY_SIZE {
                            size
                        } else {
                            0
                        });
                std::fs::write(&info, format!(r#"{{"size": {size}}}"#)).expect("inflate");
                stored.size = size;
                std::fs::write(cache.path().join("cache.size"), total.to_string())
                    .expect("write what the hand would account");
            }
        }
        Op::SetMax(max) => {
            let max = match max {
                Max::Bytes(n) => MaxSize::Bytes(n.into()),
                Max::Unlimited => MaxSize::Unlimited,
            };
            ok(cache.set_maximum_size(max), ctx);
        }
    }
    false
}

/// Check what every step must leave behind; returns `cache.size`. With
/// `saturated`, an entry was made invalid since the last recount, so the
/// total may overcount what it accounted: it is compared only as a bound.
fn check(root: &Path, ctx: &str, saturated: bool) -> u64 {
    for name in listing(root) {
        assert!(
            fscache::ROOT_LAYOUT.contains(&name.as_str()),
            "{ctx}: {name:?} appeared in the cache root"
        );
    }
    // Staging entries are anonymous, and no guard outlives a step.
    let staged = listing(&root.join("stage"));
    assert!(staged.is_empty(), "{ctx}: stage/ holds {staged:?}");
    let objects = root.join("objects");
    let mut sum = 0u64;
    for name in listing(&objects) {
        assert!(
            !name.starts_with("uuid-"),
            "{ctx}: objects/{name} was left behind"
        );
        let entry = objects.join(&name);
        for part in ["data", "object.info", "object.lock"] {
            assert!(
                entry.join(part).exists(),
                "{ctx}: objects/{name} has no {part}"
            );
        }
        let info = read_json(&entry.join("object.info"), ctx);
        let Some(size) = info.get("size").and_then(Value::as_u64) else {
            panic!("{ctx}: objects/{name}/object.info has no size: {info}");
        };
        // A size past the limit is no size: its entry is invalid.
        if size <= fscache::MAX_ENTRY_SIZE {
            sum += size;
        }
    }
    let accounted = read_json(&root.join("cache.size"), ctx);
    let Some(accounted) = accounted.as_u64() else {
        panic!("{ctx}: cache.size is not an integer: {accounted}");
    };
    assert!(
        accounted == sum || (saturated && accounted > sum),
        "{ctx}: cache.size is {accounted}, not the sum of the entries' sizes {sum}"
    );
    accounted
}

/// The maximum in `cache.info`, `None` when unlimited.
fn maximum(root: &Path) -> Option<u64> {
    let info = read_json(&root.join("cache.info"), "reading the maximum");
    match &info["maximum-size"] {
        Value::String(s) if s == "unlimited" => None,
        v => Some(v.as_u64().unwrap_or_else(|| panic!("no maximum in {info}"))),
    }
}

/// Write `bytes` bytes into a `data/` directory (the size counts blocks, so
/// 0 bytes and 1 byte already differ).
fn fill(data: &Path, bytes: u16) {
    std::fs::write(data.join("blob"), vec![0x5a; bytes.into()]).expect("fill an entry");
}

fn read_json(path: &Path, ctx: &str) -> Value {
    let raw = std::fs::read(path).unwrap_or_else(|e| panic!("{ctx}: read {}: {e}", path.display()));
    serde_json::from_slice(&raw)
        .unwrap_or_else(|e| panic!("{ctx}: {} is not JSON: {e}", path.display()))
}

fn listing(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
        .map(|e| {
            e.expect("read a directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

/// Unwrap a result of the library; no step of this plan may fail.
fn ok<T>(result: fscache::Result<T>, ctx: &str) -> T {
    result.unwrap_or_else(|e| {
        let mut msg = format!("{ctx}: {e}");
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            msg += &format!(": {s}");
            source = s.source();
        }
        panic!("{msg}")
    })
}
