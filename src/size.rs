//! `cache.size`: the bytes accounted, changed only under its write lock.
//!
//! The critical section is a [`SizeLock`]. A new value is written to a locked
//! `uuid-*` temporary which is renamed over `cache.size`; we keep the lock of
//! the new file, so the section lasts until the guard is dropped even though
//! the file it started on has been replaced. That lets an `object.info`
//! appear or disappear inside the same section as its size change.

use std::os::fd::AsFd;

use rustix::io::Errno;

use crate::atomic::Dir;
use crate::error::{Error, IoContext, Op, Result};
use crate::info::{parse_size, CACHE_SIZE};
use crate::lock::{FileLock, LockKind, Wait};

/// `cache.size` is one short integer; anything longer is corrupt.
const MAX_SIZE_FILE: usize = 64;

/// The held write lock on `cache.size` and the value it read.
#[must_use = "the size lock is released when this is dropped"]
#[derive(Debug)]
pub(crate) struct SizeLock<'c> {
    root: &'c Dir,
    temp: &'c Dir,
    lock: FileLock,
    /// What the file holds.
    on_disk: Option<u64>,
}

impl<'c> SizeLock<'c> {
    /// Wait for the write lock on `root/cache.size` and read it. Temporaries
    /// go to `temp` (`objects/`).
    pub(crate) fn acquire(root: &'c Dir, temp: &'c Dir) -> Result<Self> {
        let lock = root.lock(CACHE_SIZE, LockKind::Exclusive, Wait::Forever)?;
        let on_disk = read_fd(&lock, root)?;
        Ok(SizeLock {
            root,
            temp,
            lock,
            on_disk,
        })
    }

    /// The value read, or [`Error::Corrupt`] if the file held no size.
    pub(crate) fn value(&self) -> Result<u64> {
        self.on_disk.ok_or_else(|| {
            Error::corrupt(
                self.root.join(CACHE_SIZE),
                "not a non-negative JSON integer (run `fscache resync`)",
            )
        })
    }

    /// Write `new`, staying in the critical section.
    pub(crate) fn set(&mut self, new: u64) -> Result<()> {
        if self.on_disk == Some(new) {
            return Ok(());
        }
        let held = self
            .root
            .replace_locked(CACHE_SIZE, new.to_string().as_bytes(), self.temp)?;
        crate::failpoint!("size-after-rename");
        // Dropping the old guard unlocks the replaced file: anyone waiting
        // on it wakes, sees the replacement and waits again, now on ours.
        self.lock = held;
        self.on_disk = Some(new);
        Ok(())
    }
}

fn read_fd(fd: &impl AsFd, root: &Dir) -> Result<Option<u64>> {
    let mut buf = [0u8; MAX_SIZE_FILE + 1];
    let mut len = 0;
    while len < buf.len() {
        match rustix::io::pread(fd, &mut buf[len..], len as u64) {
            Ok(0) => break,
            // A short read of a regular file is its end: save the call
            // that would return 0.
            Ok(n) if n < buf.len() - len => {
                len += n;
                break;
            }
            Ok(n) => len += n,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e).at(Op::Read, || root.join(CACHE_SIZE)),
        }
    }
    Ok(if len > MAX_SIZE_FILE {
        None
    } else {
        parse_size(&buf[..len])
    })
}

/// Read `cache.size` without locking (it is always replaced whole).
pub(crate) fn read_unlocked(root: &Dir) -> Result<Option<u64>> {
    let fd = crate::beneath::open_beneath(
        root.as_fd(),
        CACHE_SIZE,
        rustix::fs::OFlags::RDONLY,
        rustix::fs::Mode::empty(),
    )
    .at(Op::Open, || root.join(CACHE_SIZE))?;
    read_fd(&fd, root)
}
