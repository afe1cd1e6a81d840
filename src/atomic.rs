//! Directories in which files appear only whole, and anonymous entries whose
//! lock is held before anyone can see them.
//!
//! A file is filled under a name nobody else uses, then put in place in one
//! step: with `O_TMPFILE` and `linkat` where the file system allows (nothing
//! is visible until the link), else as a write-locked `uuid-*` temporary
//! renamed into place (`renameat2(RENAME_NOREPLACE)`, or `link` + `unlink`
//! where the file system refuses that flag). What works is detected on first
//! use and remembered per directory handle.

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{
    fchmod, linkat, mkdirat, openat, renameat, renameat_with, unlinkat, AtFlags, Mode, OFlags,
    RenameFlags, CWD,
};
use rustix::io::Errno;

use crate::error::{Error, IoContext, Op, Result};
use crate::feature::{FsFeatures, Support};
use crate::layout::{remove_entry, LOCK_FILE};
use crate::lock::{FileLock, LockKind, Wait};

/// What new files are created with; the kernel takes the umask off.
const NEW_FILE_MODE: Mode = Mode::from_raw_mode(0o666);

/// Whether this process's umask leaves every bit of `mode` in place. The
/// umask is read once, from `/proc/self/status` (asking the kernel for it
/// means setting it, which would race other threads); unknown means no.
fn umask_keeps(mode: Mode) -> bool {
    static UMASK: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    let umask = UMASK.get_or_init(|| {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
        u32::from_str_radix(line.trim(), 8).ok()
    });
    umask.is_some_and(|u| mode.as_raw_mode() & u == 0)
}

/// The permission bits of `st`, to give a replacement.
pub(crate) fn mode_of(st: &rustix::fs::Stat) -> Mode {
    Mode::from_raw_mode(st.st_mode & 0o7777)
}
use crate::tree;

pub use crate::layout::anonymous_name;

/// Whether to replace an existing file at the target name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replace {
    /// Leave an existing file alone and report [`Written::Exists`].
    No,
    /// Replace it atomically: readers see the old or the new content.
    Yes,
}

/// What [`Dir::write_file`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Written {
    /// The file is in place with our content.
    Created,
    /// A file already had the name ([`Replace::No`]); ours was discarded.
    Exists,
}

/// An open directory that every operation of this crate works relative to.
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
    features: FsFeatures,
}

impl fmt::Debug for Dir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dir").field("path", &self.path).finish()
    }
}

impl AsFd for Dir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Dir {
    /// Open the directory at `path` (links in `path` itself are followed:
    /// it is the caller's).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if it cannot be opened or is not a directory.
    pub fn open(path: impl AsRef<Path>) -> Result<Dir> {
        let path = path.as_ref();
        let fd = openat(
            CWD,
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .at(Op::Open, || path.to_owned())?;
        Ok(Dir::from_fd(fd, path.to_owned()))
    }

    pub(crate) fn from_fd(fd: OwnedFd, path: PathBuf) -> Dir {
        Dir {
            fd,
            path,
            features: FsFeatures::detect(),
        }
    }

    /// Open the subdirectory `name`, refusing a link.
    ///
    /// # Errors
    ///
    /// [`Error::Io`]: `ELOOP` or `ENOTDIR` when `name` is a link or a file.
    pub fn open_dir(&self, name: &str) -> Result<Dir> {
        let fd = tree::open_dir(self.as_fd(), name).at(Op::Open, || self.join(name))?;
        Ok(Dir::from_fd(fd, self.join(name)))
    }

    /// Create the subdirectory `name` unless something has that name.
    /// Returns whether it was created.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] for any failure other than `EEXIST`.
    pub fn create_dir(&self, name: &str) -> Result<bool> {
        match mkdirat(self.as_fd(), name, Mode::from_raw_mode(0o777)) {
            Ok(()) => Ok(true),
            Err(Errno::EXIST) => Ok(false),
            Err(e) => Err(e).at(Op::CreateDir, || self.join(name)),
        }
    }

    /// The path this directory was opened at.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `path()` joined with `rel`, for messages and for callers.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.path.join(rel)
    }

    /// Lock the existing file `rel` below this directory with the safe-open
    /// loop (see [`FileLock::open`]).
    ///
    /// # Errors
    ///
    /// As [`FileLock::open`].
    pub fn lock(&self, rel: &str, kind: LockKind, wait: Wait) -> Result<FileLock> {
        FileLock::open_at(self.as_fd(), rel, kind, wait, OFlags::empty(), || {
            self.join(rel)
        })
    }

    /// Put a file named `name` with `content` in this directory atomically:
    /// it appears at its name complete or not at all. A temporary name, if
    /// one is needed, is taken in `temp` (the cache uses `objects/`, where
    /// the orphan sweep finds what a crash leaves); `temp` must be on the
    /// same file system.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] or [`Error::Rename`] naming the failing step.
    pub fn write_file(
        &self,
        name: &str,
        content: &[u8],
        replace: Replace,
        temp: &Dir,
    ) -> Result<Written> {
        if replace == Replace::No {
            if let Some(fd) = self.open_tmpfile(&self.join(name))? {
                write_all(fd.as_fd(), content, &self.join(name))?;
                return match self.link_tmpfile(fd.as_fd(), self.as_fd(), name, &self.join(name))? {
                    Some(()) => Ok(Written::Created),
                    None => Ok(Written::Exists),
                };
            }
        }
        self.put_named(name, content, replace, temp, None)
            .map(|held| match held {
                Some(_) => Written::Created,
                None => Written::Exists,
            })
    }

    /// Replace `name` with a file holding `content` and `mode`; the lock we
    /// held on it while writing is released.
    pub(crate) fn replace_with_mode(
        &self,
        name: &str,
        content: &[u8],
        temp: &Dir,
        mode: Option<Mode>,
    ) -> Result<()> {
        self.put_named(name, content, Replace::Yes, temp, mode)
            .map(drop)
    }

    /// Replace `name` with a file holding `content` and return the lock we
    /// hold on the new file: whoever locks `name` next waits for us. The
    /// size accounting uses this to stay inside its critical section across
    /// the replacement.
    ///
    /// The new file gets `mode` (the mode of the file it replaces), whatever
    /// our umask: a `cache.size` made group-writable for a shared cache
    /// stays so after any user rewrites it.
    pub(crate) fn replace_locked(
        &self,
        name: &str,
        content: &[u8],
        temp: &Dir,
        mode: Option<Mode>,
    ) -> Result<FileLock> {
        let held = self.put_named(name, content, Replace::Yes, temp, mode)?;
        Ok(held
            .expect("a replacing rename cannot find the name taken")
            .with_path(self.join(name)))
    }

    /// Put a file named `name` with `content` here unless the name is taken
    /// (`None`), and return the lock we hold on it.
    pub(crate) fn create_locked(
        &self,
        name: &str,
        content: &[u8],
        temp: &Dir,
    ) -> Result<Option<FileLock>> {
        Ok(self
            .put_named(name, content, Replace::No, temp, None)?
            .map(|held| held.with_path(self.join(name))))
    }

    /// Fill a locked `uuid-*` temporary in `temp` (with `mode`, if given,
    /// rather than the umask's) and rename it to `name`; `None` if the name
    /// is taken and `replace` is [`Replace::No`].
    fn put_named(
        &self,
        name: &str,
        content: &[u8],
        replace: Replace,
        temp: &Dir,
        mode: Option<Mode>,
    ) -> Result<Option<FileLock>> {
        loop {
            let (temp_name, lock) = temp.create_temp(mode.unwrap_or(NEW_FILE_MODE))?;
            let cleanup = scopeguard::guard((), |()| {
                let _ = unlinkat(temp.as_fd(), temp_name.as_str(), AtFlags::empty());
            });
            // Named after the file it becomes: that is what the caller knows.
            write_all(lock.as_fd(), content, &self.join(name))?;
            // Created with `mode`, the umask may have taken bits off: put
            // them back (a call saved where the umask is known to keep them).
            if let Some(mode) = mode.filter(|m| !umask_keeps(*m)) {
                fchmod(lock.as_fd(), mode).at(Op::Chmod, || temp.join(&temp_name))?;
            }
            crate::failpoint!("put-before-rename");
            let moved = match replace {
                Replace::Yes => renameat(temp.as_fd(), temp_name.as_str(), self.as_fd(), name),
                Replace::No => temp.rename_noreplace(&temp_name, self.as_fd(), name),
            };
            match moved {
                Ok(()) => {
                    scopeguard::ScopeGuard::into_inner(cleanup);
                    return Ok(Some(lock));
                }
                Err(Errno::EXIST) | Err(Errno::NOTEMPTY) if replace == Replace::No => {
                    return Ok(None)
                }
                // A sweeper that saw the temporary before we locked it
                // removed it: take another name.
                Err(Errno::NOENT) if renamed_source_gone(temp, &temp_name) => continue,
                Err(e) => {
                    return Err(Error::Rename {
                        from: temp.join(&temp_name),
                        to: self.join(name),
                        source: e.into(),
                    })
                }
            }
        }
    }

    /// Create an anonymous `uuid-*` directory here whose `object.lock` we
    /// hold exclusively from before the moment it appears in the directory.
    ///
    /// An orphan sweep may remove the directory in the short window before
    /// the lock is linked into it; that only makes us start again under a
    /// new name.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] naming the step that failed.
    pub fn create_anonymous(self: &Arc<Self>) -> Result<AnonymousDir> {
        loop {
            let name = anonymous_name();
            crate::failpoint!("anon-before-mkdir");
            mkdirat(self.as_fd(), name.as_str(), Mode::from_raw_mode(0o777))
                .at(Op::CreateDir, || self.join(&name))?;
            crate::failpoint!("anon-after-mkdir");
            // An orphan sweep may remove the still lockless directory (we
            // see ENOENT) or claim it with its own lock (we see EEXIST);
            // either way it is no longer ours: start again.
            let dir = match tree::open_dir(self.as_fd(), &name) {
                Ok(fd) => Dir::from_fd(fd, self.join(&name)),
                Err(Errno::NOENT) => continue,
                Err(e) => {
                    let _ = unlinkat(self.as_fd(), name.as_str(), AtFlags::REMOVEDIR);
                    return Err(e).at(Op::Open, || self.join(&name));
                }
            };
            match self.link_new_lock(&dir) {
                Ok(Some(lock)) => {
                    return Ok(AnonymousDir {
                        parent: Arc::clone(self),
                        dir,
                        name,
                        lock,
                    });
                }
                Ok(None) => {
                    // Not ours any more; if it is still empty (our
                    // temporary was swept), do not leave it for the sweep.
                    let _ = unlinkat(self.as_fd(), name.as_str(), AtFlags::REMOVEDIR);
                    continue;
                }
                Err(e) => {
                    let _ = unlinkat(self.as_fd(), name.as_str(), AtFlags::REMOVEDIR);
                    return Err(e);
                }
            }
        }
    }

    /// Put a new `object.lock`, exclusively locked by us before it becomes
    /// visible, into `dir` (a directory in this one). `None` if `dir`
    /// already has a lock file or has been removed.
    pub(crate) fn link_new_lock(&self, dir: &Dir) -> Result<Option<FileLock>> {
        let lock_path = dir.join(LOCK_FILE);
        if let Some(fd) = self.open_tmpfile(&lock_path)? {
            let lock = FileLock::acquire(fd, LockKind::Exclusive, Wait::Never, lock_path.clone())?;
            return Ok(self
                .link_tmpfile(lock.as_fd(), dir.as_fd(), LOCK_FILE, &lock_path)?
                .map(|()| lock));
        }
        let (temp_name, lock) = self.create_temp(NEW_FILE_MODE)?;
        match self.rename_noreplace(&temp_name, dir.as_fd(), LOCK_FILE) {
            Ok(()) => Ok(Some(lock.with_path(lock_path))),
            Err(e) => {
                let _ = unlinkat(self.as_fd(), temp_name.as_str(), AtFlags::empty());
                match e {
                    Errno::EXIST | Errno::NOENT => Ok(None),
                    e => Err(Error::Rename {
                        from: self.join(&temp_name),
                        to: lock_path,
                        source: e.into(),
                    }),
                }
            }
        }
    }

    /// Create, open and lock a `uuid-*` temporary file here.
    fn create_temp(&self, mode: Mode) -> Result<(String, FileLock)> {
        loop {
            let name = anonymous_name();
            let flags =
                OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let fd = match openat(self.as_fd(), name.as_str(), flags, mode) {
                Ok(fd) => fd,
                Err(Errno::EXIST) => continue,
                Err(e) => return Err(e).at(Op::Create, || self.join(&name)),
            };
            match FileLock::acquire(fd, LockKind::Exclusive, Wait::Never, self.join(&name)) {
                Ok(lock) => return Ok((name, lock)),
                // A sweeper locked it between our create and our lock; it
                // will unlink it.
                Err(Error::WouldBlock { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// An unnamed file in this directory, or `None` where the file system
    /// has no `O_TMPFILE`. Errors name `becomes`, the file it is made to
    /// be: an unnamed file has no path of its own a caller would know.
    fn open_tmpfile(&self, becomes: &Path) -> Result<Option<OwnedFd>> {
        if !self.features.tmpfile.usable() {
            return Ok(None);
        }
        match openat(
            self.as_fd(),
            ".",
            OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
            NEW_FILE_MODE,
        ) {
            Ok(fd) => Ok(Some(fd)),
            Err(Errno::OPNOTSUPP) | Err(Errno::ISDIR) | Err(Errno::INVAL) | Err(Errno::NOENT) => {
                self.features.tmpfile.set(Support::No);
                Ok(None)
            }
            Err(e) => Err(e).at(Op::Create, || becomes.to_owned()),
        }
    }

    /// Link an `O_TMPFILE` file as `name` in `into`; `None` if the name is
    /// taken or `into` is gone. `AT_EMPTY_PATH` needs `CAP_DAC_READ_SEARCH`;
    /// without it the `/proc/self/fd` link does the same.
    fn link_tmpfile(
        &self,
        fd: BorrowedFd<'_>,
        into: BorrowedFd<'_>,
        name: &str,
        path: &Path,
    ) -> Result<Option<()>> {
        let mut result = Err(Errno::NOENT);
        if self.features.tmpfile.get() != Support::Alternate {
            result = linkat(fd, "", into, name, AtFlags::EMPTY_PATH);
            match result {
                Err(Errno::NOENT) | Err(Errno::PERM) if !is_dir_gone(into) => {
                    self.features.tmpfile.set(Support::Alternate)
                }
                _ => self.features.tmpfile.set(Support::Yes),
            }
        }
        if self.features.tmpfile.get() == Support::Alternate {
            let proc_path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
            result = linkat(CWD, proc_path.as_str(), into, name, AtFlags::SYMLINK_FOLLOW);
        }
        match result {
            Ok(()) => Ok(Some(())),
            Err(Errno::EXIST) | Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(e).at(Op::Link, || path.to_owned()),
        }
    }

    /// `renameat2(RENAME_NOREPLACE)` of our temporary, or `link` + `unlink`
    /// where the file system refuses the flag.
    fn rename_noreplace(
        &self,
        temp_name: &str,
        into: BorrowedFd<'_>,
        name: &str,
    ) -> rustix::io::Result<()> {
        if self.features.noreplace.usable() {
            match renameat_with(self.as_fd(), temp_name, into, name, RenameFlags::NOREPLACE) {
                Err(Errno::INVAL) | Err(Errno::NOSYS) => self.features.noreplace.set(Support::No),
                other => {
                    self.features.noreplace.set(Support::Yes);
                    return other;
                }
            }
        }
        linkat(self.as_fd(), temp_name, into, name, AtFlags::empty())?;
        let _ = unlinkat(self.as_fd(), temp_name, AtFlags::empty());
        Ok(())
    }

    /// Rename the entry `from` in this directory to `to`, failing with
    /// `EEXIST`/`ENOTEMPTY` if `to` is taken. Where the file system refuses
    /// `RENAME_NOREPLACE`, a plain rename is used: it cannot replace the
    /// non-empty directory of an existing entry.
    pub(crate) fn rename_dir_noreplace(&self, from: &str, to: &str) -> rustix::io::Result<()> {
        if self.features.noreplace.usable() {
            match renameat_with(self.as_fd(), from, self.as_fd(), to, RenameFlags::NOREPLACE) {
                Err(Errno::INVAL) | Err(Errno::NOSYS) => self.features.noreplace.set(Support::No),
                other => return other,
            }
        }
        renameat(self.as_fd(), from, self.as_fd(), to)
    }
}

/// Whether a rename failed because our temporary vanished (as opposed to
/// the target directory).
fn renamed_source_gone(temp: &Dir, temp_name: &str) -> bool {
    matches!(
        rustix::fs::statat(temp.as_fd(), temp_name, AtFlags::SYMLINK_NOFOLLOW),
        Err(Errno::NOENT)
    )
}

/// Whether a directory we hold open has been removed.
fn is_dir_gone(dir: BorrowedFd<'_>) -> bool {
    matches!(rustix::fs::fstat(dir), Ok(st) if st.st_nlink == 0)
}

/// Write all of `buf` at the start of `fd`.
pub(crate) fn write_all(fd: BorrowedFd<'_>, mut buf: &[u8], path: &Path) -> Result<()> {
    while !buf.is_empty() {
        match rustix::io::write(fd, buf) {
            Ok(0) => return Err(Errno::NOSPC).at(Op::Write, || path.to_owned()),
            Ok(n) => buf = &buf[n..],
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e).at(Op::Write, || path.to_owned()),
        }
    }
    Ok(())
}

/// An anonymous `uuid-*` directory whose `object.lock` we hold exclusively.
///
/// Dropping it releases the lock and leaves the directory: anyone may then
/// sweep it as an orphan. Call [`AnonymousDir::remove`] to remove it.
#[must_use = "dropping it leaves an orphan directory for the next sweep"]
pub struct AnonymousDir {
    parent: Arc<Dir>,
    dir: Dir,
    name: String,
    lock: FileLock,
}

impl fmt::Debug for AnonymousDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnonymousDir")
            .field("path", &self.dir.path())
            .finish()
    }
}

impl AnonymousDir {
    /// Its `uuid-*` name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The directory itself.
    pub fn dir(&self) -> &Dir {
        &self.dir
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The held lock on its `object.lock`.
    pub fn lock(&self) -> &FileLock {
        &self.lock
    }

    /// Let go of the directory and keep its lock: for an entry that has
    /// been renamed into place, whose lock its committer goes on holding.
    pub(crate) fn into_lock(self) -> FileLock {
        self.lock
    }

    /// Remove it with the removal protocol: `object.info` first, then all
    /// but the lock, then the lock, then the directory; the lock is released
    /// last.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] naming the step that failed; what is left is an
    /// unlocked `uuid-*` directory that the next orphan sweep removes.
    pub fn remove(self) -> Result<()> {
        remove_entry(&self.parent, &self.name, &self.dir)
    }

    /// Move it into `to`, a directory on the same file system, under a
    /// fresh anonymous name. Its lock is held throughout (the lock file
    /// moves with it), so an orphan sweep sees it live on either side;
    /// its descriptors stay valid, and its parent is `to` from now on.
    /// On failure it is handed back, where it was.
    pub(crate) fn move_to(self, to: &Arc<Dir>) -> Result<AnonymousDir, Box<(Error, AnonymousDir)>> {
        loop {
            let name = anonymous_name();
            let moved = if to.features.noreplace.usable() {
                match renameat_with(
                    self.parent.as_fd(),
                    self.name.as_str(),
                    to.as_fd(),
                    name.as_str(),
                    RenameFlags::NOREPLACE,
                ) {
                    Err(Errno::INVAL) | Err(Errno::NOSYS) => {
                        to.features.noreplace.set(Support::No);
                        continue;
                    }
                    other => other,
                }
            } else {
                // Without the flag a plain rename could only replace an
                // empty directory of the same fresh random name.
                renameat(
                    self.parent.as_fd(),
                    self.name.as_str(),
                    to.as_fd(),
                    name.as_str(),
                )
            };
            match moved {
                Ok(()) => {
                    let path = to.join(&name);
                    let AnonymousDir { dir, lock, .. } = self;
                    return Ok(AnonymousDir {
                        parent: Arc::clone(to),
                        lock: lock.with_path(path.join(LOCK_FILE)),
                        dir: Dir { path, ..dir },
                        name,
                    });
                }
                Err(Errno::EXIST) | Err(Errno::NOTEMPTY) => continue,
                Err(e) => {
                    let error = Error::Rename {
                        from: self.path().to_owned(),
                        to: to.join(&name),
                        source: e.into(),
                    };
                    return Err(Box::new((error, self)));
                }
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn each_mode(f: impl Fn(&Arc<Dir>)) {
        for disable in ["", "tmpfile", "noreplace", "tmpfile,noreplace"] {
            let t = tempfile::tempdir().unwrap();
            let dir = Arc::new(Dir::open(t.path()).unwrap());
            for d in disable.split(',') {
                match d {
                    "tmpfile" => dir.features.tmpfile.set(Support::No),
                    "noreplace" => dir.features.noreplace.set(Support::No),
                    _ => {}
                }
            }
            f(&dir);
        }
    }

    #[test]
    fn files_appear_whole_and_a_taken_name_is_reported_in_every_mode() {
        each_mode(|dir| {
            assert_eq!(
                dir.write_file("f", b"one", Replace::No, dir).unwrap(),
                Written::Created
            );
            assert_eq!(
                dir.write_file("f", b"two", Replace::No, dir).unwrap(),
                Written::Exists
            );
            assert_eq!(std::fs::read(dir.join("f")).unwrap(), b"one");
            assert_eq!(
                dir.write_file("f", b"three", Replace::Yes, dir).unwrap(),
                Written::Created
            );
            assert_eq!(std::fs::read(dir.join("f")).unwrap(), b"three");
            let names: Vec<_> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(
                names,
                vec![std::ffi::OsString::from("f")],
                "no temporary may be left"
            );
        });
    }

    #[test]
    fn an_anonymous_dir_is_locked_when_it_appears_and_removal_leaves_nothing() {
        each_mode(|dir| {
            let anon = dir.create_anonymous().unwrap();
            let rel = format!("{}/{}", anon.name(), LOCK_FILE);
            let other = dir.lock(&rel, LockKind::Shared, Wait::Never);
            assert!(matches!(other, Err(Error::WouldBlock { .. })), "{other:?}");
            assert_eq!(anon.lock().path(), dir.join(&rel));
            std::fs::create_dir(anon.path().join("data")).unwrap();
            anon.remove().unwrap();
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        });
    }
}
