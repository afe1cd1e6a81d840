//! `FsCache`: one open cache directory, shared by every thread of a process.

mod load;
mod open;
mod stage;
mod store;

pub use load::LoadGuard;
pub use open::OpenOptions;
pub use stage::StageGuard;
pub use store::{Commit, CommitError, StoreGuard};

use std::fmt;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use crate::atomic::Dir;
use crate::beneath::open_beneath;
use crate::durability::{Durability, EarlierBoot};
use crate::error::{Error, IoContext, Op, Result};
use crate::info::{CacheInfo, MaxSize};
use crate::layout;
use crate::lock::{FileLock, LockKind, Wait};
use crate::size::{self, Accounting, HealGate};

/// An open cache: the handle every operation starts from.
///
/// It holds a shared lock on `cache.lock` for its whole life, so that an
/// exclusive holder of that lock knows nobody is using the cache. It is
/// `Send + Sync`: share one handle (`&FsCache` or `Arc<FsCache>`) between
/// threads; each guard it hands out owns its own locks.
pub struct FsCache {
    root: Dir,
    objects: Dir,
    stage: Dir,
    app_id: String,
    boot_id: String,
    info: RwLock<CacheInfo>,
    heal_gate: HealGate,
    counters: LiveCounters,
    _cache_lock: FileLock,
    pub(crate) durability: Durability,
    pub(crate) earlier_boot: EarlierBoot,
}

/// What one handle has done since it was opened, from [`FsCache::counters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// Loads that found their entry.
    pub hits: u64,
    /// Loads that did not.
    pub misses: u64,
    /// Commits that stored their entry.
    pub stored: u64,
    /// Times `cache.size` was recounted from the entries because it held
    /// no number, was no regular file, or left no room with nothing to
    /// evict (see [`FsCache::resync`]; at most once per minute per handle
    /// for want of room).
    pub heals: u64,
}

/// The live counters behind [`Counters`].
#[derive(Debug, Default)]
pub(crate) struct LiveCounters {
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) stored: AtomicU64,
    pub(crate) heals: AtomicU64,
}

impl fmt::Debug for FsCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FsCache")
            .field("path", &self.root.path())
            .field("app_id", &self.app_id)
            .field("info", &self.info())
            .finish()
    }
}

impl FsCache {
    /// Open the cache at `path`, creating it (and the path to it) if needed,
    /// and waiting for as long as another process keeps the whole cache to
    /// itself. [`OpenOptions`] chooses otherwise.
    ///
    /// `app_id` names the application; entries are tagged with a boot id
    /// derived from it (see [`app_boot_id`](crate::app_boot_id)). A new
    /// cache has `{"version": 1}` and so a maximum size of 0: it stores
    /// nothing until [`FsCache::set_maximum_size`] allows it.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the directories or files cannot be created or
    /// opened (a symbolic link planted at `objects`, `stage` or a top-level
    /// file is refused), or the boot id cannot be read.
    ///
    /// # Examples
    ///
    /// ```
    /// use fscache::{FsCache, MaxSize};
    /// let dir = tempfile::tempdir().unwrap();
    /// let cache = FsCache::open("my-tool", dir.path().join("cache"))?;
    /// cache.set_maximum_size(MaxSize::Bytes(1 << 30))?;
    /// assert!(cache.info().is_supported());
    /// # Ok::<(), fscache::Error>(())
    /// ```
    pub fn open(app_id: &str, path: impl AsRef<Path>) -> Result<FsCache> {
        OpenOptions::new().open(app_id, path)
    }

    /// The cache root, as given to [`FsCache::open`].
    pub fn path(&self) -> &Path {
        self.root.path()
    }

    /// The application id given to [`FsCache::open`].
    pub fn app_id(&self) -> &str {
        &self.app_id
    }

    /// The application-specific boot id of this boot; new entries are
    /// tagged with it.
    pub fn boot_id(&self) -> &str {
        &self.boot_id
    }

    /// The configuration as last read (at open, or by
    /// [`FsCache::reload_info`] or an update).
    pub fn info(&self) -> CacheInfo {
        self.info.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Read `cache.info` again, picking up changes made by others.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if it cannot be read.
    pub fn reload_info(&self) -> Result<CacheInfo> {
        let fresh = read_info(&self.root)?;
        *self.info.write().unwrap_or_else(|p| p.into_inner()) = fresh.clone();
        Ok(fresh)
    }

    /// Set the values that are `Some` in `update` in `cache.info`, keeping
    /// every other key (also ones this crate does not know). The file is
    /// read and rewritten under its write lock, so concurrent updates are
    /// ordered and none is lost. Returns the configuration now in force.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for a version this crate does not support
    /// (writing one would lock every version-1 reader out), a boot id that
    /// is not 32 lowercase hex digits, or a low watermark outside 1..=100;
    /// [`Error::UnsupportedVersion`] if the cache's version is not one this
    /// crate may write; [`Error::Corrupt`] if `cache.info` is not a JSON
    /// object (it is then never rewritten); [`Error::Io`] on I/O failure.
    ///
    /// # Examples
    ///
    /// ```
    /// use fscache::{CacheInfo, FsCache, MaxSize};
    /// let dir = tempfile::tempdir().unwrap();
    /// let cache = FsCache::open("my-tool", dir.path())?;
    /// let now = cache.update_info(&CacheInfo { maximum_size: Some(MaxSize::Unlimited), ..Default::default() })?;
    /// assert_eq!(now.effective_maximum(), MaxSize::Unlimited);
    /// # Ok::<(), fscache::Error>(())
    /// ```
    pub fn update_info(&self, update: &CacheInfo) -> Result<CacheInfo> {
        update.validate()?;
        let path = || self.root.join(layout::CACHE_INFO);
        let lock = self
            .root
            .lock(layout::CACHE_INFO, LockKind::Exclusive, Wait::Forever)?;
        let raw = read_all(&lock, &path())?;
        let current = CacheInfo::parse(&raw);
        if !current.is_supported() {
            return Err(Error::UnsupportedVersion {
                path: self.root.path().to_owned(),
                version: current.version,
            });
        }
        let merged = update
            .merge_into(&raw)
            .ok_or_else(|| Error::corrupt(path(), "not a JSON object; it is left as it is"))?;
        let mode = lock.locked_stat().map(crate::atomic::mode_of);
        self.root
            .replace_with_mode(layout::CACHE_INFO, &merged, &self.objects, mode)?;
        crate::failpoint!("info-after-temp");
        drop(lock);
        let fresh = CacheInfo::parse(&merged);
        *self.info.write().unwrap_or_else(|p| p.into_inner()) = fresh.clone();
        Ok(fresh)
    }

    /// Set `"maximum-size"` in `cache.info`.
    ///
    /// # Errors
    ///
    /// As [`FsCache::update_info`].
    pub fn set_maximum_size(&self, max: MaxSize) -> Result<()> {
        self.update_info(&CacheInfo {
            maximum_size: Some(max),
            ..CacheInfo::default()
        })
        .map(drop)
    }

    /// The bytes accounted in `cache.size` now (read without locking).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if it cannot be read; [`Error::Corrupt`] if it holds
    /// no size.
    pub fn accounted_size(&self) -> Result<u64> {
        size::read_unlocked(&self.root)?.ok_or_else(|| {
            Error::corrupt(
                self.root.join(layout::CACHE_SIZE),
                "not a non-negative JSON integer",
            )
        })
    }

    pub(crate) fn root(&self) -> &Dir {
        &self.root
    }

    pub(crate) fn objects(&self) -> &Dir {
        &self.objects
    }

    pub(crate) fn stage_dir(&self) -> &Dir {
        &self.stage
    }

    /// Every change of `cache.size` goes through here.
    pub(crate) fn accounting(&self) -> Accounting<'_> {
        Accounting {
            root: &self.root,
            objects: &self.objects,
            gate: &self.heal_gate,
            heals: &self.counters.heals,
        }
    }

    pub(crate) fn live_counters(&self) -> &LiveCounters {
        &self.counters
    }

    /// What this handle has done since it was opened: hits, misses,
    /// stores, and how often it had to heal `cache.size`.
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
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Counters {
            hits: get(&c.hits),
            misses: get(&c.misses),
            stored: get(&c.stored),
            heals: get(&c.heals),
        }
    }

    /// Fail unless this cache's version lets us touch `objects/`.
    pub(crate) fn require_supported(&self) -> Result<CacheInfo> {
        let info = self.info();
        if info.is_supported() {
            Ok(info)
        } else {
            Err(Error::UnsupportedVersion {
                path: self.root.path().to_owned(),
                version: info.version,
            })
        }
    }
}

/// Read all of a small file through its descriptor.
pub(crate) fn read_all(fd: &impl AsFd, path: &Path) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match rustix::io::pread(fd, &mut buf, out.len() as u64) {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e).at(Op::Read, || path.to_owned()),
        }
        // A configuration file is small; a huge one is not ours to parse.
        if out.len() > 1 << 20 {
            return Ok(Vec::new());
        }
    }
}

/// Read and parse `cache.info`; an unreadable form reads as all unset.
fn read_info(root: &Dir) -> Result<CacheInfo> {
    let path = root.join(layout::CACHE_INFO);
    let fd = open_beneath(
        root.as_fd(),
        layout::CACHE_INFO,
        OFlags::RDONLY,
        Mode::empty(),
    )
    .at(Op::Open, || path.clone())?;
    Ok(CacheInfo::parse(&read_all(&fd, &path)?))
}
