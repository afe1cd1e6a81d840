//! `FsCache`: one open cache directory, shared by every thread of a process.

mod load;
mod stage;
mod store;

pub use load::LoadGuard;
pub use stage::StageGuard;
pub use store::{Commit, CommitError, StoreGuard};

use std::fmt;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::RwLock;

use std::os::fd::BorrowedFd;

use rustix::fs::{statat, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::atomic::{Dir, Replace};
use crate::beneath::open_beneath;
use crate::durability::{Durability, EarlierBoot};
use crate::error::{not_a_file, Error, IoContext, Op, Result};
use crate::info::{self, CacheInfo, MaxSize, ObjectInfo};
use crate::lock::{FileLock, LockKind, Wait};
use crate::size::{self, SizeLock};

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
    _cache_lock: FileLock,
    pub(crate) durability: Durability,
    pub(crate) earlier_boot: EarlierBoot,
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
    /// Open the cache at `path`, creating it (and the path to it) if needed.
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
        let path = path.as_ref();
        std::fs::create_dir_all(path).at(Op::CreateDir, || path.to_owned())?;
        let root = Dir::open(path)?;
        root.create_dir(info::OBJECTS)?;
        root.create_dir(info::STAGE)?;
        let objects = root.open_dir(info::OBJECTS)?;
        let stage = root.open_dir(info::STAGE)?;
        let initial_info = CacheInfo::initial();
        for (name, content) in [
            (info::CACHE_TAG, info::CACHE_TAG_CONTENT),
            (info::CACHE_INFO, initial_info.as_slice()),
            (info::CACHE_LOCK, b"".as_slice()),
            (info::CACHE_SIZE, b"0".as_slice()),
        ] {
            match statat(root.as_fd(), name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(_) => {}
                Err(Errno::NOENT) => {
                    let _ = root.write_file(name, content, Replace::No, &objects)?;
                }
                Err(e) => return Err(e).at(Op::Stat, || root.join(name)),
            }
        }
        let boot_id = crate::bootid::current(app_id)?;
        let cache_lock = root.lock(info::CACHE_LOCK, LockKind::Shared, Wait::Forever)?;
        let info = read_info(&root)?;
        Ok(FsCache {
            root,
            objects,
            stage,
            app_id: app_id.to_owned(),
            boot_id,
            info: RwLock::new(info),
            _cache_lock: cache_lock,
            durability: Durability::None,
            earlier_boot: EarlierBoot::Serve,
        })
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
    /// [`Error::InvalidConfig`] for a low watermark outside 1..=100;
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
        if update
            .low_watermark_percent
            .is_some_and(|p| !(1..=100).contains(&p))
        {
            return Err(Error::InvalidConfig {
                key: info::LOW_WATERMARK_KEY,
                reason: "a percentage from 1 to 100",
            });
        }
        let path = || self.root.join(info::CACHE_INFO);
        let lock = self
            .root
            .lock(info::CACHE_INFO, LockKind::Exclusive, Wait::Forever)?;
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
        let _ = self
            .root
            .write_file(info::CACHE_INFO, &merged, Replace::Yes, &self.objects)?;
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
                self.root.join(info::CACHE_SIZE),
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

    /// Enter the `cache.size` critical section.
    pub(crate) fn lock_size(&self) -> Result<SizeLock<'_>> {
        SizeLock::acquire(&self.root, &self.objects)
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

/// The `object.info` at `rel` below `dir`: `None` unless it is a regular
/// file holding a valid one (a link, directory, socket or fifo planted
/// there, or garbage, all read as "no valid info").
pub(crate) fn read_object_info(
    dir: BorrowedFd<'_>,
    rel: &str,
    path: &Path,
) -> Result<Option<ObjectInfo>> {
    let fd = match open_beneath(dir, rel, OFlags::RDONLY, Mode::empty()) {
        Ok(fd) => fd,
        Err(e) if not_a_file(e) => return Ok(None),
        Err(e) => return Err(e).at(Op::Open, || path.to_owned()),
    };
    let st = rustix::fs::fstat(&fd).at(Op::Stat, || path.to_owned())?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Ok(None);
    }
    Ok(ObjectInfo::parse(&read_all(&fd, path)?))
}

/// Read and parse `cache.info`; an unreadable form reads as all unset.
fn read_info(root: &Dir) -> Result<CacheInfo> {
    let path = root.join(info::CACHE_INFO);
    let fd = open_beneath(
        root.as_fd(),
        info::CACHE_INFO,
        OFlags::RDONLY,
        Mode::empty(),
    )
    .at(Op::Open, || path.clone())?;
    Ok(CacheInfo::parse(&read_all(&fd, &path)?))
}
