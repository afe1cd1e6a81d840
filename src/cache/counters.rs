//! Counters of what handles do (hits, misses, stores...), per handle and
//! kept across processes in `fscache-counters.json` (our extension; a
//! version-1 reader ignores it).
//!
//! Counting costs a load no system call: each handle counts in memory and
//! adds what it counted to the file now and then (every [`FLUSH_EVERY`]
//! events of one kind, and when its last clone or guard goes), under the
//! file's lock, by the atomic replacement every file of the cache gets.

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::atomic::{mode_of, Dir, Replace};
use crate::error::Result;
use crate::layout::COUNTERS;
use crate::lock::{LockKind, Wait};
use crate::FsCache;

/// How many events a handle counts before it adds them to the file.
pub(crate) const FLUSH_EVERY: u64 = 4096;

/// How long a flush waits for the file's lock before it keeps its counts
/// for the next one.
const FLUSH_WAIT: Duration = Duration::from_secs(1);

/// What handles have done: one handle's since it was opened
/// ([`FsCache::counters`]), or every handle's, kept across processes
/// ([`FsCache::all_counters`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// Loads that found their entry.
    pub hits: u64,
    /// Loads that did not.
    pub misses: u64,
    /// Commits that stored their entry.
    pub stored: u64,
    /// Commits that found their name taken (another process stored it
    /// first).
    pub name_taken: u64,
    /// Entries removed to make room or by maintenance (eviction, `gc`,
    /// `clear`, `evict`).
    pub evicted: u64,
    /// Times `cache.size` was recounted from the entries because it held
    /// no number, was no regular file, or left no room with nothing to
    /// evict (see [`FsCache::resync`]; at most once per minute per handle
    /// for want of room).
    pub heals: u64,
    /// Verifying loads ([`FsCache::load_verified`]) that found the entry's
    /// `data/` no longer matching its recorded digest; each is a miss too.
    pub mismatches: u64,
}

/// What can be counted.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Event {
    Hit,
    Miss,
    Stored,
    NameTaken,
    Evicted,
    Heal,
    Mismatch,
}

const EVENTS: usize = 7;
const KEYS: [&str; EVENTS] = [
    "hits",
    "misses",
    "stored",
    "name-taken",
    "evicted",
    "heals",
    "mismatches",
];

impl Counters {
    fn from_array(a: [u64; EVENTS]) -> Counters {
        Counters {
            hits: a[0],
            misses: a[1],
            stored: a[2],
            name_taken: a[3],
            evicted: a[4],
            heals: a[5],
            mismatches: a[6],
        }
    }

    fn to_array(self) -> [u64; EVENTS] {
        [
            self.hits,
            self.misses,
            self.stored,
            self.name_taken,
            self.evicted,
            self.heals,
            self.mismatches,
        ]
    }

    /// The counts of the JSON object `raw`; whatever is not a count there
    /// reads as 0 (a file written by hand, or garbage).
    fn parse(raw: &[u8]) -> Counters {
        let map = serde_json::from_slice::<Value>(raw).unwrap_or(Value::Null);
        Counters::from_array(KEYS.map(|k| map.get(k).and_then(Value::as_u64).unwrap_or(0)))
    }

    fn to_json(self) -> Vec<u8> {
        let map: Map<String, Value> = KEYS
            .iter()
            .zip(self.to_array())
            .map(|(k, v)| ((*k).to_owned(), Value::from(v)))
            .collect();
        serde_json::to_vec(&Value::Object(map)).unwrap_or_default()
    }

    fn plus(self, other: Counters) -> Counters {
        let (a, b) = (self.to_array(), other.to_array());
        Counters::from_array(std::array::from_fn(|i| a[i].saturating_add(b[i])))
    }
}

/// One handle's counts: since it was opened, and not yet in the file.
#[derive(Debug, Default)]
pub(crate) struct LiveCounters {
    total: [AtomicU64; EVENTS],
    pending: [AtomicU64; EVENTS],
}

impl LiveCounters {
    /// Count `n` of `event`; whether it is time to flush.
    pub(crate) fn count(&self, event: Event, n: u64) -> bool {
        let i = event as usize;
        self.pending[i].fetch_add(n, Ordering::Relaxed);
        // Every FLUSH_EVERY of each kind: a flush that failed is tried
        // again that many events later, not at every one.
        let before = self.total[i].fetch_add(n, Ordering::Relaxed);
        (before % FLUSH_EVERY) + n >= FLUSH_EVERY
    }

    pub(crate) fn total(&self) -> Counters {
        Counters::from_array(std::array::from_fn(|i| {
            self.total[i].load(Ordering::Relaxed)
        }))
    }

    fn pending(&self) -> Counters {
        Counters::from_array(std::array::from_fn(|i| {
            self.pending[i].load(Ordering::Relaxed)
        }))
    }

    /// Take what is pending, to add to the file.
    fn take(&self) -> Counters {
        Counters::from_array(std::array::from_fn(|i| {
            self.pending[i].swap(0, Ordering::Relaxed)
        }))
    }

    /// Put back what a failed flush took.
    fn give_back(&self, counts: Counters) {
        for (slot, n) in self.pending.iter().zip(counts.to_array()) {
            slot.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// Add what `live` has pending to the file in `root`, or with `zero`
/// reset the file; returns what the file held before. On failure the
/// pending counts stay pending.
pub(crate) fn flush(root: &Dir, temp: &Dir, live: &LiveCounters, zero: bool) -> Result<Counters> {
    let pending = live.take();
    let added = update(root, temp, |held| {
        if zero {
            Counters::default()
        } else {
            held.plus(pending)
        }
    });
    match added {
        Ok(held) => Ok(held),
        Err(e) => {
            live.give_back(pending);
            Err(e)
        }
    }
}

/// Replace the counts in the file by `new(held)`, under its lock.
fn update(root: &Dir, temp: &Dir, new: impl FnOnce(Counters) -> Counters) -> Result<Counters> {
    let lock = match root.lock(COUNTERS, LockKind::Exclusive, Wait::Timeout(FLUSH_WAIT)) {
        Ok(lock) => lock,
        Err(e) if e.errno() == Some(rustix::io::Errno::NOENT.raw_os_error()) => {
            let _ = root.write_file(COUNTERS, b"{}", Replace::No, temp)?;
            root.lock(COUNTERS, LockKind::Exclusive, Wait::Timeout(FLUSH_WAIT))?
        }
        Err(e) => return Err(e),
    };
    let held = Counters::parse(&super::read_all(&lock.as_fd(), &root.join(COUNTERS))?);
    let mode = lock.locked_stat().map(mode_of);
    root.replace_with_mode(COUNTERS, &new(held).to_json(), temp, mode)?;
    drop(lock);
    Ok(held)
}

/// The counts in the file, read without its lock (it is replaced whole);
/// a missing or unreadable file reads as zero.
fn read(root: &Dir) -> Counters {
    let fd = crate::beneath::open_beneath(
        root.as_fd(),
        COUNTERS,
        rustix::fs::OFlags::RDONLY,
        rustix::fs::Mode::empty(),
    );
    match fd {
        Ok(fd) => super::read_all(&fd, &root.join(COUNTERS))
            .map(|raw| Counters::parse(&raw))
            .unwrap_or_default(),
        Err(_) => Counters::default(),
    }
}

impl FsCache {
    /// Count `event` for this handle, and add the counts to the file when
    /// it is time (best effort: a cache we may not write keeps no counts).
    pub(crate) fn count(&self, event: Event) {
        self.count_n(event, 1);
    }

    /// Count `n` of `event` (as [`FsCache::count`]).
    pub(crate) fn count_n(&self, event: Event, n: u64) {
        if n > 0 && self.live_counters().count(event, n) {
            let _ = flush(self.root(), self.objects(), self.live_counters(), false);
        }
    }

    /// What this handle has done since it was opened: hits, misses,
    /// stores, names found taken, evictions, and how often it had to heal
    /// `cache.size`.
    ///
    /// # Examples
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let cache = fscache::FsCache::open("my-tool", dir.path())?;
    /// assert!(cache.load("nothing")?.is_none());
    /// assert_eq!(cache.counters().misses, 1);
    /// # Ok::<(), fscache::Error>(())
    /// ```
    pub fn counters(&self) -> Counters {
        self.live_counters().total()
    }

    /// What every handle of this cache has done, across processes: the
    /// counts in `fscache-counters.json` and what this handle has not
    /// added to them yet. Other live handles add theirs every 4,096 events of
    /// one kind and when they close, so their latest counts may be missing.
    ///
    /// # Examples
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let earlier = fscache::FsCache::open("my-tool", dir.path())?;
    /// assert!(earlier.load("nothing")?.is_none());
    /// drop(earlier); // adds its counts to the file
    /// let cache = fscache::FsCache::open("my-tool", dir.path())?;
    /// assert!(cache.load("nothing")?.is_none());
    /// assert_eq!(cache.all_counters().misses, 2);
    /// # Ok::<(), fscache::Error>(())
    /// ```
    pub fn all_counters(&self) -> Counters {
        read(self.root()).plus(self.live_counters().pending())
    }

    /// Set the counts kept across processes back to zero (this handle's
    /// pending ones too); returns what they were.
    ///
    /// # Errors
    ///
    /// [`Error::Io`](crate::Error::Io) if the file cannot be written,
    /// [`Error::TimedOut`](crate::Error::TimedOut) if its lock stays held.
    pub fn zero_counters(&self) -> Result<Counters> {
        let pending = self.live_counters().pending();
        let held = flush(self.root(), self.objects(), self.live_counters(), true)?;
        Ok(held.plus(pending))
    }
}

/// Add a closing handle's counts to the file (best effort).
pub(crate) fn flush_on_close(root: &Dir, temp: &Dir, live: &LiveCounters) {
    if live.pending() != Counters::default() {
        let _ = flush(root, temp, live, false);
    }
}
