//! The committed entries of a cache, read for `fscache ls` (the library has
//! no listing yet).
//!
//! An entry is what the crate docs define: a directory `objects/<name>`
//! (not `uuid-*`) whose `object.lock` is a regular file, whose
//! `object.info` is a JSON object with an integer `size` (as
//! [`ObjectInfo::parse`] reads it) and whose `data` is a directory, none of
//! them a link. Everything is opened relative to the directory above it,
//! never following a link, and looking takes no lock and counts as no use:
//! the lock is only asked whether someone holds it (`F_OFD_GETLK`).

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fscache::lock::{conflicting, LockKind};
use fscache::{Error, ObjectInfo, Op};
use rustix::fs::{fstat, openat, statat, AtFlags, FileType, Mode, OFlags, Stat, CWD};
use rustix::io::Errno;

/// The longest `object.info` an entry has (the library's bound: ours and
/// osbuild's are under 200 bytes).
const MAX_OBJECT_INFO: usize = 4096;

/// One committed entry.
#[derive(Clone, Debug)]
pub struct Entry {
    pub name: String,
    /// The size its `object.info` records (what `cache.size` accounts).
    pub size: u64,
    /// Its last use: the atime of its `object.lock`.
    pub last_use: SystemTime,
    /// The boot id it was tagged with, if any.
    pub creation_boot_id: Option<String>,
    /// Committed with `Durability::Sync`.
    pub durable: bool,
    /// Someone holds its lock now (a reader, or its remover).
    pub in_use: bool,
}

/// Which boot an entry is from, as far as the command can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Boot {
    /// Tagged with this boot's id for the application named by `--app-id`.
    This,
    /// Tagged with another id: an earlier boot (or another application).
    Earlier,
    /// No `--app-id` was given, or the entry has no boot id.
    Unknown,
}

impl Boot {
    /// `this_boot` is the boot id of `--app-id` for this boot, if given.
    pub fn of(entry: &Entry, this_boot: Option<&str>) -> Boot {
        match (this_boot, entry.creation_boot_id.as_deref()) {
            (Some(this), Some(id)) if this == id => Boot::This,
            (Some(_), Some(_)) => Boot::Earlier,
            _ => Boot::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Boot::This => "this",
            Boot::Earlier => "earlier",
            Boot::Unknown => "unknown",
        }
    }
}

/// What `objects/` holds.
#[derive(Debug, Default)]
pub struct Listing {
    pub entries: Vec<Entry>,
    /// Named directories that are not valid entries (see `fscache stats`
    /// and `fscache sweep`).
    pub invalid: u64,
}

fn io_error(op: Op, path: PathBuf) -> impl FnOnce(Errno) -> Error {
    move |e| Error::Io {
        op,
        path,
        source: io::Error::from(e),
    }
}

/// Whether `e` says that what we opened is gone or was replaced by
/// something that is not what we expect there (a link, a file).
fn vanished(e: Errno) -> bool {
    matches!(e, Errno::NOENT | Errno::NOTDIR | Errno::LOOP)
}

fn open_at(dir: impl AsFd, name: &str, flags: OFlags) -> rustix::io::Result<OwnedFd> {
    openat(
        dir,
        name,
        flags | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
    )
}

fn is(st: &Stat, kind: FileType) -> bool {
    FileType::from_raw_mode(st.st_mode) == kind
}

fn atime(st: &Stat) -> SystemTime {
    match u64::try_from(st.st_atime) {
        Ok(sec) => UNIX_EPOCH + Duration::new(sec, st.st_atime_nsec.clamp(0, 999_999_999) as u32),
        Err(_) => UNIX_EPOCH,
    }
}

/// Every committed entry of the cache at `root`, in no particular order.
///
/// # Errors
///
/// [`Error::Io`] if `objects/` cannot be opened or listed, or an entry
/// cannot be read for another reason than that it vanished meanwhile.
pub fn list(root: &Path) -> Result<Listing, Error> {
    let objects_path = root.join("objects");
    let objects = openat(
        CWD,
        &objects_path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(io_error(Op::Open, objects_path.clone()))?;
    let names = rustix::fs::Dir::read_from(&objects)
        .map_err(io_error(Op::ReadDir, objects_path.clone()))?;
    let mut listing = Listing::default();
    for item in names {
        let item = item.map_err(io_error(Op::ReadDir, objects_path.clone()))?;
        let raw: &CStr = item.file_name();
        if matches!(raw.to_bytes(), b"." | b"..") {
            continue;
        }
        // Our names, and osbuild's, are UTF-8; any other is no entry.
        let Ok(name) = raw.to_str() else {
            listing.invalid += 1;
            continue;
        };
        if name.starts_with("uuid-") {
            continue; // being built, or an orphan: not an entry
        }
        let kind = match item.file_type() {
            FileType::Unknown => match statat(&objects, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => FileType::from_raw_mode(st.st_mode),
                Err(e) if vanished(e) => continue,
                Err(e) => return Err(io_error(Op::Stat, objects_path.join(name))(e)),
            },
            t => t,
        };
        if kind != FileType::Directory {
            continue; // links and files are not ours to judge
        }
        match read_entry(&objects, &objects_path, name)? {
            Some(Some(entry)) => listing.entries.push(entry),
            Some(None) => listing.invalid += 1,
            None => {}
        }
    }
    Ok(listing)
}

/// The entry `name`: `Some(None)` if it is not a valid one, `None` if it
/// vanished while we looked.
fn read_entry(
    objects: &OwnedFd,
    objects_path: &Path,
    name: &str,
) -> Result<Option<Option<Entry>>, Error> {
    let path = objects_path.join(name);
    let dir = match open_at(objects, name, OFlags::DIRECTORY) {
        Ok(fd) => fd,
        Err(e) if vanished(e) => return Ok(None),
        Err(e) => return Err(io_error(Op::Open, path)(e)),
    };
    // The lock: a regular file, whose atime is the last use.
    let lock_path = path.join("object.lock");
    let lock = match open_at(&dir, "object.lock", OFlags::empty()) {
        Ok(fd) => fd,
        Err(e) if vanished(e) || e == Errno::NXIO => return Ok(Some(None)),
        Err(e) => return Err(io_error(Op::Open, lock_path)(e)),
    };
    let lock_st = fstat(&lock).map_err(io_error(Op::Stat, lock_path.clone()))?;
    if !is(&lock_st, FileType::RegularFile) {
        return Ok(Some(None));
    }
    let in_use = conflicting(&lock, LockKind::Exclusive, &lock_path)?.is_some();
    // The data: a directory.
    match statat(&dir, "data", AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if is(&st, FileType::Directory) => {}
        Ok(_) => return Ok(Some(None)),
        Err(e) if vanished(e) => return Ok(Some(None)),
        Err(e) => return Err(io_error(Op::Stat, path.join("data"))(e)),
    }
    // The info: a regular file that parses.
    let Some(info) = read_info(&dir, &path.join("object.info"))? else {
        return Ok(Some(None));
    };
    Ok(Some(Some(Entry {
        name: name.to_owned(),
        size: info.size,
        last_use: atime(&lock_st),
        creation_boot_id: info.creation_boot_id,
        durable: info.durable,
        in_use,
    })))
}

/// The `object.info` in `dir`, if it is a regular file that reads as one.
fn read_info(dir: &OwnedFd, path: &Path) -> Result<Option<ObjectInfo>, Error> {
    let fd = match open_at(dir, "object.info", OFlags::empty()) {
        Ok(fd) => fd,
        Err(e) if vanished(e) || e == Errno::NXIO => return Ok(None),
        Err(e) => return Err(io_error(Op::Open, path.to_owned())(e)),
    };
    let st = fstat(&fd).map_err(io_error(Op::Stat, path.to_owned()))?;
    if !is(&st, FileType::RegularFile) {
        return Ok(None);
    }
    let mut buf = vec![0u8; MAX_OBJECT_INFO + 1];
    let mut len = 0;
    loop {
        match rustix::io::pread(&fd, &mut buf[len..], len as u64) {
            Ok(0) => break,
            Ok(n) => {
                len += n;
                if len == buf.len() {
                    return Ok(None); // too long to be an entry's
                }
            }
            Err(Errno::INTR) => continue,
            Err(e) => return Err(io_error(Op::Read, path.to_owned())(e)),
        }
    }
    Ok(ObjectInfo::parse(&buf[..len]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: Option<&str>) -> Entry {
        Entry {
            name: "e".into(),
            size: 0,
            last_use: UNIX_EPOCH,
            creation_boot_id: id.map(str::to_owned),
            durable: false,
            in_use: false,
        }
    }

    #[test]
    fn a_boot_is_told_only_with_an_application_id_and_a_tag() {
        let this = "a".repeat(32);
        let other = "b".repeat(32);
        assert_eq!(Boot::of(&entry(Some(&this)), Some(&this)), Boot::This);
        assert_eq!(Boot::of(&entry(Some(&other)), Some(&this)), Boot::Earlier);
        assert_eq!(Boot::of(&entry(None), Some(&this)), Boot::Unknown);
        assert_eq!(Boot::of(&entry(Some(&this)), None), Boot::Unknown);
    }
}
