//! Measuring and removing directory trees through descriptors, never
//! following a symbolic link.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

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
        let Ok(name) = std::str::from_utf8(raw) else { continue };
        let kind = match entry.file_type() {
            FileType::Unknown => match statat(dir.as_fd(), entry.file_name(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => FileType::from_raw_mode(st.st_mode),
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(e).at(Op::Stat, || dir.join(name)),
            },
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

/// The space a tree occupies: `st_blocks * 512` summed over the directory
/// `dir` itself and everything below it, links counted as links.
pub(crate) fn measure(dir: BorrowedFd<'_>, path: &Path) -> Result<u64> {
    let own = fstat(dir).at(Op::Stat, || path.to_owned())?;
    Ok(occupied(&own) + measure_below(dir, path)?)
}

fn measure_below(dir: BorrowedFd<'_>, path: &Path) -> Result<u64> {
    let mut total = 0u64;
    let entries = Dir::read_from(dir).at(Op::ReadDir, || path.to_owned())?;
    for entry in entries {
        let entry = entry.at(Op::ReadDir, || path.to_owned())?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let name = entry.file_name();
        let child = || {
            path.join(std::ffi::OsStr::new(
                &String::from_utf8_lossy(name.to_bytes()).into_owned(),
            ))
        };
        if entry.file_type() == FileType::Directory {
            let sub = openat(
                dir,
                name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .at(Op::Open, child)?;
            total = total.saturating_add(measure(sub.as_fd(), &child())?);
        } else {
            let st = statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).at(Op::Stat, child)?;
            if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                // The file system gave no type in the listing.
                let sub =
                    open_dir(dir, &String::from_utf8_lossy(name.to_bytes())).at(Op::Open, child)?;
                total = total.saturating_add(measure(sub.as_fd(), &child())?);
            } else {
                total = total.saturating_add(occupied(&st));
            }
        }
    }
    Ok(total)
}

/// Remove everything in `dir` except the entry named `keep`. Entries that
/// vanish meanwhile (a racing cleaner) are fine.
pub(crate) fn remove_contents(dir: BorrowedFd<'_>, path: &Path, keep: Option<&str>) -> Result<()> {
    // Listing while unlinking can skip entries on some file systems; a
    // second pass finds none left in the common case.
    for _ in 0..2 {
        let mut removed_any = false;
        let entries = match Dir::read_from(dir) {
            Ok(d) => d,
            Err(Errno::NOENT) => return Ok(()),
            Err(e) => return Err(e).at(Op::ReadDir, || path.to_owned()),
        };
        for entry in entries {
            let entry = entry.at(Op::ReadDir, || path.to_owned())?;
            let raw = entry.file_name().to_bytes();
            if raw == b"." || raw == b".." {
                continue;
            }
            let name = String::from_utf8_lossy(raw).into_owned();
            if keep == Some(name.as_str()) {
                continue;
            }
            let is_dir = match entry.file_type() {
                FileType::Directory => true,
                FileType::Unknown => matches!(
                    statat(dir, entry.file_name(), AtFlags::SYMLINK_NOFOLLOW),
                    Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory
                ),
                _ => false,
            };
            remove_child(dir, entry.file_name(), &name, is_dir, path)?;
            removed_any = true;
        }
        if !removed_any {
            break;
        }
    }
    Ok(())
}

/// Remove one child, a directory tree or anything else.
fn remove_child(
    dir: BorrowedFd<'_>,
    raw: &std::ffi::CStr,
    name: &str,
    is_dir: bool,
    path: &Path,
) -> Result<()> {
    let child = || path.join(name);
    if is_dir {
        match open_dir(dir, name) {
            Ok(sub) => remove_contents(sub.as_fd(), &child(), None)?,
            Err(Errno::NOENT) => return Ok(()),
            Err(e) => return Err(e).at(Op::Open, child),
        }
    }
    let flags = if is_dir {
        AtFlags::REMOVEDIR
    } else {
        AtFlags::empty()
    };
    let op = if is_dir { Op::RemoveDir } else { Op::Unlink };
    match unlink_writable(dir, raw, flags) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e).at(op, child),
    }
}

/// `unlinkat`, making `dir` writable first if that is all that stops it (a
/// read-only directory inside a stored tree).
fn unlink_writable(
    dir: BorrowedFd<'_>,
    name: &std::ffi::CStr,
    flags: AtFlags,
) -> rustix::io::Result<()> {
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
        let got = measure(fd.as_fd(), t.path()).unwrap();
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
