//! Run-time detection of kernel and file-system features.
//!
//! Each feature is tried on first use; the first answer that says "not here"
//! is remembered so that later calls go straight to the fallback. The answer
//! only ever moves from unknown to known, so racing detectors can only agree.

use crate::sync::{AtomicU8, Ordering};

/// What is known about one feature; `u8` so that it fits an atomic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub(crate) enum Support {
    /// Not tried yet: try it.
    Unknown = 0,
    /// Works, in its first form.
    Yes = 1,
    /// Works, but only in its second form (for O_TMPFILE: linking through
    /// `/proc/self/fd` because `AT_EMPTY_PATH` needs a capability).
    Alternate = 2,
    /// Does not work here: always use the fallback.
    No = 3,
}

/// A remembered answer about one feature.
#[derive(Debug)]
pub(crate) struct Feature(AtomicU8);

impl Feature {
    #[cfg(not(loom))]
    pub(crate) const fn new() -> Self {
        Feature(AtomicU8::new(Support::Unknown as u8))
    }

    /// loom's atomics cannot be built in a `const`.
    #[cfg(loom)]
    pub(crate) fn new() -> Self {
        Feature(AtomicU8::new(Support::Unknown as u8))
    }

    pub(crate) fn get(&self) -> Support {
        match self.0.load(Ordering::Relaxed) {
            1 => Support::Yes,
            2 => Support::Alternate,
            3 => Support::No,
            _ => Support::Unknown,
        }
    }

    /// Record what a try found out. A later, more pessimistic answer wins
    /// over an earlier one (`Yes` < `Alternate` < `No`), so two threads that
    /// detect at once settle on the answer that works for both.
    pub(crate) fn set(&self, support: Support) {
        // Read first: every open says `Yes` again, and a plain load is
        // cheaper than the locked read-modify-write, on a hot path.
        if self.0.load(Ordering::Relaxed) < support as u8 {
            self.0.fetch_max(support as u8, Ordering::Relaxed);
        }
    }

    pub(crate) fn usable(&self) -> bool {
        self.get() != Support::No
    }
}

/// The kernel-wide feature: `openat2(2)` with `RESOLVE_*` flags.
#[cfg(not(loom))]
pub(crate) static OPENAT2: Feature = Feature::new();
/// Under loom the static is built lazily (never, in the models, which use
/// their own `Feature`s).
#[cfg(loom)]
pub(crate) static OPENAT2: std::sync::LazyLock<Feature> = std::sync::LazyLock::new(Feature::new);

/// Features of the file system a cache lives on, detected per cache handle.
#[derive(Debug)]
pub(crate) struct FsFeatures {
    /// `O_TMPFILE` and linking the result into place.
    pub(crate) tmpfile: Feature,
    /// `renameat2(RENAME_NOREPLACE)`.
    pub(crate) noreplace: Feature,
}

impl FsFeatures {
    /// Fresh detection state, less what `FSCACHE_DISABLE` turns off.
    ///
    /// `FSCACHE_DISABLE` is a comma-separated list of `openat2`, `tmpfile`,
    /// `noreplace`, `ficlone` and `copy_file_range`: the test suite uses it
    /// to run every fallback path on a kernel that has the feature.
    pub(crate) fn detect() -> Self {
        let features = FsFeatures {
            tmpfile: Feature::new(),
            noreplace: Feature::new(),
        };
        let disabled = disabled();
        if disabled.openat2 {
            OPENAT2.set(Support::No);
        }
        if disabled.tmpfile {
            features.tmpfile.set(Support::No);
        }
        if disabled.noreplace {
            features.noreplace.set(Support::No);
        }
        features
    }
}

/// How file content may be copied, fastest first; what `FSCACHE_DISABLE`
/// leaves of it (`ficlone`, `copy_file_range`) is where a copy starts. A
/// copy learns the rest for each pair of file systems it copies between.
pub(crate) fn copy_methods() -> (bool, bool) {
    let d = disabled();
    (!d.ficlone, !d.copy_file_range)
}

/// What `FSCACHE_DISABLE` turns off, read once per process.
#[derive(Clone, Copy, Debug, Default)]
struct Disabled {
    openat2: bool,
    tmpfile: bool,
    noreplace: bool,
    ficlone: bool,
    copy_file_range: bool,
}

fn disabled() -> Disabled {
    static DISABLED: std::sync::OnceLock<Disabled> = std::sync::OnceLock::new();
    *DISABLED.get_or_init(|| {
        let list = std::env::var("FSCACHE_DISABLE").unwrap_or_default();
        let has = |name: &str| list.split(',').any(|n| n.trim() == name);
        Disabled {
            openat2: has("openat2"),
            tmpfile: has("tmpfile"),
            noreplace: has("noreplace"),
            ficlone: has("ficlone"),
            copy_file_range: has("copy_file_range"),
        }
    })
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_feature_only_grows_more_pessimistic() {
        let f = Feature::new();
        assert_eq!(f.get(), Support::Unknown);
        f.set(Support::Alternate);
        f.set(Support::Yes);
        assert_eq!(
            f.get(),
            Support::Alternate,
            "a racing Yes must not undo Alternate"
        );
        f.set(Support::No);
        assert!(!f.usable());
    }
}

/// Models of racing detectors: `RUSTFLAGS="--cfg loom" cargo test --release --lib loom`.
#[cfg(all(test, loom))]
mod loom_models {
    use super::*;
    use loom::sync::Arc;

    /// Two detectors find out different things at once (one path works
    /// in its first form, another only in its second, or not at all).
    fn race(first: Support, second: Support) {
        loom::model(move || {
            let f = Arc::new(Feature::new());
            let spawn = |s: Support| {
                let f = f.clone();
                loom::thread::spawn(move || {
                    f.set(s);
                    f.get()
                })
            };
            let (a, b) = (spawn(first), spawn(second));
            let (seen_a, seen_b) = (a.join().unwrap(), b.join().unwrap());
            let settled = first.max(second);
            assert_eq!(f.get(), settled, "the most pessimistic answer wins");
            // Nobody reads back an answer more optimistic than their own:
            // a thread that learnt `No` must never go on to try the feature.
            assert!(seen_a >= first && seen_b >= second, "{seen_a:?} {seen_b:?}");
            assert!(seen_a <= settled && seen_b <= settled);
        });
    }

    #[test]
    fn loom_racing_detectors_settle_on_the_most_pessimistic_answer() {
        race(Support::Yes, Support::Alternate);
        race(Support::Alternate, Support::No);
        race(Support::Yes, Support::No);
        race(Support::Yes, Support::Yes);
    }
}
