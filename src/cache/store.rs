//! `store(name)`: fill an anonymous entry, then commit it under its name.

use std::fmt;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use rustix::fs::{mkdirat, Mode};
use rustix::io::Errno;

use crate::atomic::{AnonymousDir, Dir};
use crate::cache::{Accounted, LoadGuard};
use crate::durability::{self, Durability};
use crate::error::{Error, IoContext, Op, Result};
use crate::info::{MaxSize, ObjectInfo};
use crate::integrity::{self, Integrity};
use crate::layout::{in_entry, DATA, LOCK_FILE};
use crate::lock::{FileLock, LockKind, Wait};
use crate::name::validate_name;
use crate::tree;
use crate::FsCache;

/// What [`StoreGuard::commit`] did with the entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "a commit may store nothing; check what happened"]
#[non_exhaustive]
pub enum Commit {
    /// Stored under its name, accounting `size` bytes.
    Stored {
        /// The bytes accounted (and recorded in `object.info`).
        size: u64,
    },
    /// An entry of that name exists already and wins; ours is gone.
    NameTaken,
    /// Larger than the cache's maximum: it could never fit.
    TooLarge {
        /// The entry's size.
        size: u64,
        /// The cache's maximum.
        max: MaxSize,
    },
    /// The size limit refused it and not enough could be evicted.
    NoRoom {
        /// The entry's size.
        size: u64,
    },
    /// The cache's format version is not supported: the entry was a
    /// staging entry all along and is gone.
    Unsupported,
}

impl Commit {
    /// Whether the entry is now in the cache under its name.
    pub fn is_stored(&self) -> bool {
        matches!(self, Commit::Stored { .. })
    }
}

impl fmt::Display for Commit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Commit::Stored { size } => write!(f, "stored ({size} bytes)"),
            Commit::NameTaken => f.write_str("name already taken"),
            Commit::TooLarge {
                max: MaxSize::Bytes(0),
                ..
            } => f.write_str(
                "the cache's maximum size is 0: it holds no entries; set a maximum \
                 (FsCache::set_maximum_size, OpenOptions::maximum_size, or `fscache init --max-size`)",
            ),
            Commit::TooLarge {
                size,
                max: MaxSize::Bytes(max),
            } => write!(f, "too large ({size} bytes, the maximum is {max})"),
            Commit::TooLarge { size, .. } => write!(f, "too large ({size} bytes)"),
            Commit::NoRoom { size } => write!(f, "no room ({size} bytes)"),
            Commit::Unsupported => f.write_str("cache version unsupported"),
        }
    }
}

/// A failed [`StoreGuard::commit`]: the error, and the guard back, its entry
/// as it was before the commit, so the caller may retry or drop it.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct CommitError {
    /// What went wrong.
    #[source]
    pub error: Error,
    /// The entry, still uncommitted.
    pub guard: Box<StoreGuard>,
}

impl From<CommitError> for Error {
    fn from(e: CommitError) -> Error {
        e.error
    }
}

/// An entry being filled: [`StoreGuard::path`] is its empty `data/`.
///
/// Nobody else can see or lock it until [`StoreGuard::commit`]. Dropping the
/// guard removes everything it created.
#[must_use = "dropping the guard without `commit()` discards the entry"]
pub struct StoreGuard {
    cache: FsCache,
    name: String,
    entry: Option<AnonymousDir>,
    data: PathBuf,
    /// The cache's version is unsupported: this is a staging entry.
    degraded: bool,
    pub(crate) durability: Durability,
    pub(crate) integrity: Integrity,
}

impl fmt::Debug for StoreGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreGuard")
            .field("name", &self.name)
            .field("data", &self.data)
            .field("degraded", &self.degraded)
            .finish()
    }
}

impl FsCache {
    /// Start storing an entry called `name`: returns a guard whose
    /// [`path`](StoreGuard::path) is an empty directory to fill.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] for a name the cache cannot use (see
    /// [`validate_name`](crate::validate_name)); [`Error::Io`] if the entry
    /// cannot be created.
    ///
    /// If the cache's version is unsupported this still succeeds: the
    /// entry is made in `stage/` and its commit reports
    /// [`Commit::Unsupported`].
    ///
    /// # Examples
    ///
    /// ```
    /// use fscache::{Commit, FsCache, MaxSize};
    /// let dir = tempfile::tempdir().unwrap();
    /// let cache = FsCache::open("my-tool", dir.path())?;
    /// cache.set_maximum_size(MaxSize::Unlimited)?;
    /// let entry = cache.store("hello")?;
    /// std::fs::write(entry.path().join("greeting"), "hi").unwrap();
    /// assert!(matches!(entry.commit()?, Commit::Stored { .. }));
    /// let hit = cache.load("hello")?.expect("just stored");
    /// assert_eq!(std::fs::read(hit.path().join("greeting")).unwrap(), b"hi");
    /// # Ok::<(), fscache::Error>(())
    /// ```
    pub fn store(&self, name: &str) -> Result<StoreGuard> {
        validate_name(name)?;
        let degraded = !self.supported();
        let parent = if degraded {
            self.stage_dir()
        } else {
            self.objects()
        };
        let entry = parent.create_anonymous()?;
        let data = entry.path().join(DATA);
        if let Err(e) = mkdirat(entry.dir().as_fd(), DATA, Mode::from_raw_mode(0o777)) {
            let _ = entry.remove();
            return Err(e).at(Op::CreateDir, || data);
        }
        crate::failpoint!("store-after-data");
        Ok(StoreGuard {
            cache: self.clone(),
            name: name.to_owned(),
            entry: Some(entry),
            data,
            degraded,
            durability: self.durability(),
            integrity: self.integrity(),
        })
    }
}

impl StoreGuard {
    /// A guard for `entry`, an anonymous entry already in `objects/` with
    /// its `data/`, to commit as `name` (a stage being promoted).
    pub(crate) fn adopt(cache: FsCache, name: &str, entry: AnonymousDir) -> StoreGuard {
        StoreGuard {
            data: entry.path().join(DATA),
            durability: cache.durability(),
            integrity: cache.integrity(),
            cache,
            name: name.to_owned(),
            entry: Some(entry),
            degraded: false,
        }
    }

    /// The entry, until a commit has published or settled it.
    pub(crate) fn entry(&self) -> Option<&AnonymousDir> {
        self.entry.as_ref()
    }

    /// Take the entry out of the guard, which then removes nothing.
    pub(crate) fn into_entry(mut self) -> Option<AnonymousDir> {
        self.entry.take()
    }

    /// The `data/` directory to fill.
    pub fn path(&self) -> &Path {
        &self.data
    }

    /// The name the entry will be committed under.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The entry directory, until the guard lets go of it.
    pub(crate) fn entry_dir(&self) -> Option<&crate::atomic::Dir> {
        self.entry.as_ref().map(AnonymousDir::dir)
    }

    /// Commit the entry under its name.
    ///
    /// In order: measure `data/`; refuse it if it can never fit; in the
    /// `cache.size` critical section, account it (evicting least recently
    /// used entries if it does not fit) and write `object.info`; then rename
    /// it into place with `RENAME_NOREPLACE`. If the name is taken, the
    /// other entry wins and ours is removed with its size given back.
    ///
    /// # Errors
    ///
    /// A [`CommitError`] holding the error and this guard, its entry as
    /// before the call. Once an outcome is settled (the entry is too large,
    /// finds no room, or its name is taken) the entry is removed as a drop
    /// would remove it, and the outcome is returned even if the removal
    /// fails: what is left is an unlocked orphan for the sweep.
    pub fn commit(mut self) -> Result<Commit, CommitError> {
        match self.try_commit(false) {
            Ok((outcome, _)) => Ok(outcome),
            Err(error) => Err(CommitError {
                error,
                guard: Box::new(self),
            }),
        }
    }

    /// [`StoreGuard::commit`], handing back an entry it stored still held:
    /// its lock turned shared without ever being released, so that nothing
    /// evicts it between the commit and the caller's use of it (the remote
    /// tier's upload). `None` beside [`Commit::Stored`] only where the
    /// kernel would not convert the lock: the entry is in the cache, as
    /// after a plain commit.
    ///
    /// # Errors
    ///
    /// As [`StoreGuard::commit`].
    #[cfg_attr(not(feature = "remote"), allow(dead_code))]
    pub(crate) fn commit_held(mut self) -> Result<(Commit, Option<LoadGuard>), CommitError> {
        match self.try_commit(true) {
            Ok((outcome, held)) => {
                // Not kept: removed as `commit` removes it.
                self.discard();
                let held = held
                    .map(|p| LoadGuard::just_committed(&self.cache, &self.name, p.info, p.lock));
                Ok((outcome, held))
            }
            Err(error) => Err(CommitError {
                error,
                guard: Box::new(self),
            }),
        }
    }

    /// Remove the entry now, reporting failure (dropping does the same,
    /// silently).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if removal fails; what is left is an unlocked orphan.
    pub fn abort(mut self) -> Result<()> {
        self.entry.take().map_or(Ok(()), AnonymousDir::remove)
    }

    /// The commit. With `keep`, an entry the cache does not keep stays in
    /// the guard as it was before the call (for `get_or_build`, whose
    /// caller still needs what was built), and a stored one always comes
    /// back still locked, the lock turned shared without ever being
    /// released.
    pub(super) fn try_commit(&mut self, keep: bool) -> Result<(Commit, Option<Published>)> {
        if self.degraded {
            self.settle(keep);
            return Ok((Commit::Unsupported, None));
        }
        // A handle of its own, so that what it accounts does not borrow the
        // guard, which settles the entry.
        let cache = &self.cache.clone();
        let objects = cache.objects();
        // A guard that comes back in a CommitError still holds its entry;
        // only a commit that succeeded or settled an outcome lets go of it.
        let Some(entry) = self.entry.as_ref() else {
            return Err(durability::spent(objects, &self.name));
        };
        let data = tree::open_dir(entry.dir().as_fd(), DATA).at(Op::Open, || self.data.clone())?;
        let (size, sync, digest) =
            integrity::measure(data, &self.data, self.durability, self.integrity)?;
        crate::failpoint!("commit-after-measure");
        let info = cache.info();
        let max = info.effective_maximum();
        if !max.admits(size) {
            self.settle(keep);
            return Ok((Commit::TooLarge { size, max }, None));
        }
        let object_info = ObjectInfo {
            creation_boot_id: Some(cache.boot_id().to_owned()),
            size,
            durable: sync.is_durable(),
            digest,
        };
        let accounting = cache.accounting();
        let accounted = cache.account_entry(entry, &object_info, &info, sync.is_durable())?;
        let Some(mut accounted) = accounted else {
            self.settle(keep);
            return Ok((Commit::NoRoom { size }, None));
        };
        crate::failpoint!("commit-after-info");
        if sync.is_durable() {
            // Syncing takes time: nobody waits on the size section for it.
            drop(accounted);
            sync.before_publish(cache, entry, size)?;
            accounted = Accounted::Section(accounting.hold()?);
        }
        // The rename happens in the section (or with the reservation's
        // record locked), so that a recount never finds the entry under
        // neither name.
        match objects.rename_dir_noreplace(entry.name(), &self.name) {
            Ok(()) => {
                drop(accounted);
                crate::failpoint!("commit-after-rename");
                // Committed: releasing the lock publishes it.
                let published = match self.entry.take() {
                    Some(entry) if keep => {
                        Some(Published::held(entry, objects, &self.name, object_info))
                    }
                    _ => None,
                };
                cache.count(crate::cache::Event::Stored);
                sync.after_publish(objects)?;
                Ok((Commit::Stored { size }, published.flatten()))
            }
            Err(Errno::EXIST) | Err(Errno::NOTEMPTY) | Err(Errno::NOTDIR) => {
                accounted.give_back(&accounting, entry.dir(), size)?;
                drop(accounted);
                cache.count(crate::cache::Event::NameTaken);
                self.settle(keep);
                Ok((Commit::NameTaken, None))
            }
            Err(e) => {
                accounted.give_back(&accounting, entry.dir(), size)?;
                Err(Error::Rename {
                    from: entry.path().to_owned(),
                    to: objects.join(&self.name),
                    source: e.into(),
                })
            }
        }
    }

    /// Once the commit has settled that the cache does not keep the entry:
    /// remove it, or with `keep` leave it to the guard.
    fn settle(&mut self, keep: bool) {
        if !keep {
            self.discard();
        }
    }

    /// Remove the entry once the commit has settled that it is not kept.
    /// The outcome stands whatever the removal meets, as for a drop: what
    /// it cannot remove (an unlocked orphan) the sweep removes or reports.
    fn discard(&mut self) {
        if let Some(entry) = self.entry.take() {
            let _ = entry.remove();
        }
    }
}

/// A stored entry whose committer still holds it: the lock it was created
/// with, now shared, so it cannot be evicted between commit and use.
#[derive(Debug)]
pub(super) struct Published {
    pub(super) lock: FileLock,
    pub(super) info: ObjectInfo,
}

impl Published {
    /// Turn the committed entry's exclusive lock shared in place (the
    /// kernel converts it without releasing it). Should the kernel refuse
    /// (it has no room for locks), the lock is released as by a plain
    /// commit, and `None` returned: the entry is in the cache all the
    /// same, for the caller to load like anyone else. A stored entry is
    /// never reported as a failed commit.
    fn held(entry: AnonymousDir, objects: &Dir, name: &str, info: ObjectInfo) -> Option<Self> {
        let mut lock = entry
            .into_lock()
            .with_path(objects.join(in_entry(name, LOCK_FILE)));
        lock.relock(LockKind::Shared, Wait::Never).ok()?;
        Some(Published { lock, info })
    }
}

impl Drop for StoreGuard {
    fn drop(&mut self) {
        self.discard();
    }
}
