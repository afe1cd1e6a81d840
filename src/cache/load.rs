//! `load(name)`: a shared lock on a committed entry for as long as it is used.

use std::fmt;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use rustix::fs::{
    futimens, statat, AtFlags, FileType, OFlags, Timespec, Timestamps, UTIME_NOW, UTIME_OMIT,
};
use rustix::io::Errno;

use crate::atomic::LOCK_FILE;
use crate::cache::read_object_info;
use crate::error::{Error, IoContext, Op, Result};
use crate::info::{ObjectInfo, DATA, OBJECT_INFO};
use crate::lock::{FileLock, LockKind, Wait};
use crate::name::validate_name;
use crate::FsCache;

/// A committed entry, held with a shared lock: nobody can evict or remove it
/// while the guard lives. Dropping the guard releases it.
#[must_use = "the entry may be evicted as soon as the guard is dropped"]
pub struct LoadGuard<'c> {
    cache: &'c FsCache,
    name: String,
    data: PathBuf,
    lock: FileLock,
}

impl fmt::Debug for LoadGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadGuard")
            .field("name", &self.name)
            .field("data", &self.data)
            .finish()
    }
}

/// Errors that mean "not here (right now)": a miss, not a failure. A link,
/// socket or fifo where the lock file belongs is not an entry either.
fn is_miss(e: &Error) -> bool {
    matches!(e, Error::WouldBlock { .. }) || e.is_not_a_file()
}

/// Whether `rel` below `dir` is, without following links, of type `kind`.
fn is_a(dir: &crate::atomic::Dir, rel: &str, kind: FileType) -> Result<bool> {
    match statat(dir.as_fd(), rel, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(FileType::from_raw_mode(st.st_mode) == kind),
        Err(Errno::NOENT) | Err(Errno::NOTDIR) => Ok(false),
        Err(e) => Err(e).at(Op::Stat, || dir.join(rel)),
    }
}

impl FsCache {
    /// Look up the entry `name`. A hit holds a shared lock on it until the
    /// guard is dropped and marks it as just used (the lock file's atime).
    ///
    /// A miss is `Ok(None)`: no such entry, an entry still being committed,
    /// removed, or locked by an evictor right now, or a cache whose version
    /// is unsupported. Loading never waits.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] for a name no entry can have; [`Error::Io`]
    /// for failures other than the entry not being there.
    ///
    /// # Examples
    ///
    /// ```
    /// use fscache::FsCache;
    /// let dir = tempfile::tempdir().unwrap();
    /// let cache = FsCache::open("my-tool", dir.path())?;
    /// assert!(cache.load("never-stored")?.is_none());
    /// # Ok::<(), fscache::Error>(())
    /// ```
    pub fn load(&self, name: &str) -> Result<Option<LoadGuard<'_>>> {
        validate_name(name)?;
        if !self.info().is_supported() {
            return Ok(None);
        }
        let objects = self.objects();
        let rel = format!("{name}/{LOCK_FILE}");
        let lock = match FileLock::open_at(
            objects.as_fd(),
            &rel,
            LockKind::Shared,
            Wait::Never,
            OFlags::empty(),
            || objects.join(&rel),
        ) {
            Ok(lock) => lock,
            Err(e) if is_miss(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        // Without object.info the entry is incomplete or being removed;
        // a `data` that is not a directory (a planted link) is no entry we
        // may hand out.
        if !is_a(
            objects,
            &format!("{name}/{OBJECT_INFO}"),
            FileType::RegularFile,
        )? || !is_a(objects, &format!("{name}/{DATA}"), FileType::Directory)?
        {
            return Ok(None);
        }
        if !self.serves(name)? {
            return Ok(None);
        }
        let now = Timestamps {
            last_access: Timespec {
                tv_sec: 0,
                tv_nsec: UTIME_NOW,
            },
            last_modification: Timespec {
                tv_sec: 0,
                tv_nsec: UTIME_OMIT,
            },
        };
        match futimens(&lock, &now) {
            // A read-only cache, or a lock file of another user: the
            // entry is still good, its last use just is not recorded.
            Ok(()) | Err(Errno::ROFS) | Err(Errno::PERM) | Err(Errno::ACCESS) => {}
            Err(e) => return Err(e).at(Op::SetTimes, || objects.join(&rel)),
        }
        Ok(Some(LoadGuard {
            cache: self,
            name: name.to_owned(),
            data: objects.join(name).join(DATA),
            lock,
        }))
    }
}

impl LoadGuard<'_> {
    /// The entry's `data/` directory.
    pub fn path(&self) -> &Path {
        &self.data
    }

    /// The entry's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The entry's `object.info`: its size and the boot that made it.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if it cannot be read; [`Error::Corrupt`] if it is not
    /// the JSON the format requires.
    pub fn info(&self) -> Result<ObjectInfo> {
        let objects = self.cache.objects();
        let rel = format!("{}/{OBJECT_INFO}", self.name);
        read_object_info(objects.as_fd(), &rel, &objects.join(&rel))?
            .ok_or_else(|| Error::corrupt(objects.join(&rel), "not a valid object.info"))
    }

    /// Release the entry, reporting failure (dropping does the same).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if unlocking fails.
    pub fn release(self) -> Result<()> {
        self.lock.unlock()
    }
}
