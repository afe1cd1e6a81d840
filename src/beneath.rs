//! Opening paths below a directory descriptor without ever following a
//! symbolic link, with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` where
//! the kernel has it and a component-by-component walk where it does not.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{openat, openat2, Mode, OFlags, ResolveFlags};
use rustix::io::{Errno, Result};

use crate::feature::{Support, OPENAT2};

/// Open `rel` (a `/`-separated relative path with no `.` or `..`) below
/// `dir`. Fails with `ELOOP` (or `ENOTDIR`) where any component is a link.
///
/// `O_NONBLOCK` is always added: it changes nothing for the regular files
/// we expect, and keeps a fifo planted in the cache from blocking the open.
pub(crate) fn open_beneath(
    dir: BorrowedFd<'_>,
    rel: &str,
    flags: OFlags,
    mode: Mode,
) -> Result<OwnedFd> {
    let flags = flags | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NONBLOCK;
    if !rel.contains('/') {
        // One component: O_NOFOLLOW alone is exact, and cheaper than openat2.
        return openat(dir, rel, flags, mode);
    }
    if OPENAT2.usable() {
        let resolve =
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        match openat2(dir, rel, flags, mode, resolve) {
            // Seccomp filters (some container runtimes) answer EPERM for
            // system calls they do not know.
            Err(Errno::NOSYS) | Err(Errno::PERM) => OPENAT2.set(Support::No),
            // The kernel may ask us to retry when a rename raced the lookup.
            Err(Errno::AGAIN) => return walk(dir, rel, flags, mode),
            other => {
                OPENAT2.set(Support::Yes);
                return other;
            }
        }
    }
    walk(dir, rel, flags, mode)
}

/// The fallback: open each directory on the way with `O_NOFOLLOW`.
pub(crate) fn walk(dir: BorrowedFd<'_>, rel: &str, flags: OFlags, mode: Mode) -> Result<OwnedFd> {
    let mut parts = rel.split('/').filter(|p| !p.is_empty()).peekable();
    let mut current: Option<OwnedFd> = None;
    while let Some(part) = parts.next() {
        if part == "." || part == ".." {
            return Err(Errno::XDEV);
        }
        let at = current.as_ref().map_or(dir, |fd| fd.as_fd());
        if parts.peek().is_none() {
            return openat(at, part, flags | OFlags::NOFOLLOW | OFlags::CLOEXEC, mode);
        }
        let next = openat(
            at,
            part,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        current = Some(next);
    }
    Err(Errno::INVAL)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn open_dir(path: &std::path::Path) -> OwnedFd {
        openat(
            rustix::fs::CWD,
            path,
            OFlags::DIRECTORY | OFlags::RDONLY,
            Mode::empty(),
        )
        .unwrap()
    }

    #[test]
    fn a_link_anywhere_on_the_path_is_refused_by_both_resolvers() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("real")).unwrap();
        std::fs::write(t.path().join("real/f"), b"x").unwrap();
        symlink("real", t.path().join("link")).unwrap();
        symlink("/etc/passwd", t.path().join("real/abs")).unwrap();
        let dir = open_dir(t.path());
        for open in [open_beneath, walk] {
            assert!(open(dir.as_fd(), "real/f", OFlags::RDONLY, Mode::empty()).is_ok());
            let e = open(dir.as_fd(), "link/f", OFlags::RDONLY, Mode::empty()).unwrap_err();
            assert!(
                matches!(e, Errno::LOOP | Errno::NOTDIR),
                "intermediate link: {e:?}"
            );
            let e = open(dir.as_fd(), "real/abs", OFlags::RDONLY, Mode::empty()).unwrap_err();
            assert!(
                matches!(e, Errno::LOOP | Errno::NOTDIR),
                "final link: {e:?}"
            );
            assert!(open(dir.as_fd(), "../x", OFlags::RDONLY, Mode::empty()).is_err());
        }
    }
}
