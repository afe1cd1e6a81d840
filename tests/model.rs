//! Model-based test: random sequences of operations on one `FsCache` handle
//! (one thread) must agree, step by step, with an in-memory model of the
//! cache: which names exist, what each accounts, when each was last used,
//! the maximum, the low watermark and the total.
//!
//! Two things the file system would make nondeterministic are pinned down:
//!
//! * Sizes. An entry's size is what its `data/` occupies (`st_blocks * 512`
//!   summed over the tree), which depends on the file system. The test
//!   measures the tree itself right before each commit, predicts the
//!   outcome from that, and then checks that the library reports (and
//!   records in `object.info`) the same number.
//! * Last use. Kernel timestamps are coarse, so two uses can share an
//!   atime. After every use (a stored commit, a load hit) the test sets the
//!   lock file's atime to the model's logical clock, so the LRU order is
//!   exactly the model's: by last use, ties broken by name.
//!
//! The operations: store and commit, store and abort, load (and keep the
//! guard, so that the entry is in use), release, evict, gc (by size, by
//! age, dry run), clear, set the maximum, set the low watermark, resync,
//! overcount `cache.size` as a crashed process would, and a clock tick.
//! Every outcome is compared with the model's prediction, and after every
//! step the disk must match the model: the names in `objects/` (no
//! leftover), `cache.size`, each `object.info` size, each last use, and
//! what `stats()` reports.
//!
//! Set `PROPTEST_CASES` to run more cases than the default (64).

mod common;

use std::collections::BTreeMap;
use std::fmt::Display;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use fscache::{
    CacheInfo, Commit, Eviction, FsCache, GcOptions, MaxSize, Reason, Removed, SweepReport,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use rustix::fs::{Timespec, Timestamps};

/// The key space: small, so that names collide and entries get reused.
const KEYS: &[&str] = &["a", "b", "c", "d", "e"];

/// One logical tick, in seconds of atime.
const TICK: i64 = 1000;

/// How far before the start of a case logical time 0 lies, in seconds. Far
/// enough that `max_age` cut-offs land between ticks, near enough that the
/// atimes are real dates.
const SPAN: i64 = 10_000_000;

/// The default number of cases; `PROPTEST_CASES` overrides it.
const CASES: u32 = 64;

/// One step of a sequence.
#[derive(Clone, Debug)]
enum Op {
    /// Store `len` bytes of `fill` (in `data/f`, or in `data/sub/f` when
    /// `nested`) under `key` and commit.
    Store {
        key: &'static str,
        len: usize,
        fill: u8,
        nested: bool,
    },
    /// Start storing `key`, write something, then give up: by `abort()`,
    /// or by dropping the guard when `drop_only`.
    StoreAbort { key: &'static str, drop_only: bool },
    /// Look `key` up; on a hit, keep the guard (and so the entry's shared
    /// lock) until a `Release` when `hold`.
    Load { key: &'static str, hold: bool },
    /// Drop every guard kept on `key`.
    Release { key: &'static str },
    /// Remove `key` on request.
    Evict { key: &'static str },
    /// Collect garbage. `max_age_ticks: Some(k)` removes what was last used
    /// at logical time `k` or earlier.
    Gc {
        max_size: Option<u64>,
        max_age_ticks: Option<u64>,
        dry_run: bool,
    },
    /// Remove everything.
    Clear,
    /// Set `"maximum-size"`.
    SetMax(MaxSize),
    /// Set the low watermark percentage (our `cache.info` extension).
    SetLowWatermark(u8),
    /// Recount `cache.size`.
    Resync,
    /// Add `bytes` to `cache.size` behind the library's back: the overcount
    /// a process killed between accounting and committing leaves.
    Overcount { bytes: u64 },
    /// Advance the logical clock.
    Tick,
}

/// What the model knows about one committed entry.
#[derive(Clone, Debug)]
struct Entry {
    size: u64,
    /// Logical time of the last use.
    last_use: u64,
    len: usize,
    fill: u8,
    nested: bool,
}

/// The cache as it should be.
#[derive(Debug)]
struct Model {
    entries: BTreeMap<&'static str, Entry>,
    /// How many guards the test keeps on each entry: those cannot be
    /// removed.
    held: BTreeMap<&'static str, usize>,
    max: MaxSize,
    low_percent: u64,
    /// What `cache.size` holds: the sum of the entries' sizes plus any
    /// overcount.
    total: u64,
    clock: u64,
    /// Every commit outcome so far, in order.
    commits: Vec<(&'static str, Commit)>,
    /// Whether the handle has healed for want of room: it does so at most
    /// once a minute, so once in a run.
    healed: bool,
}

impl Model {
    /// A fresh cache: `{"version": 1}`, so a maximum of 0.
    fn new() -> Model {
        Model {
            entries: BTreeMap::new(),
            held: BTreeMap::new(),
            max: MaxSize::Bytes(0),
            low_percent: 90,
            total: 0,
            clock: 0,
            commits: Vec::new(),
            healed: false,
        }
    }

    /// Entry names, least recently used first, ties broken by name.
    fn lru_order(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self.entries.keys().copied().collect();
        names.sort_by_key(|n| (self.entries[n].last_use, *n));
        names
    }

    fn is_held(&self, name: &str) -> bool {
        self.held.get(name).is_some_and(|n| *n > 0)
    }

    /// The sum of the entries' sizes: what `cache.size` is without
    /// overcount.
    fn recorded(&self) -> u64 {
        self.entries.values().map(|e| e.size).sum()
    }

    fn remove(&mut self, name: &str) -> u64 {
        let e = self
            .entries
            .remove(name)
            .expect("the model removes only what it has");
        self.total = self.total.saturating_sub(e.size);
        e.size
    }

    /// Evict least recently used entries nobody holds until at least
    /// `want` bytes are freed (or none is left). Returns what was removed,
    /// in order.
    fn evict_lru(&mut self, want: u64) -> Vec<(&'static str, u64)> {
        let mut freed = 0;
        let mut out = Vec::new();
        for name in self.lru_order() {
            if freed >= want {
                break;
            }
            if self.is_held(name) {
                continue;
            }
            let size = self.remove(name);
            freed += size;
            out.push((name, size));
        }
        out
    }

    /// The low watermark in bytes for a byte maximum.
    fn low(&self, max: u64) -> u64 {
        (u128::from(max) * u128::from(self.low_percent) / 100) as u64
    }

    /// Commit an entry of `size` bytes under `key`: the outcome, and what
    /// was evicted to make room for it.
    fn commit(
        &mut self,
        key: &'static str,
        size: u64,
        entry: Entry,
    ) -> (Commit, Vec<(&'static str, u64)>) {
        if !self.max.admits(size) {
            return (
                Commit::TooLarge {
                    size,
                    max: self.max,
                },
                Vec::new(),
            );
        }
        let mut evicted = Vec::new();
        if !self.max.admits(self.total.saturating_add(size)) {
            let MaxSize::Bytes(max) = self.max else {
                unreachable!("unlimited admits all")
            };
            // Free what it needs, and up to two entries of its size more
            // toward the low watermark with the entry in it; if the entry
            // alone passes the watermark, free just enough to fit.
            let low = self.low(max);
            let target = if low >= size {
                low - size
            } else {
                max.saturating_sub(size)
            };
            let need = self.total.saturating_add(size).saturating_sub(max);
            let step = need.saturating_add(size.saturating_mul(2));
            evicted = self.evict_lru(self.total.saturating_sub(target).min(step).max(need));
            if !self.max.admits(self.total.saturating_add(size)) && !self.healed {
                // Nothing left to evict: the handle recounts, once.
                self.healed = true;
                self.total = self.recorded();
            }
            if !self.max.admits(self.total.saturating_add(size)) {
                return (Commit::NoRoom { size }, evicted);
            }
        }
        // Room is made (and evictions happen) before the name is tried;
        // the size is accounted, then given back, which a total saturated
        // at the integer limit does not undo exactly.
        if self.entries.contains_key(key) {
            self.total = self.total.saturating_add(size).saturating_sub(size);
            return (Commit::NameTaken, evicted);
        }
        self.total = self.total.saturating_add(size);
        self.entries.insert(
            key,
            Entry {
                size,
                last_use: self.clock,
                ..entry
            },
        );
        (Commit::Stored { size }, evicted)
    }

    /// What `gc` removes, least recently used first, and how many entries
    /// qualified but were held; applied unless a dry run.
    fn gc(
        &mut self,
        max_size: Option<u64>,
        max_age_ticks: Option<u64>,
        dry_run: bool,
    ) -> (Vec<Removed>, u64) {
        let mut accounted = self.total;
        let mut out = Vec::new();
        let mut in_use = 0;
        for name in self.lru_order() {
            let e = &self.entries[name];
            let reason = if max_age_ticks.is_some_and(|k| e.last_use <= k) {
                Reason::Age
            } else if max_size.is_some_and(|m| accounted > m) {
                Reason::Size
            } else {
                continue;
            };
            if self.is_held(name) {
                in_use += 1;
                continue;
            }
            accounted = accounted.saturating_sub(e.size);
            out.push(Removed {
                name: name.to_owned(),
                size: e.size,
                reason,
            });
        }
        if !dry_run {
            for r in &out {
                self.remove(&r.name);
            }
        }
        (out, in_use)
    }
}

/// Turn any error into a test failure that says what was being done.
trait OrFail<T> {
    fn or_fail(self, what: impl Display) -> Result<T, TestCaseError>;
}

impl<T, E: Display> OrFail<T> for Result<T, E> {
    fn or_fail(self, what: impl Display) -> Result<T, TestCaseError> {
        self.map_err(|e| TestCaseError::fail(format!("{what}: {e}")))
    }
}

/// What a tree occupies as the format counts it: `st_blocks * 512` over the
/// directory itself and everything below, links not followed.
fn occupied(path: &Path) -> std::io::Result<u64> {
    let md = std::fs::symlink_metadata(path)?;
    let mut total = md.blocks() * 512;
    if md.is_dir() {
        for child in std::fs::read_dir(path)? {
            total += occupied(&child?.path())?;
        }
    }
    Ok(total)
}

/// The atime, in seconds, that stands for logical time `t`.
fn atime_of(base: i64, t: u64) -> i64 {
    base + TICK * t as i64
}

/// Set an entry's last use (its lock file's atime) to logical time `t`.
fn set_last_use(root: &Path, name: &str, base: i64, t: u64) -> Result<(), TestCaseError> {
    let path = root.join("objects").join(name).join("object.lock");
    let f = std::fs::File::open(&path).or_fail(format!("open {}", path.display()))?;
    let ts = Timespec {
        tv_sec: atime_of(base, t),
        tv_nsec: 0,
    };
    rustix::fs::futimens(
        f.as_fd(),
        &Timestamps {
            last_access: ts,
            last_modification: ts,
        },
    )
    .or_fail(format!("futimens {}", path.display()))
}

/// Where an entry keeps its payload, relative to `data/`.
fn payload(nested: bool) -> &'static str {
    if nested {
        "sub/f"
    } else {
        "f"
    }
}

/// Write a payload into a `data/` directory.
fn fill(data: &Path, len: usize, byte: u8, nested: bool) -> Result<(), TestCaseError> {
    if nested {
        std::fs::create_dir(data.join("sub")).or_fail("create data/sub")?;
    }
    std::fs::write(data.join(payload(nested)), vec![byte; len]).or_fail("write payload")
}

/// Everything on disk that must agree with the model after every step.
fn check_disk(
    root: &Path,
    cache: &FsCache,
    model: &Model,
    base: i64,
    step: &str,
) -> Result<(), TestCaseError> {
    let expected: Vec<String> = model.entries.keys().map(|k| k.to_string()).collect();
    let listed = names(&root.join("objects"));
    prop_assert_eq!(
        &listed,
        &expected,
        "after {}: objects/ must hold exactly the model's entries (and no leftover)",
        step
    );
    prop_assert!(
        names(&root.join("stage")).is_empty(),
        "after {}: stage/ must be empty",
        step
    );
    prop_assert_eq!(
        size_file(root),
        model.total,
        "after {}: cache.size must be the model's total",
        step
    );
    prop_assert_eq!(
        cache.accounted_size().or_fail("accounted_size")?,
        model.total,
        "after {}: accounted_size",
        step
    );
    let stats = cache.stats().or_fail("stats")?;
    let recorded = model.recorded();
    let seen = (
        stats.entries,
        stats.accounted_bytes,
        stats.recorded_bytes,
        stats.measured_bytes,
        stats.maximum,
    );
    let want = (
        model.entries.len() as u64,
        Some(model.total),
        recorded,
        recorded,
        model.max,
    );
    prop_assert_eq!(
        seen,
        want,
        "after {}: stats (entries, accounted, recorded, measured, maximum)",
        step
    );
    let odd = (
        stats.orphans,
        stats.live_anonymous,
        stats.invalid_entries,
        stats.entries_from_previous_boot,
    );
    prop_assert_eq!(
        odd,
        (0, 0, 0, 0),
        "after {}: stats (orphans, live anonymous, invalid, previous boot)",
        step
    );
    let when =
        |t: Option<u64>| t.map(|t| UNIX_EPOCH + Duration::from_secs(atime_of(base, t) as u64));
    let uses = model.entries.values().map(|e| e.last_use);
    prop_assert_eq!(
        (stats.oldest_use, stats.newest_use),
        (when(uses.clone().min()), when(uses.max())),
        "after {}: stats (oldest use, newest use)",
        step
    );
    let recorded: BTreeMap<String, u64> = info_sizes(root).into_iter().collect();
    for (name, e) in &model.entries {
        prop_assert_eq!(
            recorded.get(*name).copied(),
            Some(e.size),
            "after {}: object.info size of {}",
            step,
            name
        );
        let lock = root.join("objects").join(name).join("object.lock");
        let atime = std::fs::metadata(&lock)
            .or_fail(format!("stat {}", lock.display()))?
            .atime();
        prop_assert_eq!(
            atime,
            atime_of(base, e.last_use),
            "after {}: the last use of {} must be the model's (nothing but a use may touch it)",
            step,
            name
        );
    }
    Ok(())
}

/// Run one sequence against a fresh cache and the model; the model as it
/// ends.
fn run(ops: &[Op]) -> Result<Model, TestCaseError> {
    let (_tmp, root) = new_cache(MaxSize::Bytes(0));
    let cache = FsCache::open("fscache-tests", &root).or_fail("open")?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .or_fail("clock")?
        .as_secs() as i64;
    let base = now - SPAN;
    let mut model = Model::new();
    let mut held: BTreeMap<&'static str, Vec<fscache::LoadGuard>> = BTreeMap::new();

    for (i, op) in ops.iter().enumerate() {
        let step = format!("step {i} {op:?}");
        match *op {
            Op::Store {
                key,
                len,
                fill: byte,
                nested,
            } => {
                let guard = cache.store(key).or_fail(&step)?;
                fill(guard.path(), len, byte, nested)?;
                let size = occupied(guard.path()).or_fail("measure data/")?;
                let entry = Entry {
                    size,
                    last_use: model.clock,
                    len,
                    fill: byte,
                    nested,
                };
                let (expected, evicted) = model.commit(key, size, entry);
                let outcome = guard.commit().or_fail(&step)?;
                prop_assert_eq!(
                    outcome,
                    expected,
                    "{}: commit outcome (model evicted {:?}, total now {})",
                    step,
                    evicted,
                    model.total
                );
                model.commits.push((key, outcome));
                if outcome.is_stored() {
                    // The size the commit reported is the one recorded. A
                    // load now is a use at the same logical time.
                    let hit = cache.load(key).or_fail(&step)?;
                    let info = hit.as_ref().map(|h| h.info().size);
                    prop_assert_eq!(info, Some(size), "{}: a load right after finds it", step);
                    drop(hit);
                    set_last_use(&root, key, base, model.clock)?;
                }
            }
            Op::StoreAbort { key, drop_only } => {
                let guard = cache.store(key).or_fail(&step)?;
                fill(guard.path(), 100, 0xab, false)?;
                if drop_only {
                    drop(guard);
                } else {
                    guard.abort().or_fail(&step)?;
                }
            }
            Op::Load { key, hold } => {
                let hit = cache.load(key).or_fail(&step)?;
                let expected = model.entries.get(key).cloned();
                prop_assert_eq!(hit.is_some(), expected.is_some(), "{}: hit or miss", step);
                if let (Some(hit), Some(e)) = (hit, expected) {
                    prop_assert_eq!(hit.name(), key, "{}: the guard's name", step);
                    let info = hit.info();
                    prop_assert_eq!(info.size, e.size, "{}: LoadGuard::info().size", step);
                    prop_assert_eq!(
                        info.creation_boot_id.as_deref(),
                        Some(cache.boot_id()),
                        "{}: boot id",
                        step
                    );
                    let content =
                        std::fs::read(hit.path().join(payload(e.nested))).or_fail(&step)?;
                    prop_assert!(
                        content.len() == e.len && content.iter().all(|b| *b == e.fill),
                        "{}: payload intact",
                        step
                    );
                    if hold {
                        held.entry(key).or_default().push(hit);
                        *model.held.entry(key).or_default() += 1;
                    } else {
                        hit.release().or_fail(&step)?;
                    }
                    set_last_use(&root, key, base, model.clock)?;
                    model.entries.get_mut(key).expect("a hit").last_use = model.clock;
                }
            }
            Op::Release { key } => {
                for guard in held.remove(key).unwrap_or_default() {
                    guard.release().or_fail(&step)?;
                }
                model.held.remove(key);
            }
            Op::Evict { key } => {
                let expected = if !model.entries.contains_key(key) {
                    Eviction::NotFound
                } else if model.is_held(key) {
                    Eviction::InUse
                } else {
                    Eviction::Removed {
                        size: model.remove(key),
                    }
                };
                prop_assert_eq!(cache.evict(key).or_fail(&step)?, expected, "{}", step);
            }
            Op::Gc {
                max_size,
                max_age_ticks,
                dry_run,
            } => {
                let order = model.lru_order();
                let (expected, in_use) = model.gc(max_size, max_age_ticks, dry_run);
                // Logical time k+½ ticks, as an age from now: entries used
                // at k or before are older than it.
                let max_age = max_age_ticks
                    .map(|k| Duration::from_secs((SPAN - TICK * k as i64 - TICK / 2) as u64));
                let report = cache
                    .gc(&GcOptions {
                        max_size,
                        max_age,
                        dry_run,
                    })
                    .or_fail(&step)?;
                prop_assert_eq!(
                    &report.removed,
                    &expected,
                    "{}: what gc removes, in order (LRU order {:?})",
                    step,
                    order
                );
                prop_assert_eq!(
                    report.freed,
                    expected.iter().map(|r| r.size).sum::<u64>(),
                    "{}: freed",
                    step
                );
                prop_assert_eq!(
                    (report.in_use, report.orphans_found),
                    (in_use, 0),
                    "{}: held entries stay, no orphan",
                    step
                );
                prop_assert_eq!(
                    &report.sweep,
                    &SweepReport::default(),
                    "{}: nothing to sweep",
                    step
                );
                if !dry_run {
                    // gc ends with an exact total.
                    model.total = model.recorded();
                }
            }
            Op::Clear => {
                let free: Vec<_> = model
                    .entries
                    .keys()
                    .copied()
                    .filter(|k| !model.is_held(k))
                    .collect();
                let in_use = (model.entries.len() - free.len()) as u64;
                let freed: u64 = free.iter().map(|k| model.remove(k)).sum();
                let report = cache.clear().or_fail(&step)?;
                // clear ends with an exact total.
                model.total = model.recorded();
                prop_assert_eq!(
                    (report.removed, report.freed, report.in_use),
                    (free.len() as u64, freed, in_use),
                    "{}: (removed, freed, in use)",
                    step
                );
            }
            Op::SetMax(max) => {
                cache.set_maximum_size(max).or_fail(&step)?;
                model.max = max;
                prop_assert_eq!(cache.info().effective_maximum(), max, "{}", step);
            }
            Op::SetLowWatermark(p) => {
                let update = CacheInfo {
                    low_watermark_percent: Some(p),
                    ..CacheInfo::default()
                };
                let now = cache.update_info(&update).or_fail(&step)?;
                model.low_percent = u64::from(p);
                prop_assert_eq!(now.low_watermark_percent, Some(p), "{}", step);
            }
            Op::Resync => {
                let report = cache.resync().or_fail(&step)?;
                let before = model.total;
                model.total = model.recorded();
                prop_assert_eq!(
                    (report.before, report.after),
                    (Some(before), model.total),
                    "{}",
                    step
                );
                prop_assert_eq!(
                    &report.sweep,
                    &SweepReport::default(),
                    "{}: nothing to sweep",
                    step
                );
            }
            Op::Overcount { bytes } => {
                model.total = model.total.saturating_add(bytes);
                std::fs::write(root.join("cache.size"), model.total.to_string()).or_fail(&step)?;
            }
            Op::Tick => model.clock += 1,
        }
        check_disk(&root, &cache, &model, base, &step)?;
    }
    Ok(model)
}

fn key() -> impl Strategy<Value = &'static str> {
    proptest::sample::select(KEYS)
}

/// A byte count around the sizes entries have (4 KiB blocks, a few per
/// entry): any number; or, to hit the edges, a multiple of a block, or of
/// ten blocks (whose default low watermark, 90%, is a multiple of a block
/// too).
fn bytes() -> impl Strategy<Value = u64> {
    prop_oneof![
        1 => 0u64..=100_000,
        2 => (0u64..=25).prop_map(|k| k * 4096),
        1 => (1u64..=3).prop_map(|k| k * 10 * 4096),
    ]
}

/// Sizes at the integer limit, where a total that is not saturating wraps.
fn huge() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(u64::MAX),
        Just(u64::MAX - 4096),
        Just(u64::MAX / 2 + 1),
        Just(fscache::MAX_ENTRY_SIZE),
    ]
}

fn max_size() -> impl Strategy<Value = MaxSize> {
    prop_oneof![
        4 => bytes().prop_map(MaxSize::Bytes),
        1 => huge().prop_map(MaxSize::Bytes),
        1 => Just(MaxSize::Unlimited),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (key(), 0usize..20_000, any::<u8>(), proptest::bool::weighted(0.2))
            .prop_map(|(key, len, fill, nested)| Op::Store { key, len, fill, nested }),
        1 => (key(), any::<bool>()).prop_map(|(key, drop_only)| Op::StoreAbort { key, drop_only }),
        5 => (key(), proptest::bool::weighted(0.2)).prop_map(|(key, hold)| Op::Load { key, hold }),
        1 => key().prop_map(|key| Op::Release { key }),
        1 => key().prop_map(|key| Op::Evict { key }),
        2 => (
            proptest::option::weighted(0.8, prop_oneof![0u64..=60_000, (0u64..=15).prop_map(|k| k * 4096)]),
            proptest::option::weighted(0.3, 0u64..10),
            proptest::bool::weighted(0.25)
        )
            .prop_map(|(max_size, max_age_ticks, dry_run)| Op::Gc { max_size, max_age_ticks, dry_run }),
        1 => Just(Op::Clear),
        2 => max_size().prop_map(Op::SetMax),
        1 => prop_oneof![1u8..=100, Just(50), Just(100)].prop_map(Op::SetLowWatermark),
        1 => Just(Op::Resync),
        1 => prop_oneof![3 => 0u64..=40_000, 3 => (1u64..=8).prop_map(|k| k * 4096), 1 => huge()]
            .prop_map(|bytes| Op::Overcount { bytes }),
        4 => Just(Op::Tick),
    ]
}

/// A sequence: a maximum to start from (a fresh cache's 0 would refuse
/// almost everything), then up to 40 operations.
fn sequence() -> impl Strategy<Value = Vec<Op>> {
    (max_size(), proptest::collection::vec(op(), 1..40)).prop_map(|(max, mut ops)| {
        ops.insert(0, Op::SetMax(max));
        ops
    })
}

fn config() -> Config {
    Config {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(CASES),
        // Only this file may be added; a failing sequence is printed, shrunk.
        failure_persistence: None,
        ..Config::default()
    }
}

/// A failure whose `Debug` (what the test harness prints for an `Err`) is
/// its text, so that the shrunk sequence reads as written.
struct Failure(String);

impl std::fmt::Debug for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Failure {}

#[test]
fn random_operation_sequences_agree_with_an_in_memory_model() -> TestResult {
    let mut runner = TestRunner::new(config());
    runner
        .run(&sequence(), |ops| run(&ops).map(drop))
        .map_err(|e| Failure(e.to_string()))?;
    Ok(())
}

// Fixed sequences through the same harness, with what the model must end
// with spelled out: they check the model itself, which the random test
// takes on trust.

/// What an entry whose `data/f` holds `len` bytes occupies on the file
/// system the caches are made on.
fn entry_size(len: usize) -> Result<u64, Box<dyn std::error::Error>> {
    let t = tempfile::tempdir()?;
    let data = t.path().join("data");
    std::fs::create_dir(&data)?;
    std::fs::write(data.join("f"), vec![1u8; len])?;
    Ok(occupied(&data)?)
}

/// Run a fixed sequence.
fn replay(ops: &[Op]) -> Result<Model, Box<dyn std::error::Error>> {
    run(ops).map_err(|e| Failure(e.to_string()).into())
}

fn store(key: &'static str) -> Op {
    Op::Store {
        key,
        len: 4000,
        fill: 1,
        nested: false,
    }
}

fn keys(model: &Model) -> Vec<&'static str> {
    model.entries.keys().copied().collect()
}

#[test]
fn a_store_that_does_not_fit_evicts_the_least_recently_used_down_to_the_low_watermark() -> TestResult
{
    let s = entry_size(4000)?;
    let model = replay(&[
        Op::SetMax(MaxSize::Unlimited),
        store("a"),
        Op::Tick,
        store("b"),
        Op::Tick,
        store("c"),
        Op::Tick,
        store("d"),
        Op::Tick,
        Op::Load {
            key: "a",
            hold: false,
        },
        Op::SetMax(MaxSize::Bytes(4 * s)),
        store("e"),
    ])?;
    // Four of size s in 4s; e does not fit. The low watermark is 3.6s, so
    // 1.4s must go with e in: two entries, the two least recently used
    // (a was loaded since it was stored).
    assert_eq!(
        model.commits.last(),
        Some(&("e", Commit::Stored { size: s })),
        "e is stored"
    );
    assert_eq!(keys(&model), ["a", "d", "e"], "b and c are evicted");
    assert_eq!(model.total, 3 * s, "three entries are left");
    Ok(())
}

#[test]
fn entries_used_at_the_same_time_are_evicted_in_name_order() -> TestResult {
    let s = entry_size(4000)?;
    let model = replay(&[
        Op::SetMax(MaxSize::Unlimited),
        store("d"),
        store("b"),
        store("c"),
        store("a"),
        Op::Gc {
            max_size: Some(2 * s),
            max_age_ticks: None,
            dry_run: false,
        },
    ])?;
    assert_eq!(keys(&model), ["c", "d"], "a and b go first");
    Ok(())
}

#[test]
fn held_entries_are_skipped_by_every_kind_of_removal_until_released() -> TestResult {
    let s = entry_size(4000)?;
    let model = replay(&[
        Op::SetMax(MaxSize::Unlimited),
        store("a"),
        Op::Tick,
        store("b"),
        Op::Load {
            key: "a",
            hold: true,
        },
        Op::Load {
            key: "b",
            hold: true,
        },
        Op::SetMax(MaxSize::Bytes(2 * s)),
        // Nothing can be evicted: no room.
        store("c"),
        Op::Evict { key: "a" },
        Op::Gc {
            max_size: Some(0),
            max_age_ticks: Some(5),
            dry_run: false,
        },
        Op::Clear,
        Op::Release { key: "a" },
        // a, released, is now the least recently used entry nobody holds.
        store("c"),
    ])?;
    let outcomes: Vec<_> = model
        .commits
        .iter()
        .map(|(k, c)| (*k, c.is_stored()))
        .collect();
    assert_eq!(
        outcomes,
        [("a", true), ("b", true), ("c", false), ("c", true)],
        "the first c finds no room"
    );
    assert_eq!(
        model.commits[2].1,
        Commit::NoRoom { size: s },
        "no room, not too large"
    );
    assert_eq!(
        keys(&model),
        ["b", "c"],
        "a was evicted once released, b never"
    );
    Ok(())
}

#[test]
fn an_overcount_is_healed_by_the_first_store_without_room_then_waits_for_a_resync() -> TestResult {
    let s = entry_size(4000)?;
    let model = replay(&[
        Op::SetMax(MaxSize::Bytes(3 * s)),
        store("a"),
        Op::Overcount { bytes: 3 * s },
        // a is evicted, the overcount alone still leaves no room: the
        // handle recounts and b fits.
        store("b"),
        Op::Overcount { bytes: 3 * s },
        // The handle healed a moment ago: it does not rescan on every
        // store, so c finds no room until a resync.
        store("c"),
        Op::Resync,
        store("c"),
    ])?;
    let outcomes: Vec<_> = model.commits.iter().map(|(_, c)| *c).collect();
    assert_eq!(
        outcomes,
        [
            Commit::Stored { size: s },
            Commit::Stored { size: s },
            Commit::NoRoom { size: s },
            Commit::Stored { size: s }
        ],
        "b finds room by the heal, c only after the resync"
    );
    assert_eq!(
        (keys(&model), model.total),
        (vec!["c"], s),
        "only c is left, exactly accounted"
    );
    Ok(())
}
