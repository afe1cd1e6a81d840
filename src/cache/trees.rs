//! Trees in and out: [`FsCache::store_tree`], [`StoreGuard::copy_in`],
//! [`LoadGuard::copy_out`] and [`FsCache::copy_out`].

use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{fstat, mkdirat, openat, statat, unlinkat, AtFlags, Mode, OFlags, CWD};
use rustix::io::Errno;

use crate::beneath::open_beneath;
use crate::error::{Error, IoContext, Op, Result};
use crate::layout::{in_entry, DATA};
use crate::tree::{self, Copied};
use crate::{Commit, FsCache, LoadGuard, StoreGuard};

impl FsCache {
    /// Store a copy of the file or directory tree `src` as the entry
    /// `name`: [`store`](FsCache::store), [`copy_in`](StoreGuard::copy_in),
    /// [`commit`](StoreGuard::commit).
    ///
    /// A directory's contents become the entry's `data/` (which takes the
    /// directory's mode and times); a single file, or a symbolic link,
    /// is stored in `data/` under its file name. See
    /// [`StoreGuard::copy_in`] for what is copied and how.
    ///
    /// # Errors
    ///
    /// As [`FsCache::store`], [`StoreGuard::copy_in`] and
    /// [`StoreGuard::commit`]; on any error the entry is removed.
    ///
    /// # Examples
    ///
    /// ```
    /// use fscache::{Commit, FsCache, MaxSize};
    /// let dir = tempfile::tempdir().unwrap();
    /// let file = dir.path().join("report.txt");
    /// std::fs::write(&file, "all green").unwrap();
    /// let cache = FsCache::open("my-tool", dir.path().join("cache"))?;
    /// cache.set_maximum_size(MaxSize::Unlimited)?;
    /// assert!(matches!(cache.store_tree("report", &file)?, Commit::Stored { .. }));
    /// let hit = cache.load("report")?.expect("just stored");
    /// assert_eq!(std::fs::read(hit.path().join("report.txt")).unwrap(), b"all green");
    /// # Ok::<(), fscache::Error>(())
    /// ```
    pub fn store_tree(&self, name: &str, src: impl AsRef<Path>) -> Result<Commit> {
        let entry = self.store(name)?;
        entry.copy_in(src)?;
        Ok(entry.commit()?)
    }

    /// Copy the entry `name`'s `data/` out to `dest`, a directory this
    /// creates: [`load`](FsCache::load), then
    /// [`LoadGuard::copy_out`]. `None` is a miss, and creates nothing.
    ///
    /// # Errors
    ///
    /// As [`FsCache::load`] and [`LoadGuard::copy_out`].
    ///
    /// # Examples
    ///
    /// ```
    /// use fscache::{FsCache, MaxSize};
    /// let dir = tempfile::tempdir().unwrap();
    /// let cache = FsCache::open("my-tool", dir.path().join("cache"))?;
    /// cache.set_maximum_size(MaxSize::Unlimited)?;
    /// let entry = cache.store("built")?;
    /// std::fs::write(entry.path().join("out.o"), b"\x7fELF").unwrap();
    /// assert!(entry.commit()?.is_stored());
    ///
    /// let out = dir.path().join("out");
    /// assert!(cache.copy_out("built", &out)?.is_some());
    /// assert_eq!(std::fs::read(out.join("out.o")).unwrap(), b"\x7fELF");
    /// assert!(cache.copy_out("never-built", dir.path().join("none"))?.is_none());
    /// assert!(!dir.path().join("none").exists());
    /// # Ok::<(), fscache::Error>(())
    /// ```
    pub fn copy_out(&self, name: &str, dest: impl AsRef<Path>) -> Result<Option<Copied>> {
        match self.load(name)? {
            Some(hit) => hit.copy_out(dest).map(Some),
            None => Ok(None),
        }
    }
}

impl StoreGuard {
    /// Copy the file or directory tree `src` into the entry's `data/`.
    ///
    /// A directory's contents are copied into `data/`, which takes the
    /// directory's mode and times; a single file, or a symbolic link, is
    /// copied into `data/` under its file name. The path leading to `src`
    /// is the caller's and followed; `src` itself, and everything below
    /// it, is not.
    ///
    /// What is copied, and how:
    ///
    /// * File content shares its blocks with the original where the file
    ///   system can (`FICLONE`: Btrfs, XFS with reflink, bcachefs, ...),
    ///   else is copied in the kernel (`copy_file_range`), else read and
    ///   written; what works is found out once per source file system
    ///   and remembered for the rest of the copy.
    /// * Symbolic links are copied as links, with their target as it is:
    ///   a link that points out of `src` is never followed.
    /// * Modes (all of `0o7777`), modification and access times are kept;
    ///   a read-only directory gets its mode once it is full. Owners are
    ///   not: the copy belongs to the caller.
    /// * Hard links inside the tree stay hard links: a second name of the
    ///   same file becomes a second name of its copy.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] naming the operation and the path that failed:
    /// [`Op::Copy`] for a device file, fifo or socket in `src` (they are
    /// refused, not skipped: the copy would not be the tree), for a
    /// name whose type changed during the copy, and for a `data/` that
    /// is inside `src`; [`Op::CreateDir`] or [`Op::Create`] (`EEXIST`)
    /// for a name already in `data/`. What was copied before the error
    /// stays in `data/`: drop the guard to remove it all.
    ///
    /// # Examples
    ///
    /// ```
    /// use fscache::{FsCache, MaxSize};
    /// let dir = tempfile::tempdir().unwrap();
    /// let src = dir.path().join("build");
    /// std::fs::create_dir_all(src.join("bin")).unwrap();
    /// std::fs::write(src.join("bin/tool"), b"#!/bin/sh\n").unwrap();
    /// let cache = FsCache::open("my-tool", dir.path().join("cache"))?;
    /// cache.set_maximum_size(MaxSize::Unlimited)?;
    /// let entry = cache.store("build-1")?;
    /// let copied = entry.copy_in(&src)?;
    /// assert_eq!((copied.files, copied.directories), (1, 1));
    /// std::fs::write(entry.path().join("stamp"), b"built by hand").unwrap();
    /// assert!(entry.commit()?.is_stored());
    /// # Ok::<(), fscache::Error>(())
    /// ```
    ///
    /// # Limitations
    ///
    /// Holes of a sparse file are kept only where its blocks are shared;
    /// a copy fills them. Extended attributes, ACLs and file flags are not
    /// copied.
    pub fn copy_in(&self, src: impl AsRef<Path>) -> Result<Copied> {
        // Only a commit that published the entry (and then failed to
        // make it durable) leaves a guard without one.
        let Some(entry) = self.entry() else {
            return Err(Error::Io {
                op: Op::Copy,
                path: self.path().to_owned(),
                source: std::io::Error::other("the entry is committed already"),
            });
        };
        let data = tree::open_dir(entry.dir().as_fd(), DATA).at(Op::Open, || self.path().into())?;
        tree::copy_path(src.as_ref(), data.as_fd(), self.path())
    }
}

impl LoadGuard {
    /// Copy the entry's `data/` out to `dest`, a new directory: `dest`
    /// must not exist (its parent must), and is created with the mode and
    /// times of `data/`. Everything is copied as
    /// [`StoreGuard::copy_in`] copies it in: blocks shared where the file
    /// system can, links as links, modes, times and hard links kept.
    ///
    /// # Errors
    ///
    /// [`Error::Io`]: [`Op::CreateDir`] with `EEXIST` if `dest` exists
    /// (as anything, a link included: it is left as it is), [`Op::Open`]
    /// if its parent cannot be opened, and whatever stops the copy (see
    /// [`StoreGuard::copy_in`]), after which `dest` is removed again.
    ///
    /// # Examples
    ///
    /// ```
    /// use fscache::{FsCache, MaxSize};
    /// let dir = tempfile::tempdir().unwrap();
    /// let cache = FsCache::open("my-tool", dir.path().join("cache"))?;
    /// cache.set_maximum_size(MaxSize::Unlimited)?;
    /// let entry = cache.store("built")?;
    /// std::fs::create_dir(entry.path().join("lib")).unwrap();
    /// std::fs::write(entry.path().join("lib/a.so"), b"...").unwrap();
    /// assert!(entry.commit()?.is_stored());
    ///
    /// let hit = cache.load("built")?.expect("just stored");
    /// let out = dir.path().join("sysroot");
    /// hit.copy_out(&out)?;
    /// assert_eq!(std::fs::read(out.join("lib/a.so")).unwrap(), b"...");
    /// let again = hit.copy_out(&out).unwrap_err();
    /// assert_eq!(again.io_error().and_then(|e| e.raw_os_error()), Some(17)); // EEXIST
    /// # Ok::<(), fscache::Error>(())
    /// ```
    ///
    /// # Security
    ///
    /// The path leading to `dest` is the caller's and followed; `dest`
    /// is made with `mkdir`, which never follows a link, and everything
    /// below it is created relative to descriptors without following
    /// one, so a link swapped in for a directory of the copy while it is
    /// being made stops the copy rather than redirects it.
    pub fn copy_out(&self, dest: impl AsRef<Path>) -> Result<Copied> {
        let dest = dest.as_ref();
        let objects = self.cache().objects();
        let rel = in_entry(self.name(), DATA);
        let data = open_beneath(
            objects.as_fd(),
            &rel,
            OFlags::RDONLY | OFlags::DIRECTORY,
            Mode::empty(),
        )
        .at(Op::Open, || self.path().to_owned())?;
        let target = NewDir::create(dest)?;
        match tree::copy_dir(data, self.path(), target.fd.as_fd(), dest) {
            Ok(copied) => Ok(copied),
            Err(e) => {
                target.remove();
                Err(e)
            }
        }
    }
}

/// A directory this call created where there was nothing, to fill.
struct NewDir {
    /// The directory it is in (opened by path: the caller's).
    parent: OwnedFd,
    name: CString,
    fd: OwnedFd,
    path: PathBuf,
}

impl NewDir {
    /// `mkdir` `path` (owner-only until it is filled), then open it
    /// without following a link.
    fn create(path: &Path) -> Result<NewDir> {
        let exists = || Error::Io {
            op: Op::CreateDir,
            path: path.to_owned(),
            source: Errno::EXIST.into(),
        };
        // `/`, or a path ending in `..`: something is there already.
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(exists());
        };
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        let name = CString::new(name.as_bytes())
            .map_err(|_| Errno::INVAL)
            .at(Op::CreateDir, || path.to_owned())?;
        let parent = openat(
            CWD,
            parent,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .at(Op::Open, || parent.to_owned())?;
        mkdirat(&parent, &name, Mode::RWXU).at(Op::CreateDir, || path.to_owned())?;
        match tree::open_dir(parent.as_fd(), &name) {
            Ok(fd) => Ok(NewDir {
                parent,
                name,
                fd,
                path: path.to_owned(),
            }),
            Err(e) => {
                // Swapped for something else at once: not ours to remove.
                Err(e).at(Op::Open, || path.to_owned())
            }
        }
    }

    /// Remove what was made of it, best effort (the copy's error is the
    /// one to report): its contents through its descriptor, then the
    /// directory itself if its name still leads to it.
    fn remove(self) {
        let _ = tree::remove_contents(self.fd.as_fd(), &self.path, None);
        let (Ok(ours), Ok(there)) = (
            fstat(&self.fd),
            statat(&self.parent, &self.name, AtFlags::SYMLINK_NOFOLLOW),
        ) else {
            return;
        };
        if (ours.st_dev, ours.st_ino) == (there.st_dev, there.st_ino) {
            let _ = unlinkat(&self.parent, &self.name, AtFlags::REMOVEDIR);
        }
    }
}
