//! Integrity, opt-in: a digest of an entry's `data/` recorded in its
//! `object.info` at commit ([`Integrity::Record`]), and the checks against
//! it ([`FsCache::verify`], [`FsCache::load_verified`]).
//!
//! The digest is computed by the walk that measures the tree at commit
//! (and fsyncs it under [`Durability::Sync`]), so recording costs one read
//! of every file and no second walk; [`Integrity::None`] makes exactly the
//! system calls it made before.

use std::fmt;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{Mode, OFlags};

use crate::atomic::Dir;
use crate::beneath::open_beneath;
use crate::durability::{self, Durability, Pending, FSYNC_EACH_UP_TO};
use crate::error::{IoContext, Op, Result};
use crate::info::ObjectInfo;
use crate::layout::{in_entry, DATA};
use crate::{tree, FsCache, LoadGuard, StoreGuard};

/// Whether [`StoreGuard::commit`](crate::StoreGuard::commit) records a
/// [`Digest`] of the entry's `data/` in its `object.info`.
///
/// Choose it per handle with
/// [`OpenOptions::integrity`](crate::OpenOptions::integrity) or per entry
/// with [`StoreGuard::set_integrity`]. What a digest is good for: telling
/// an entry whose files changed after the commit (bit rot, a power cut
/// that emptied files, a tool that edited the cache in place) from an
/// intact one, with [`FsCache::verify`] or [`FsCache::load_verified`].
///
/// # Security
///
/// The digest detects accidents, not an adversary: whoever can change
/// files in the cache can rewrite `object.info` too.
///
/// # Examples
///
/// ```
/// use fscache::{FsCache, Integrity, MaxSize};
/// let dir = tempfile::tempdir().unwrap();
/// let cache = FsCache::open("my-tool", dir.path())?;
/// cache.set_maximum_size(MaxSize::Unlimited)?;
/// let mut entry = cache.store("checked")?;
/// entry.set_integrity(Integrity::Record);
/// std::fs::write(entry.path().join("out"), b"result").unwrap();
/// assert!(entry.commit()?.is_stored());
/// assert!(cache.load("checked")?.expect("stored").info().digest.is_some());
/// # Ok::<(), fscache::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Integrity {
    /// Record nothing (what osbuild does). Costs no system call.
    #[default]
    None,
    /// Record the [`Digest`] of `data/` under `"fscache-sha256"`
    /// ([`DIGEST_KEY`](crate::DIGEST_KEY)). The walk that measures the tree
    /// reads every regular file once on the way (an open, reads, a close
    /// each) and keeps, for each directory on its path, one record per
    /// entry (its name and about 45 bytes). Hashing costs about 0.8 ms
    /// per MiB on a CPU with SHA extensions (`benches/integrity.rs`); the
    /// commit's system calls grow by the open, reads and close of each
    /// file and the `readlink` of each link. A tree with a file the commit
    /// may not read fails the commit with [`Error::Io`](crate::Error::Io) naming it; the
    /// guard comes back in the [`CommitError`](crate::CommitError).
    Record,
}

/// A SHA-256 digest of a directory tree: the value of `"fscache-sha256"`
/// in `object.info` ([`ObjectInfo::digest`]), written as 64 lowercase hex
/// digits.
///
/// It covers, for every entry below the directory, its name, type, mode
/// bits, and its content (regular files), target (symbolic links),
/// device number (devices) or, recursively, entries (directories); not
/// owners, groups, times, link counts, extended attributes or ACLs, nor
/// the root directory's own name or mode. Version 1 of the serialisation,
/// for other implementations (`||` is concatenation, `u32be`/`u64be` big
/// endian integers, names and targets raw bytes, types one ASCII byte,
/// everything read with `lstat`, never following a link):
///
/// ```text
/// digest    = D(data)
/// D(dir)    = SHA-256( for each entry e of dir but `.` and `..`, in
///                      ascending byte order of their names:
///                        u32be(len(name)) || name || record(e) )
/// record(e) = type || u32be(st_mode & 0o7777) || tail
///   'f' regular file      tail = u64be(length) || SHA-256(content)
///   'd' directory         tail = D(e)
///   'l' symbolic link     tail = u64be(len(target)) || target
///   'c' / 'b' device      tail = u32be(major) || u32be(minor)
///   'p' fifo, 's' socket  tail = nothing
/// ```
///
/// An empty tree's digest is the SHA-256 of nothing. A sparse file hashes
/// as the zeros it reads as; a hard link as its content, once per name.
///
/// # Examples
///
/// ```
/// use fscache::Digest;
/// let dir = tempfile::tempdir().unwrap();
/// let empty = Digest::of_tree(dir.path())?;
/// assert_eq!(
///     empty.to_string(),
///     "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
/// );
/// assert_eq!(Digest::from_hex(&empty.to_string()), Some(empty));
/// # Ok::<(), fscache::Error>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest([u8; 32]);

impl Digest {
    /// The digest of the tree below the directory `path` (itself not a
    /// link), as a commit with [`Integrity::Record`] computes it for
    /// `data/`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`](crate::Error::Io) if `path` is no directory (or a link to one), or
    /// something below it cannot be listed or read.
    ///
    /// # Examples
    ///
    /// ```
    /// use fscache::Digest;
    /// let one = tempfile::tempdir().unwrap();
    /// let two = tempfile::tempdir().unwrap();
    /// for dir in [&one, &two] {
    ///     std::fs::write(dir.path().join("f"), b"same").unwrap();
    /// }
    /// // Where a tree is and when it was made does not matter.
    /// assert_eq!(Digest::of_tree(one.path())?, Digest::of_tree(two.path())?);
    /// std::fs::write(two.path().join("f"), b"Same").unwrap();
    /// assert_ne!(Digest::of_tree(one.path())?, Digest::of_tree(two.path())?);
    /// # Ok::<(), fscache::Error>(())
    /// ```
    pub fn of_tree(path: impl AsRef<Path>) -> Result<Digest> {
        let path = path.as_ref();
        let dir = tree::open_dir(rustix::fs::CWD, path).at(Op::Open, || path.to_owned())?;
        Ok(Digest(tree::measure_and_digest(dir, path, None)?.digest))
    }

    /// Parse 64 lowercase hex digits, as `object.info` holds them; `None`
    /// for anything else.
    ///
    /// # Examples
    ///
    /// ```
    /// use fscache::Digest;
    /// let d = Digest::from_hex(&"0f".repeat(32)).expect("64 hex digits");
    /// assert_eq!(d.as_bytes(), &[0x0f; 32]);
    /// assert_eq!(Digest::from_hex(&"0F".repeat(32)), None);
    /// ```
    pub fn from_hex(hex: &str) -> Option<Digest> {
        let hex = hex.as_bytes();
        if hex.len() != 64 {
            return None;
        }
        let digit = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
            *byte = digit(pair[0])? << 4 | digit(pair[1])?;
        }
        Some(Digest(out))
    }

    /// The 32 bytes of the digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl From<[u8; 32]> for Digest {
    fn from(bytes: [u8; 32]) -> Digest {
        Digest(bytes)
    }
}

/// 64 lowercase hex digits.
impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

/// What [`FsCache::verify`] found.
///
/// # Examples
///
/// ```
/// use fscache::{Integrity, MaxSize, OpenOptions, Verification};
/// let dir = tempfile::tempdir().unwrap();
/// let cache = OpenOptions::new().integrity(Integrity::Record).open("my-tool", dir.path())?;
/// cache.set_maximum_size(MaxSize::Unlimited)?;
/// assert!(cache.put_blobs("k", &[("v", b"1")])?.is_stored());
/// match cache.verify("k")? {
///     Verification::Intact => {}
///     Verification::Mismatch { expected, found } => {
///         eprintln!("damaged: recorded {expected}, found {found}");
///         let _gone = cache.evict("k")?;
///     }
///     other => eprintln!("cannot tell: {other}"),
/// }
/// # Ok::<(), fscache::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[must_use = "a verification may find the entry damaged; check what it found"]
#[non_exhaustive]
pub enum Verification {
    /// `data/` has the digest its `object.info` records.
    Intact,
    /// `data/` changed after the commit.
    Mismatch {
        /// The digest recorded at commit.
        expected: Digest,
        /// The digest of `data/` now.
        found: Digest,
    },
    /// Its `object.info` records no digest (an osbuild entry, or one
    /// committed without [`Integrity::Record`]): nothing to check.
    NotRecorded,
    /// No such entry right now (as for a miss of [`FsCache::load`]).
    NotFound,
}

impl Verification {
    /// Whether the entry was found and matches its digest.
    pub fn is_intact(&self) -> bool {
        matches!(self, Verification::Intact)
    }
}

impl fmt::Display for Verification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verification::Intact => f.write_str("intact"),
            Verification::Mismatch { expected, found } => {
                write!(f, "damaged (recorded {expected}, found {found})")
            }
            Verification::NotRecorded => f.write_str("no digest recorded"),
            Verification::NotFound => f.write_str("not found"),
        }
    }
}

/// Measure the tree `data` (at `path`) for a commit, as
/// [`durability::measure`] does, computing its digest in the same walk
/// under [`Integrity::Record`]. [`Integrity::None`] is exactly
/// [`durability::measure`].
pub(crate) fn measure(
    data: OwnedFd,
    path: &Path,
    durability: Durability,
    integrity: Integrity,
) -> Result<(u64, Pending, Option<Digest>)> {
    match integrity {
        Integrity::None => {
            let (size, pending) = durability::measure(data, path, durability)?;
            Ok((size, pending, None))
        }
        Integrity::Record => {
            let budget = (durability == Durability::Sync).then_some(FSYNC_EACH_UP_TO);
            let walked = tree::measure_and_digest(data, path, budget)?;
            let pending = Pending::after_walk(durability, walked.whole);
            Ok((walked.size, pending, Some(Digest(walked.digest))))
        }
    }
}

/// Compare the `data/` of the entry `name` in `objects` with the digest
/// its `info` records.
fn check(objects: &Dir, name: &str, info: &ObjectInfo) -> Result<Verification> {
    let Some(expected) = info.digest else {
        return Ok(Verification::NotRecorded);
    };
    let rel = in_entry(name, DATA);
    let flags = OFlags::RDONLY | OFlags::DIRECTORY;
    let data = match open_beneath(objects.as_fd(), &rel, flags, Mode::empty()) {
        Ok(fd) => fd,
        // Replaced by a link (or removed) since `committed` saw it: no
        // longer an entry, as a load would find.
        Err(e) if crate::error::not_a_file(e) => return Ok(Verification::NotFound),
        Err(e) => return Err(e).at(Op::Open, || objects.join(&rel)),
    };
    let found = Digest(tree::measure_and_digest(data, &objects.join(&rel), None)?.digest);
    Ok(if found == expected {
        Verification::Intact
    } else {
        Verification::Mismatch { expected, found }
    })
}

impl FsCache {
    /// Check the entry `name` against the digest its `object.info` records:
    /// read all of its `data/` under a shared lock (so nobody evicts it
    /// meanwhile) and compare.
    ///
    /// Verifying is not a use: it neither marks the entry as used nor
    /// counts as a hit or a miss. It ignores the handle's
    /// [`EarlierBoot`](crate::EarlierBoot) policy (that is about serving).
    /// An entry that is not there right now (missing, being committed or
    /// removed, locked by an evictor, invalid, or a cache whose version is
    /// unsupported) is [`Verification::NotFound`].
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`](crate::Error::InvalidName) for a name no entry can have; [`Error::Io`](crate::Error::Io)
    /// if something in `data/` cannot be listed or read (a file the
    /// caller may not read, say).
    ///
    /// # Examples
    ///
    /// ```
    /// use fscache::{Integrity, MaxSize, OpenOptions, Verification};
    /// let dir = tempfile::tempdir().unwrap();
    /// let cache = OpenOptions::new().integrity(Integrity::Record).open("my-tool", dir.path())?;
    /// cache.set_maximum_size(MaxSize::Unlimited)?;
    /// let entry = cache.store("build")?;
    /// std::fs::write(entry.path().join("out"), b"result").unwrap();
    /// assert!(entry.commit()?.is_stored());
    /// assert_eq!(cache.verify("build")?, Verification::Intact);
    /// // Someone edits the cache in place.
    /// std::fs::write(dir.path().join("objects/build/data/out"), b"resulT").unwrap();
    /// assert!(matches!(cache.verify("build")?, Verification::Mismatch { .. }));
    /// assert_eq!(cache.verify("never-stored")?, Verification::NotFound);
    /// # Ok::<(), fscache::Error>(())
    /// ```
    pub fn verify(&self, name: &str) -> Result<Verification> {
        match self.hold_committed(name)? {
            Some((_lock, info)) => check(self.objects(), name, &info),
            None => Ok(Verification::NotFound),
        }
    }

    /// [`FsCache::load`], but an entry whose `data/` no longer matches the
    /// digest its `object.info` records is a miss, counted in
    /// [`Counters::mismatches`](crate::Counters::mismatches) too. The check
    /// reads all of `data/` under the shared lock, before the load marks
    /// the entry as used, so a damaged entry is not kept alive by the
    /// loads it fails.
    ///
    /// An entry without a digest ([`Verification::NotRecorded`]: osbuild's
    /// entries, and ours committed without [`Integrity::Record`]) is
    /// served as [`FsCache::load`] serves it; to require one, check
    /// [`ObjectInfo::digest`] of the guard. A damaged entry stays in the
    /// cache until it is evicted (it is never used, so it goes first), and
    /// a store under its name reports
    /// [`Commit::NameTaken`](crate::Commit::NameTaken) meanwhile:
    /// [`FsCache::evict`] it to replace it.
    ///
    /// # Errors
    ///
    /// As [`FsCache::load`], and [`Error::Io`](crate::Error::Io) if something in `data/`
    /// cannot be listed or read.
    ///
    /// # Examples
    ///
    /// ```
    /// use fscache::{Integrity, MaxSize, OpenOptions};
    /// let dir = tempfile::tempdir().unwrap();
    /// let cache = OpenOptions::new().integrity(Integrity::Record).open("my-tool", dir.path())?;
    /// cache.set_maximum_size(MaxSize::Unlimited)?;
    /// let entry = cache.store("build")?;
    /// std::fs::write(entry.path().join("out"), b"result").unwrap();
    /// assert!(entry.commit()?.is_stored());
    /// assert!(cache.load_verified("build")?.is_some());
    /// std::fs::write(dir.path().join("objects/build/data/out"), b"").unwrap();
    /// assert!(cache.load_verified("build")?.is_none());
    /// assert_eq!(cache.counters().mismatches, 1);
    /// # Ok::<(), fscache::Error>(())
    /// ```
    pub fn load_verified(&self, name: &str) -> Result<Option<LoadGuard>> {
        self.load_checked(name, |objects, info| match check(objects, name, info)? {
            Verification::Intact | Verification::NotRecorded => Ok(true),
            Verification::Mismatch { .. } => {
                self.count(crate::cache::Event::Mismatch);
                Ok(false)
            }
            Verification::NotFound => Ok(false),
        })
    }
}

impl LoadGuard {
    /// Check the held entry against the digest its `object.info` records
    /// (as read when it was loaded), as [`FsCache::verify`] does.
    ///
    /// # Errors
    ///
    /// [`Error::Io`](crate::Error::Io) if something in `data/` cannot be listed or read.
    ///
    /// # Examples
    ///
    /// ```
    /// use fscache::{FsCache, MaxSize, Verification};
    /// let dir = tempfile::tempdir().unwrap();
    /// let cache = FsCache::open("my-tool", dir.path())?;
    /// cache.set_maximum_size(MaxSize::Unlimited)?;
    /// assert!(cache.store("plain")?.commit()?.is_stored());
    /// let hit = cache.load("plain")?.expect("stored");
    /// assert_eq!(hit.verify()?, Verification::NotRecorded);
    /// # Ok::<(), fscache::Error>(())
    /// ```
    pub fn verify(&self) -> Result<Verification> {
        check(self.cache().objects(), self.name(), self.info())
    }
}

impl StoreGuard {
    /// Commit this entry with `integrity`, whatever its handle's policy
    /// ([`OpenOptions::integrity`](crate::OpenOptions::integrity)).
    ///
    /// # Examples
    ///
    /// ```
    /// use fscache::{FsCache, Integrity, MaxSize};
    /// let dir = tempfile::tempdir().unwrap();
    /// let cache = FsCache::open("my-tool", dir.path())?;
    /// cache.set_maximum_size(MaxSize::Unlimited)?;
    /// let mut entry = cache.store("checked")?;
    /// entry.set_integrity(Integrity::Record);
    /// assert!(entry.commit()?.is_stored());
    /// # Ok::<(), fscache::Error>(())
    /// ```
    pub fn set_integrity(&mut self, integrity: Integrity) {
        self.integrity = integrity;
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_digest_reads_back_what_it_writes_and_only_lowercase_hex() {
        let d = Digest::from(std::array::from_fn(|i| i as u8 * 8));
        let hex = d.to_string();
        assert_eq!(hex.len(), 64);
        assert_eq!(Digest::from_hex(&hex), Some(d));
        assert_eq!(format!("{d:?}"), format!("Digest({hex})"));
        for bad in [&hex.to_uppercase(), &hex[..62], "", &format!("{hex}00")] {
            assert_eq!(Digest::from_hex(bad), None, "{bad:?}");
        }
        assert_eq!(Integrity::default(), Integrity::None);
    }
}
