//! Durability: what a commit makes survive a power cut, and what a load
//! does with entries that may not have. The one place that calls `fsync`
//! and `syncfs`.
//!
//! A [`Durability::Sync`] commit makes the entry durable in two steps:
//!
//! 1. Before the rename that publishes it: every file and directory of
//!    `data/` (fsynced by the walk that measures it, see
//!    [`crate::tree::measure_and_sync`]), `object.info`, `object.lock`, the
//!    entry directory, and `cache.size` with the root that names it (so
//!    that the size an entry adds is never lost while the entry survives).
//!    A tree with more than [`FSYNC_EACH_UP_TO`] files and directories, or
//!    with something that has no descriptor to fsync (a symbolic link, a
//!    fifo, a file we may not open), is made durable by one `syncfs`
//!    instead.
//! 2. After the rename, before `commit` returns: `objects/`, whose entry
//!    the rename changed.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use crate::atomic::{AnonymousDir, Dir};
use crate::beneath::open_beneath;
use crate::error::{IoContext, Op, Result};
use crate::info::ObjectInfo;
use crate::layout::{CACHE_SIZE, OBJECT_INFO};
use crate::{tree, FsCache, StoreGuard};

/// How many files and directories of `data/` a commit fsyncs one by one;
/// a larger tree is made durable by one `syncfs` of its file system.
///
/// Measured with `cargo bench --bench durability` (group `sync_tree`) on
/// ext4 on a virtio disk, a shared 2-core machine: the time to make a
/// fresh tree of 100-byte files, ten to a directory, durable (criterion's
/// estimates; runs varied by up to 2x):
///
/// | files (fsyncs) | fsync each | syncfs | syncfs, 32 MB dirty elsewhere |
/// |---------------:|-----------:|-------:|------------------------------:|
/// |       1 (3)    |   0.57 ms  | 0.95 ms |  21 ms |
/// |      10 (12)   |   2.1 ms   | 0.40 ms |  19 ms |
/// |     100 (111)  |   39 ms    | 2.2 ms  |  19 ms |
/// |    1000 (1101) |   500 ms   | 11 ms   |  30 ms |
///
/// (`fdatasync` of the files is no cheaper: a new file's data needs its
/// metadata written anyway.) An fsync costs 0.2 to 0.5 ms here, each a
/// journal commit of its own, while one `syncfs` writes the whole tree in
/// one: on an idle file system it wins from a handful of files on. But
/// `syncfs` also writes everything that other programs have left dirty on
/// the file system, and a cache's users are typically builds writing next
/// to it: with a mere 32 MB of someone else's data waiting it costs
/// 20-30 ms whatever the size of our tree, and on a slow disk or with
/// gigabytes waiting, seconds (and it makes the others wait for their
/// write-back too). So fsync each while that costs at most about what a
/// `syncfs` costs with some data of others waiting: 64 fsyncs, ≈ 20 ms
/// here, so an entry of up to about 50 files pays a cost that depends
/// mostly on its own size (an fsync on ext4 also commits others' metadata,
/// but not their data); beyond that, `syncfs` is cheaper unless others have
/// far more waiting. A tree just above the bound pays its first 64 fsyncs
/// for nothing (the walk that measures the tree learns its size as it
/// goes), doubling at most the cost at the bound. The commit adds, either
/// way, 5 fsyncs (or none, after a `syncfs`) before the rename and one
/// after it.
pub(crate) const FSYNC_EACH_UP_TO: usize = 64;

/// What [`StoreGuard::commit`](crate::StoreGuard::commit) makes durable
/// before it returns: the policy for a power cut (or a kernel crash).
///
/// A process crash never loses a committed entry: what the kernel has
/// accepted survives the process. A power cut loses what the kernel had
/// not yet written to the disk, and only [`Durability::Sync`] makes sure
/// that a committed entry was written. Choose it per handle with
/// [`OpenOptions::durability`](crate::OpenOptions::durability) or per entry with
/// [`StoreGuard::set_durability`]. See the crate docs, *Durability*, for
/// what survives under each policy.
///
/// # Examples
///
/// ```
/// use fscache::{Commit, Durability, MaxSize, OpenOptions};
/// let dir = tempfile::tempdir().unwrap();
/// let cache = OpenOptions::new().durability(Durability::Sync).open("my-tool", dir.path())?;
/// cache.set_maximum_size(MaxSize::Unlimited)?;
/// let entry = cache.store("build-42")?;
/// std::fs::write(entry.path().join("out"), b"result").unwrap();
/// // Once this returns `Stored`, the entry survives a power cut whole.
/// assert!(matches!(entry.commit()?, Commit::Stored { .. }));
/// assert!(cache.load("build-42")?.expect("stored").info().durable);
/// # Ok::<(), fscache::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Durability {
    /// Sync nothing (what osbuild does). A power cut may lose entries
    /// committed shortly before it, or bring them back with empty or
    /// zero-filled files. Costs no system call.
    #[default]
    None,
    /// Before the rename that publishes the entry, make its files,
    /// directories, `object.info` and the size it adds to `cache.size`
    /// durable; after the rename, make the rename durable; only then
    /// return. The entry's `object.info` records it
    /// ([`ObjectInfo::durable`]). Costs a few fsyncs for a small entry, one
    /// `syncfs` for a large one.
    Sync,
}

/// What [`FsCache::load`] does with an entry that a *different boot*
/// committed without [`Durability::Sync`]: the entries a power cut may have
/// damaged.
///
/// An entry's `object.info` records the boot that committed it
/// (`creation-boot-id`) and whether it was synced (`"fscache-durable":
/// true`). An entry committed in this boot is whole whatever its policy:
/// nothing but a power cut or a kernel crash, which ends the boot, loses
/// what a commit wrote. Choose the policy per handle with
/// [`OpenOptions::earlier_boot`](crate::OpenOptions::earlier_boot).
///
/// # Examples
///
/// ```
/// use fscache::{EarlierBoot, MaxSize, OpenOptions};
/// let dir = tempfile::tempdir().unwrap();
/// let cache = OpenOptions::new()
///     .earlier_boot(EarlierBoot::MissUnlessDurable)
///     .open("my-tool", dir.path())?;
/// cache.set_maximum_size(MaxSize::Unlimited)?;
/// let entry = cache.store("made-now")?;
/// assert!(entry.commit()?.is_stored());
/// // Made in this boot: served, synced or not.
/// assert!(cache.load("made-now")?.is_some());
/// # Ok::<(), fscache::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum EarlierBoot {
    /// Serve every entry (what osbuild does). Costs nothing.
    #[default]
    Serve,
    /// Treat an entry as a miss unless it was committed durably or in this
    /// boot. An entry whose `object.info` cannot be read as one (a power
    /// cut can leave it empty) is a miss too. This serves osbuild's
    /// entries from earlier boots as misses, and entries from before a
    /// clean reboot as well, which were in fact written whole: the policy
    /// cannot tell a clean reboot from a power cut. Costs nothing more: a
    /// load reads `object.info` anyway.
    ///
    /// A missed entry stays in the cache until it is evicted (it is never
    /// used, so it is the first to go), and a store under its name reports
    /// [`Commit::NameTaken`](crate::Commit::NameTaken) meanwhile:
    /// [`FsCache::evict`] it first to replace it.
    MissUnlessDurable,
}

impl EarlierBoot {
    /// Whether an entry with `info` (`None`: no valid `object.info`) may be
    /// served by a handle of the boot `boot_id`.
    pub(crate) fn serves(self, info: Option<&ObjectInfo>, boot_id: &str) -> bool {
        match self {
            EarlierBoot::Serve => true,
            EarlierBoot::MissUnlessDurable => info.is_some_and(|info| {
                info.durable || info.creation_boot_id.as_deref() == Some(boot_id)
            }),
        }
    }
}

impl StoreGuard {
    /// Commit this entry with `durability`, whatever its handle's policy
    /// ([`OpenOptions::durability`](crate::OpenOptions::durability)).
    ///
    /// # Examples
    ///
    /// ```
    /// use fscache::{Durability, FsCache, MaxSize};
    /// let dir = tempfile::tempdir().unwrap();
    /// let cache = FsCache::open("my-tool", dir.path())?;
    /// cache.set_maximum_size(MaxSize::Unlimited)?;
    /// let mut entry = cache.store("precious")?;
    /// entry.set_durability(Durability::Sync);
    /// assert!(entry.commit()?.is_stored());
    /// # Ok::<(), fscache::Error>(())
    /// ```
    pub fn set_durability(&mut self, durability: Durability) {
        self.durability = durability;
    }
}

/// What a commit still has to make durable once its tree is measured.
#[derive(Debug)]
#[must_use = "a durable commit is only durable once both steps have run"]
pub(crate) struct Pending {
    policy: Durability,
    /// The measuring walk did not fsync the whole tree: one `syncfs` must.
    syncfs: bool,
}

/// Measure the tree `data` (at `path`), as [`tree::measure`] does, fsyncing
/// it on the way under [`Durability::Sync`]. [`Durability::None`] makes
/// exactly the system calls of [`tree::measure`].
pub(crate) fn measure(data: OwnedFd, path: &Path, policy: Durability) -> Result<(u64, Pending)> {
    match policy {
        Durability::None => Ok((tree::measure(data, path)?, Pending::nothing())),
        Durability::Sync => {
            let (size, whole) = tree::measure_and_sync(data, path, FSYNC_EACH_UP_TO)?;
            Ok((
                size,
                Pending {
                    policy,
                    syncfs: !whole,
                },
            ))
        }
    }
}

impl Pending {
    /// What is left after a walk under `policy` that fsynced the whole
    /// tree (`whole`) or not, as [`measure`] leaves it.
    pub(crate) fn after_walk(policy: Durability, whole: bool) -> Pending {
        Pending {
            policy,
            syncfs: policy == Durability::Sync && !whole,
        }
    }

    fn nothing() -> Pending {
        Pending {
            policy: Durability::None,
            syncfs: false,
        }
    }

    /// Whether the entry is committed durably: what its `object.info`
    /// records.
    pub(crate) fn is_durable(&self) -> bool {
        self.policy == Durability::Sync
    }

    /// Before the rename that publishes `entry`, whose `object.info` is
    /// written and whose `size` is accounted: make what the measuring walk
    /// did not sync durable. On failure, give the size back and unlink
    /// `object.info` (as a failed rename does), so the entry is as before
    /// the commit.
    pub(crate) fn before_publish(
        &self,
        cache: &FsCache,
        entry: &AnonymousDir,
        size: u64,
    ) -> Result<()> {
        if self.policy == Durability::None {
            return Ok(());
        }
        let synced = if self.syncfs {
            syncfs(entry.dir())
        } else {
            fsync_file(entry.dir(), OBJECT_INFO)
                .and_then(|()| fsync(entry.lock().as_fd(), entry.lock().path()))
                .and_then(|()| fsync(entry.dir().as_fd(), entry.path()))
                .and_then(|()| fsync_file(cache.root(), CACHE_SIZE))
                .and_then(|()| fsync(cache.root().as_fd(), cache.path()))
        };
        if let Err(e) = synced {
            cache.accounting().give_back(entry.dir(), size)?;
            return Err(e);
        }
        Ok(())
    }

    /// After the rename that published the entry in `objects`: make the
    /// rename durable. If this fails the entry is in the cache, whole, but
    /// may not survive a power cut (it is then lost entirely).
    pub(crate) fn after_publish(&self, objects: &Dir) -> Result<()> {
        match self.policy {
            Durability::None => Ok(()),
            Durability::Sync => fsync(objects.as_fd(), objects.path()),
        }
    }
}

/// The commit of this guard published its entry but could not make the
/// rename durable: committing it again can only report that again.
pub(crate) fn spent(objects: &Dir, name: &str) -> crate::Error {
    crate::Error::Io {
        op: Op::Sync,
        path: objects.path().to_owned(),
        source: std::io::Error::other(format!(
            "`{name}` is committed, but its rename may not survive a power cut"
        )),
    }
}

/// `fsync(fd)`, retried on `EINTR`.
#[allow(clippy::disallowed_methods)] // the one place
pub(crate) fn fsync(fd: BorrowedFd<'_>, path: &Path) -> Result<()> {
    retry(|| rustix::fs::fsync(fd)).at(Op::Sync, || path.to_owned())
}

/// Open the regular file `name` in `dir` without following a link and
/// fsync it.
fn fsync_file(dir: &Dir, name: &str) -> Result<()> {
    let fd = open_beneath(dir.as_fd(), name, OFlags::RDONLY, Mode::empty())
        .at(Op::Open, || dir.join(name))?;
    fsync(fd.as_fd(), &dir.join(name))
}

/// `syncfs` of the file system that holds `dir`. Linux reports write-back
/// errors from it since 5.8; before, it always succeeds.
#[allow(clippy::disallowed_methods)] // the one place
fn syncfs(dir: &Dir) -> Result<()> {
    retry(|| rustix::fs::syncfs(dir)).at(Op::Sync, || dir.path().to_owned())
}

fn retry(mut f: impl FnMut() -> rustix::io::Result<()>) -> rustix::io::Result<()> {
    loop {
        match f() {
            Err(Errno::INTR) => continue,
            other => return other,
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn info(boot: Option<&str>, durable: bool) -> ObjectInfo {
        ObjectInfo {
            creation_boot_id: boot.map(str::to_owned),
            size: 4096,
            durable,
            digest: None,
        }
    }

    #[test]
    fn only_miss_unless_durable_misses_and_only_non_durable_entries_of_other_boots() {
        let now = "a".repeat(32);
        let then = "b".repeat(32);
        let p = EarlierBoot::MissUnlessDurable;
        assert!(p.serves(Some(&info(Some(&now), false)), &now), "this boot");
        assert!(p.serves(Some(&info(Some(&then), true)), &now), "durable");
        assert!(!p.serves(Some(&info(Some(&then), false)), &now), "earlier");
        assert!(!p.serves(Some(&info(None, false)), &now), "unknown boot");
        assert!(!p.serves(None, &now), "no valid object.info");
        assert!(EarlierBoot::Serve.serves(None, &now), "Serve serves all");
        assert_eq!(EarlierBoot::default(), EarlierBoot::Serve);
        assert_eq!(Durability::default(), Durability::None);
    }
}
