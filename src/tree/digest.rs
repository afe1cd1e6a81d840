//! The tree digest: a SHA-256 of a directory tree's names, types, modes,
//! contents and link targets, computed by the same descriptor-bounded walk
//! that measures the tree (and, for a durable commit, fsyncs it).
//!
//! The serialisation (version 1) is written out for other implementations
//! at [`crate::Digest`]; the test below pins it against a Python
//! implementation of that text.
//!
//! Each directory is hashed once its subdirectories are, so the walk keeps
//! one listing per directory on its path (the records of its entries, not
//! their contents) and the digest does not depend on the order in which
//! the file system lists entries.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{fstat, openat, readlinkat, statat, AtFlags, Dir, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;
use sha2::{Digest as _, Sha256};

use super::walk::{walk, Here, Visit};
use super::{is_dot, occupied, Budget};
use crate::error::{Error, IoContext, Op, Result};

/// What a digesting walk found.
#[derive(Debug)]
pub(crate) struct Digested {
    /// The space the tree occupies, as [`super::measure`] counts it.
    pub(crate) size: u64,
    /// Whether every file and directory was fsynced (as
    /// [`super::measure_and_sync`] answers); false without a budget.
    pub(crate) whole: bool,
    /// `D(root)`.
    pub(crate) digest: [u8; 32],
}

/// Measure the tree `dir` (at `path`) and compute its digest in one walk,
/// fsyncing each directory and regular file on the way while `budget`
/// (`None`: sync nothing) lasts, as [`super::measure_and_sync`] does.
pub(crate) fn measure_and_digest(
    dir: OwnedFd,
    path: &Path,
    budget: Option<usize>,
) -> Result<Digested> {
    let listing = Dir::new(dir).at(Op::ReadDir, || path.to_owned())?;
    let mut visit = DigestTree {
        total: 0,
        sync: budget.map(|left| Budget { left, whole: true }),
        open: Vec::new(),
        buf: vec![0; READ_CHUNK],
    };
    walk(listing, path, &mut visit)?;
    let root = visit.open.pop().expect("the walk enters the root");
    Ok(Digested {
        size: visit.total,
        whole: visit.sync.is_some_and(|b| b.whole),
        digest: root.finish(),
    })
}

/// How much of a file one `read` takes.
const READ_CHUNK: usize = 128 << 10;

struct DigestTree {
    total: u64,
    /// Fsync on the way (`None`: digest and measure only).
    sync: Option<Budget>,
    /// One listing per directory from the root to where the walk is.
    open: Vec<Listing>,
    /// The buffer file contents are read into.
    buf: Vec<u8>,
}

/// A directory being digested: its own mode bits (for its record in its
/// parent) and the records of the entries seen so far.
struct Listing {
    mode: u32,
    records: Vec<(CString, Vec<u8>)>,
}

impl Listing {
    /// `D(dir)`: the records in ascending byte order of the names.
    fn finish(mut self) -> [u8; 32] {
        self.records
            .sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let mut hash = Sha256::new();
        for (name, record) in &self.records {
            let name = name.as_bytes();
            // A name is at most 255 bytes on Linux.
            hash.update((name.len() as u32).to_be_bytes());
            hash.update(name);
            hash.update(record);
        }
        hash.finalize().into()
    }
}

/// `type || u32be(mode & 0o7777) || tail`.
fn record(kind: u8, st_mode: u32, tail: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + tail.len());
    out.push(kind);
    out.extend_from_slice(&(st_mode & 0o7777).to_be_bytes());
    out.extend_from_slice(tail);
    out
}

fn changed(path: std::path::PathBuf) -> Error {
    Error::Io {
        op: Op::Read,
        path,
        source: io::Error::other("changed while it was being digested"),
    }
}

impl DigestTree {
    /// Open the regular file `name` of `dir`, hash its content (fsyncing it
    /// if the budget allows) and return its status and record.
    fn regular(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &CStr,
        here: &Here<'_>,
    ) -> Result<(Stat, Vec<u8>)> {
        // NONBLOCK: a fifo put in the file's place must not hang the open.
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let file = openat(dir, name, flags, Mode::empty()).at(Op::Open, || here.child(name))?;
        let st = fstat(&file).at(Op::Stat, || here.child(name))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(changed(here.child(name)));
        }
        let mut hash = Sha256::new();
        let mut length = 0u64;
        loop {
            match rustix::io::read(&file, &mut self.buf) {
                Ok(0) => break,
                Ok(n) => {
                    hash.update(&self.buf[..n]);
                    length += n as u64;
                }
                Err(Errno::INTR) => continue,
                Err(e) => return Err(e).at(Op::Read, || here.child(name)),
            }
        }
        if self.sync.as_mut().is_some_and(Budget::take) {
            crate::durability::fsync(file.as_fd(), &here.child(name))?;
        }
        let content: [u8; 32] = hash.finalize().into();
        let mut tail = length.to_be_bytes().to_vec();
        tail.extend_from_slice(&content);
        Ok((st, record(b'f', st.st_mode, &tail)))
    }

    /// The record of `name`, a link or a special file whose status is `st`.
    fn other(dir: BorrowedFd<'_>, name: &CStr, st: &Stat, here: &Here<'_>) -> Result<Vec<u8>> {
        let (kind, tail) = match FileType::from_raw_mode(st.st_mode) {
            FileType::Symlink => {
                let target = readlinkat(dir, name, Vec::new()).at(Op::Read, || here.child(name))?;
                let target = target.as_bytes();
                let mut tail = (target.len() as u64).to_be_bytes().to_vec();
                tail.extend_from_slice(target);
                (b'l', tail)
            }
            kind @ (FileType::CharacterDevice | FileType::BlockDevice) => {
                let mut tail = rustix::fs::major(st.st_rdev).to_be_bytes().to_vec();
                tail.extend_from_slice(&rustix::fs::minor(st.st_rdev).to_be_bytes());
                let kind = if kind == FileType::CharacterDevice {
                    b'c'
                } else {
                    b'b'
                };
                (kind, tail)
            }
            FileType::Fifo => (b'p', Vec::new()),
            FileType::Socket => (b's', Vec::new()),
            // A regular file or a directory raced into its place; nothing
            // else has a type.
            _ => return Err(changed(here.child(name))),
        };
        Ok(record(kind, st.st_mode, &tail))
    }
}

impl Visit for DigestTree {
    const SKIP_VANISHED: bool = false;

    fn enter(&mut self, dir: &mut Dir, here: &Here<'_>) -> Result<Vec<CString>> {
        let own = super::enter_measured(dir, here, &mut self.total, &mut self.sync)?;
        let mut listing = Listing {
            mode: own.st_mode,
            records: Vec::new(),
        };
        let mut subdirs = Vec::new();
        while let Some(entry) = dir.next() {
            let entry = entry.at(Op::ReadDir, || here.dir())?;
            let name = entry.file_name();
            if is_dot(name) {
                continue;
            }
            let fd = dir.fd().at(Op::ReadDir, || here.dir())?;
            let lstat =
                || statat(fd, name, AtFlags::SYMLINK_NOFOLLOW).at(Op::Stat, || here.child(name));
            let kind = match entry.file_type() {
                // The file system does not say: look.
                FileType::Unknown => FileType::from_raw_mode(lstat()?.st_mode),
                kind => kind,
            };
            let (st, record) = match kind {
                FileType::Directory => {
                    subdirs.push(name.to_owned());
                    continue;
                }
                FileType::RegularFile => self.regular(fd, name, here)?,
                _ => {
                    let st = lstat()?;
                    if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                        subdirs.push(name.to_owned());
                        continue;
                    }
                    // A link or a special file: only a syncfs reaches it.
                    if let Some(budget) = self.sync.as_mut() {
                        budget.whole = false;
                    }
                    let record = Self::other(fd, name, &st, here)?;
                    (st, record)
                }
            };
            self.total = self.total.saturating_add(occupied(&st));
            listing.records.push((name.to_owned(), record));
        }
        self.open.push(listing);
        Ok(subdirs)
    }

    fn leave(&mut self, _: BorrowedFd<'_>, name: &CStr, _: &Here<'_>) -> Result<()> {
        let child = self
            .open
            .pop()
            .expect("a directory is entered before it is left");
        let mode = child.mode;
        let digest = child.finish();
        let parent = self.open.last_mut().expect("a left directory has a parent");
        parent
            .records
            .push((name.to_owned(), record(b'd', mode, &digest)));
        Ok(())
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn root(path: &Path) -> OwnedFd {
        super::super::open_dir(rustix::fs::CWD, path).unwrap()
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A small tree with every kind of entry the spec names but devices,
    /// its modes set explicitly so that no umask changes them.
    fn sample(t: &Path) {
        let chmod = |p: &str, m: u32| {
            std::fs::set_permissions(t.join(p), std::fs::Permissions::from_mode(m)).unwrap()
        };
        std::fs::create_dir_all(t.join("sub/deeper")).unwrap();
        std::fs::create_dir(t.join("empty")).unwrap();
        std::fs::write(t.join("a"), b"hello\n").unwrap();
        std::fs::write(t.join("sub/b"), b"").unwrap();
        std::fs::write(t.join("sub/deeper/c"), vec![7u8; 300_000]).unwrap();
        symlink("../a", t.join("sub/link")).unwrap();
        nix::unistd::mkfifo(
            &t.join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        for (p, m) in [
            ("a", 0o644),
            ("sub", 0o755),
            ("sub/deeper", 0o700),
            ("empty", 0o2775),
            ("sub/b", 0o600),
            ("sub/deeper/c", 0o755),
            ("fifo", 0o600),
        ] {
            chmod(p, m);
        }
    }

    /// The spec, written out again by a plain recursion with `std::fs`.
    fn by_the_spec(dir: &Path) -> [u8; 32] {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::fs::MetadataExt;
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort_by(|a, b| {
            a.file_name()
                .unwrap()
                .as_bytes()
                .cmp(b.file_name().unwrap().as_bytes())
        });
        let mut h = Sha256::new();
        for path in entries {
            let name = path.file_name().unwrap().as_bytes();
            let md = std::fs::symlink_metadata(&path).unwrap();
            h.update((name.len() as u32).to_be_bytes());
            h.update(name);
            let ft = md.file_type();
            let kind = if ft.is_file() {
                b'f'
            } else if ft.is_dir() {
                b'd'
            } else if ft.is_symlink() {
                b'l'
            } else {
                b'p'
            };
            h.update([kind]);
            h.update((md.mode() & 0o7777).to_be_bytes());
            match kind {
                b'f' => {
                    let content = std::fs::read(&path).unwrap();
                    h.update((content.len() as u64).to_be_bytes());
                    h.update(Sha256::digest(&content));
                }
                b'd' => h.update(by_the_spec(&path)),
                b'l' => {
                    let target = std::fs::read_link(&path).unwrap();
                    let target = target.as_os_str().as_bytes();
                    h.update((target.len() as u64).to_be_bytes());
                    h.update(target);
                }
                _ => {}
            }
        }
        h.finalize().into()
    }

    #[test]
    fn the_walk_computes_what_the_spec_says_and_measures_what_measure_measures() {
        let t = tempfile::tempdir().unwrap();
        sample(t.path());
        let got = measure_and_digest(root(t.path()), t.path(), None).unwrap();
        assert_eq!(hex(&got.digest), hex(&by_the_spec(t.path())), "digest");
        assert_eq!(
            got.size,
            super::super::measure(root(t.path()), t.path()).unwrap(),
            "size"
        );
        assert!(!got.whole, "nothing is synced without a budget");
        // Pinned: a Python implementation of the spec (hashlib, os.lstat,
        // sorted os.listdir of bytes) gives this for the same tree.
        assert_eq!(
            hex(&got.digest),
            "c2700f69ccf2249dfb902542e1c46d96a61b8f0342de05ba7b57778a4bc850c7",
            "the serialisation changed: that is a new version of the digest"
        );
    }

    #[test]
    fn digesting_and_syncing_syncs_what_measuring_and_syncing_syncs() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("a/b")).unwrap();
        for f in ["a/1", "a/b/2", "3"] {
            std::fs::write(t.path().join(f), vec![1u8; 5000]).unwrap();
        }
        let plain = measure_and_digest(root(t.path()), t.path(), None).unwrap();
        for budget in [6, 5] {
            let synced = measure_and_digest(root(t.path()), t.path(), Some(budget)).unwrap();
            assert_eq!(
                (synced.size, synced.whole),
                super::super::measure_and_sync(root(t.path()), t.path(), budget).unwrap(),
                "budget {budget}"
            );
            assert_eq!(synced.digest, plain.digest, "syncing changes no digest");
        }
        symlink("3", t.path().join("a/link")).unwrap();
        let linked = measure_and_digest(root(t.path()), t.path(), Some(100)).unwrap();
        assert!(!linked.whole, "a link cannot be fsynced");
        assert_ne!(linked.digest, plain.digest, "a new link is a new tree");
    }

    #[test]
    fn an_empty_tree_digests_as_the_hash_of_nothing() {
        let t = tempfile::tempdir().unwrap();
        let got = measure_and_digest(root(t.path()), t.path(), None).unwrap();
        assert_eq!(
            hex(&got.digest),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
