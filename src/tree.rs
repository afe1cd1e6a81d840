//! Measuring and removing directory trees through descriptors, never
//! following a symbolic link.

use std::ffi::{CStr, OsStr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{fchmod, fstat, openat, statat, AtFlags, Dir, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::error::{IoContext, Op, Result};

/// Open the directory `name` in `parent` for listing, refusing a link.
pub(crate) fn open_dir(parent: BorrowedFd<'_>, name: &str) -> rustix::io::Result<OwnedFd> {
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

/// A child's path, for messages.
fn child_path(path: &Path, name: &CStr) -> PathBuf {
    path.join(OsStr::from_bytes(name.to_bytes()))
}

fn is_dot(name: &CStr) -> bool {
    matches!(name.to_bytes(), b"." | b"..")
}

/// Open the directory `name` in `parent` for listing, refusing a link.
fn open_child_dir(parent: BorrowedFd<'_>, name: &CStr) -> rustix::io::Result<OwnedFd> {
    openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// The space a tree occupies: `st_blocks * 512` summed over the directory
/// `dir` itself and everything below it, links counted as links. Takes the
/// descriptor so that listing it needs no second open.
pub(crate) fn measure(dir: OwnedFd, path: &Path) -> Result<u64> {
    let own = fstat(&dir).at(Op::Stat, || path.to_owned())?;
    let mut total = occupied(&own);
    let mut entries = Dir::new(dir).at(Op::ReadDir, || path.to_owned())?;
    while let Some(entry) = entries.next() {
        let entry = entry.at(Op::ReadDir, || path.to_owned())?;
        let name = entry.file_name();
        if is_dot(name) {
            continue;
        }
        let fd = entries.fd().at(Op::ReadDir, || path.to_owned())?;
        let is_dir = match entry.file_type() {
            FileType::Directory => true,
            FileType::Unknown => {
                let st = statat(fd, name, AtFlags::SYMLINK_NOFOLLOW)
                    .at(Op::Stat, || child_path(path, name))?;
                FileType::from_raw_mode(st.st_mode) == FileType::Directory
            }
            _ => false,
        };
        let size = if is_dir {
            let sub = open_child_dir(fd, name).at(Op::Open, || child_path(path, name))?;
            measure(sub, &child_path(path, name))?
        } else {
            let st = statat(fd, name, AtFlags::SYMLINK_NOFOLLOW)
                .at(Op::Stat, || child_path(path, name))?;
            occupied(&st)
        };
        total = total.saturating_add(size);
    }
    Ok(total)
}

/// Remove everything in `dir` except the entry named `keep`. Entries that
/// vanish meanwhile (a racing cleaner) are fine.
pub(crate) fn remove_contents(dir: BorrowedFd<'_>, path: &Path, keep: Option<&str>) -> Result<()> {
    let listing = match Dir::read_from(dir) {
        Ok(listing) => listing,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e).at(Op::ReadDir, || path.to_owned()),
    };
    remove_listed(listing, path, keep)
}

/// Remove what `listing` lists: one pass, since entries we have not
/// touched are still listed after unlinks.
fn remove_listed(mut listing: Dir, path: &Path, keep: Option<&str>) -> Result<()> {
    while let Some(entry) = listing.next() {
        let entry = entry.at(Op::ReadDir, || path.to_owned())?;
        let dir = listing.fd().at(Op::ReadDir, || path.to_owned())?;
        let name = entry.file_name();
        if is_dot(name) || keep.is_some_and(|k| k.as_bytes() == name.to_bytes()) {
            continue;
        }
        let is_dir = match entry.file_type() {
            FileType::Directory => true,
            FileType::Unknown => matches!(
                statat(dir, name, AtFlags::SYMLINK_NOFOLLOW),
                Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory
            ),
            _ => false,
        };
        if is_dir {
            match open_child_dir(dir, name) {
                Ok(sub) => {
                    let sub_path = child_path(path, name);
                    let listing = Dir::new(sub).at(Op::ReadDir, || sub_path.clone())?;
                    remove_listed(listing, &sub_path, None)?;
                }
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(e).at(Op::Open, || child_path(path, name)),
            }
        }
        let (flags, op) = if is_dir {
            (AtFlags::REMOVEDIR, Op::RemoveDir)
        } else {
            (AtFlags::empty(), Op::Unlink)
        };
        match unlink_writable(dir, name, flags) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => return Err(e).at(op, || child_path(path, name)),
        }
    }
    Ok(())
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
