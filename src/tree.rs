//! Measuring, copying and removing directory trees through descriptors,
//! never following a symbolic link.

mod copy;
mod digest;
mod walk;

pub use copy::Copied;
pub(crate) use copy::{copy_dir, copy_path};

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{fchmod, fstat, openat, statat, unlinkat, AtFlags, Dir, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::error::{IoContext, Op, Result};
pub(crate) use digest::measure_and_digest;
use walk::{walk, Here, Visit};

/// Open the directory `name` in `parent` for listing, refusing a link.
pub(crate) fn open_dir<P: rustix::path::Arg>(
    parent: BorrowedFd<'_>,
    name: P,
) -> rustix::io::Result<OwnedFd> {
    openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// The entries of `dir` (without `.` and `..`) with their types; a type
/// the listing leaves unknown is looked up without following links.
pub(crate) fn list(dir: &crate::atomic::Dir) -> Result<Vec<(String, FileType)>> {
    let entries = Dir::read_from(dir.as_fd()).at(Op::ReadDir, || dir.path().to_owned())?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.at(Op::ReadDir, || dir.path().to_owned())?;
        let raw = entry.file_name().to_bytes();
        if raw == b"." || raw == b".." {
            continue;
        }
        // Names we did not make may be any bytes; ours are UTF-8.
        let Ok(name) = std::str::from_utf8(raw) else {
            continue;
        };
        let kind = match entry.file_type() {
            FileType::Unknown => {
                match statat(dir.as_fd(), entry.file_name(), AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) => FileType::from_raw_mode(st.st_mode),
                    Err(Errno::NOENT) => continue,
                    Err(e) => return Err(e).at(Op::Stat, || dir.join(name)),
                }
            }
            t => t,
        };
        out.push((name.to_owned(), kind));
    }
    Ok(out)
}

/// Space used by a stat result, as the format counts it.
pub(crate) fn occupied(st: &rustix::fs::Stat) -> u64 {
    (st.st_blocks as u64).saturating_mul(512)
}

fn is_dot(name: &CStr) -> bool {
    matches!(name.to_bytes(), b"." | b"..")
}

/// The space a tree occupies: `st_blocks * 512` summed over the directory
/// `dir` itself and everything below it, links counted as links. Takes the
/// descriptor so that listing it needs no second open.
pub(crate) fn measure(dir: OwnedFd, path: &Path) -> Result<u64> {
    let listing = Dir::new(dir).at(Op::ReadDir, || path.to_owned())?;
    let mut measure = Measure {
        total: 0,
        sync: None,
    };
    walk(listing, path, &mut measure)?;
    Ok(measure.total)
}

/// Measure the tree as [`measure`] does and, in the same walk, fsync each
/// of its directories and regular files while no more than `budget`
/// fsyncs are needed. Returns the size and whether the whole tree was
/// fsynced: it is not if it holds more than `budget` files and
/// directories, or something without a descriptor to fsync (a link, a
/// fifo, a device, a file we may not open), which then needs a `syncfs`.
pub(crate) fn measure_and_sync(dir: OwnedFd, path: &Path, budget: usize) -> Result<(u64, bool)> {
    let listing = Dir::new(dir).at(Op::ReadDir, || path.to_owned())?;
    let mut measure = Measure {
        total: 0,
        sync: Some(Budget {
            left: budget,
            whole: true,
        }),
    };
    walk(listing, path, &mut measure)?;
    let whole = measure.sync.is_some_and(|b| b.whole);
    Ok((measure.total, whole))
}

struct Measure {
    total: u64,
    /// Fsync on the way (`None`: measure only, no other system call).
    sync: Option<Budget>,
}

/// What every measuring walk does on entering a directory: count the space
/// the directory itself occupies, and fsync it while `sync` has budget.
/// Returns its status.
fn enter_measured(
    dir: &mut Dir,
    here: &Here<'_>,
    total: &mut u64,
    sync: &mut Option<Budget>,
) -> Result<rustix::fs::Stat> {
    let fd = dir.fd().at(Op::ReadDir, || here.dir())?;
    let own = fstat(fd).at(Op::Stat, || here.dir())?;
    *total = total.saturating_add(occupied(&own));
    if sync.as_mut().is_some_and(Budget::take) {
        crate::durability::fsync(fd, &here.dir())?;
    }
    Ok(own)
}

/// The fsyncs a measuring walk may still make.
#[derive(Clone, Copy)]
struct Budget {
    left: usize,
    /// Everything seen so far has been fsynced.
    whole: bool,
}

impl Budget {
    /// Take one fsync from the budget; false (and the tree is no longer
    /// whole) once it is spent.
    fn take(&mut self) -> bool {
        if !self.whole || self.left == 0 {
            self.whole = false;
            return false;
        }
        self.left -= 1;
        true
    }
}

impl Measure {
    /// Open the regular file `name` of `dir`, fsync it and return its
    /// metadata; `None` (and the tree needs a `syncfs`) if it cannot be
    /// opened as a regular file.
    fn sync_file(
        budget: &mut Budget,
        dir: BorrowedFd<'_>,
        name: &CStr,
        here: &Here<'_>,
    ) -> Result<Option<rustix::fs::Stat>> {
        // NONBLOCK: a fifo put in the file's place must not hang the open.
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let Ok(fd) = openat(dir, name, flags, Mode::empty()) else {
            budget.whole = false;
            return Ok(None);
        };
        let st = fstat(&fd).at(Op::Stat, || here.child(name))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            budget.whole = false;
            return Ok(None);
        }
        crate::durability::fsync(fd.as_fd(), &here.child(name))?;
        Ok(Some(st))
    }
}

impl Visit for Measure {
    const SKIP_VANISHED: bool = false;

    fn enter(&mut self, dir: &mut Dir, here: &Here<'_>) -> Result<Vec<CString>> {
        enter_measured(dir, here, &mut self.total, &mut self.sync)?;
        let mut subdirs = Vec::new();
        while let Some(entry) = dir.next() {
            let entry = entry.at(Op::ReadDir, || here.dir())?;
            let name = entry.file_name();
            if is_dot(name) {
                continue;
            }
            if entry.file_type() == FileType::Directory {
                subdirs.push(name.to_owned());
                continue;
            }
            let fd = dir.fd().at(Op::ReadDir, || here.dir())?;
            if let Some(budget) = self.sync.as_mut() {
                let kind = match entry.file_type() {
                    // The file system does not say: look.
                    FileType::Unknown => FileType::from_raw_mode(
                        statat(fd, name, AtFlags::SYMLINK_NOFOLLOW)
                            .at(Op::Stat, || here.child(name))?
                            .st_mode,
                    ),
                    kind => kind,
                };
                match kind {
                    FileType::Directory => {
                        subdirs.push(name.to_owned());
                        continue;
                    }
                    FileType::RegularFile if budget.take() => {
                        if let Some(st) = Self::sync_file(budget, fd, name, here)? {
                            self.total = self.total.saturating_add(occupied(&st));
                            continue;
                        }
                    }
                    FileType::RegularFile => {}
                    // A link or a special file: only a syncfs reaches it.
                    _ => budget.whole = false,
                }
            }
            let st =
                statat(fd, name, AtFlags::SYMLINK_NOFOLLOW).at(Op::Stat, || here.child(name))?;
            if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                subdirs.push(name.to_owned());
            } else {
                self.total = self.total.saturating_add(occupied(&st));
            }
        }
        Ok(subdirs)
    }

    fn leave(&mut self, _: BorrowedFd<'_>, _: &CStr, _: &Here<'_>) -> Result<()> {
        Ok(())
    }
}

/// Remove everything in `dir` except the entry named `keep`. Entries that
/// vanish meanwhile (a racing cleaner) are fine.
pub(crate) fn remove_contents(dir: BorrowedFd<'_>, path: &Path, keep: Option<&str>) -> Result<()> {
    let listing = match Dir::read_from(dir) {
        Ok(listing) => listing,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e).at(Op::ReadDir, || path.to_owned()),
    };
    walk(listing, path, &mut Remove { keep })
}

struct Remove<'k> {
    /// An entry of the root to leave in place.
    keep: Option<&'k str>,
}

impl Visit for Remove<'_> {
    const SKIP_VANISHED: bool = true;

    /// Unlink every file while listing: one pass, since entries not yet
    /// reached stay listed after an unlink.
    fn enter(&mut self, dir: &mut Dir, here: &Here<'_>) -> Result<Vec<CString>> {
        let keep = self.keep.filter(|_| here.depth == 0).map(str::as_bytes);
        let mut subdirs = Vec::new();
        while let Some(entry) = dir.next() {
            let entry = entry.at(Op::ReadDir, || here.dir())?;
            let name = entry.file_name();
            if is_dot(name) || keep == Some(name.to_bytes()) {
                continue;
            }
            let fd = dir.fd().at(Op::ReadDir, || here.dir())?;
            let is_dir = match entry.file_type() {
                FileType::Directory => true,
                FileType::Unknown => matches!(
                    statat(fd, name, AtFlags::SYMLINK_NOFOLLOW),
                    Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory
                ),
                _ => false,
            };
            // An empty directory (a stage's `data/`, often) goes with one
            // call, without being opened and listed.
            if is_dir {
                if unlinkat(fd, name, AtFlags::REMOVEDIR).is_err() {
                    subdirs.push(name.to_owned());
                }
                continue;
            }
            match unlink_writable(fd, name, AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => return Err(e).at(Op::Unlink, || here.child(name)),
            }
        }
        Ok(subdirs)
    }

    fn leave(&mut self, parent: BorrowedFd<'_>, name: &CStr, here: &Here<'_>) -> Result<()> {
        match unlink_writable(parent, name, AtFlags::REMOVEDIR) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(e).at(Op::RemoveDir, || here.child(name)),
        }
    }
}

/// `unlinkat`, making `dir` writable first if that is all that stops it (a
/// read-only directory inside a stored tree).
fn unlink_writable(dir: BorrowedFd<'_>, name: &CStr, flags: AtFlags) -> rustix::io::Result<()> {
    match rustix::fs::unlinkat(dir, name, flags) {
        Err(Errno::ACCESS) | Err(Errno::PERM) => {
            let mode = fstat(dir)?.st_mode;
            fchmod(dir, Mode::from_raw_mode(mode) | Mode::RWXU)?;
            rustix::fs::unlinkat(dir, name, flags)
        }
        other => other,
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn root(t: &tempfile::TempDir) -> OwnedFd {
        openat(
            rustix::fs::CWD,
            t.path(),
            OFlags::RDONLY | OFlags::DIRECTORY,
            Mode::empty(),
        )
        .unwrap()
    }

    #[test]
    fn measuring_counts_blocks_not_lengths_and_does_not_follow_links() {
        let t = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("big"), vec![1u8; 1 << 20]).unwrap();
        std::fs::create_dir(t.path().join("d")).unwrap();
        std::fs::write(t.path().join("d/f"), vec![1u8; 10_000]).unwrap();
        symlink(outside.path(), t.path().join("link")).unwrap();
        let sparse = std::fs::File::create(t.path().join("sparse")).unwrap();
        sparse.set_len(1 << 30).unwrap();
        let fd = root(&t);
        let got = measure(fd, t.path()).unwrap();
        let du = |p: &Path| {
            use std::os::unix::fs::MetadataExt;
            std::fs::symlink_metadata(p).unwrap().blocks() * 512
        };
        let expected = du(t.path())
            + du(&t.path().join("d"))
            + du(&t.path().join("d/f"))
            + du(&t.path().join("link"))
            + du(&t.path().join("sparse"));
        assert_eq!(got, expected);
        assert!(
            got < 1 << 20,
            "neither the sparse length nor the link target may count: {got}"
        );
    }

    #[test]
    fn measuring_and_syncing_counts_what_measuring_counts_and_says_when_it_fell_short() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("a/b")).unwrap();
        for f in ["a/1", "a/b/2", "3"] {
            std::fs::write(t.path().join(f), vec![1u8; 5000]).unwrap();
        }
        let size = measure(root(&t), t.path()).unwrap();
        // Three directories and three files: six fsyncs.
        assert_eq!(
            measure_and_sync(root(&t), t.path(), 6).unwrap(),
            (size, true),
            "a budget of six fsyncs covers the whole tree"
        );
        assert_eq!(
            measure_and_sync(root(&t), t.path(), 5).unwrap(),
            (size, false),
            "one fsync short: the tree needs a syncfs, and measures the same"
        );
        symlink("3", t.path().join("a/link")).unwrap();
        let size = measure(root(&t), t.path()).unwrap();
        assert_eq!(
            measure_and_sync(root(&t), t.path(), 100).unwrap(),
            (size, false),
            "a link cannot be fsynced: the tree needs a syncfs"
        );
    }

    #[test]
    fn removal_keeps_the_named_entry_stays_inside_and_copes_with_read_only_dirs() {
        let t = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("precious"), b"keep me").unwrap();
        std::fs::write(t.path().join("object.lock"), b"").unwrap();
        std::fs::create_dir_all(t.path().join("data/ro/deep")).unwrap();
        std::fs::write(t.path().join("data/ro/deep/f"), b"x").unwrap();
        symlink(outside.path(), t.path().join("data/escape")).unwrap();
        std::fs::set_permissions(
            t.path().join("data/ro"),
            std::fs::Permissions::from_mode(0o555),
        )
        .unwrap();
        let fd = root(&t);
        remove_contents(fd.as_fd(), t.path(), Some("object.lock")).unwrap();
        let left: Vec<_> = std::fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("object.lock")]);
        assert_eq!(
            std::fs::read(outside.path().join("precious")).unwrap(),
            b"keep me"
        );
    }
}
