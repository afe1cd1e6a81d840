//! One look at `objects/` or `stage/`: each child classified once, for the
//! sweep, stats, resync and gc alike.

use rustix::fs::FileType;

use crate::atomic::Dir;
use crate::error::Result;
use crate::layout::is_anonymous;

/// What a child of a store directory is, by its name and type alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A `uuid-*` directory: an entry being built or staged, or an orphan.
    AnonymousDir,
    /// A `uuid-*` file: a temporary being filled, or an orphan.
    AnonymousFile,
    /// A named directory in `objects/`: a committed entry, or an invalid
    /// one (see [`crate::layout::committed`]).
    Named,
}

/// A child of a store directory that is ours to look at.
#[derive(Debug)]
pub(crate) struct Child {
    pub(crate) name: String,
    pub(crate) kind: Kind,
}

/// The children of `dir` that the format gives a meaning: anonymous
/// directories and files, and (where `holds_entries`, in `objects/`) named
/// directories. Links, devices, fifos, sockets and foreign files are not
/// ours to judge and are left out.
pub(crate) fn scan(dir: &Dir, holds_entries: bool) -> Result<Vec<Child>> {
    let mut out = Vec::new();
    for (name, file_type) in crate::tree::list(dir)? {
        let kind = match (is_anonymous(&name), file_type) {
            (true, FileType::Directory) => Kind::AnonymousDir,
            (true, FileType::RegularFile) => Kind::AnonymousFile,
            (false, FileType::Directory) if holds_entries => Kind::Named,
            _ => continue,
        };
        out.push(Child { name, kind });
    }
    Ok(out)
}

/// The wall-clock second the system booted, if it can be told.
pub(crate) fn boot_time() -> Option<i64> {
    let up = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    i64::try_from(now.as_secs()).ok()?.checked_sub(up.tv_sec)
}

/// Whether `name` in `dir` was last changed before `boot` (seconds since
/// the epoch): nothing of this boot has touched it since.
pub(crate) fn is_before(dir: &Dir, name: &str, boot: Option<i64>) -> bool {
    match (
        boot,
        rustix::fs::statat(dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW),
    ) {
        (Some(boot), Ok(st)) => st.st_ctime < boot,
        _ => false,
    }
}

/// Whether the anonymous entry or file `name` in `dir` is held by a live
/// owner, asked with `F_OFD_GETLK` so that looking takes no lock.
pub(crate) fn is_live(dir: &Dir, name: &str, kind: Kind) -> Result<bool> {
    use crate::error::IoContext;
    let rel = match kind {
        Kind::AnonymousFile => name.to_owned(),
        _ => crate::layout::in_entry(name, crate::layout::LOCK_FILE),
    };
    match crate::beneath::open_beneath(
        std::os::fd::AsFd::as_fd(dir),
        &rel,
        rustix::fs::OFlags::RDONLY,
        rustix::fs::Mode::empty(),
    ) {
        Ok(fd) => {
            Ok(
                crate::lock::conflicting(&fd, crate::lock::LockKind::Exclusive, &dir.join(&rel))?
                    .is_some(),
            )
        }
        Err(e) if crate::error::not_a_file(e) => Ok(false),
        Err(e) => Err(e).at(crate::error::Op::Open, || dir.join(&rel)),
    }
}
