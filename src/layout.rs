//! FORMAT.md's names, what a committed entry is, and how an entry is
//! removed: the one place that knows the layout of a cache directory.

use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use rustix::fs::{statat, unlinkat, AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

use crate::atomic::Dir;
use crate::beneath::open_beneath;
use crate::error::{not_a_file, IoContext, Op, Result};
use crate::info::ObjectInfo;
use crate::tree;

pub(crate) const CACHE_INFO: &str = "cache.info";
pub(crate) const CACHE_LOCK: &str = "cache.lock";
pub(crate) const CACHE_SIZE: &str = "cache.size";
pub(crate) const CACHE_TAG: &str = "CACHEDIR.TAG";
pub(crate) const OBJECTS: &str = "objects";
pub(crate) const STAGE: &str = "stage";
/// Our extension: the caches of [`FsCache::namespace`](crate::FsCache::namespace).
pub(crate) const NAMESPACES: &str = "namespaces";
/// Our extension (a version-1 reader ignores it): one lock file per name
/// being built by `get_or_build`, named as the entry.
pub(crate) const BUILDS: &str = "builds";
/// Our extension: the counts of what handles did, kept across processes.
pub(crate) const COUNTERS: &str = "fscache-counters.json";
/// The lock file of an entry directory; its atime is the entry's last use.
pub(crate) const LOCK_FILE: &str = "object.lock";
pub(crate) const OBJECT_INFO: &str = "object.info";
pub(crate) const DATA: &str = "data";

/// Every name the cache root holds: FORMAT.md's layout, and our
/// extensions that version-1 readers ignore (`namespaces/`, `builds/`,
/// where `get_or_build` keeps its locks, and `fscache-counters.json`). Anything else there is not ours.
pub const ROOT_LAYOUT: [&str; 9] = [
    CACHE_TAG, CACHE_INFO, CACHE_LOCK, CACHE_SIZE, OBJECTS, STAGE, NAMESPACES, BUILDS, COUNTERS,
];

pub(crate) const CACHE_TAG_CONTENT: &[u8] = b"Signature: 8a477f597d28d172789f06886806bc55\n\
# This is a cache directory tag created by fscache (see https://bford.info/cachedir/)\n";

/// The longest `object.info` we read; ours and osbuild's are under 200
/// bytes, so a longer one is not an entry's.
const MAX_OBJECT_INFO: usize = 4096;

/// A fresh anonymous name: `uuid-` and 32 lowercase hex digits of a v4 UUID.
pub fn anonymous_name() -> String {
    format!("uuid-{}", uuid::Uuid::new_v4().simple())
}

/// Whether `name` is one of the anonymous entries and temporaries that
/// [`anonymous_name`] makes (and that entry names may not take).
pub(crate) fn is_anonymous(name: &str) -> bool {
    name.starts_with("uuid-")
}

/// `<name>/<file>`, the path of a file of an entry relative to its store.
pub(crate) fn in_entry(name: &str, file: &str) -> String {
    // Built by hand: every load makes one, and `format!` costs as much as
    // the rest of a miss's own work.
    let mut rel = String::with_capacity(name.len() + 1 + file.len());
    rel.push_str(name);
    rel.push('/');
    rel.push_str(file);
    rel
}

/// The `object.info` at `rel` below `dir`, if it is a regular file holding
/// what the format requires. Anything else there (nothing, a link, a
/// directory, a fifo, garbage, a number that is no size) reads as `None`:
/// an `object.info` that is not one was never accounted.
pub(crate) fn read_info(dir: BorrowedFd<'_>, rel: &str, path: &Path) -> Result<Option<ObjectInfo>> {
    let fd = match open_beneath(dir, rel, OFlags::RDONLY, Mode::empty()) {
        Ok(fd) => fd,
        Err(e) if not_a_file(e) => return Ok(None),
        Err(e) => return Err(e).at(Op::Open, || path.to_owned()),
    };
    // One read: a short one is the end of a regular file. A directory
    // answers EISDIR and an empty fifo EAGAIN or 0 bytes, so no `fstat` is
    // needed to tell a file from the rest.
    let mut buf = [0u8; MAX_OBJECT_INFO + 1];
    let mut len = 0;
    loop {
        let room = buf.len() - len;
        match rustix::io::pread(&fd, &mut buf[len..], len as u64) {
            Ok(n) => {
                len += n;
                if len == buf.len() {
                    return Ok(None);
                }
                if n < room {
                    break;
                }
            }
            Err(Errno::INTR) => continue,
            Err(e) if not_a_file(e) || e == Errno::INVAL => return Ok(None),
            Err(e) => return Err(e).at(Op::Read, || path.to_owned()),
        }
    }
    Ok(ObjectInfo::parse(&buf[..len]))
}

/// The one definition of a committed entry, used by load, stats, the
/// sweep, resync and eviction: a directory `objects/<name>` (not an
/// anonymous one) whose `object.lock` is a regular file, whose
/// `object.info` reads as one ([`read_info`]) and whose `data` is a
/// directory, none of them links. Returns its `object.info`, or `None` for
/// anything else (an invalid entry).
///
/// `lock` is the lock file's status where the caller has it already (from
/// the descriptor it locked); otherwise it is looked up.
pub(crate) fn committed(
    objects: &Dir,
    name: &str,
    lock: Option<&Stat>,
) -> Result<Option<ObjectInfo>> {
    let lock_is_file = match lock {
        Some(st) => is_regular(st),
        None => is_a(objects, &in_entry(name, LOCK_FILE), FileType::RegularFile)?,
    };
    if !lock_is_file {
        return Ok(None);
    }
    let rel = in_entry(name, OBJECT_INFO);
    let Some(info) = read_info(objects.as_fd(), &rel, &objects.join(&rel))? else {
        return Ok(None);
    };
    if !is_a(objects, &in_entry(name, DATA), FileType::Directory)? {
        return Ok(None);
    }
    Ok(Some(info))
}

pub(crate) fn is_regular(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::RegularFile
}

/// Whether `rel` below `dir` is, without following links, of type `kind`.
fn is_a(dir: &Dir, rel: &str, kind: FileType) -> Result<bool> {
    match statat(dir.as_fd(), rel, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(FileType::from_raw_mode(st.st_mode) == kind),
        Err(Errno::NOENT) | Err(Errno::NOTDIR) => Ok(false),
        Err(e) => Err(e).at(Op::Stat, || dir.join(rel)),
    }
}

/// Unlink the `object.info` of the entry `dir`: the step that makes an
/// entry invalid. Returns whether there was one to unlink (a directory
/// planted there is left for the removal of the contents, and was never
/// accounted).
pub(crate) fn unlink_info(dir: &Dir) -> Result<bool> {
    match unlinkat(dir.as_fd(), OBJECT_INFO, AtFlags::empty()) {
        Ok(()) => Ok(true),
        Err(Errno::NOENT) | Err(Errno::ISDIR) => Ok(false),
        Err(e) => Err(e).at(Op::Unlink, || dir.join(OBJECT_INFO)),
    }
}

/// The removal protocol, for a directory whose lock the caller holds
/// exclusively (or that nobody can lock any more): `object.info` first,
/// then all but the lock, then the lock, then the directory.
pub(crate) fn remove_entry(parent: &Dir, name: &str, dir: &Dir) -> Result<()> {
    unlink_info(dir)?;
    crate::failpoint!("remove-after-info");
    remove_invalidated(parent, name, dir)
}

/// The rest of the removal protocol, for an entry whose `object.info` the
/// caller has unlinked already (an evicted one, given back).
pub(crate) fn remove_invalidated(parent: &Dir, name: &str, dir: &Dir) -> Result<()> {
    tree::remove_contents(dir.as_fd(), dir.path(), Some(LOCK_FILE))?;
    crate::failpoint!("remove-before-lock");
    match unlinkat(dir.as_fd(), LOCK_FILE, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => {}
        Err(e) => return Err(e).at(Op::Unlink, || dir.join(LOCK_FILE)),
    }
    // The directory is empty and lockless now: a cleaner may have removed
    // it already (ENOENT). Where a file system refuses RENAME_NOREPLACE, a
    // committer's plain rename may even have replaced it with a new entry
    // of the same name, which `rmdir` then refuses to remove: it is theirs.
    match unlinkat(parent.as_fd(), name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) | Err(Errno::NOTEMPTY) | Err(Errno::EXIST)
        | Err(Errno::BUSY) => Ok(()),
        Err(e) => Err(e).at(Op::RemoveDir, || parent.join(name)),
    }
}
