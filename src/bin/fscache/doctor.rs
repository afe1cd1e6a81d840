//! `doctor`: what the file system under a directory does for a cache, and
//! what the crate falls back to where it does less.
//!
//! Every probe runs in a fresh directory `DIR/.fscache-doctor-<random>`,
//! made for it and removed afterwards whatever happens (a guard, and an
//! explicit removal whose failure is reported), so that DIR is left as it
//! was: doctor never makes a cache, and DIR need not be one.

use std::fs::File;
use std::io::Write as _;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use fscache::lock::{conflicting, FileLock, LockKind};
use fscache::Wait;
use rustix::fs::{
    copy_file_range, fstat, fstatfs, fstatvfs, futimens, ioctl_ficlone, linkat, mkdirat, openat,
    openat2, renameat_with, statat, unlinkat, AtFlags, Dir, Mode, OFlags, RenameFlags,
    ResolveFlags, StatVfsMountFlags, Timespec, Timestamps, CWD, UTIME_NOW, UTIME_OMIT,
};
use rustix::io::Errno;
use serde_json::{json, Value};

use crate::exit::{Failure, Status};
use crate::output::{bytes, path_json, Out};

/// How one check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    /// Works, or the crate's fallback is in force and is as safe.
    Ok,
    /// A cache works here, with a weakness worth knowing.
    Warn,
    /// A cache is not safe here.
    Fail,
}

impl Level {
    fn word(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Fail => "fail",
        }
    }

    /// As the human output shows it: a failure stands out.
    fn column(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
        }
    }
}

/// One line of the report.
#[derive(Debug)]
struct Check {
    /// The key in JSON.
    name: &'static str,
    /// What the human line calls it.
    label: &'static str,
    level: Level,
    detail: String,
}

impl Check {
    fn new(
        name: &'static str,
        label: &'static str,
        level: Level,
        detail: impl Into<String>,
    ) -> Check {
        Check {
            name,
            label,
            level,
            detail: detail.into(),
        }
    }
}

/// `fscache doctor [DIR]`: probe the file system under `dir` (default:
/// `$FSCACHE_DIR`, which clap has put in `dir` already, else the current
/// directory). Exit status 0 when a cache would be safe there (warnings
/// allowed), 1 when not.
pub fn doctor(dir: Option<&Path>, json: bool, out: &mut Out) -> Result<Status, Failure> {
    let path = match dir {
        Some(dir) => dir.to_owned(),
        None => std::env::current_dir().map_err(|e| Failure::Other(Box::new(e)))?,
    };
    let report = examine(&path);
    if json {
        out.json(&report.json())?;
    } else {
        for check in &report.checks {
            writeln!(
                out,
                "{:<6}{}: {}",
                check.level.column(),
                check.label,
                check.detail
            )?;
        }
        let warnings = report.count(Level::Warn);
        let verdict = if report.safe() {
            "a cache is safe here"
        } else {
            "a cache is NOT safe here"
        };
        writeln!(
            out,
            "{}: {verdict} ({} {})",
            path.display(),
            warnings,
            if warnings == 1 { "warning" } else { "warnings" }
        )?;
    }
    Ok(if report.safe() {
        Status::Ok
    } else {
        Status::Error
    })
}

/// Everything doctor found.
#[derive(Debug)]
struct Report {
    path: PathBuf,
    /// `f_type`, and its name where we know it.
    fs: Option<(u32, Option<&'static str>)>,
    checks: Vec<Check>,
    free_bytes: Option<u64>,
    free_inodes: Option<u64>,
    sharing: Option<Sharing>,
}

impl Report {
    fn safe(&self) -> bool {
        self.count(Level::Fail) == 0
    }

    fn count(&self, level: Level) -> usize {
        self.checks.iter().filter(|c| c.level == level).count()
    }

    fn json(&self) -> Value {
        json!({
            "path": path_json(&self.path),
            "fs_type": self.fs.map(|(magic, name)| name.map_or_else(|| format!("{magic:#x}"), str::to_owned)),
            "fs_magic": self.fs.map(|(magic, _)| magic),
            "safe": self.safe(),
            "checks": self.checks.iter().map(|c| json!({
                "name": c.name,
                "status": c.level.word(),
                "detail": c.detail,
            })).collect::<Vec<_>>(),
            "free_bytes": self.free_bytes,
            "free_inodes": self.free_inodes,
            "sharing": self.sharing.as_ref().map(Sharing::json),
        })
    }
}

/// Run every check on the file system under `path`.
fn examine(path: &Path) -> Report {
    let mut report = Report {
        path: path.to_owned(),
        fs: None,
        checks: Vec::new(),
        free_bytes: None,
        free_inodes: None,
        sharing: None,
    };
    let root = match openat(
        CWD,
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(e) => {
            report.checks.push(Check::new(
                "probe_dir",
                "probe directory",
                Level::Fail,
                format!("cannot open `{}`: {}", path.display(), said(e)),
            ));
            return report;
        }
    };
    let vfs = fstatvfs(&root).ok();
    match fstatfs(&root) {
        Ok(st) => {
            // A magic number is 32 bits wide, whatever the field's type.
            let magic = st.f_type as u32;
            report.fs = Some((magic, fs_name(magic)));
            report.checks.push(fs_check(magic));
        }
        Err(e) => report.checks.push(Check::new(
            "fs_type",
            "file system",
            Level::Warn,
            format!("cannot tell (fstatfs: {})", said(e)),
        )),
    }
    match Probe::create(root.as_fd(), path) {
        Ok(probe) => {
            let shown = probe.path.display().to_string();
            let probed = [
                ofd_locks(&probe),
                rename_noreplace(&probe),
                o_tmpfile(&probe),
                openat2_beneath(&probe),
                reflink(&probe),
                atime(&probe, vfs.as_ref().map(|v| v.f_flag)),
            ];
            // The probe directory's line says whether it is gone, and
            // comes before what was tried in it.
            report.checks.push(match probe.remove() {
                Ok(()) => Check::new(
                    "probe_dir",
                    "probe directory",
                    Level::Ok,
                    format!("made and removed `{shown}`"),
                ),
                Err(e) => Check::new(
                    "probe_dir",
                    "probe directory",
                    Level::Warn,
                    format!(
                        "made `{shown}`, but could not remove it: {}: remove it by hand",
                        said(e)
                    ),
                ),
            });
            report.checks.extend(probed);
        }
        Err(e) => report.checks.push(Check::new(
            "probe_dir",
            "probe directory",
            Level::Fail,
            format!(
                "cannot make a directory in `{}`: {}: a cache cannot work here",
                path.display(),
                said(e)
            ),
        )),
    }
    if let Some(vfs) = &vfs {
        // ramfs has no size and counts no blocks; btrfs and others make
        // inodes as they go and count none.
        let free = (vfs.f_blocks > 0).then(|| vfs.f_bavail.saturating_mul(vfs.f_frsize));
        let inodes = (vfs.f_files > 0).then_some(vfs.f_favail);
        report.free_bytes = free;
        report.free_inodes = inodes;
        report.checks.push(free_space(free, inodes));
    }
    match fstat(&root) {
        Ok(st) => {
            let sharing = Sharing::of(st.st_mode, st.st_gid, umask());
            report.checks.push(sharing.check());
            report.sharing = Some(sharing);
        }
        Err(e) => report.checks.push(Check::new(
            "sharing",
            "sharing",
            Level::Warn,
            format!("cannot tell (fstat: {})", said(e)),
        )),
    }
    report
}

// ---------------------------------------------------------------------
// The probe directory.

/// `DIR/.fscache-doctor-<random>`, ours alone (mode 0700), removed on
/// drop if [`Probe::remove`] was not called.
struct Probe {
    /// DIR.
    parent: OwnedFd,
    name: String,
    fd: OwnedFd,
    path: PathBuf,
    removed: bool,
}

impl Probe {
    fn create(dir: BorrowedFd<'_>, path: &Path) -> rustix::io::Result<Probe> {
        let parent = openat(
            dir,
            ".",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        loop {
            let id = uuid::Uuid::new_v4().simple().to_string();
            let name = format!(".fscache-doctor-{}", &id[..12]);
            match mkdirat(&parent, name.as_str(), Mode::RWXU) {
                Ok(()) => {}
                Err(Errno::EXIST) => continue,
                Err(e) => return Err(e),
            }
            let opened = openat(
                &parent,
                name.as_str(),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            );
            return match opened {
                Ok(fd) => Ok(Probe {
                    path: path.join(&name),
                    parent,
                    name,
                    fd,
                    removed: false,
                }),
                Err(e) => {
                    let _ = unlinkat(&parent, name.as_str(), AtFlags::REMOVEDIR);
                    Err(e)
                }
            };
        }
    }

    /// The path of `name` inside, for the library calls that take paths.
    fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// A new file `name` inside with `content`, open for reading and
    /// writing.
    fn file(&self, name: &str, content: &[u8]) -> rustix::io::Result<OwnedFd> {
        let fd = openat(
            &self.fd,
            name,
            OFlags::CREATE | OFlags::EXCL | OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::RUSR | Mode::WUSR,
        )?;
        let mut file = File::from(fd);
        file.write_all(content)
            .map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::IO))?;
        Ok(file.into())
    }

    /// Remove the directory and everything the checks left in it.
    fn remove(mut self) -> rustix::io::Result<()> {
        self.removed = true;
        empty(self.fd.as_fd())?;
        unlinkat(&self.parent, self.name.as_str(), AtFlags::REMOVEDIR)
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        if !self.removed {
            let _ = empty(self.fd.as_fd());
            let _ = unlinkat(&self.parent, self.name.as_str(), AtFlags::REMOVEDIR);
        }
    }
}

/// Remove what is in `dir`: files, and directories (with what is in them;
/// the checks make one level). Links are removed, never followed.
fn empty(dir: BorrowedFd<'_>) -> rustix::io::Result<()> {
    let mut names = Vec::new();
    for entry in Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_owned();
        if name.as_bytes() != b"." && name.as_bytes() != b".." {
            names.push(name);
        }
    }
    for name in names {
        match unlinkat(dir, name.as_c_str(), AtFlags::empty()) {
            Err(Errno::ISDIR) | Err(Errno::PERM) => {
                let sub = openat(
                    dir,
                    name.as_c_str(),
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                empty(sub.as_fd())?;
                unlinkat(dir, name.as_c_str(), AtFlags::REMOVEDIR)?;
            }
            other => other?,
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------
// The checks.

/// Two open file descriptions of one file: the second may not take a
/// write lock the first holds, a third sees the first's lock, and the
/// lock goes away with its holder.
fn ofd_locks(probe: &Probe) -> Check {
    let check = |level, detail: String| Check::new("ofd_locks", "OFD locks", level, detail);
    let path = probe.join("lock");
    if let Err(e) = probe.file("lock", b"") {
        return check(Level::Fail, format!("cannot make a lock file: {}", said(e)));
    }
    let first = match FileLock::open(&path, LockKind::Exclusive, Wait::Never) {
        Ok(lock) => lock,
        Err(e) => {
            return check(
                Level::Fail,
                format!("F_OFD_SETLK fails: {}: a cache is not safe here", chain(&e)),
            )
        }
    };
    match FileLock::open(&path, LockKind::Exclusive, Wait::Never) {
        Err(fscache::Error::WouldBlock { .. }) => {}
        Ok(_) => {
            return check(
                Level::Fail,
                "a second descriptor got the write lock the first holds: locks do not conflict, \
                 a cache is not safe here"
                    .into(),
            )
        }
        Err(e) => {
            return check(
                Level::Fail,
                format!(
                    "a second lock failed other than with contention: {}",
                    chain(&e)
                ),
            )
        }
    }
    let third = match File::open(&path) {
        Ok(file) => file,
        Err(e) => return check(Level::Fail, format!("cannot open the lock file: {e}")),
    };
    match conflicting(&third, LockKind::Shared, &path) {
        Ok(Some(LockKind::Exclusive)) => {}
        Ok(other) => {
            return check(
                Level::Fail,
                format!(
                    "F_OFD_GETLK from a third descriptor sees {other:?}, not the write lock: \
                     a cache is not safe here"
                ),
            )
        }
        Err(e) => return check(Level::Fail, format!("F_OFD_GETLK fails: {}", chain(&e))),
    }
    if let Err(e) = first.unlock() {
        return check(Level::Fail, format!("cannot release a lock: {}", chain(&e)));
    }
    match FileLock::open(&path, LockKind::Exclusive, Wait::Never) {
        Ok(_) => check(
            Level::Ok,
            "conflict across descriptors, are seen by F_OFD_GETLK and are released".into(),
        ),
        Err(e) => check(
            Level::Fail,
            format!("a released lock stays in the way: {}", chain(&e)),
        ),
    }
}

/// `renameat2(RENAME_NOREPLACE)` onto a name that exists.
fn rename_noreplace(probe: &Probe) -> Check {
    let check =
        |level, detail: String| Check::new("rename_noreplace", "RENAME_NOREPLACE", level, detail);
    for name in ["rename-from", "rename-onto"] {
        if let Err(e) = probe.file(name, name.as_bytes()) {
            return check(
                Level::Warn,
                format!("cannot tell: cannot make a file: {}", said(e)),
            );
        }
    }
    match renameat_with(
        &probe.fd,
        "rename-from",
        &probe.fd,
        "rename-onto",
        RenameFlags::NOREPLACE,
    ) {
        Err(Errno::EXIST) => check(Level::Ok, "refuses to replace an existing name".into()),
        Err(e @ (Errno::INVAL | Errno::NOSYS)) => check(
            Level::Ok,
            format!(
                "not supported ({}): the crate falls back to link + unlink for files and a plain \
                 rename (which fails onto a non-empty directory) for directories",
                errno_name(e)
            ),
        ),
        Ok(()) => check(
            Level::Fail,
            "the rename replaced an existing name: the file system ignores the flag, and a \
             commit could overwrite another's"
                .into(),
        ),
        Err(e) => check(Level::Warn, format!("cannot tell: {}", said(e))),
    }
}

/// `O_TMPFILE`, and linking the unnamed file into place as the crate does.
fn o_tmpfile(probe: &Probe) -> Check {
    let check = |level, detail: String| Check::new("o_tmpfile", "O_TMPFILE", level, detail);
    let fd = match openat(
        &probe.fd,
        ".",
        OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
        Mode::RUSR | Mode::WUSR,
    ) {
        Ok(fd) => fd,
        Err(e @ (Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL | Errno::NOENT)) => {
            return check(
                Level::Ok,
                format!(
                    "not supported ({}): the crate falls back to named temporaries",
                    errno_name(e)
                ),
            )
        }
        Err(e) => return check(Level::Warn, format!("cannot tell: {}", said(e))),
    };
    let linked = |how: &str| match statat(&probe.fd, "tmpfile", AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if fstat(&fd).is_ok_and(|ours| ours.st_ino == st.st_ino) => check(
            Level::Ok,
            format!("unnamed files are made and linked into place{how}"),
        ),
        _ => check(
            Level::Warn,
            "the link of an unnamed file reported success but its name is not it: stores \
             that write files may fail"
                .into(),
        ),
    };
    match linkat(&fd, "", &probe.fd, "tmpfile", AtFlags::EMPTY_PATH) {
        Ok(()) => linked(""),
        Err(Errno::NOENT | Errno::PERM) => {
            let proc_path = format!("/proc/self/fd/{}", fd.as_raw_fd());
            match linkat(
                CWD,
                proc_path.as_str(),
                &probe.fd,
                "tmpfile",
                AtFlags::SYMLINK_FOLLOW,
            ) {
                Ok(()) => {
                    linked(" through /proc/self/fd (AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH here)")
                }
                Err(e) => check(
                    Level::Warn,
                    format!(
                        "unnamed files are made but cannot be linked into place ({}): stores \
                         that write files may fail",
                        said(e)
                    ),
                ),
            }
        }
        Err(e) => check(
            Level::Warn,
            format!(
                "unnamed files are made but cannot be linked into place ({}): stores that \
                 write files may fail",
                said(e)
            ),
        ),
    }
}

/// `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` of a path of two
/// components.
fn openat2_beneath(probe: &Probe) -> Check {
    let check =
        |level, detail: String| Check::new("openat2", "openat2 RESOLVE_BENEATH", level, detail);
    let made = mkdirat(&probe.fd, "sub", Mode::RWXU).and_then(|()| {
        openat(
            &probe.fd,
            "sub/file",
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::RUSR | Mode::WUSR,
        )
    });
    if let Err(e) = made {
        return check(
            Level::Warn,
            format!("cannot tell: cannot make a file: {}", said(e)),
        );
    }
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut tries = 0;
    loop {
        return match openat2(&probe.fd, "sub/file", flags, Mode::empty(), resolve) {
            Ok(_) => check(Level::Ok, "works".into()),
            // A rename raced the lookup (none of ours would): again.
            Err(Errno::AGAIN) if tries < 3 => {
                tries += 1;
                continue;
            }
            Err(e @ (Errno::NOSYS | Errno::PERM)) => check(
                Level::Ok,
                format!(
                    "not available ({}): the crate opens paths one component at a time with \
                     O_NOFOLLOW",
                    errno_name(e)
                ),
            ),
            Err(e) => check(Level::Warn, format!("cannot tell: {}", said(e))),
        };
    }
}

/// `FICLONE` between two files, and `copy_file_range` where it fails.
fn reflink(probe: &Probe) -> Check {
    let check = |level, detail: String| Check::new("reflink", "reflink", level, detail);
    let content = vec![0x5a; 64 << 10];
    let made = probe
        .file("clone-from", &content)
        .and_then(|from| Ok((from, probe.file("clone-to", b"")?)));
    let (from, to) = match made {
        Ok(pair) => pair,
        Err(e) => {
            return check(
                Level::Warn,
                format!("cannot tell: cannot make a file: {}", said(e)),
            )
        }
    };
    let refused = match ioctl_ficlone(&to, &from) {
        Ok(()) => return check(Level::Ok, "works: copies share their blocks".into()),
        Err(e) if not_here(e) => e,
        Err(e) => return check(Level::Warn, format!("cannot tell: {}", said(e))),
    };
    let mut offset_in = 0u64;
    let mut offset_out = 0u64;
    let fallback = match copy_file_range(
        &from,
        Some(&mut offset_in),
        &to,
        Some(&mut offset_out),
        content.len(),
    ) {
        Ok(_) => "copy_file_range",
        Err(e) if not_here(e) => "read and write",
        Err(e) => {
            return check(
                Level::Warn,
                format!(
                    "not supported ({}), and copy_file_range fails: {}",
                    errno_name(refused),
                    said(e)
                ),
            )
        }
    };
    check(
        Level::Ok,
        format!(
            "not supported ({}): copies fall back to {fallback}",
            errno_name(refused)
        ),
    )
}

/// The errors by which a way of copying says it does not work here (the
/// library's own list).
fn not_here(e: Errno) -> bool {
    matches!(
        e,
        Errno::OPNOTSUPP | Errno::XDEV | Errno::INVAL | Errno::NOTTY | Errno::NOSYS
    )
}

/// An explicit update of the access time alone, as a load records an
/// entry's last use: noatime and relatime mounts must still honour it.
fn atime(probe: &Probe, mount: Option<StatVfsMountFlags>) -> Check {
    let check =
        |level, detail: String| Check::new("atime", "explicit atime updates", level, detail);
    let mounted = match mount {
        Some(f) if f.contains(StatVfsMountFlags::NOATIME) => "mounted noatime",
        Some(f) if f.contains(StatVfsMountFlags::RELATIME) => "mounted relatime",
        Some(_) => "mounted strictatime",
        None => "mount options unknown",
    };
    let fd = match probe.file("atime", b"last use") {
        Ok(fd) => fd,
        Err(e) => {
            return check(
                Level::Warn,
                format!("cannot tell: cannot make a file: {}", said(e)),
            )
        }
    };
    let omit = Timespec {
        tv_sec: 0,
        tv_nsec: UTIME_OMIT,
    };
    let long_ago = Timestamps {
        last_access: Timespec {
            tv_sec: 1_000_000_000,
            tv_nsec: 0,
        },
        last_modification: omit,
    };
    let now = Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: UTIME_NOW,
        },
        last_modification: omit,
    };
    let stamped = futimens(&fd, &long_ago)
        .and_then(|()| fstat(&fd))
        .and_then(|before| futimens(&fd, &now).map(|()| before))
        .and_then(|before| Ok((before, fstat(&fd)?)));
    match stamped {
        Ok((before, after)) if after.st_atime > before.st_atime => {
            if (after.st_mtime, after.st_mtime_nsec) == (before.st_mtime, before.st_mtime_nsec) {
                check(Level::Ok, format!("honoured ({mounted})"))
            } else {
                check(
                    Level::Warn,
                    format!(
                        "honoured, but the modification time changed too ({mounted}): sizes and \
                         digests do not depend on it"
                    ),
                )
            }
        }
        Ok(_) => check(
            Level::Warn,
            format!(
                "ignored ({mounted}): a load cannot record an entry's last use, so eviction \
                 cannot follow least-recent use"
            ),
        ),
        Err(e) => check(
            Level::Warn,
            format!(
                "cannot be set ({}; {mounted}): a load cannot record an entry's last use, so eviction \
                 cannot follow least-recent use",
                said(e)
            ),
        ),
    }
}

/// The file system's type, and what it means for a cache.
fn fs_check(magic: u32) -> Check {
    let check = |level, detail: String| Check::new("fs_type", "file system", level, detail);
    let Some(name) = fs_name(magic) else {
        return check(Level::Ok, format!("unknown type {magic:#x}"));
    };
    let named = format!("{name} ({magic:#x})");
    match magic {
        NFS | CIFS | SMB2 | V9FS => check(
            Level::Warn,
            format!(
                "{named}: a network file system, where rename and lock coherence between \
                 machines are weaker than on a local one (locks need the server's lock manager; \
                 clients may see renames late)"
            ),
        ),
        FUSE => check(
            Level::Warn,
            format!(
                "{named}: rename and lock coherence are whatever the FUSE server makes of \
                 them, weaker than on a local file system"
            ),
        ),
        OVERLAYFS => check(
            Level::Warn,
            format!(
                "{named}: RENAME_NOREPLACE and O_TMPFILE may be missing (see below), and \
                 renaming a directory from a lower layer copies it up, or fails with EXDEV \
                 without redirect_dir"
            ),
        ),
        _ => check(Level::Ok, named),
    }
}

const NFS: u32 = 0x6969;
const CIFS: u32 = 0xFF53_4D42;
const SMB2: u32 = 0xFE53_4D42;
const V9FS: u32 = 0x0102_1997;
const FUSE: u32 = 0x6573_5546;
const OVERLAYFS: u32 = 0x794c_7630;

/// The name of a file system by its `statfs` magic.
fn fs_name(magic: u32) -> Option<&'static str> {
    Some(match magic {
        NFS => "nfs",
        CIFS => "cifs",
        SMB2 => "smb2",
        V9FS => "9p",
        FUSE => "fuse",
        OVERLAYFS => "overlayfs",
        0x0102_1994 => "tmpfs",
        0x8584_58f6 => "ramfs",
        // ext2 and ext3 share the magic (and today the ext4 driver).
        0xEF53 => "ext4",
        0x5846_5342 => "xfs",
        0x9123_683E => "btrfs",
        0x2FC1_2FC1 => "zfs",
        0xCA45_1A4E => "bcachefs",
        0xF2F5_2010 => "f2fs",
        0x4d44 => "vfat",
        0x2011_BAB0 => "exfat",
        0x5346_544e => "ntfs",
        0x7371_7368 => "squashfs",
        0x9660 => "iso9660",
        _ => return None,
    })
}

/// Below this much room, stores soon find none.
const LOW_SPACE: u64 = 64 << 20;
/// Below this many inodes, likewise.
const LOW_INODES: u64 = 1000;

/// Room for entries; `None`: not counted (the file system grows as needed).
fn free_space(free: Option<u64>, inodes: Option<u64>) -> Check {
    let free_said = free.map_or_else(
        || "no size counted".to_owned(),
        |n| format!("{} free", bytes(n)),
    );
    let inodes_said = inodes.map_or_else(
        || "inodes made as needed".to_owned(),
        |n| format!("{n} inodes free"),
    );
    let detail = format!("{free_said}, {inodes_said}");
    if free.is_some_and(|n| n < LOW_SPACE) || inodes.is_some_and(|n| n < LOW_INODES) {
        Check::new(
            "free_space",
            "free space",
            Level::Warn,
            format!("{detail}: nearly full, stores will soon find no room"),
        )
    } else {
        Check::new("free_space", "free space", Level::Ok, detail)
    }
}

// ---------------------------------------------------------------------
// Sharing between users.

/// Whether DIR is set up for users of one group to share a cache (the
/// crate docs, "Sharing a cache between users").
#[derive(Debug)]
struct Sharing {
    mode: u32,
    gid: u32,
    group: Option<String>,
    umask: Option<u32>,
}

impl Sharing {
    fn of(mode: u32, gid: u32, umask: Option<u32>) -> Sharing {
        Sharing {
            mode: mode & 0o7777,
            gid,
            group: group_name(gid),
            umask,
        }
    }

    fn setgid(&self) -> bool {
        self.mode & 0o2000 != 0
    }

    fn group_writable(&self) -> bool {
        self.mode & 0o020 != 0
    }

    /// What this process makes keeps group write.
    fn umask_shares(&self) -> bool {
        self.umask.is_some_and(|u| u & 0o020 == 0)
    }

    fn group(&self) -> String {
        self.group.clone().unwrap_or_else(|| self.gid.to_string())
    }

    fn shared(&self) -> bool {
        self.setgid() && self.group_writable() && self.umask_shares()
    }

    fn summary(&self) -> String {
        if self.shared() {
            format!("shared with group {}", self.group())
        } else {
            "private to its owner".into()
        }
    }

    fn check(&self) -> Check {
        let umask = self
            .umask
            .map_or_else(|| "unknown".to_owned(), |u| format!("{u:04o}"));
        let facts = format!(
            "mode {:04o}, group {}, umask {umask}",
            self.mode,
            self.group()
        );
        let check = |level, detail: String| Check::new("sharing", "sharing", level, detail);
        if self.shared() {
            check(Level::Ok, format!("{} ({facts})", self.summary()))
        } else if self.setgid() && self.group_writable() {
            check(
                Level::Warn,
                format!(
                    "set up for group {}, but this process's umask keeps what it makes private \
                     to its owner: share under umask 002 ({facts})",
                    self.group()
                ),
            )
        } else {
            check(
                Level::Ok,
                format!(
                    "{} ({facts}; to share: install -d -m 2775 -g GROUP DIR, umask 002)",
                    self.summary()
                ),
            )
        }
    }

    fn json(&self) -> Value {
        json!({
            "shared": self.shared(),
            "summary": self.summary(),
            "mode": format!("{:04o}", self.mode),
            "gid": self.gid,
            "group": self.group,
            "umask": self.umask.map(|u| format!("{u:04o}")),
        })
    }
}

/// This process's umask, from `/proc/self/status` (asking the kernel for
/// it means setting it).
fn umask() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
    u32::from_str_radix(line.trim(), 8).ok()
}

/// The name of group `gid`, from `/etc/group`.
fn group_name(gid: u32) -> Option<String> {
    let groups = std::fs::read_to_string("/etc/group").ok()?;
    groups.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id = fields.nth(1)?;
        (id.parse() == Ok(gid)).then(|| name.to_owned())
    })
}

// ---------------------------------------------------------------------
// Messages.

/// An errno as a person reads it: `Operation not supported (EOPNOTSUPP)`.
fn said(e: Errno) -> String {
    let text = std::io::Error::from(e).to_string();
    // "Operation not supported (os error 95)": the name says more.
    let text = text.split(" (os error").next().unwrap_or(&text).to_owned();
    format!("{text} ({})", errno_name(e))
}

/// The symbolic name of the errnos the probes meet; the number otherwise.
fn errno_name(e: Errno) -> String {
    let name = match e {
        Errno::OPNOTSUPP => "EOPNOTSUPP",
        Errno::INVAL => "EINVAL",
        Errno::NOSYS => "ENOSYS",
        Errno::PERM => "EPERM",
        Errno::ACCESS => "EACCES",
        Errno::NOENT => "ENOENT",
        Errno::ISDIR => "EISDIR",
        Errno::XDEV => "EXDEV",
        Errno::NOTTY => "ENOTTY",
        Errno::EXIST => "EEXIST",
        Errno::ROFS => "EROFS",
        Errno::NOSPC => "ENOSPC",
        Errno::DQUOT => "EDQUOT",
        Errno::NOLCK => "ENOLCK",
        Errno::NOTDIR => "ENOTDIR",
        Errno::LOOP => "ELOOP",
        Errno::IO => "EIO",
        Errno::STALE => "ESTALE",
        _ => return format!("errno {}", e.raw_os_error()),
    };
    name.into()
}

/// A library error and its causes, on one line.
fn chain(e: &fscache::Error) -> String {
    let mut line = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        line.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sharing_needs_setgid_group_write_and_a_umask_that_keeps_it() {
        assert!(Sharing::of(0o42775, 0, Some(0o002)).shared());
        assert_eq!(
            Sharing::of(0o42775, 0, Some(0o002)).check().level,
            Level::Ok
        );
        let umask_022 = Sharing::of(0o42775, 0, Some(0o022));
        assert!(!umask_022.shared());
        assert_eq!(
            umask_022.check().level,
            Level::Warn,
            "set up, but not shared"
        );
        assert_eq!(umask_022.summary(), "private to its owner");
        let plain = Sharing::of(0o40755, 0, Some(0o002));
        assert!(!plain.shared());
        assert_eq!(plain.check().level, Level::Ok);
        assert!(
            !Sharing::of(0o42775, 0, None).shared(),
            "an unknown umask shares nothing"
        );
    }

    #[test]
    fn file_systems_are_named_and_the_weaker_ones_warned_about() {
        assert_eq!(fs_name(0xEF53), Some("ext4"));
        assert_eq!(fs_name(0x9123_683E), Some("btrfs"));
        assert_eq!(fs_check(0x0102_1994).level, Level::Ok);
        for weaker in [NFS, FUSE, OVERLAYFS, CIFS] {
            assert_eq!(fs_check(weaker).level, Level::Warn, "{weaker:#x}");
        }
        assert_eq!(fs_check(0x1234_5678).detail, "unknown type 0x12345678");
    }

    #[test]
    fn errnos_read_with_their_names() {
        assert_eq!(
            said(Errno::OPNOTSUPP),
            "Operation not supported (EOPNOTSUPP)"
        );
        assert_eq!(errno_name(Errno::from_raw_os_error(200)), "errno 200");
    }
}
