//! Another implementation's steps, replayed system call by system call, for
//! tests.
//!
//! The contract (`FORMAT.md`, "Cleaning up") says what osbuild's creator and
//! remover of anonymous entries do, and what they count on a cleaner not
//! doing. To test our maintenance against that, the tests need a process
//! that behaves like osbuild and not like this crate: this module is that
//! process. It makes its calls by path, as Python's `os` module does, with
//! the modes, flags and tolerated errors of osbuild's `fscache.py`, and it
//! uses none of the crate's own helpers for the replayed steps (only
//! [`FileLock::acquire`], for the OFD lock on a descriptor it opened
//! itself). It is not part of the API.
//!
//! One iteration, in a store directory (`objects/` or `stage/`):
//!
//! 1. Create `uuid-<hex>` there (`O_CREAT | O_EXCL | O_RDWR`, mode `0644`),
//!    write-lock it (`F_OFD_SETLKW`), and compare `fstat` with `stat`: if
//!    the file was removed or replaced before the lock, open it again (a
//!    *retry*).
//! 2. `mkdir` a `uuid-<hex>` directory (mode `0777`), `link` the temporary
//!    to `<dir>/object.lock`, and (after any failure, once the lock is
//!    released) unlink the temporary, tolerating `ENOENT`. A `link` that
//!    fails with `ENOENT` (a cleaner removed the empty directory) starts
//!    again under new names (a *retry*); any other failure, `EEXIST`
//!    included, is an *error*, after which osbuild unlinks
//!    `<dir>/object.lock` and removes the directory, tolerating `ENOENT`
//!    and `ENOTDIR`.
//! 3. `mkdir` `data/` (mode `0777`) and write a small file in it (as
//!    Python's `open(path, "w")`: mode `0666`). No `object.info` is
//!    written: the entry stays anonymous and `cache.size` is untouched.
//! 4. Remove it: `lstat` the directory (gone: nothing to do), unlink
//!    `object.info`, remove everything but `object.lock`, unlink
//!    `object.lock`, `rmdir` the directory, each step tolerating `ENOENT`
//!    and `ENOTDIR` and nothing else (`ENOTEMPTY` is an *error*); then
//!    release the lock.
//!
//! The creator and remover are those of osbuild's `_atomic_dir` and
//! `_rm_r_object` as merged upstream. A later maintenance branch of
//! osbuild (whose own cleaner opens `object.lock` with `O_CREAT`) also
//! retries on `EEXIST` and tolerates `ENOTEMPTY`; the contract does not
//! count on that, and neither does this replay.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rustix::fs::{
    fstat, link, lstat, mkdir, open, rmdir, stat, unlink, Dir, FileType, Mode, OFlags,
};
use rustix::io::Errno;

use crate::error::{IoContext, Op, Result};
use crate::lock::{FileLock, LockKind, Wait};

/// How many failed steps a [`Tally`] keeps the details of.
pub const KEPT_ERRORS: usize = 5;

/// The lock file of an entry, named as osbuild names it.
const OBJECT_LOCK: &str = "object.lock";
/// The file that makes an entry valid, named as osbuild names it.
const OBJECT_INFO: &str = "object.info";

/// Which store directory a replayer works in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Store {
    /// `objects/`, as osbuild's `store()` (never committed here).
    Objects,
    /// `stage/`, as osbuild's `stage()`.
    Stage,
}

impl Store {
    /// The directory's name below the cache root.
    pub fn dir_name(self) -> &'static str {
        match self {
            Store::Objects => "objects",
            Store::Stage => "stage",
        }
    }
}

impl fmt::Display for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.dir_name())
    }
}

impl FromStr for Store {
    type Err = String;

    /// `objects` or `stage`.
    fn from_str(s: &str) -> std::result::Result<Store, String> {
        match s {
            "objects" => Ok(Store::Objects),
            "stage" => Ok(Store::Stage),
            other => Err(format!("no store {other:?}: objects or stage")),
        }
    }
}

/// A step of the replayed sequence, to say which one failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Step {
    /// Creating the temporary lock file (`open(O_CREAT | O_EXCL)`).
    CreateTemp,
    /// Write-locking it.
    LockTemp,
    /// Comparing `fstat` of it with `stat` of its path.
    StatTemp,
    /// `mkdir` of the anonymous directory.
    CreateDir,
    /// `link` of the temporary to `<dir>/object.lock`.
    LinkLock,
    /// `unlink` of the temporary.
    UnlinkTemp,
    /// `mkdir` of `data/`.
    CreateData,
    /// Writing the file in `data/`.
    WriteData,
    /// `unlink` of `object.info`.
    UnlinkInfo,
    /// Listing the directory to remove its contents.
    ListDir,
    /// Removing an entry of the directory other than `object.lock`.
    RemoveContent,
    /// `unlink` of `object.lock`.
    UnlinkLock,
    /// The final `rmdir` of the directory.
    RemoveDir,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::CreateTemp => "create-temp",
            Step::LockTemp => "lock-temp",
            Step::StatTemp => "stat-temp",
            Step::CreateDir => "mkdir",
            Step::LinkLock => "link",
            Step::UnlinkTemp => "unlink-temp",
            Step::CreateData => "mkdir-data",
            Step::WriteData => "write-data",
            Step::UnlinkInfo => "unlink-info",
            Step::ListDir => "scandir",
            Step::RemoveContent => "remove-content",
            Step::UnlinkLock => "unlink-lock",
            Step::RemoveDir => "rmdir",
        })
    }
}

/// A step that failed with an error osbuild would have raised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepError {
    /// The step.
    pub step: Step,
    /// The path it worked on.
    pub path: PathBuf,
    /// The system error (`errno`); 0 where there was none.
    pub errno: i32,
}

impl StepError {
    fn new(step: Step, path: &Path, errno: Errno) -> StepError {
        StepError {
            step,
            path: path.to_owned(),
            errno: errno.raw_os_error(),
        }
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} `{}`: {}",
            self.step,
            self.path.display(),
            std::io::Error::from_raw_os_error(self.errno),
        )
    }
}

impl std::error::Error for StepError {}

/// What a run of iterations did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Iterations run (whether they succeeded or not).
    pub iterations: u64,
    /// Steps started again, as osbuild starts them again: a `link` that
    /// found its directory removed (new names), or a temporary removed or
    /// replaced before it was locked (opened again).
    pub retries: u64,
    /// Steps that failed with an error osbuild would have raised.
    pub errors: u64,
    /// The first [`KEPT_ERRORS`] of those.
    pub first_errors: Vec<StepError>,
    /// How many of those failed at each step with each `errno`.
    pub by_step: BTreeMap<(Step, i32), u64>,
}

impl Tally {
    fn record(&mut self, e: StepError) {
        self.errors += 1;
        *self.by_step.entry((e.step, e.errno)).or_default() += 1;
        if self.first_errors.len() < KEPT_ERRORS {
            self.first_errors.push(e);
        }
    }

    /// Add another tally to this one (keeping the first errors of both, up
    /// to [`KEPT_ERRORS`]).
    pub fn add(&mut self, other: &Tally) {
        self.iterations += other.iterations;
        self.retries += other.retries;
        self.errors += other.errors;
        for (k, n) in &other.by_step {
            *self.by_step.entry(*k).or_default() += n;
        }
        for e in &other.first_errors {
            if self.first_errors.len() < KEPT_ERRORS {
                self.first_errors.push(e.clone());
            }
        }
    }
}

impl Tally {
    /// The failures step by step: `link EEXIST 3, rmdir ENOTEMPTY 1`.
    pub fn breakdown(&self) -> String {
        let parts: Vec<String> = self
            .by_step
            .iter()
            .map(|((step, errno), n)| {
                let name = std::io::Error::from_raw_os_error(*errno).kind();
                format!("{step} errno {errno} ({name:?}) x{n}")
            })
            .collect();
        parts.join(", ")
    }
}

impl fmt::Display for Tally {
    /// `ITERATIONS RETRIES ERRORS`, then `; ` and each kept error.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.iterations, self.retries, self.errors)?;
        for e in &self.first_errors {
            write!(f, "; {e}")?;
        }
        Ok(())
    }
}

/// A cache user that creates and removes anonymous entries exactly as
/// osbuild does (see the [module documentation](self)).
///
/// Like an osbuild process it holds a shared lock on `cache.lock` for its
/// whole life.
#[derive(Debug)]
pub struct Replayer {
    root: PathBuf,
    _cache_lock: FileLock,
}

/// An anonymous entry of ours, locked.
struct Entry {
    dir: PathBuf,
    lock: FileLock,
}

impl Replayer {
    /// Start replaying on the cache at `root`, which must be scaffolded
    /// already: open `cache.lock` read-only and take a shared lock on it,
    /// waiting if need be, as osbuild's `FsCache.__enter__` does.
    ///
    /// # Errors
    ///
    /// [`Error::Io`](crate::Error::Io) if `cache.lock` cannot be opened or
    /// locked.
    ///
    /// # Examples
    ///
    /// ```
    /// use fscache::replay::{Replayer, Store};
    /// let dir = tempfile::tempdir().unwrap();
    /// let _cache = fscache::FsCache::open("my-tool", dir.path())?;
    /// let tally = Replayer::open(dir.path())?.run(Store::Stage, 3);
    /// assert_eq!((tally.iterations, tally.errors), (3, 0));
    /// # Ok::<(), fscache::Error>(())
    /// ```
    pub fn open(root: impl AsRef<Path>) -> Result<Replayer> {
        let root = root.as_ref().to_owned();
        let path = root.join("cache.lock");
        let fd = open(&path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
            .at(Op::Open, || path.clone())?;
        let lock = FileLock::acquire(fd, LockKind::Shared, Wait::Forever, path)?;
        Ok(Replayer {
            root,
            _cache_lock: lock,
        })
    }

    /// Run `iterations` iterations in `store` and say what happened. A
    /// failed step is counted, not returned: the iteration cleans up as
    /// osbuild would and the next one starts.
    pub fn run(&self, store: Store, iterations: u64) -> Tally {
        let mut tally = Tally::default();
        for _ in 0..iterations {
            self.once(store, &mut tally);
        }
        tally
    }

    /// One iteration, into `tally`.
    fn once(&self, store: Store, tally: &mut Tally) {
        tally.iterations += 1;
        let store = self.root.join(store.dir_name());
        let entry = match create_anonymous(&store, tally) {
            Ok(entry) => entry,
            Err(e) => return tally.record(e),
        };
        // As in osbuild, the removal runs whether filling worked or not.
        if let Err(e) = fill(&entry.dir) {
            tally.record(e);
        }
        if let Err(e) = remove_object(&entry.dir) {
            tally.record(e);
        }
        // osbuild releases the lock after the removal (and, should the
        // removal raise, not at all: the descriptor leaks). We release it.
        drop(entry.lock);
    }
}

/// A fresh `uuid-` name, as osbuild makes them (`uuid.uuid4().hex`).
fn uuid_name() -> String {
    format!("uuid-{}", uuid::Uuid::new_v4().simple())
}

/// osbuild's `_atomic_dir(store)`: a `uuid-*` directory in `store` whose
/// `object.lock` we hold write-locked.
fn create_anonymous(store: &Path, tally: &mut Tally) -> std::result::Result<Entry, StepError> {
    loop {
        let dir = store.join(uuid_name());
        let lock_path = dir.join(OBJECT_LOCK);
        let temp = store.join(uuid_name());
        let lock = match create_locked(&temp, tally) {
            Ok(lock) => lock,
            Err(e) => {
                // osbuild's `_atomic_file` unlinks its temporary whatever
                // happened; the directory was not made yet.
                let _ = unlink(&temp);
                return Err(e);
            }
        };
        let linked = mkdir(&dir, Mode::from_raw_mode(0o777))
            .map_err(|e| StepError::new(Step::CreateDir, &dir, e))
            .and_then(|()| {
                link(&temp, &lock_path).map_err(|e| StepError::new(Step::LinkLock, &lock_path, e))
            });
        match linked {
            Ok(()) => {
                // Keep the lock (osbuild's `closefd=False`), drop the name.
                return match unlink(&temp) {
                    Ok(()) | Err(Errno::NOENT) => Ok(Entry { dir, lock }),
                    Err(e) => {
                        drop(lock);
                        undo_create(&lock_path, &dir);
                        Err(StepError::new(Step::UnlinkTemp, &temp, e))
                    }
                };
            }
            Err(e) => {
                // The lock is released before the temporary is unlinked:
                // `_atomic_open`'s cleanup runs inside `_atomic_file`'s.
                drop(lock);
                let _ = unlink(&temp);
                if e.step == Step::LinkLock && e.errno == Errno::NOENT.raw_os_error() {
                    // A cleaner removed the empty directory: new names.
                    tally.retries += 1;
                    continue;
                }
                undo_create(&lock_path, &dir);
                return Err(e);
            }
        }
    }
}

/// What osbuild's `_atomic_dir` does when it raises: unlink the lock file
/// and remove the directory, tolerating `ENOENT` and `ENOTDIR`.
fn undo_create(lock_path: &Path, dir: &Path) {
    let _ = unlink(lock_path);
    let _ = rmdir(dir);
}

/// osbuild's `_atomic_open(temp, wait=True, write=True,
/// oflags=O_CREAT|O_EXCL)`: create the file, lock it, and check that the
/// locked file is still the one at `temp`; if not, release and open again.
fn create_locked(temp: &Path, tally: &mut Tally) -> std::result::Result<FileLock, StepError> {
    loop {
        let flags = OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC;
        let fd: OwnedFd = open(temp, flags, Mode::from_raw_mode(0o644))
            .map_err(|e| StepError::new(Step::CreateTemp, temp, e))?;
        let lock =
            FileLock::acquire(fd, LockKind::Exclusive, Wait::Forever, temp).map_err(|e| {
                StepError {
                    step: Step::LockTemp,
                    path: temp.to_owned(),
                    errno: e.errno().unwrap_or(0),
                }
            })?;
        let ours = match fstat(&lock) {
            Ok(st) => Some(st),
            Err(Errno::STALE) => None,
            Err(e) => return Err(StepError::new(Step::StatTemp, temp, e)),
        };
        let theirs = match stat(temp) {
            Ok(st) => Some(st),
            Err(Errno::NOENT) | Err(Errno::STALE) => None,
            Err(e) => return Err(StepError::new(Step::StatTemp, temp, e)),
        };
        match (ours, theirs) {
            (Some(a), Some(b)) if a.st_dev == b.st_dev && a.st_ino == b.st_ino => return Ok(lock),
            _ => {
                // Removed (a cleaner took it for an orphan before we
                // locked it) or replaced: open again, at the same name.
                drop(lock);
                tally.retries += 1;
            }
        }
    }
}

/// What osbuild's `stage()` or `store()` and its caller do with a new entry:
/// `data/`, and a file in it.
fn fill(dir: &Path) -> std::result::Result<(), StepError> {
    let data = dir.join("data");
    mkdir(&data, Mode::from_raw_mode(0o777))
        .map_err(|e| StepError::new(Step::CreateData, &data, e))?;
    let file = data.join("file");
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::CLOEXEC;
    let fd = open(&file, flags, Mode::from_raw_mode(0o666))
        .map_err(|e| StepError::new(Step::WriteData, &file, e))?;
    let mut buf: &[u8] = b"replayed\n";
    while !buf.is_empty() {
        match rustix::io::write(&fd, buf) {
            Ok(0) => return Err(StepError::new(Step::WriteData, &file, Errno::NOSPC)),
            Ok(n) => buf = &buf[n..],
            Err(Errno::INTR) => {}
            Err(e) => return Err(StepError::new(Step::WriteData, &file, e)),
        }
    }
    Ok(())
}

/// Whether `e` is one of the errors osbuild's removal tolerates.
fn tolerated(e: Errno) -> bool {
    e == Errno::NOENT || e == Errno::NOTDIR
}

/// Run one removal step, tolerating `ENOENT` and `ENOTDIR`.
fn tolerate(
    step: Step,
    path: &Path,
    result: rustix::io::Result<()>,
) -> std::result::Result<(), StepError> {
    match result {
        Err(e) if !tolerated(e) => Err(StepError::new(step, path, e)),
        _ => Ok(()),
    }
}

/// osbuild's `_rm_r_object(dir)`.
fn remove_object(dir: &Path) -> std::result::Result<(), StepError> {
    // `os.path.lexists`: any failure to `lstat` counts as absent.
    if lstat(dir).is_err() {
        return Ok(());
    }
    let info = dir.join(OBJECT_INFO);
    tolerate(Step::UnlinkInfo, &info, unlink(&info))?;
    remove_all_but_lock(dir)?;
    let lock = dir.join(OBJECT_LOCK);
    tolerate(Step::UnlinkLock, &lock, unlink(&lock))?;
    tolerate(Step::RemoveDir, dir, rmdir(dir))
}

/// The `scandir` loop of `_rm_r_object`: remove every entry but
/// `object.lock`, directories with their contents.
fn remove_all_but_lock(dir: &Path) -> std::result::Result<(), StepError> {
    let fd = match open_dir(dir) {
        Ok(fd) => fd,
        Err(e) if tolerated(e) => return Ok(()),
        Err(e) => return Err(StepError::new(Step::ListDir, dir, e)),
    };
    let listing = Dir::read_from(&fd).map_err(|e| StepError::new(Step::ListDir, dir, e))?;
    for entry in listing {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) if tolerated(e) => return Ok(()),
            Err(e) => return Err(StepError::new(Step::ListDir, dir, e)),
        };
        let raw = entry.file_name().to_bytes();
        if raw == b"." || raw == b".." || raw == OBJECT_LOCK.as_bytes() {
            continue;
        }
        let path = dir.join(OsStr::from_bytes(raw));
        let is_dir = match entry.file_type() {
            FileType::Directory => true,
            // `DirEntry.is_dir()` follows links and says no when it fails.
            FileType::Unknown | FileType::Symlink => stat(&path)
                .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory),
            _ => false,
        };
        let removed = if is_dir {
            remove_tree(&path)
        } else {
            tolerate(Step::RemoveContent, &path, unlink(&path))
        };
        match removed {
            Err(e) if tolerated(Errno::from_raw_os_error(e.errno)) => {}
            other => other?,
        }
    }
    Ok(())
}

/// `rmtree(path)`: a directory and everything below it.
fn remove_tree(path: &Path) -> std::result::Result<(), StepError> {
    let fd = open_dir(path).map_err(|e| StepError::new(Step::RemoveContent, path, e))?;
    let listing = Dir::read_from(&fd).map_err(|e| StepError::new(Step::RemoveContent, path, e))?;
    for entry in listing {
        let entry = entry.map_err(|e| StepError::new(Step::RemoveContent, path, e))?;
        let raw = entry.file_name().to_bytes();
        if raw == b"." || raw == b".." {
            continue;
        }
        let child = path.join(OsStr::from_bytes(raw));
        let is_dir = match entry.file_type() {
            FileType::Directory => true,
            FileType::Unknown => lstat(&child)
                .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory),
            _ => false,
        };
        if is_dir {
            remove_tree(&child)?;
        } else {
            unlink(&child).map_err(|e| StepError::new(Step::RemoveContent, &child, e))?;
        }
    }
    rmdir(path).map_err(|e| StepError::new(Step::RemoveContent, path, e))
}

/// Open a directory for listing, as `os.scandir` does.
fn open_dir(path: &Path) -> rustix::io::Result<OwnedFd> {
    open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}
