//! Open-file-description locks: the guard, the wait policy and the safe-open
//! loop.
//!
//! These are `fcntl(F_OFD_SETLK)` locks over the whole file. They belong to
//! the open file description, not to the process: two [`FileLock`]s on one
//! file conflict inside one process exactly as they do across processes, and
//! closing some other descriptor of the same file releases nothing. They
//! conflict with osbuild's locks, which are the same kind.

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg};
use nix::libc;
use rustix::fs::{fstat, openat, statat, AtFlags, Mode, OFlags, Stat, CWD};
use rustix::io::Errno;

use crate::beneath::open_beneath;
use crate::error::{Error, IoContext, Op, Result};

/// Which lock: many holders may share one; an exclusive one has no company.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LockKind {
    /// `F_RDLCK`: conflicts only with exclusive locks.
    Shared,
    /// `F_WRLCK`: conflicts with every other lock. The file must be open for
    /// writing.
    Exclusive,
}

impl LockKind {
    fn l_type(self) -> libc::c_short {
        (match self {
            LockKind::Shared => libc::F_RDLCK,
            LockKind::Exclusive => libc::F_WRLCK,
        }) as libc::c_short
    }

    /// The access mode a file must be opened with to take this lock.
    pub(crate) fn access(self) -> OFlags {
        match self {
            LockKind::Shared => OFlags::RDONLY,
            LockKind::Exclusive => OFlags::RDWR,
        }
    }
}

/// What to do when the lock is held by someone else.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Wait {
    /// Fail at once with [`Error::WouldBlock`].
    Never,
    /// Block until the lock is free.
    Forever,
    /// Retry until the lock is free or the time is up, then fail with
    /// [`Error::TimedOut`]. Implemented by polling with a backoff of at most
    /// 10 ms, because a blocking `fcntl` can only be bounded by a signal.
    Timeout(Duration),
}

impl Wait {
    /// What is left of this wait, begun at `start`.
    pub(crate) fn left_since(self, start: Instant) -> Wait {
        match self {
            Wait::Timeout(limit) => Wait::Timeout(limit.saturating_sub(start.elapsed())),
            other => other,
        }
    }

    /// When a wait begins: the clock is read only for a wait with a limit,
    /// the one kind that asks later how long it has run (a miss, the
    /// commonest call, reads no clock).
    fn begin(self) -> Option<Instant> {
        matches!(self, Wait::Timeout(_)).then(Instant::now)
    }

    /// [`Wait::left_since`] a start that [`Wait::begin`] may have left
    /// unread.
    fn left_since_begun(self, start: Option<Instant>) -> Wait {
        match start {
            Some(start) => self.left_since(start),
            None => self,
        }
    }

    /// The time limit, for [`Wait::Timeout`].
    fn limit(self) -> Option<Duration> {
        match self {
            Wait::Timeout(limit) => Some(limit),
            _ => None,
        }
    }
}

/// A whole-file lock on a descriptor that this guard owns.
///
/// Dropping the guard releases the lock and closes the descriptor.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct FileLock {
    fd: OwnedFd,
    kind: LockKind,
    path: PathBuf,
    /// Cleared by [`FileLock::unlock`], which has released already.
    held: bool,
    /// The file's status when the safe-open loop found it in place, so
    /// that callers need not ask again (its type, the last use it had).
    locked_stat: Option<Stat>,
}

impl fmt::Debug for FileLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileLock")
            .field("path", &self.path)
            .field("kind", &self.kind)
            .finish()
    }
}

fn whole_file(l_type: libc::c_short) -> libc::flock {
    libc::flock {
        l_type,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        // Must be 0 for OFD locks.
        l_pid: 0,
    }
}

fn release(fd: BorrowedFd<'_>) -> nix::Result<()> {
    fcntl(
        fd,
        FcntlArg::F_OFD_SETLK(&whole_file(libc::F_UNLCK as libc::c_short)),
    )
    .map(drop)
}

/// Wait for `kind` on a descriptor the caller keeps open (and unlocks with
/// [`unlock_fd`]); `path` names it in errors.
pub(crate) fn lock_fd(fd: BorrowedFd<'_>, kind: LockKind, path: &Path) -> Result<()> {
    set(fd, kind, Wait::Forever, path)
}

/// Release what [`lock_fd`] took.
pub(crate) fn unlock_fd(fd: BorrowedFd<'_>, path: &Path) -> Result<()> {
    release(fd).at(Op::Lock, || path.to_owned())
}

/// One attempt: `Ok(false)` when someone else holds a conflicting lock.
fn try_set(fd: BorrowedFd<'_>, l_type: libc::c_short, block: bool) -> nix::Result<bool> {
    let flock = whole_file(l_type);
    loop {
        let arg = if block {
            FcntlArg::F_OFD_SETLKW(&flock)
        } else {
            FcntlArg::F_OFD_SETLK(&flock)
        };
        match fcntl(fd, arg) {
            Ok(_) => return Ok(true),
            Err(nix::Error::EINTR) => continue,
            Err(nix::Error::EAGAIN) | Err(nix::Error::EACCES) if !block => return Ok(false),
            Err(e) => return Err(e),
        }
    }
}

/// Take `kind` on `fd` according to `wait`.
fn set(fd: BorrowedFd<'_>, kind: LockKind, wait: Wait, path: &Path) -> Result<()> {
    let l_type = kind.l_type();
    let locked = match wait {
        Wait::Never => try_set(fd, l_type, false),
        Wait::Forever => try_set(fd, l_type, true),
        Wait::Timeout(limit) => {
            let start = Instant::now();
            let mut pause = Duration::from_micros(100);
            loop {
                match try_set(fd, l_type, false) {
                    Ok(false) if start.elapsed() < limit => {
                        let left = limit.saturating_sub(start.elapsed());
                        thread::sleep(pause.min(left));
                        pause = (pause * 2).min(Duration::from_millis(10));
                    }
                    Ok(false) => {
                        return Err(Error::TimedOut {
                            path: path.to_owned(),
                            after: limit,
                        })
                    }
                    other => break other,
                }
            }
        }
    };
    match locked.at(Op::Lock, || path.to_owned())? {
        true => Ok(()),
        false => Err(Error::WouldBlock {
            path: path.to_owned(),
        }),
    }
}

/// `fd`'s status if it is still the file at `rel` below `dir`; `None` if it
/// was replaced. `ESTALE` (NFS) and a vanished path both mean replaced.
fn still_at(
    fd: BorrowedFd<'_>,
    dir: BorrowedFd<'_>,
    rel: &str,
    path: &Path,
) -> Result<Option<Stat>> {
    let ours = match fstat(fd) {
        Ok(st) => st,
        Err(Errno::STALE) => return Ok(None),
        Err(e) => return Err(e).at(Op::Stat, || path.to_owned()),
    };
    let theirs = match statat(dir, rel, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::NOENT) | Err(Errno::STALE) => return Ok(None),
        Err(e) => return Err(e).at(Op::Stat, || path.to_owned()),
    };
    Ok((ours.st_dev == theirs.st_dev && ours.st_ino == theirs.st_ino).then_some(ours))
}

impl FileLock {
    /// Lock a file that is already open.
    ///
    /// For [`LockKind::Exclusive`] the descriptor must be open for writing.
    /// `path` is only used in messages.
    ///
    /// # Errors
    ///
    /// [`Error::WouldBlock`] or [`Error::TimedOut`] when the lock is held
    /// elsewhere and `wait` gives up; [`Error::Io`] when `fcntl` fails.
    ///
    /// # Examples
    ///
    /// ```
    /// use fscache::lock::{FileLock, LockKind, Wait};
    /// let dir = tempfile::tempdir().unwrap();
    /// let file = std::fs::File::create(dir.path().join("a.lock"))?;
    /// let held = FileLock::acquire(file.into(), LockKind::Exclusive, Wait::Never, dir.path().join("a.lock"))?;
    /// assert_eq!(held.kind(), LockKind::Exclusive);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn acquire(
        fd: OwnedFd,
        kind: LockKind,
        wait: Wait,
        path: impl Into<PathBuf>,
    ) -> Result<Self> {
        let path = path.into();
        set(fd.as_fd(), kind, wait, &path)?;
        Ok(FileLock {
            fd,
            kind,
            path,
            held: true,
            locked_stat: None,
        })
    }

    /// Open the existing file at `path` and lock it, with the safe-open
    /// loop: if the file is replaced or removed between the open and the
    /// lock, start again. The file is never created, and a link at its last
    /// component is refused.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] with the path when it cannot be opened (a missing file
    /// carries `ENOENT`); [`Error::WouldBlock`] or [`Error::TimedOut`] per
    /// `wait`.
    ///
    /// # Examples
    ///
    /// ```
    /// use fscache::lock::{FileLock, LockKind, Wait};
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("a.lock");
    /// std::fs::write(&path, b"")?;
    /// let reader = FileLock::open(&path, LockKind::Shared, Wait::Never)?;
    /// // A second guard is a second open file description: it conflicts.
    /// let writer = FileLock::open(&path, LockKind::Exclusive, Wait::Never);
    /// assert!(matches!(writer, Err(fscache::Error::WouldBlock { .. })));
    /// # drop(reader);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open(path: impl AsRef<Path>, kind: LockKind, wait: Wait) -> Result<Self> {
        let path = path.as_ref();
        let (parent, name) = match (path.parent(), path.file_name().and_then(|n| n.to_str())) {
            (Some(p), Some(n)) => (
                if p.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    p
                },
                n,
            ),
            _ => return Err(Error::corrupt(path.to_owned(), "not a path to a file")),
        };
        let dir = openat(
            CWD,
            parent,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .at(Op::Open, || parent.to_owned())?;
        Self::open_at(dir.as_fd(), name, kind, wait, OFlags::empty(), || {
            path.to_owned()
        })
    }

    /// [`FileLock::open_at`], where a file that is not there (or is no
    /// regular file: a link, a directory, a fifo) is `None` rather than an
    /// error: a miss costs no error of its own.
    pub(crate) fn open_at_if_there(
        dir: BorrowedFd<'_>,
        rel: &str,
        kind: LockKind,
        wait: Wait,
        path: impl Fn() -> PathBuf,
    ) -> Result<Option<Self>> {
        let start = wait.begin();
        loop {
            let fd = match open_beneath(dir, rel, kind.access(), Mode::empty()) {
                Ok(fd) => fd,
                Err(e) if crate::error::not_a_file(e) => return Ok(None),
                Err(e) => return Err(e).at(Op::Open, &path),
            };
            if let Some(lock) = Self::lock_opened(fd, dir, rel, kind, wait, start, &path)? {
                return Ok(Some(lock));
            }
        }
    }

    /// Lock `fd`, opened at `rel` below `dir`, and check that it is still
    /// the file there; `None` if it was replaced or removed meanwhile.
    fn lock_opened(
        fd: OwnedFd,
        dir: BorrowedFd<'_>,
        rel: &str,
        kind: LockKind,
        wait: Wait,
        start: Option<Instant>,
        path: &impl Fn() -> PathBuf,
    ) -> Result<Option<Self>> {
        let display = path();
        // A replacement starts no new wait: a timeout bounds the whole
        // loop, and reports the whole of it.
        set(fd.as_fd(), kind, wait.left_since_begun(start), &display).map_err(|e| match e {
            Error::TimedOut { path, .. } => Error::TimedOut {
                path,
                after: wait.limit().unwrap_or_default(),
            },
            e => e,
        })?;
        Ok(
            still_at(fd.as_fd(), dir, rel, &display)?.map(|st| FileLock {
                fd,
                kind,
                path: display,
                held: true,
                locked_stat: Some(st),
            }),
        )
    }

    /// The safe-open loop on `rel` below `dir`, with `extra` open flags
    /// (such as `O_NOATIME`). `path` names the file in errors.
    pub(crate) fn open_at(
        dir: BorrowedFd<'_>,
        rel: &str,
        kind: LockKind,
        wait: Wait,
        extra: OFlags,
        path: impl Fn() -> PathBuf,
    ) -> Result<Self> {
        let start = wait.begin();
        loop {
            let fd =
                open_beneath(dir, rel, kind.access() | extra, Mode::empty()).at(Op::Open, &path)?;
            if let Some(lock) = Self::lock_opened(fd, dir, rel, kind, wait, start, &path)? {
                return Ok(lock);
            }
            // Replaced or removed while we waited: dropping `fd` releases
            // the lock on the old file; go again.
        }
    }

    /// The same lock, named by another path (after the file was renamed).
    pub(crate) fn with_path(mut self, path: PathBuf) -> Self {
        self.path = path;
        self
    }

    /// The status the safe-open loop read when it checked the lock was in
    /// place; `None` for a lock taken on a descriptor of the caller's.
    pub(crate) fn locked_stat(&self) -> Option<&Stat> {
        self.locked_stat.as_ref()
    }

    /// The kind of lock held.
    pub fn kind(&self) -> LockKind {
        self.kind
    }

    /// The locked file's path, as given when it was locked.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Change the lock to `kind` (an upgrade from shared to exclusive, or a
    /// downgrade). The kernel converts the lock in place.
    ///
    /// # Errors
    ///
    /// As [`FileLock::acquire`]; on failure the old lock is still held.
    pub fn relock(&mut self, kind: LockKind, wait: Wait) -> Result<()> {
        set(self.fd.as_fd(), kind, wait, &self.path)?;
        self.kind = kind;
        Ok(())
    }

    /// Release the lock and close the file, reporting failure.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if `fcntl(F_UNLCK)` fails; the file is closed anyway.
    pub fn unlock(mut self) -> Result<()> {
        self.held = false;
        release(self.fd.as_fd()).at(Op::Lock, || self.path.clone())
    }
}

impl AsFd for FileLock {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // Explicit, because a `fork()`ed child may share the description: a
        // plain close would leave the lock held by the child's copy.
        if self.held {
            let _ = release(self.fd.as_fd());
        }
    }
}

/// Who, if anyone, would stop `kind` from being taken on `fd` right now
/// (`F_OFD_GETLK`). Returns the kind of the conflicting lock, or `None` when
/// the lock would be granted. Our own description's locks never conflict.
///
/// # Errors
///
/// [`Error::Io`] if `fcntl` fails.
///
/// # Examples
///
/// ```
/// use fscache::lock::{conflicting, FileLock, LockKind, Wait};
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("a.lock");
/// std::fs::write(&path, b"")?;
/// let probe = std::fs::File::open(&path)?;
/// assert_eq!(conflicting(&probe, LockKind::Shared, &path)?, None);
/// let writer = FileLock::open(&path, LockKind::Exclusive, Wait::Never)?;
/// assert_eq!(conflicting(&probe, LockKind::Shared, &path)?, Some(LockKind::Exclusive));
/// # drop(writer);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn conflicting(fd: impl AsFd, kind: LockKind, path: &Path) -> Result<Option<LockKind>> {
    let mut flock = whole_file(kind.l_type());
    fcntl(fd.as_fd(), FcntlArg::F_OFD_GETLK(&mut flock)).at(Op::Lock, || path.to_owned())?;
    Ok(match flock.l_type as libc::c_int {
        libc::F_RDLCK => Some(LockKind::Shared),
        libc::F_WRLCK => Some(LockKind::Exclusive),
        _ => None,
    })
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::fs::File;

    #[test]
    fn two_guards_in_one_process_conflict_like_two_processes() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("x.lock");
        std::fs::write(&p, b"").unwrap();
        let a = FileLock::open(&p, LockKind::Shared, Wait::Never).unwrap();
        let b = FileLock::open(&p, LockKind::Shared, Wait::Never).expect("shared locks share");
        let w = FileLock::open(&p, LockKind::Exclusive, Wait::Never);
        assert!(matches!(w, Err(Error::WouldBlock { .. })), "{w:?}");
        drop((a, b));
        drop(
            FileLock::open(&p, LockKind::Exclusive, Wait::Never)
                .expect("free again after both drop"),
        );
    }

    #[test]
    fn closing_an_unrelated_descriptor_of_the_file_releases_nothing() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("x.lock");
        std::fs::write(&p, b"").unwrap();
        let held = FileLock::open(&p, LockKind::Exclusive, Wait::Never).unwrap();
        // With classic POSIX locks this close would drop `held`'s lock.
        drop(File::open(&p).unwrap());
        let again = FileLock::open(&p, LockKind::Shared, Wait::Never);
        assert!(
            matches!(again, Err(Error::WouldBlock { .. })),
            "lock was lost: {again:?}"
        );
        held.unlock().unwrap();
    }

    #[test]
    fn a_timeout_gives_up_with_its_own_error() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("x.lock");
        std::fs::write(&p, b"").unwrap();
        let _held = FileLock::open(&p, LockKind::Exclusive, Wait::Never).unwrap();
        let e = FileLock::open(
            &p,
            LockKind::Shared,
            Wait::Timeout(Duration::from_millis(20)),
        )
        .unwrap_err();
        assert!(matches!(e, Error::TimedOut { .. }), "{e:?}");
        assert_eq!(e.kind(), crate::ErrorKind::Contended);
    }

    #[test]
    fn the_safe_open_loop_follows_a_replacement_to_the_new_file() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("x.lock");
        std::fs::write(&p, b"").unwrap();
        let old = FileLock::open(&p, LockKind::Exclusive, Wait::Never).unwrap();
        let (tx, tid) = std::sync::mpsc::channel();
        let waiter = {
            let p = p.clone();
            thread::spawn(move || {
                // "PID/task/TID": where the kernel shows what we wait in.
                tx.send(std::fs::read_link("/proc/thread-self").unwrap())
                    .unwrap();
                FileLock::open(&p, LockKind::Exclusive, Wait::Forever)
            })
        };
        // Wait until the waiter is blocked in fcntl on the old file, as the
        // kernel reports it: then the replacement happens behind its back.
        let syscall = Path::new("/proc").join(tid.recv().unwrap()).join("syscall");
        let start = Instant::now();
        while !std::fs::read_to_string(&syscall)
            .unwrap()
            .starts_with(&format!("{} ", libc::SYS_fcntl))
        {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the waiter never blocked"
            );
            thread::yield_now();
        }
        // Replace the file, then let go of the old one: the waiter must wake,
        // see the replacement, and end up on the new inode.
        std::fs::write(t.path().join("new"), b"").unwrap();
        #[allow(clippy::disallowed_methods)] // a foreign replacement, as a test
        std::fs::rename(t.path().join("new"), &p).unwrap();
        drop(old);
        let got = waiter.join().unwrap().unwrap();
        let ino_locked = fstat(got.as_fd()).unwrap().st_ino;
        let ino_now = std::fs::metadata(&p)
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .unwrap();
        assert_eq!(
            ino_locked, ino_now,
            "the lock must be on the file now at the path"
        );
    }

    #[test]
    fn a_link_at_the_lock_path_is_refused() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("real"), b"").unwrap();
        std::os::unix::fs::symlink("real", t.path().join("x.lock")).unwrap();
        let e = FileLock::open(t.path().join("x.lock"), LockKind::Shared, Wait::Never).unwrap_err();
        assert_eq!(e.errno(), Some(Errno::LOOP.raw_os_error()), "{e:?}");
    }
}
