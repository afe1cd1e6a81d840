//! Small blobs: named byte strings stored as the files of an ordinary
//! entry, in the spirit of Go's `DiskCacheStore.Put/Get/Has` and
//! `cacache::write/read`.
//!
//! An entry stored with [`FsCache::put_blobs`] is a normal entry (osbuild
//! loads it, maintenance counts and evicts it like any other): its `data/`
//! holds one regular file per blob, named after the blob, mode `0666` minus
//! the umask. Blobs are read through descriptors below the cache, never
//! following a link, and never past a limit.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{fstat, openat, statat, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::atomic::write_all;
use crate::beneath::open_beneath;
use crate::error::{not_a_file, Error, IoContext, Op, Result};
use crate::layout::{committed, is_regular, DATA};
use crate::name::validate_name;
use crate::{tree, Commit, FsCache, LoadGuard, StoreGuard};

/// The most bytes [`FsCache::get_blob`] and [`LoadGuard::read_blob`] read
/// into memory: 64 MiB. A larger blob is an error, not an allocation;
/// [`LoadGuard::read_blob_limited`] takes another limit.
pub const BLOB_LIMIT: usize = 64 << 20;

/// Check a blob's name: the rule of entry names ([`validate_name`]): one
/// path component, not `.` or `..`, no `/` or NUL, at most 255 bytes, not
/// starting with `uuid-`. (The last is stricter than a file inside `data/`
/// needs; one rule for every name a caller gives the cache is simpler.)
fn validate_blob(blob: &str) -> Result<&str> {
    validate_name(blob)
}

impl FsCache {
    /// Store the entry `name` holding `blobs`, each as the file of its name
    /// in `data/`, and commit it: [`FsCache::store`], one
    /// [`StoreGuard::write_blob`] per blob, [`StoreGuard::commit`]. The
    /// handle's durability and integrity policies apply as to any commit.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] for an entry name or a blob name the cache
    /// cannot use (see [`validate_name`]), or a blob name given twice,
    /// before anything is written; [`Error::Io`] if the entry cannot be
    /// created, written or committed (it is then removed).
    ///
    /// # Examples
    ///
    /// ```
    /// use fscache::{Commit, FsCache, MaxSize};
    /// let dir = tempfile::tempdir().unwrap();
    /// let cache = FsCache::open("my-tool", dir.path())?;
    /// cache.set_maximum_size(MaxSize::Unlimited)?;
    /// let outcome = cache.put_blobs(
    ///     "cc-7f3a",
    ///     &[("output", b"\x7fELF".as_slice()), ("stdout", b""), ("exit-code", b"0")],
    /// )?;
    /// assert!(matches!(outcome, Commit::Stored { .. }));
    /// assert_eq!(cache.get_blob("cc-7f3a", "exit-code")?.as_deref(), Some(&b"0"[..]));
    /// # Ok::<(), fscache::Error>(())
    /// ```
    pub fn put_blobs<B: AsRef<str>, D: AsRef<[u8]>>(
        &self,
        name: &str,
        blobs: &[(B, D)],
    ) -> Result<Commit> {
        validate_name(name)?;
        for (i, (blob, _)) in blobs.iter().enumerate() {
            let blob = validate_blob(blob.as_ref())?;
            if blobs[..i].iter().any(|(other, _)| other.as_ref() == blob) {
                return Err(Error::InvalidName {
                    name: blob.to_owned(),
                    reason: "the blob is given twice",
                });
            }
        }
        let entry = self.store(name)?;
        let data = entry.open_data()?;
        for (blob, bytes) in blobs {
            write_blob_at(data.as_fd(), entry.path(), blob.as_ref(), bytes.as_ref())?;
        }
        Ok(entry.commit()?)
    }

    /// The blob `blob` of the entry `name`, at most [`BLOB_LIMIT`] bytes:
    /// [`FsCache::load`] and [`LoadGuard::read_blob`]. A miss of the entry
    /// or of the blob is `Ok(None)`; so is anything in the blob's place
    /// that is not a regular file (a planted link is never followed).
    ///
    /// It is a load: a found entry counts as a hit and is marked as used
    /// (even if the blob is missing), a missing one counts as a miss.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] for a name no entry or blob can have;
    /// [`Error::Io`] on I/O failure, and for a blob larger than
    /// [`BLOB_LIMIT`] (its [`io_error`](Error::io_error) is of kind
    /// [`FileTooLarge`](std::io::ErrorKind::FileTooLarge)).
    ///
    /// # Examples
    ///
    /// ```
    /// use fscache::{FsCache, MaxSize};
    /// let dir = tempfile::tempdir().unwrap();
    /// let cache = FsCache::open("my-tool", dir.path())?;
    /// cache.set_maximum_size(MaxSize::Unlimited)?;
    /// assert!(cache.put_blobs("k", &[("v", b"1")])?.is_stored());
    /// assert_eq!(cache.get_blob("k", "v")?, Some(b"1".to_vec()));
    /// assert_eq!(cache.get_blob("k", "other")?, None);
    /// assert_eq!(cache.get_blob("missing", "v")?, None);
    /// # Ok::<(), fscache::Error>(())
    /// ```
    pub fn get_blob(&self, name: &str, blob: &str) -> Result<Option<Vec<u8>>> {
        validate_blob(blob)?;
        match self.load(name)? {
            Some(hit) => hit.read_blob(blob),
            None => Ok(None),
        }
    }

    /// Whether the entry `name` is in the cache now: what a
    /// [`FsCache::load`] would find (a committed, valid entry that the
    /// handle's [`EarlierBoot`](crate::EarlierBoot) policy serves), taking
    /// no lock.
    ///
    /// It is not a use: it neither marks the entry as used nor counts as a
    /// hit or a miss. The answer may be out of date as soon as it is
    /// given: a `true` may be followed by a miss if the entry is evicted
    /// meanwhile (or is being evicted now), a `false` by a hit if someone
    /// commits it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] for a name no entry can have; [`Error::Io`]
    /// for failures other than the entry not being there.
    ///
    /// # Examples
    ///
    /// ```
    /// use fscache::{FsCache, MaxSize};
    /// let dir = tempfile::tempdir().unwrap();
    /// let cache = FsCache::open("my-tool", dir.path())?;
    /// cache.set_maximum_size(MaxSize::Unlimited)?;
    /// assert!(!cache.has("k")?);
    /// assert!(cache.put_blobs("k", &[("v", b"1")])?.is_stored());
    /// assert!(cache.has("k")?);
    /// assert_eq!(cache.counters().hits + cache.counters().misses, 0);
    /// # Ok::<(), fscache::Error>(())
    /// ```
    pub fn has(&self, name: &str) -> Result<bool> {
        validate_name(name)?;
        if !self.info().is_supported() {
            return Ok(false);
        }
        let objects = self.objects();
        // `committed` looks below the name: make sure that is no link.
        match statat(objects.as_fd(), name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {}
            Ok(_) | Err(Errno::NOENT) => return Ok(false),
            Err(e) => return Err(e).at(Op::Stat, || objects.join(name)),
        }
        Ok(committed(objects, name, None)?
            .is_some_and(|info| self.earlier_boot().serves(Some(&info), self.boot_id())))
    }
}

impl StoreGuard {
    /// Write `bytes` to a new file `blob` in `data/`, mode `0666` minus the
    /// umask.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] for a blob name the cache cannot use (see
    /// [`validate_name`]); [`Error::Io`] if it cannot be written, also
    /// when something called `blob` is there already.
    ///
    /// # Examples
    ///
    /// ```
    /// use fscache::{FsCache, MaxSize};
    /// let dir = tempfile::tempdir().unwrap();
    /// let cache = FsCache::open("my-tool", dir.path())?;
    /// cache.set_maximum_size(MaxSize::Unlimited)?;
    /// let entry = cache.store("mixed")?;
    /// entry.write_blob("exit-code", b"0")?;
    /// std::fs::create_dir(entry.path().join("tree")).unwrap();
    /// assert!(entry.commit()?.is_stored());
    /// assert_eq!(cache.get_blob("mixed", "exit-code")?, Some(b"0".to_vec()));
    /// # Ok::<(), fscache::Error>(())
    /// ```
    pub fn write_blob(&self, blob: &str, bytes: &[u8]) -> Result<()> {
        validate_blob(blob)?;
        let data = self.open_data()?;
        write_blob_at(data.as_fd(), self.path(), blob, bytes)
    }

    /// Open `data/` through the entry directory's descriptor.
    fn open_data(&self) -> Result<std::os::fd::OwnedFd> {
        let Some(entry) = self.entry_dir() else {
            return Err(Error::Io {
                op: Op::Open,
                path: self.path().to_owned(),
                source: io::Error::other("the entry is committed already"),
            });
        };
        tree::open_dir(entry.as_fd(), DATA).at(Op::Open, || self.path().to_owned())
    }
}

/// Create the file `blob` in `data` (at `data_path`) holding `bytes`.
fn write_blob_at(data: BorrowedFd<'_>, data_path: &Path, blob: &str, bytes: &[u8]) -> Result<()> {
    let path = data_path.join(blob);
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd =
        openat(data, blob, flags, Mode::from_raw_mode(0o666)).at(Op::Create, || path.clone())?;
    write_all(fd.as_fd(), bytes, &path)
}

impl LoadGuard {
    /// The blob `blob` of the held entry (the file of that name in
    /// `data/`), at most [`BLOB_LIMIT`] bytes; `Ok(None)` if there is no
    /// regular file of that name. Nothing is followed: a link in the
    /// blob's place (or in `data`'s) reads as `None`.
    ///
    /// # Errors
    ///
    /// As [`LoadGuard::read_blob_limited`] with [`BLOB_LIMIT`].
    ///
    /// # Examples
    ///
    /// ```
    /// use fscache::{FsCache, MaxSize};
    /// let dir = tempfile::tempdir().unwrap();
    /// let cache = FsCache::open("my-tool", dir.path())?;
    /// cache.set_maximum_size(MaxSize::Unlimited)?;
    /// assert!(cache.put_blobs("k", &[("a", b"1"), ("b", b"2")])?.is_stored());
    /// let hit = cache.load("k")?.expect("stored");
    /// assert_eq!(hit.read_blob("a")?, Some(b"1".to_vec()));
    /// assert_eq!(hit.read_blob("b")?, Some(b"2".to_vec()));
    /// # Ok::<(), fscache::Error>(())
    /// ```
    pub fn read_blob(&self, blob: &str) -> Result<Option<Vec<u8>>> {
        self.read_blob_limited(blob, BLOB_LIMIT)
    }

    /// [`LoadGuard::read_blob`], reading at most `limit` bytes.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] for a blob name the cache cannot use;
    /// [`Error::Io`] on I/O failure, and for a blob of more than `limit`
    /// bytes (its [`io_error`](Error::io_error) is of kind
    /// [`FileTooLarge`](std::io::ErrorKind::FileTooLarge)), found before
    /// more than `limit` bytes are read.
    ///
    /// # Examples
    ///
    /// ```
    /// use fscache::{FsCache, MaxSize};
    /// let dir = tempfile::tempdir().unwrap();
    /// let cache = FsCache::open("my-tool", dir.path())?;
    /// cache.set_maximum_size(MaxSize::Unlimited)?;
    /// assert!(cache.put_blobs("k", &[("log", vec![b'x'; 1000])])?.is_stored());
    /// let hit = cache.load("k")?.expect("stored");
    /// let e = hit.read_blob_limited("log", 100).unwrap_err();
    /// assert_eq!(e.io_error().map(|e| e.kind()), Some(std::io::ErrorKind::FileTooLarge));
    /// assert_eq!(hit.read_blob_limited("log", 1000)?.map(|v| v.len()), Some(1000));
    /// # Ok::<(), fscache::Error>(())
    /// ```
    pub fn read_blob_limited(&self, blob: &str, limit: usize) -> Result<Option<Vec<u8>>> {
        validate_blob(blob)?;
        let objects = self.cache().objects();
        let rel = format!("{}/{DATA}/{blob}", self.name());
        let path = || objects.join(&rel);
        let fd = match open_beneath(objects.as_fd(), &rel, OFlags::RDONLY, Mode::empty()) {
            Ok(fd) => fd,
            Err(e) if not_a_file(e) => return Ok(None),
            Err(e) => return Err(e).at(Op::Open, path),
        };
        let st = fstat(&fd).at(Op::Stat, path)?;
        if !is_regular(&st) {
            return Ok(None);
        }
        read_bounded(fd.as_fd(), st.st_size, limit, path).map(Some)
    }
}

/// Read all of `fd` (whose status gave `size`), but never more than
/// `limit` bytes: a larger file is an error once that is known.
fn read_bounded(
    fd: BorrowedFd<'_>,
    size: i64,
    limit: usize,
    path: impl Fn() -> PathBuf,
) -> Result<Vec<u8>> {
    let too_large = |what: String| Error::Io {
        op: Op::Read,
        path: path(),
        source: io::Error::new(
            io::ErrorKind::FileTooLarge,
            format!("the blob holds {what} bytes, more than the limit of {limit}"),
        ),
    };
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    if size > limit {
        return Err(too_large(size.to_string()));
    }
    // One byte more than the status says, so that the read that finds the
    // end (or that the file grew) needs no second buffer.
    let most = limit.saturating_add(1);
    let mut out = vec![0u8; size.saturating_add(1).min(most)];
    let mut len = 0;
    loop {
        if len == out.len() {
            if len > limit {
                return Err(too_large(format!("more than {limit}")));
            }
            out.resize(len.saturating_mul(2).max(4096).min(most), 0);
        }
        match rustix::io::pread(fd, &mut out[len..], len as u64) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e).at(Op::Read, path),
        }
    }
    out.truncate(len);
    Ok(out)
}
