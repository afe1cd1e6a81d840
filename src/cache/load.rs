//! `load(name)`: a shared lock on a committed entry for as long as it is used.

use std::fmt;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::fs::{futimens, Stat, Timespec, Timestamps, UTIME_NOW, UTIME_OMIT};
use rustix::io::Errno;

use crate::error::{Error, IoContext, Op, Result};
use crate::info::ObjectInfo;
use crate::layout::{committed, in_entry, DATA, LOCK_FILE};
use crate::lock::{FileLock, LockKind, Wait};
use crate::name::validate_name;
use crate::FsCache;

/// A committed entry, held with a shared lock: nobody can evict or remove it
/// while the guard lives. Dropping the guard releases it.
#[must_use = "the entry may be evicted as soon as the guard is dropped"]
pub struct LoadGuard {
    /// Keeps the cache open (its shared `cache.lock`) while the entry is
    /// held, even if every other handle is dropped.
    _cache: FsCache,
    name: String,
    data: PathBuf,
    info: Arc<ObjectInfo>,
    lock: FileLock,
}

/// A use recorded this recently is recorded well enough: a load within it
/// leaves the atime as it is rather than write the inode again. Least
/// recently used then means least recently used to within this much.
pub(crate) const USE_RESOLUTION: Duration = Duration::from_secs(1);

/// Whether the lock file whose status is `st` records a use within
/// [`USE_RESOLUTION`] of now (and none in the future, which a clock set
/// back would leave).
fn used_just_now(st: &Stat) -> bool {
    let Ok(now) = SystemTime::now().duration_since(UNIX_EPOCH) else {
        return false;
    };
    let Ok(secs) = u64::try_from(st.st_atime) else {
        return false;
    };
    let atime = Duration::new(secs, (st.st_atime_nsec as u32).min(999_999_999));
    now.checked_sub(atime)
        .is_some_and(|age| age < USE_RESOLUTION)
}

impl fmt::Debug for LoadGuard {
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
    pub fn load(&self, name: &str) -> Result<Option<LoadGuard>> {
        self.load_checked(name, |_, _| Ok(true))
    }

    /// [`FsCache::load`], serving the entry only if `check` (given
    /// `objects/` and the entry's `object.info`, under the shared lock,
    /// before the use is recorded) says so; otherwise it is a miss.
    pub(crate) fn load_checked(
        &self,
        name: &str,
        check: impl FnOnce(&crate::atomic::Dir, &ObjectInfo) -> Result<bool>,
    ) -> Result<Option<LoadGuard>> {
        let Some((lock, info)) = self.hold_committed(name)? else {
            return Ok(self.missed());
        };
        let objects = self.objects();
        if !self.earlier_boot().serves(Some(&info), self.boot_id()) {
            return Ok(self.missed());
        }
        if !check(objects, &info)? {
            return Ok(self.missed());
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
        let recorded = lock.locked_stat().is_some_and(used_just_now);
        match if recorded {
            Ok(())
        } else {
            futimens(&lock, &now)
        } {
            // A read-only cache, or a lock file of another user: the
            // entry is still good, its last use just is not recorded.
            Ok(()) | Err(Errno::ROFS) | Err(Errno::PERM) | Err(Errno::ACCESS) => {}
            Err(e) => return Err(e).at(Op::SetTimes, || lock.path().to_owned()),
        }
        self.count(crate::cache::Event::Hit);
        Ok(Some(LoadGuard {
            _cache: self.clone(),
            name: name.to_owned(),
            data: objects.join(name).join(DATA),
            info,
            lock,
        }))
    }
}

impl FsCache {
    /// The committed entry `name` held with a shared lock, and its
    /// `object.info`; `None` for a miss: no such entry (or not a valid
    /// one), one held exclusively right now, or a cache of a version we
    /// may not read. Takes no note of the use.
    pub(crate) fn hold_committed(&self, name: &str) -> Result<Option<(FileLock, Arc<ObjectInfo>)>> {
        validate_name(name)?;
        if !self.supported() {
            return Ok(None);
        }
        let objects = self.objects();
        let rel = in_entry(name, LOCK_FILE);
        let lock = match FileLock::open_at_if_there(
            objects.as_fd(),
            &rel,
            LockKind::Shared,
            Wait::Never,
            || objects.join(&rel),
        ) {
            Ok(Some(lock)) => lock,
            Ok(None) => return Ok(None),
            Err(e) if is_miss(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(st) = lock.locked_stat() else {
            return Ok(None);
        };
        if let Some(info) = self.validated().get(name, st) {
            return Ok(Some((lock, info)));
        }
        // Incomplete, being removed, or not an entry at all (a planted
        // link or fifo): whatever `layout::committed` refuses is a miss.
        let Some(info) = committed(objects, name, Some(st))? else {
            return Ok(None);
        };
        let info = Arc::new(info);
        self.validated().insert(name, st, Arc::clone(&info));
        Ok(Some((lock, info)))
    }

    fn missed<T>(&self) -> Option<T> {
        self.count(crate::cache::Event::Miss);
        None
    }
}

impl LoadGuard {
    /// The entry `name` that this process has just committed, held by the
    /// lock it was committed under (now shared): `get_or_build` hands it
    /// back without the gap in which a load could miss it.
    pub(super) fn just_committed(
        cache: &FsCache,
        name: &str,
        info: ObjectInfo,
        lock: FileLock,
    ) -> LoadGuard {
        LoadGuard {
            _cache: cache.clone(),
            name: name.to_owned(),
            data: cache.objects().join(name).join(DATA),
            info: Arc::new(info),
            lock,
        }
    }

    /// The entry's `data/` directory.
    pub fn path(&self) -> &Path {
        &self.data
    }

    /// The entry's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The handle the entry was loaded through.
    pub(crate) fn cache(&self) -> &FsCache {
        &self._cache
    }

    /// The entry's `object.info`, as read when it was loaded: its size and
    /// the boot that made it.
    pub fn info(&self) -> &ObjectInfo {
        &self.info
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
