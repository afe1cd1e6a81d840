//! The orphan sweep: anonymous entries and files whose lock nobody holds
//! belong to dead processes.

use std::fmt;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use rustix::fs::{statat, unlinkat, AtFlags};
use rustix::io::Errno;

use crate::atomic::Dir;
use crate::error::{Error, IoContext, Op, Result};
use crate::layout::{in_entry, is_regular, read_info, remove_entry, LOCK_FILE, OBJECT_INFO};
use crate::lock::{LockKind, Wait};
use crate::maint::scan::{boot_time, is_before, scan, Kind};
use crate::maint::victim::{is_gone, Fate, Take};
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
    /// Anonymous directories without a lock file that are not empty, left
    /// in place. No protocol makes one (a creator links its lock before it
    /// puts anything in; a remover empties the directory before it unlinks
    /// the lock), so each is debris of another tool or of a hand; but a
    /// cleaner may only ever `rmdir` a lockless directory (see
    /// [`FsCache::sweep_orphans`]), so it is for a person to look at.
    pub lockless: Vec<PathBuf>,
    /// Orphans and invalid entries we may not lock or remove (another
    /// user's, with modes that keep us out): skipped like entries in use.
    pub denied: u64,
    /// Build locks (`builds/<name>`) that nobody held, removed: what a
    /// builder killed in [`FsCache::get_or_build`] leaves.
    pub build_locks: u64,
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

impl FsCache {
    /// Remove every orphan: `uuid-*` directories in `objects/` and `stage/`
    /// and `uuid-*` files whose lock nobody holds, giving back the size of
    /// any that had been accounted; and named entries that are not valid
    /// (see the crate docs) and that nobody holds.
    ///
    /// Liveness is decided by the lock alone, never by age. An anonymous
    /// directory without a lock file may belong to a creator between its
    /// `mkdir` and the link of its lock, or to a remover between the unlink
    /// of its lock and its `rmdir` (ours or osbuild's): the sweep only ever
    /// tries `rmdir` on it, which succeeds only while it is empty, and puts
    /// nothing into it. Such a directory that is not empty is left in
    /// place and listed in [`SweepReport::lockless`]: it is no state of any
    /// protocol, and who made it is for a person to find out.
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
        let boot = boot_time();
        for (dir, holds_entries) in [(self.objects(), true), (self.stage_dir(), false)] {
            for child in scan(dir, holds_entries)? {
                let name = child.name.as_str();
                let old = is_before(dir, name, boot);
                let reaped = match child.kind {
                    Kind::AnonymousDir => self.reap_anonymous(dir, name, holds_entries)?,
                    Kind::AnonymousFile => reap_file(dir, name)?,
                    Kind::Named => self.reap_invalid(name)?,
                };
                match reaped {
                    Reaped::Removed(bytes) => {
                        report.bytes_given_back = report.bytes_given_back.saturating_add(bytes);
                        match child.kind {
                            Kind::AnonymousDir => report.orphan_dirs += 1,
                            Kind::AnonymousFile => report.orphan_files += 1,
                            Kind::Named => report.invalid_entries += 1,
                        }
                        if child.kind != Kind::Named {
                            report.from_previous_boot += u64::from(old);
                        }
                    }
                    Reaped::Stuck(bytes, why) => {
                        report.bytes_given_back = report.bytes_given_back.saturating_add(bytes);
                        report.unremovable.push(why);
                    }
                    Reaped::Lockless => report.lockless.push(dir.join(name)),
                    Reaped::Live => report.live += 1,
                    Reaped::Denied => report.denied += 1,
                    Reaped::Gone => {}
                }
            }
        }
        self.sweep_build_locks(&mut report)?;
        Ok(report)
    }

    /// Remove the anonymous directory `name` in `dir` unless its owner is
    /// alive.
    fn reap_anonymous(&self, dir: &Dir, name: &str, accounted: bool) -> Result<Reaped> {
        let rel = in_entry(name, LOCK_FILE);
        // A lock that appears while we look makes us look once more.
        for _ in 0..2 {
            let lock = match dir.lock(&rel, LockKind::Exclusive, Wait::Never) {
                Ok(lock) => lock,
                Err(Error::WouldBlock { .. }) => return Ok(Reaped::Live),
                Err(e) if e.errno() == Some(Errno::NOENT.raw_os_error()) => {
                    match reap_lockless(dir, name)? {
                        Some(reaped) => return Ok(reaped),
                        None => continue,
                    }
                }
                Err(e) if is_gone(&e) => return Ok(Reaped::Gone),
                Err(e) if e.is_denied() => return Ok(Reaped::Denied),
                Err(e) => return Err(e),
            };
            if !lock.locked_stat().is_some_and(is_regular) {
                // A fifo or device where the lock belongs: not ours.
                return Ok(Reaped::Gone);
            }
            crate::failpoint!("sweep-after-lock");
            let entry = match dir.open_dir(name) {
                Ok(entry) => entry,
                Err(e) if is_gone(&e) => return Ok(Reaped::Gone),
                Err(e) => return Err(e),
            };
            let mut bytes = 0;
            if accounted {
                let recorded = read_info(entry.as_fd(), OBJECT_INFO, &entry.join(OBJECT_INFO))?;
                bytes = self
                    .accounting()
                    .give_back(&entry, recorded.map_or(0, |i| i.size))?;
            }
            // Whatever stops the removal of one orphan (another user's
            // files in it, a directory moved under the walk) must not stop
            // the sweep of all the others, nor everything that sweeps first.
            let reaped = match remove_entry(dir, name, &entry) {
                Ok(()) => Reaped::Removed(bytes),
                Err(e) => Reaped::Stuck(bytes, Unremovable::from_error(entry.path(), e)?),
            };
            drop(lock);
            return Ok(reaped);
        }
        Ok(Reaped::Live)
    }

    /// Remove the named entry `name` if it is not a valid one and nobody
    /// holds it, giving back what its `object.info` accounted, if any.
    fn reap_invalid(&self, name: &str) -> Result<Reaped> {
        if crate::layout::committed(self.objects(), name, None)?.is_some() {
            return Ok(Reaped::Gone);
        }
        let victim = match self.take_victim(name, None)? {
            Take::Held(victim) => victim,
            Take::InUse => return Ok(Reaped::Live),
            Take::Denied => return Ok(Reaped::Denied),
            // A removal cut short after it unlinked the lock leaves the
            // directory empty and lockless: what a cleaner may `rmdir`.
            Take::Gone if !self.has_lock_file(name)? => {
                return Ok(reap_lockless(self.objects(), name)?.unwrap_or(Reaped::Gone))
            }
            Take::Gone => return Ok(Reaped::Gone),
        };
        // Recheck under the lock: where RENAME_NOREPLACE is missing, a
        // committer's plain rename may have put a new entry at the name.
        if crate::layout::committed(self.objects(), name, victim.locked_stat())?.is_some() {
            return Ok(Reaped::Gone);
        }
        let gone = self.remove_victims(vec![*victim])?;
        Ok(match gone.into_iter().next() {
            Some(gone) => match gone.fate {
                Fate::Removed => Reaped::Removed(gone.size),
                Fate::Stuck(why) => Reaped::Stuck(gone.size, why),
                Fate::Denied => Reaped::Denied,
            },
            None => Reaped::Gone,
        })
    }
}

impl FsCache {
    /// Whether the entry `name` has anything at its `object.lock`.
    fn has_lock_file(&self, name: &str) -> Result<bool> {
        let rel = in_entry(name, LOCK_FILE);
        match statat(
            self.objects().as_fd(),
            rel.as_str(),
            AtFlags::SYMLINK_NOFOLLOW,
        ) {
            Ok(_) => Ok(true),
            Err(Errno::NOENT) | Err(Errno::NOTDIR) => Ok(false),
            Err(e) => Err(e).at(Op::Stat, || self.objects().join(&rel)),
        }
    }
}

enum Reaped {
    /// Removed, giving back this many bytes.
    Removed(u64),
    /// Given back this many bytes, but not removed.
    Stuck(u64, Unremovable),
    /// An anonymous directory without a lock, not empty, left in place.
    Lockless,
    /// In use.
    Live,
    /// Another user's, and we may not lock or remove it.
    Denied,
    /// Not an orphan (any more): removed by someone else, valid, or not a
    /// file of the format's.
    Gone,
}

/// What a cleaner may do to an anonymous directory without a lock file:
/// `rmdir` it while it is empty (FORMAT.md, "Cleaning up"). `None` if a
/// lock file has appeared since: look again.
fn reap_lockless(dir: &Dir, name: &str) -> Result<Option<Reaped>> {
    match unlinkat(dir.as_fd(), name, AtFlags::REMOVEDIR) {
        Ok(()) => return Ok(Some(Reaped::Removed(0))),
        Err(Errno::NOENT) | Err(Errno::NOTDIR) => return Ok(Some(Reaped::Gone)),
        Err(Errno::NOTEMPTY) | Err(Errno::EXIST) => {}
        Err(Errno::ACCESS) | Err(Errno::PERM) => return Ok(Some(Reaped::Denied)),
        Err(e) => return Err(e).at(Op::RemoveDir, || dir.join(name)),
    }
    let rel = in_entry(name, LOCK_FILE);
    match statat(dir.as_fd(), rel.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
        // A creator linked its lock in after we looked, and began to fill.
        Ok(_) => return Ok(None),
        Err(Errno::NOENT) => {}
        Err(Errno::NOTDIR) => return Ok(Some(Reaped::Gone)),
        Err(e) => return Err(e).at(Op::Stat, || dir.join(&rel)),
    }
    Ok(Some(Reaped::Lockless))
}

/// Remove the temporary file `name` unless its writer holds it.
fn reap_file(dir: &Dir, name: &str) -> Result<Reaped> {
    let lock = match dir.lock(name, LockKind::Exclusive, Wait::Never) {
        Ok(lock) => lock,
        Err(Error::WouldBlock { .. }) => return Ok(Reaped::Live),
        Err(e) if is_gone(&e) => return Ok(Reaped::Gone),
        Err(e) if e.is_denied() => return Ok(Reaped::Denied),
        Err(e) => return Err(e),
    };
    let reaped = match unlinkat(dir.as_fd(), name, AtFlags::empty()) {
        Ok(()) => Reaped::Removed(0),
        Err(Errno::NOENT) => Reaped::Gone,
        Err(Errno::ACCESS) | Err(Errno::PERM) => Reaped::Denied,
        Err(e) => return Err(e).at(Op::Unlink, || dir.join(name)),
    };
    drop(lock);
    Ok(reaped)
}
