//! `FsCache`: one open cache directory, shared by every thread of a process.

mod blobs;
mod build;
mod counters;
mod load;
mod namespace;
mod open;
mod promote;
mod reserve;
mod stage;
mod store;
mod trees;
mod validated;

pub use blobs::BLOB_LIMIT;
pub use build::{BuildOptions, Built, GiveUp};
pub use counters::Counters;
pub(crate) use counters::{Event, LiveCounters};
pub use load::LoadGuard;
pub(crate) use namespace::namespace_dirs;
pub use open::{OpenOptions, DEFAULT_MAXIMUM};
pub use promote::PromoteError;
pub(crate) use reserve::{reserved_in, Accounted};
pub use stage::StageGuard;
pub use store::{Commit, CommitError, StoreGuard};

use std::fmt;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use crate::atomic::Dir;
use crate::beneath::open_beneath;
use crate::durability::{Durability, EarlierBoot};
use crate::error::{Error, IoContext, Op, Result};
use crate::info::{CacheInfo, MaxSize};
use crate::integrity::Integrity;
use crate::layout;
use crate::lock::{FileLock, LockKind, Wait};
use crate::size::{self, Accounting, HealGate};

/// An open cache: the handle every operation starts from.
///
/// A cheap handle: cloning it shares one open cache (an `Arc`), it is
/// `Send + Sync + 'static`, and the guards it hands out own a clone, so
/// they may outlive the scope that opened the cache, move to other threads
/// (or into `tokio::task::spawn_blocking`) and live in structs. Each guard
/// still holds its own open file descriptions and locks: two guards conflict
/// inside one process exactly as in two processes.
///
/// The open cache holds a shared lock on `cache.lock` for as long as any
/// clone or guard lives, so that an exclusive holder of that lock knows
/// nobody is using the cache; dropping the last handle while guards live
/// is safe, and the lock goes with the last of them.
///
/// # Examples
///
/// ```
/// use fscache::{FsCache, MaxSize};
/// let dir = tempfile::tempdir().unwrap();
/// let cache = FsCache::open("my-tool", dir.path())?;
/// cache.set_maximum_size(MaxSize::Unlimited)?;
/// let entry = cache.store("built-elsewhere")?;
/// drop(cache); // the guard owns what it needs
/// let worker = std::thread::spawn(move || {
///     std::fs::write(entry.path().join("out"), b"x").unwrap();
///     entry.commit().map(|outcome| outcome.is_stored())
/// });
/// assert!(worker.join().unwrap()?);
/// # Ok::<(), fscache::Error>(())
/// ```
#[derive(Clone)]
pub struct FsCache {
    inner: Arc<Inner>,
}

/// What one open cache holds, shared by its handles and guards.
pub(crate) struct Inner {
    /// First, so that it drops first: the victims it still holds are
    /// removed while the handle's lock on `cache.lock` says it is in use.
    remover: crate::maint::Remover,
    root: Dir,
    objects: Arc<Dir>,
    stage: Arc<Dir>,
    app_id: String,
    boot_id: String,
    info: Config,
    heal_gate: HealGate,
    counters: LiveCounters,
    _cache_lock: FileLock,
    pub(crate) durability: Durability,
    pub(crate) earlier_boot: EarlierBoot,
    /// For a namespace: the cache whose budget it shares.
    parent: Option<FsCache>,
    pub(crate) integrity: Integrity,
    validated: validated::Validated,
    reserve: reserve::Reserve,
    sampler: crate::maint::Sampler,
}

/// A handle's copy of `cache.info`, and whether its version lets us touch
/// `objects/`, kept apart: every load asks that, and a load of one flag
/// costs it less than a lock.
#[derive(Debug)]
pub(crate) struct Config {
    info: RwLock<CacheInfo>,
    supported: AtomicBool,
}

impl Config {
    pub(crate) fn new(info: CacheInfo) -> Config {
        Config {
            supported: AtomicBool::new(info.is_supported()),
            info: RwLock::new(info),
        }
    }

    fn get(&self) -> CacheInfo {
        self.info.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, fresh: CacheInfo) {
        let mut info = self.info.write().unwrap_or_else(|p| p.into_inner());
        self.supported
            .store(fresh.is_supported(), Ordering::Relaxed);
        *info = fresh;
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.reserve.release(&Accounting {
            root: &self.root,
            objects: &self.objects,
            gate: &self.heal_gate,
            counters: &self.counters,
            up: self.parent.as_ref(),
        });
        counters::flush_on_close(&self.root, &self.objects, &self.counters);
    }
}

impl From<Inner> for FsCache {
    fn from(inner: Inner) -> FsCache {
        FsCache {
            inner: Arc::new(inner),
        }
    }
}

impl fmt::Debug for FsCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FsCache")
            .field("path", &self.inner.root.path())
            .field("app_id", &self.inner.app_id)
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
        self.inner.root.path()
    }

    /// The application id given to [`FsCache::open`].
    pub fn app_id(&self) -> &str {
        &self.inner.app_id
    }

    /// The application-specific boot id of this boot; new entries are
    /// tagged with it.
    pub fn boot_id(&self) -> &str {
        &self.inner.boot_id
    }

    /// The configuration as last read (at open, or by
    /// [`FsCache::reload_info`] or an update).
    pub fn info(&self) -> CacheInfo {
        self.inner.info.get()
    }

    /// Whether this cache's version lets us touch `objects/`, without a
    /// copy of the whole configuration (the load path asks every time).
    pub(crate) fn supported(&self) -> bool {
        self.inner.info.supported.load(Ordering::Relaxed)
    }

    /// Read `cache.info` again, picking up changes made by others.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if it cannot be read.
    pub fn reload_info(&self) -> Result<CacheInfo> {
        let fresh = read_info(&self.inner.root)?;
        self.inner.info.set(fresh.clone());
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
        let path = || self.inner.root.join(layout::CACHE_INFO);
        let lock = self
            .root()
            .lock(layout::CACHE_INFO, LockKind::Exclusive, Wait::Forever)?;
        let raw = read_all(&lock, &path())?;
        let current = CacheInfo::parse(&raw);
        if !current.is_supported() {
            return Err(Error::UnsupportedVersion {
                path: self.inner.root.path().to_owned(),
                version: current.version,
            });
        }
        let merged = update
            .merge_into(&raw)
            .ok_or_else(|| Error::corrupt(path(), "not a JSON object; it is left as it is"))?;
        let mode = lock.locked_stat().map(crate::atomic::mode_of);
        self.inner.root.replace_with_mode(
            layout::CACHE_INFO,
            &merged,
            &self.inner.objects,
            mode,
        )?;
        crate::failpoint!("info-after-temp");
        drop(lock);
        let fresh = CacheInfo::parse(&merged);
        self.inner.info.set(fresh.clone());
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
        size::read_unlocked(&self.inner.root)?.ok_or_else(|| {
            Error::corrupt(
                self.inner.root.join(layout::CACHE_SIZE),
                "not a non-negative JSON integer",
            )
        })
    }

    pub(crate) fn root(&self) -> &Dir {
        &self.inner.root
    }

    pub(crate) fn objects(&self) -> &Arc<Dir> {
        &self.inner.objects
    }

    /// This handle's choice of what to evict (see `maint::sample`).
    pub(crate) fn sampler(&self) -> &crate::maint::Sampler {
        &self.inner.sampler
    }

    /// This handle's thread for evicted entries (see `maint::remover`).
    pub(crate) fn remover(&self) -> &crate::maint::Remover {
        &self.inner.remover
    }

    /// What this handle holds in reserve (see `reserve`).
    pub(crate) fn reserve(&self) -> &reserve::Reserve {
        &self.inner.reserve
    }

    /// The entries this handle has checked (see `validated`).
    pub(crate) fn validated(&self) -> &validated::Validated {
        &self.inner.validated
    }

    pub(crate) fn stage_dir(&self) -> &Arc<Dir> {
        &self.inner.stage
    }

    /// The handle's durability policy for new stores.
    pub(crate) fn durability(&self) -> Durability {
        self.inner.durability
    }

    /// The handle's policy for entries of earlier boots.
    pub(crate) fn earlier_boot(&self) -> EarlierBoot {
        self.inner.earlier_boot
    }

    /// The handle's integrity policy for new stores.
    pub(crate) fn integrity(&self) -> Integrity {
        self.inner.integrity
    }

    /// Every change of `cache.size` goes through here.
    pub(crate) fn accounting(&self) -> Accounting<'_> {
        Accounting {
            root: &self.inner.root,
            objects: &self.inner.objects,
            gate: &self.inner.heal_gate,
            counters: &self.inner.counters,
            up: self.inner.parent.as_ref(),
        }
    }

    pub(crate) fn live_counters(&self) -> &LiveCounters {
        &self.inner.counters
    }

    /// Fail unless this cache's version lets us touch `objects/`.
    pub(crate) fn require_supported(&self) -> Result<CacheInfo> {
        let info = self.info();
        if info.is_supported() {
            Ok(info)
        } else {
            Err(Error::UnsupportedVersion {
                path: self.inner.root.path().to_owned(),
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
