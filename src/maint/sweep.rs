//! The orphan sweep: anonymous entries and files whose lock nobody holds
//! belong to dead processes.

use std::fmt;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use rustix::fs::{statat, unlinkat, AtFlags, FileType};
use rustix::io::Errno;

use crate::atomic::{remove_entry, Dir, LOCK_FILE};
use crate::cache::read_object_info;
use crate::error::{Error, IoContext, Op, Result};
use crate::info::OBJECT_INFO;
use crate::lock::{LockKind, Wait};
use crate::maint::victim::is_gone;
use crate::FsCache;

/// What [`FsCache::sweep_orphans`] removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SweepReport {
    /// Orphaned `uuid-*` directories removed (from `objects/` and `stage/`).
    pub orphan_dirs: u64,
    /// Orphaned `uuid-*` temporary files removed.
    pub orphan_files: u64,
    /// Of the orphans, those left from before the current boot.
    pub from_previous_boot: u64,
    /// Named entries without a valid `object.info` (a removal cut short),
    /// removed.
    pub invalid_entries: u64,
    /// Bytes given back to `cache.size` for orphans that had been
    /// accounted.
    pub bytes_given_back: u64,
    /// Anonymous entries skipped because their owner is alive.
    pub live: u64,
    /// Orphans found dead but not removed: another user's files inside
    /// them, say. Each was given back first, so the accounting is right;
    /// the sweep goes on past them.
    pub unremovable: Vec<Unremovable>,
}

/// An orphan that [`FsCache::sweep_orphans`] could not remove, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Unremovable {
    /// The orphan.
    pub entry: PathBuf,
    /// The file or directory in it where removal failed.
    pub path: PathBuf,
    /// The operation that failed there.
    pub op: Op,
    /// The system error (`errno`), where there was one.
    pub errno: Option<i32>,
}

impl Unremovable {
    /// What stopped the removal of `entry`; an error that is not about a
    /// file in it is returned as it is.
    pub(crate) fn from_error(entry: &Path, e: Error) -> Result<Self> {
        match e {
            Error::Io { op, path, source } => Ok(Unremovable {
                entry: entry.to_owned(),
                path,
                op,
                errno: source.raw_os_error(),
            }),
            e => Err(e),
        }
    }
}

impl fmt::Display for Unremovable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "failed to {} `{}`", self.op, self.path.display())?;
        match self.errno {
            Some(errno) => write!(f, ": {}", std::io::Error::from_raw_os_error(errno)),
            None => Ok(()),
        }
    }
}

/// How many times an orphan is re-examined when a creator keeps racing us.
const ADOPT_TRIES: usize = 3;

impl FsCache {
    /// Remove every orphan: `uuid-*` directories in `objects/` and `stage/`
    /// and `uuid-*` files in `objects/` whose lock nobody holds, giving
    /// back the size of any that had been accounted; and named entries
    /// without a valid `object.info` that nobody holds.
    ///
    /// Liveness is decided by the lock alone, never by age. An anonymous
    /// directory that has no lock file yet may belong to a creator between
    /// two steps: the sweep claims it by linking a lock of its own into
    /// it, which makes such a creator start again under a new name.
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedVersion`] if the cache's version is unsupported
    /// (only `stage/` would be safe to touch, and we do not guess);
    /// [`Error::Io`] on I/O failure. An orphan that is dead but cannot be
    /// removed (another user's files in it, say) is no error: it is given
    /// back, listed in [`SweepReport::unremovable`], and the sweep goes on.
    ///
    /// # Examples
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let cache = fscache::FsCache::open("my-tool", dir.path())?;
    /// let report = cache.sweep_orphans()?;
    /// assert_eq!(report.orphan_dirs, 0);
    /// # Ok::<(), fscache::Error>(())
    /// ```
    pub fn sweep_orphans(&self) -> Result<SweepReport> {
        self.require_supported()?;
        let mut report = SweepReport::default();
        let boot = crate::maint::stats::boot_time();
        for (dir, accounted) in [(self.objects(), true), (self.stage_dir(), false)] {
            for (name, kind) in crate::tree::list(dir)? {
                let anonymous = name.starts_with("uuid-");
                match kind {
                    FileType::Directory if anonymous => {
                        let old = is_before(dir, &name, boot);
                        match self.reap_anonymous(dir, &name, accounted)? {
                            Reaped::Removed(bytes) => {
                                report.orphan_dirs += 1;
                                report.bytes_given_back += bytes;
                                report.from_previous_boot += u64::from(old);
                            }
                            Reaped::Stuck(bytes, why) => {
                                report.bytes_given_back += bytes;
                                report.unremovable.push(why);
                            }
                            Reaped::Live => report.live += 1,
                            Reaped::Gone => {}
                        }
                    }
                    FileType::RegularFile if anonymous => {
                        let old = is_before(dir, &name, boot);
                        if reap_file(dir, &name)? {
                            report.orphan_files += 1;
                            report.from_previous_boot += u64::from(old);
                        }
                    }
                    FileType::Directory if accounted => match self.reap_invalid(&name)? {
                        Reaped::Removed(_) => report.invalid_entries += 1,
                        Reaped::Stuck(_, why) => report.unremovable.push(why),
                        Reaped::Live | Reaped::Gone => {}
                    },
                    // Links, devices and foreign files: not ours to judge.
                    _ => {}
                }
            }
        }
        Ok(report)
    }

    /// Remove the anonymous directory `name` in `dir` unless its owner is
    /// alive.
    fn reap_anonymous(&self, dir: &Dir, name: &str, accounted: bool) -> Result<Reaped> {
        let rel = format!("{name}/{LOCK_FILE}");
        let mut tries = 0;
        let lock = loop {
            tries += 1;
            match dir.lock(&rel, LockKind::Exclusive, Wait::Never) {
                Ok(lock) => break lock,
                Err(Error::WouldBlock { .. }) => return Ok(Reaped::Live),
                Err(e)
                    if e.errno() == Some(Errno::NOENT.raw_os_error()) && tries <= ADOPT_TRIES =>
                {
                    // No lock file: a crash, or a creator between mkdir and
                    // link. Claim it with a lock of our own.
                    let entry = match dir.open_dir(name) {
                        Ok(entry) => entry,
                        Err(e) if is_gone(&e) => return Ok(Reaped::Gone),
                        Err(e) => return Err(e),
                    };
                    match dir.link_new_lock(&entry)? {
                        Some(lock) => break lock,
                        None => continue,
                    }
                }
                Err(e) if is_gone(&e) => return Ok(Reaped::Gone),
                Err(e) => return Err(e),
            }
        };
        crate::failpoint!("sweep-after-lock");
        let entry = match dir.open_dir(name) {
            Ok(entry) => entry,
            Err(e) if is_gone(&e) => return Ok(Reaped::Gone),
            Err(e) => return Err(e),
        };
        let mut bytes = 0;
        if accounted {
            let recorded = read_object_info(entry.as_fd(), OBJECT_INFO, &entry.join(OBJECT_INFO))?;
            bytes = self.give_back(&entry, recorded.map_or(0, |i| i.size))?;
        }
        // Whatever stops the removal of one orphan (another user's files
        // in it, a directory moved under the walk) must not stop the sweep
        // of all the others, nor everything that sweeps first.
        let reaped = match remove_entry(dir, name, &entry) {
            Ok(()) => Reaped::Removed(bytes),
            Err(e) => Reaped::Stuck(bytes, Unremovable::from_error(entry.path(), e)?),
        };
        drop(lock);
        Ok(reaped)
    }

    /// Remove the named entry `name` if it has no valid `object.info` and
    /// nobody holds it.
    fn reap_invalid(&self, name: &str) -> Result<Reaped> {
        if self.has_valid_info(name)? {
            return Ok(Reaped::Gone);
        }
        let Some(victim) = self.lock_victim(name, None)? else {
            return Ok(Reaped::Live);
        };
        // Recheck under the lock: a creator may have been mid-commit.
        if victim.size.is_some() {
            return Ok(Reaped::Gone);
        }
        let path = self.objects().join(name);
        Ok(match victim.remove_unaccounted(self.objects()) {
            Ok(()) => Reaped::Removed(0),
            Err(e) => Reaped::Stuck(0, Unremovable::from_error(&path, e)?),
        })
    }

    fn has_valid_info(&self, name: &str) -> Result<bool> {
        Ok(crate::maint::stats::read_object_info(self.objects(), name)?.is_some())
    }
}

enum Reaped {
    /// Removed, giving back this many bytes.
    Removed(u64),
    /// Given back this many bytes, but not removed.
    Stuck(u64, Unremovable),
    /// In use.
    Live,
    /// Not an orphan (any more): removed by someone else, or valid.
    Gone,
}

/// Remove the temporary file `name` unless its writer holds it.
fn reap_file(dir: &Dir, name: &str) -> Result<bool> {
    let lock = match dir.lock(name, LockKind::Exclusive, Wait::Never) {
        Ok(lock) => lock,
        Err(Error::WouldBlock { .. }) => return Ok(false),
        Err(e) if is_gone(&e) => return Ok(false),
        Err(e) => return Err(e),
    };
    let removed = match unlinkat(dir.as_fd(), name, AtFlags::empty()) {
        Ok(()) => true,
        Err(Errno::NOENT) => false,
        Err(e) => return Err(e).at(Op::Unlink, || dir.join(name)),
    };
    drop(lock);
    Ok(removed)
}

/// Whether `name` in `dir` was last changed before `boot` (seconds since
/// the epoch).
pub(crate) fn is_before(dir: &Dir, name: &str, boot: Option<i64>) -> bool {
    match (boot, statat(dir.as_fd(), name, AtFlags::SYMLINK_NOFOLLOW)) {
        (Some(boot), Ok(st)) => st.st_ctime < boot,
        _ => false,
    }
}
