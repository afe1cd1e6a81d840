//! What the cache holds (`stats`), and restoring exact accounting
//! (`resync`).

use std::os::fd::AsFd;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::fs::{statat, AtFlags, FileType, Mode, OFlags};

use crate::atomic::{Dir, LOCK_FILE};
use crate::beneath::open_beneath;
use crate::error::{IoContext, Op, Result};
use crate::info::{MaxSize, ObjectInfo, DATA, OBJECT_INFO};
use crate::lock::{conflicting, LockKind};
use crate::maint::sweep::is_before;
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
    /// Named directories without a valid `object.info`.
    pub invalid_entries: u64,
    /// Entries committed during an earlier boot (another boot id).
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
    /// `cache.size` now: the sum over named entries and live anonymous ones.
    pub after: u64,
    /// What the sweep that came first removed.
    pub sweep: crate::SweepReport,
}

/// The wall-clock second the system booted, if it can be told.
pub(crate) fn boot_time() -> Option<i64> {
    let up = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?;
    Some(now.as_secs() as i64 - up.tv_sec)
}

fn to_time(sec: i64, nsec: i64) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec.clamp(0, 999_999_999) as u32)
    } else {
        UNIX_EPOCH
    }
}

/// Whether the anonymous entry or file `name` in `dir` is held by a live
/// owner, asked with `F_OFD_GETLK` so that looking takes no lock.
pub(crate) fn is_live(dir: &Dir, name: &str, is_dir: bool) -> Result<bool> {
    let rel = if is_dir {
        format!("{name}/{LOCK_FILE}")
    } else {
        name.to_owned()
    };
    match open_beneath(dir.as_fd(), &rel, OFlags::RDONLY, Mode::empty()) {
        Ok(fd) => Ok(conflicting(&fd, LockKind::Exclusive, &dir.join(&rel))?.is_some()),
        Err(e) if crate::error::not_a_file(e) => Ok(false),
        Err(e) => Err(e).at(Op::Open, || dir.join(&rel)),
    }
}

/// The `object.info` of the entry `name` in `dir`, if it has a valid one.
pub(crate) fn read_object_info(dir: &Dir, name: &str) -> Result<Option<ObjectInfo>> {
    let rel = format!("{name}/{OBJECT_INFO}");
    crate::cache::read_object_info(dir.as_fd(), &rel, &dir.join(&rel))
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
        for (dir, may_hold_entries) in [(objects, true), (self.stage_dir(), false)] {
            for (name, kind) in tree::list(dir)? {
                let is_dir = kind == FileType::Directory;
                if name.starts_with("uuid-") && (is_dir || kind == FileType::RegularFile) {
                    if is_live(dir, &name, is_dir)? {
                        s.live_anonymous += 1;
                    } else {
                        s.orphans += 1;
                        s.orphans_from_previous_boot += u64::from(is_before(dir, &name, boot));
                    }
                    continue;
                }
                if !may_hold_entries || !is_dir {
                    continue;
                }
                let Some(oi) = read_object_info(objects, &name)? else {
                    s.invalid_entries += 1;
                    continue;
                };
                s.entries += 1;
                s.recorded_bytes += oi.size;
                if oi.creation_boot_id.as_deref() != Some(self.boot_id()) {
                    s.entries_from_previous_boot += 1;
                }
                let lock_rel = format!("{name}/{LOCK_FILE}");
                if let Ok(st) = statat(
                    objects.as_fd(),
                    lock_rel.as_str(),
                    AtFlags::SYMLINK_NOFOLLOW,
                ) {
                    let used = to_time(st.st_atime, st.st_atime_nsec as i64);
                    s.oldest_use = Some(s.oldest_use.map_or(used, |o| o.min(used)));
                    s.newest_use = Some(s.newest_use.map_or(used, |n| n.max(used)));
                }
                let data_rel = format!("{name}/{DATA}");
                if let Ok(data) = open_beneath(
                    objects.as_fd(),
                    &data_rel,
                    OFlags::RDONLY | OFlags::DIRECTORY,
                    Mode::empty(),
                ) {
                    s.measured_bytes += tree::measure(data, &objects.join(&data_rel)).unwrap_or(0);
                }
            }
        }
        Ok(s)
    }

    /// Make `cache.size` exact again: sweep the orphans, then, inside the
    /// size critical section, set it to the sum of the `object.info` sizes
    /// of the named entries and of the anonymous entries whose owners are
    /// alive. Repairs drift left by crashed processes, ours or osbuild's,
    /// and a corrupt `cache.size`.
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
        let objects = self.objects();
        let mut size_lock = self.lock_size()?;
        let before = size_lock.value().ok();
        let mut total = 0u64;
        for (name, kind) in tree::list(objects)? {
            if kind != FileType::Directory {
                continue;
            }
            if name.starts_with("uuid-") && !is_live(objects, &name, true)? {
                continue;
            }
            if let Some(oi) = read_object_info(objects, &name)? {
                total = total.saturating_add(oi.size);
            }
        }
        size_lock.set(total)?;
        Ok(ResyncReport {
            before,
            after: total,
            sweep,
        })
    }
}
