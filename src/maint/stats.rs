//! What the cache holds (`stats`), and restoring exact accounting
//! (`resync`).

use std::os::fd::AsFd;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::fs::{statat, AtFlags, Mode, OFlags};

use crate::beneath::open_beneath;
use crate::error::Result;
use crate::info::MaxSize;
use crate::layout::{committed, in_entry, DATA, LOCK_FILE};
use crate::maint::scan::{boot_time, is_before, is_live, scan, Kind};
use crate::tree;
use crate::FsCache;

/// A snapshot of the cache, from [`FsCache::stats`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Committed entries (named, with a valid `object.info`).
    pub entries: u64,
    /// The bytes `cache.size` accounts, `None` if the file is corrupt.
    pub accounted_bytes: Option<u64>,
    /// The sum of the sizes recorded in the entries' `object.info`.
    pub recorded_bytes: u64,
    /// What handles hold in reserve (the crate docs, *Reservations*):
    /// accounted in `cache.size`, in no entry yet. A dead handle's counts
    /// until a sweep gives it back.
    pub reserved_bytes: u64,
    /// What the entries' `data/` trees occupy now, measured.
    pub measured_bytes: u64,
    /// The configured maximum.
    pub maximum: MaxSize,
    /// Anonymous entries and temporaries nobody holds (to be swept).
    pub orphans: u64,
    /// Of the orphans, those left from before the current boot.
    pub orphans_from_previous_boot: u64,
    /// Anonymous entries being built or staged by live processes.
    pub live_anonymous: u64,
    /// Named directories without a valid `object.info`: removals cut
    /// short, and evicted entries whose removal is under way (a handle's
    /// remover thread holds a few at a time).
    pub invalid_entries: u64,
    /// Entries tagged with another boot id: committed during an earlier
    /// boot (or by another application). Untagged entries count in neither.
    pub entries_from_previous_boot: u64,
    /// The least recent last use of any entry.
    pub oldest_use: Option<SystemTime>,
    /// The most recent last use of any entry.
    pub newest_use: Option<SystemTime>,
}

/// What [`FsCache::resync`] found and set.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResyncReport {
    /// `cache.size` before, `None` if it was corrupt.
    pub before: Option<u64>,
    /// `cache.size` now: the sum of the `object.info` sizes present.
    pub after: u64,
    /// What the sweep that came first removed.
    pub sweep: crate::SweepReport,
}

pub(crate) fn to_time(sec: i64, nsec: i64) -> SystemTime {
    match u64::try_from(sec) {
        Ok(sec) => UNIX_EPOCH + Duration::new(sec, nsec.clamp(0, 999_999_999) as u32),
        Err(_) => UNIX_EPOCH,
    }
}

impl FsCache {
    /// Look at everything in the cache without changing anything (taking
    /// no lock, not even counting as a use). It measures every entry, so it
    /// costs a walk of the whole cache.
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedVersion`](crate::Error::UnsupportedVersion) if
    /// the cache's version is unsupported; [`Error::Io`](crate::Error::Io)
    /// on I/O failure. Entries that vanish during the walk are skipped.
    ///
    /// # Examples
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let cache = fscache::FsCache::open("my-tool", dir.path())?;
    /// let stats = cache.stats()?;
    /// assert_eq!((stats.entries, stats.accounted_bytes), (0, Some(0)));
    /// # Ok::<(), fscache::Error>(())
    /// ```
    pub fn stats(&self) -> Result<Stats> {
        let info = self.require_supported()?;
        let boot = boot_time();
        let mut s = Stats {
            entries: 0,
            accounted_bytes: crate::size::read_unlocked(self.root())?,
            recorded_bytes: 0,
            reserved_bytes: crate::cache::reserved_in(self.objects())?.total,
            measured_bytes: 0,
            maximum: info.effective_maximum(),
            orphans: 0,
            orphans_from_previous_boot: 0,
            live_anonymous: 0,
            invalid_entries: 0,
            entries_from_previous_boot: 0,
            oldest_use: None,
            newest_use: None,
        };
        let objects = self.objects();
        for (dir, holds_entries) in [(objects, true), (self.stage_dir(), false)] {
            for child in scan(dir, holds_entries)? {
                let name = child.name.as_str();
                if child.kind != Kind::Named {
                    if is_live(dir, name, child.kind)? {
                        s.live_anonymous += 1;
                    } else {
                        s.orphans += 1;
                        s.orphans_from_previous_boot += u64::from(is_before(dir, name, boot));
                    }
                    continue;
                }
                let Some(oi) = committed(objects, name, None)? else {
                    s.invalid_entries += 1;
                    continue;
                };
                s.entries += 1;
                // Sizes come from files anyone may have written: a total
                // saturates rather than wraps.
                s.recorded_bytes = s.recorded_bytes.saturating_add(oi.size);
                // Untagged entries (osbuild's may be) are of no known boot.
                if oi
                    .creation_boot_id
                    .as_deref()
                    .is_some_and(|b| b != self.boot_id())
                {
                    s.entries_from_previous_boot += 1;
                }
                let lock_rel = in_entry(name, LOCK_FILE);
                if let Ok(st) = statat(
                    objects.as_fd(),
                    lock_rel.as_str(),
                    AtFlags::SYMLINK_NOFOLLOW,
                ) {
                    let used = to_time(st.st_atime, st.st_atime_nsec as i64);
                    s.oldest_use = Some(s.oldest_use.map_or(used, |o| o.min(used)));
                    s.newest_use = Some(s.newest_use.map_or(used, |n| n.max(used)));
                }
                let data_rel = in_entry(name, DATA);
                if let Ok(data) = open_beneath(
                    objects.as_fd(),
                    &data_rel,
                    OFlags::RDONLY | OFlags::DIRECTORY,
                    Mode::empty(),
                ) {
                    let measured = tree::measure(data, &objects.join(&data_rel)).unwrap_or(0);
                    s.measured_bytes = s.measured_bytes.saturating_add(measured);
                }
            }
        }
        Ok(s)
    }

    /// Make `cache.size` exact again: sweep the orphans, then, inside the
    /// size critical section, set it to the sum of the `object.info` sizes
    /// in `objects/` (of committed entries, and of anonymous ones that a
    /// later sweep gives back). Repairs drift left by crashed processes,
    /// ours or osbuild's, and a `cache.size` that holds no number or was
    /// replaced by a link, directory or fifo (which is removed, never
    /// followed). Stores do this themselves when they find no room with
    /// nothing left to evict (see [`Counters::heals`](crate::Counters)),
    /// so a resync by hand is rarely needed.
    ///
    /// While it runs, commits wait for it (it holds the size lock during a
    /// scan of `objects/`).
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedVersion`](crate::Error::UnsupportedVersion) if
    /// the cache's version is unsupported; [`Error::Io`](crate::Error::Io)
    /// on I/O failure.
    ///
    /// # Examples
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let cache = fscache::FsCache::open("my-tool", dir.path())?;
    /// std::fs::write(dir.path().join("cache.size"), "12345").unwrap(); // drift
    /// let report = cache.resync()?;
    /// assert_eq!((report.before, report.after), (Some(12345), 0));
    /// # Ok::<(), fscache::Error>(())
    /// ```
    pub fn resync(&self) -> Result<ResyncReport> {
        let sweep = self.sweep_orphans()?;
        let (before, after) = self.accounting().resync()?;
        Ok(ResyncReport {
            before,
            after,
            sweep,
        })
    }
}
