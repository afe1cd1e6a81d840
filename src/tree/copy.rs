//! Copying a file or a tree through descriptors: blocks shared where the
//! file systems can, links copied as links, and nothing read or written
//! outside the source and the destination.
//!
//! The source is walked by [`walk`] (any depth, a bounded number of
//! descriptors); the destination is a second trail of directory
//! descriptors kept in step with it, its innermost [`OPEN_LEVELS`] levels
//! open and the outer ones opened again through `..` (and checked to be
//! the very directory left) on the way back up. Every name is opened or
//! created relative to a directory descriptor with `O_NOFOLLOW` (or
//! `O_EXCL`, or `AT_SYMLINK_NOFOLLOW`): a link in the source is copied as
//! a link, and a link swapped into the destination stops the copy with an
//! error instead of redirecting it.
//!
//! File content is copied with the fastest method that works between the
//! two file systems, tried in order and remembered for each source file
//! system once it has said "not here": `FICLONE` (the copy shares the
//! original's blocks), `copy_file_range` (a copy in the kernel, which may
//! share blocks too, or copy on the server for NFS), then `read`/`write`.

use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{self, AtFlags, Dir, FileType, Mode, OFlags, Stat, Timespec, Timestamps};
use rustix::io::Errno;

use super::walk::{walk, Here, Visit, OPEN_LEVELS};
use super::{is_dot, open_dir};
use crate::error::{Error, IoContext, Op, Result};

/// How much one `copy_file_range` call is asked to copy.
const RANGE_CHUNK: usize = 1 << 30;

/// The buffer of the `read`/`write` fallback.
const BUFFER: usize = 256 << 10;

/// What a copy of a file or a tree made: the answer of
/// [`StoreGuard::copy_in`](crate::StoreGuard::copy_in),
/// [`LoadGuard::copy_out`](crate::LoadGuard::copy_out) and
/// [`FsCache::copy_out`](crate::FsCache::copy_out).
///
/// # Examples
///
/// ```
/// use fscache::{FsCache, MaxSize};
/// let dir = tempfile::tempdir().unwrap();
/// let src = dir.path().join("src");
/// std::fs::create_dir_all(src.join("sub")).unwrap();
/// std::fs::write(src.join("sub/file"), b"content").unwrap();
/// std::os::unix::fs::symlink("sub/file", src.join("link")).unwrap();
///
/// let cache = FsCache::open("my-tool", dir.path().join("cache"))?;
/// cache.set_maximum_size(MaxSize::Unlimited)?;
/// assert!(cache.store_tree("tree", &src)?.is_stored());
/// let copied = cache.copy_out("tree", dir.path().join("out"))?.expect("just stored");
/// assert_eq!((copied.files, copied.directories, copied.symlinks), (1, 1, 1));
/// assert_eq!(copied.bytes, 7);
/// # Ok::<(), fscache::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Copied {
    /// Regular files copied. A file with several names in the tree is
    /// copied once; its further names are [`Copied::hard_links`].
    pub files: u64,
    /// Directories created below the destination (the tree's root is the
    /// destination itself and not counted).
    pub directories: u64,
    /// Symbolic links copied as links.
    pub symlinks: u64,
    /// Further names of a file or link already copied, made hard links to
    /// the copy: the copy has as many inodes as the tree.
    pub hard_links: u64,
    /// Bytes of content copied (file lengths; shared blocks count in full).
    pub bytes: u64,
    /// Files whose copy shares the original's blocks (`FICLONE`).
    pub cloned: u64,
}

/// Copy what `src` names into the directory `dest` (at `dest_path`).
///
/// The path leading to `src` is the caller's and followed; `src` itself
/// is not. A directory's contents are copied into `dest` and its mode and
/// times given to `dest`; anything else is copied into `dest` under its
/// file name.
pub(crate) fn copy_path(src: &Path, dest: BorrowedFd<'_>, dest_path: &Path) -> Result<Copied> {
    let (parent, name) = split(src);
    let parent_fd = fs::openat(
        fs::CWD,
        parent,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .at(Op::Open, || parent.to_owned())?;
    let name = CString::new(name.as_bytes())
        .map_err(|_| Errno::INVAL)
        .at(Op::Open, || src.to_owned())?;
    let st =
        fs::statat(&parent_fd, &name, AtFlags::SYMLINK_NOFOLLOW).at(Op::Stat, || src.to_owned())?;
    let kind = FileType::from_raw_mode(st.st_mode);
    if kind == FileType::Directory {
        let fd = open_dir(parent_fd.as_fd(), &name).at(Op::Open, || src.to_owned())?;
        return copy_dir(fd, src, dest, dest_path);
    }
    let mut copier = Copier::new(dest, dest_path)?;
    copier
        .state
        .node(&copier.dest, parent_fd.as_fd(), &name, kind, &|| {
            src.to_owned()
        })?;
    Ok(copier.state.report)
}

/// Copy the contents of the directory `src` (at `src_path`) into the
/// directory `dest`, and give `dest` the mode and times of `src`.
pub(crate) fn copy_dir(
    src: OwnedFd,
    src_path: &Path,
    dest: BorrowedFd<'_>,
    dest_path: &Path,
) -> Result<Copied> {
    let listing = Dir::new(src).at(Op::ReadDir, || src_path.to_owned())?;
    let mut copier = Copier::new(dest, dest_path)?;
    walk(listing, src_path, &mut copier)?;
    copier.dest.finish_root()?;
    Ok(copier.state.report)
}

/// The directory a path is in and its last component; `.` for a path
/// that has none (`/`, or one that ends in `..`), which is then the
/// directory itself.
fn split(src: &Path) -> (&Path, &OsStr) {
    match (src.parent(), src.file_name()) {
        (Some(parent), Some(name)) if parent.as_os_str().is_empty() => (Path::new("."), name),
        (Some(parent), Some(name)) => (parent, name),
        _ => (src, OsStr::new(".")),
    }
}

/// The refusal of a device file, fifo or socket.
fn refused(path: PathBuf) -> Error {
    Error::Io {
        op: Op::Copy,
        path,
        source: io::Error::new(
            io::ErrorKind::Unsupported,
            "device files, fifos and sockets are not copied",
        ),
    }
}

/// A name whose type changed between the listing and the copy.
fn changed(path: PathBuf) -> Error {
    Error::Io {
        op: Op::Copy,
        path,
        source: io::Error::other("it changed while it was being copied"),
    }
}

/// The errors by which a way of copying says it does not work between
/// these two files' file systems (as opposed to a failure of this copy).
fn not_here(e: Errno) -> bool {
    matches!(
        e,
        Errno::OPNOTSUPP | Errno::XDEV | Errno::INVAL | Errno::NOTTY | Errno::NOSYS
    )
}

/// A source directory's mode and times, given to its copy once it is full
/// (adding entries changes a directory's mtime; a read-only mode would
/// stop the filling).
#[derive(Clone, Copy)]
struct Meta {
    mode: u32,
    atime: Timespec,
    mtime: Timespec,
}

impl Meta {
    fn of(st: &Stat) -> Meta {
        Meta {
            mode: st.st_mode & 0o7777,
            atime: Timespec {
                tv_sec: st.st_atime as _,
                tv_nsec: st.st_atime_nsec as _,
            },
            mtime: Timespec {
                tv_sec: st.st_mtime as _,
                tv_nsec: st.st_mtime_nsec as _,
            },
        }
    }

    fn times(&self) -> Timestamps {
        Timestamps {
            last_access: self.atime,
            last_modification: self.mtime,
        }
    }

    /// Give an open file or directory this mode and these times.
    fn apply(&self, fd: BorrowedFd<'_>, path: impl Fn() -> PathBuf) -> Result<()> {
        fs::fchmod(fd, Mode::from_raw_mode(self.mode)).at(Op::Chmod, &path)?;
        fs::futimens(fd, &self.times()).at(Op::SetTimes, &path)
    }
}

/// The walk's visitor: the destination trail and the rest of the state.
struct Copier<'p> {
    dest: DestTrail<'p>,
    state: State,
}

impl<'p> Copier<'p> {
    fn new(dest: BorrowedFd<'_>, dest_path: &'p Path) -> Result<Self> {
        let root = dest
            .try_clone_to_owned()
            .at(Op::Open, || dest_path.to_owned())?;
        let st = fs::fstat(&root).at(Op::Stat, || dest_path.to_owned())?;
        Ok(Copier {
            dest: DestTrail {
                root: dest_path,
                root_id: (st.st_dev, st.st_ino),
                levels: vec![Level {
                    fd: Some(root),
                    id: None,
                    name: CString::default(),
                    meta: None,
                }],
            },
            state: State {
                links: HashMap::new(),
                methods: Vec::new(),
                buf: Vec::new(),
                report: Copied::default(),
            },
        })
    }
}

/// The destination directories from its root to where the walk is.
struct DestTrail<'p> {
    root: &'p Path,
    /// The destination root's device and inode: a source directory that
    /// is it means the destination is inside the source.
    root_id: (u64, u64),
    levels: Vec<Level>,
}

/// One destination directory on the trail.
struct Level {
    /// Open while among the innermost [`OPEN_LEVELS`]; the root always is.
    fd: Option<OwnedFd>,
    /// Device and inode, recorded when the descriptor is closed: what
    /// `..` must lead back to.
    id: Option<(u64, u64)>,
    /// Its name in its parent (empty for the root).
    name: CString,
    /// What to give it once it is full.
    meta: Option<Meta>,
}

impl DestTrail<'_> {
    /// The innermost destination directory.
    fn top(&self) -> BorrowedFd<'_> {
        match self.levels.last().and_then(|l| l.fd.as_ref()) {
            Some(fd) => fd.as_fd(),
            None => unreachable!("the innermost level is open once entered"),
        }
    }

    /// The root's descriptor.
    fn root_fd(&self) -> BorrowedFd<'_> {
        match self.levels[0].fd.as_ref() {
            Some(fd) => fd.as_fd(),
            None => unreachable!("the root is never closed"),
        }
    }

    /// The names from the root to `name` in the innermost directory.
    fn rel(&self, name: &CStr) -> Vec<CString> {
        let mut rel: Vec<CString> = self.levels[1..].iter().map(|l| l.name.clone()).collect();
        rel.push(name.to_owned());
        rel
    }

    /// The path of `name` in the innermost directory, for messages.
    fn child_path(&self, name: &CStr) -> PathBuf {
        self.path_of(&self.rel(name))
    }

    fn path_of(&self, rel: &[CString]) -> PathBuf {
        let mut path = self.root.to_path_buf();
        for part in rel {
            path.push(OsStr::from_bytes(part.to_bytes()));
        }
        path
    }

    /// Step into the subdirectory `name` of the innermost directory (made
    /// while its parent was listed), closing the descriptor that leaves
    /// the open window.
    fn descend(&mut self, name: &CStr) -> Result<()> {
        let fd = open_dir(self.top(), name).at(Op::Open, || self.child_path(name))?;
        let depth = self.levels.len();
        if let Some(outer) = depth.checked_sub(OPEN_LEVELS).filter(|&i| i > 0) {
            if let Some(open) = self.levels[outer].fd.take() {
                let st = fs::fstat(&open).at(Op::Stat, || self.path_of(&self.rel_to(outer)))?;
                self.levels[outer].id = Some((st.st_dev, st.st_ino));
            }
        }
        self.levels.push(Level {
            fd: Some(fd),
            id: None,
            name: name.to_owned(),
            meta: None,
        });
        Ok(())
    }

    /// The names from the root to the level at `depth`.
    fn rel_to(&self, depth: usize) -> Vec<CString> {
        self.levels[1..=depth]
            .iter()
            .map(|l| l.name.clone())
            .collect()
    }

    /// Leave the innermost directory, now full: give it its mode and
    /// times, and open its parent again if it was closed.
    fn ascend(&mut self) -> Result<()> {
        let Some(done) = self.levels.pop().filter(|_| !self.levels.is_empty()) else {
            unreachable!("a walk leaves only directories it entered below the root")
        };
        let Some(fd) = done.fd else {
            unreachable!("the innermost level is open once entered")
        };
        let path = || self.child_path(&done.name);
        if let Some(meta) = done.meta {
            meta.apply(fd.as_fd(), path)?;
        }
        let depth = self.levels.len() - 1;
        if let Some(id) = self.levels[depth]
            .id
            .filter(|_| self.levels[depth].fd.is_none())
        {
            let parent_path = || self.path_of(&self.rel_to(depth));
            let parent = open_dir(fd.as_fd(), c"..").at(Op::Open, parent_path)?;
            let st = fs::fstat(&parent).at(Op::Stat, parent_path)?;
            if (st.st_dev, st.st_ino) != id {
                return Err(Error::Io {
                    op: Op::Open,
                    path: parent_path(),
                    source: io::Error::other("moved out of the copy while it was being made"),
                });
            }
            self.levels[depth].fd = Some(parent);
        }
        Ok(())
    }

    /// Give the root its mode and times, once everything is in it.
    fn finish_root(&self) -> Result<()> {
        match self.levels[0].meta {
            Some(meta) => meta.apply(self.root_fd(), || self.root.to_owned()),
            None => Ok(()),
        }
    }

    /// Make `name` in the innermost directory a hard link to `first`, the
    /// copy made earlier (its names from the root). Every directory on
    /// the way is opened without following a link.
    fn link(&self, first: &[CString], name: &CStr) -> Result<()> {
        let Some((last, dirs)) = first.split_last() else {
            unreachable!("a copy has a name")
        };
        let mut at: Option<OwnedFd> = None;
        for (i, part) in dirs.iter().enumerate() {
            let base = at.as_ref().map_or(self.root_fd(), |fd| fd.as_fd());
            let next = fs::openat(
                base,
                part,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .at(Op::Open, || self.path_of(&dirs[..=i]))?;
            at = Some(next);
        }
        let base = at.as_ref().map_or(self.root_fd(), |fd| fd.as_fd());
        fs::linkat(base, last, self.top(), name, AtFlags::empty())
            .at(Op::Link, || self.child_path(name))
    }
}

/// Which ways of copying content are still worth trying.
#[derive(Clone, Copy, Debug)]
struct Methods {
    clone: bool,
    range: bool,
}

/// Everything but the destination trail.
struct State {
    /// Source files and links with more than one name, by device and
    /// inode: the names of their copy.
    links: HashMap<(u64, u64), Vec<CString>>,
    /// What works from each source file system (by device) into the
    /// destination's, learnt on the way.
    methods: Vec<(u64, Methods)>,
    /// The `read`/`write` buffer, made when first needed.
    buf: Vec<u8>,
    report: Copied,
}

impl State {
    /// Copy the entry `name` of `src_dir`, of type `kind`, that is not a
    /// directory, into the innermost destination directory.
    fn node(
        &mut self,
        dest: &DestTrail<'_>,
        src_dir: BorrowedFd<'_>,
        name: &CStr,
        kind: FileType,
        src_path: &dyn Fn() -> PathBuf,
    ) -> Result<()> {
        match kind {
            FileType::RegularFile => self.file(dest, src_dir, name, src_path),
            FileType::Symlink => self.symlink(dest, src_dir, name, src_path),
            _ => Err(refused(src_path())),
        }
    }

    fn file(
        &mut self,
        dest: &DestTrail<'_>,
        src_dir: BorrowedFd<'_>,
        name: &CStr,
        src_path: &dyn Fn() -> PathBuf,
    ) -> Result<()> {
        // NONBLOCK: a fifo swapped in for the file must not hang the open.
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let src = fs::openat(src_dir, name, flags, Mode::empty()).at(Op::Open, src_path)?;
        let st = fs::fstat(&src).at(Op::Stat, src_path)?;
        match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => {}
            FileType::Directory | FileType::Symlink => return Err(changed(src_path())),
            _ => return Err(refused(src_path())),
        }
        if self.linked(dest, &st, name)? {
            return Ok(());
        }
        let dest_path = || dest.child_path(name);
        let dst = fs::openat(
            dest.top(),
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::RUSR | Mode::WUSR,
        )
        .at(Op::Create, dest_path)?;
        let size = st.st_size.max(0) as u64;
        let (bytes, cloned) = self.content(&src, &dst, size, st.st_dev, src_path, &dest_path)?;
        Meta::of(&st).apply(dst.as_fd(), dest_path)?;
        self.remember(dest, &st, name);
        self.report.files += 1;
        self.report.bytes += bytes;
        self.report.cloned += u64::from(cloned);
        Ok(())
    }

    fn symlink(
        &mut self,
        dest: &DestTrail<'_>,
        src_dir: BorrowedFd<'_>,
        name: &CStr,
        src_path: &dyn Fn() -> PathBuf,
    ) -> Result<()> {
        let st = fs::statat(src_dir, name, AtFlags::SYMLINK_NOFOLLOW).at(Op::Stat, src_path)?;
        if FileType::from_raw_mode(st.st_mode) != FileType::Symlink {
            return Err(changed(src_path()));
        }
        if self.linked(dest, &st, name)? {
            return Ok(());
        }
        let target = fs::readlinkat(src_dir, name, Vec::new()).at(Op::ReadLink, src_path)?;
        let dest_path = || dest.child_path(name);
        fs::symlinkat(&target, dest.top(), name).at(Op::Symlink, dest_path)?;
        // A link has no mode of its own to copy; its times it has.
        fs::utimensat(
            dest.top(),
            name,
            &Meta::of(&st).times(),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .at(Op::SetTimes, dest_path)?;
        self.remember(dest, &st, name);
        self.report.symlinks += 1;
        Ok(())
    }

    /// If the source `st` is a further name of something already copied,
    /// link its copy as `name` and say so.
    fn linked(&mut self, dest: &DestTrail<'_>, st: &Stat, name: &CStr) -> Result<bool> {
        if st.st_nlink <= 1 {
            return Ok(false);
        }
        let Some(first) = self.links.get(&(st.st_dev, st.st_ino)) else {
            return Ok(false);
        };
        dest.link(first, name)?;
        self.report.hard_links += 1;
        Ok(true)
    }

    /// Remember the copy `name` of `st` if more names of it may follow.
    fn remember(&mut self, dest: &DestTrail<'_>, st: &Stat, name: &CStr) {
        if st.st_nlink > 1 {
            self.links.insert((st.st_dev, st.st_ino), dest.rel(name));
        }
    }

    /// What works from the file system `dev` (to the destination's).
    fn methods(&mut self, dev: u64) -> &mut Methods {
        let i = match self.methods.iter().position(|(d, _)| *d == dev) {
            Some(i) => i,
            None => {
                let (clone, range) = crate::feature::copy_methods();
                self.methods.push((dev, Methods { clone, range }));
                self.methods.len() - 1
            }
        };
        &mut self.methods[i].1
    }

    /// Copy the content of `src` (`size` bytes long when looked at) into
    /// the empty `dst`, the fastest way that works. Returns the bytes
    /// copied and whether the blocks are shared.
    fn content(
        &mut self,
        src: &OwnedFd,
        dst: &OwnedFd,
        size: u64,
        dev: u64,
        src_path: &dyn Fn() -> PathBuf,
        dst_path: &dyn Fn() -> PathBuf,
    ) -> Result<(u64, bool)> {
        if self.methods(dev).clone {
            match fs::ioctl_ficlone(dst, src) {
                Ok(()) => return Ok((size, true)),
                Err(e) if not_here(e) => self.methods(dev).clone = false,
                // Something about this file alone (a swap file, an
                // immutable one): copy it the other way.
                Err(_) => {}
            }
        }
        let mut done = 0u64;
        if self.methods(dev).range {
            // Both file offsets move on: the fallback below goes on from
            // where this stops.
            loop {
                match fs::copy_file_range(src, None, dst, None, RANGE_CHUNK) {
                    Ok(0) => break,
                    Ok(n) => done += n as u64,
                    Err(Errno::INTR) => continue,
                    Err(e) if not_here(e) => {
                        self.methods(dev).range = false;
                        break;
                    }
                    Err(e) => return Err(e).at(Op::Copy, src_path),
                }
            }
            // Done to the end, unless it stopped short (a file system
            // that generates content answers 0 at once): then read on.
            if done >= size {
                return Ok((done, false));
            }
        }
        if self.buf.is_empty() {
            self.buf = vec![0; BUFFER];
        }
        loop {
            let n = match rustix::io::read(src, &mut self.buf[..]) {
                Ok(0) => return Ok((done, false)),
                Ok(n) => n,
                Err(Errno::INTR) => continue,
                Err(e) => return Err(e).at(Op::Read, src_path),
            };
            let mut chunk = &self.buf[..n];
            while !chunk.is_empty() {
                match rustix::io::write(dst, chunk) {
                    Ok(0) => return Err(Errno::NOSPC).at(Op::Write, dst_path),
                    Ok(w) => chunk = &chunk[w..],
                    Err(Errno::INTR) => continue,
                    Err(e) => return Err(e).at(Op::Write, dst_path),
                }
            }
            done += n as u64;
        }
    }
}

impl Visit for Copier<'_> {
    /// A directory that vanishes under the copy changed the tree: stop.
    const SKIP_VANISHED: bool = false;

    fn enter(&mut self, dir: &mut Dir, here: &Here<'_>) -> Result<Vec<CString>> {
        let fd = dir.fd().at(Op::ReadDir, || here.dir())?;
        let st = fs::fstat(fd).at(Op::Stat, || here.dir())?;
        if (st.st_dev, st.st_ino) == self.dest.root_id {
            return Err(Error::Io {
                op: Op::Copy,
                path: here.dir(),
                source: io::Error::other("the destination is inside the tree being copied"),
            });
        }
        if here.depth > 0 {
            self.dest.descend(here.name())?;
        }
        if let Some(level) = self.dest.levels.last_mut() {
            level.meta = Some(Meta::of(&st));
        }
        let mut subdirs = Vec::new();
        while let Some(entry) = dir.next() {
            let entry = entry.at(Op::ReadDir, || here.dir())?;
            let name = entry.file_name();
            if is_dot(name) {
                continue;
            }
            let fd = dir.fd().at(Op::ReadDir, || here.dir())?;
            let kind = match entry.file_type() {
                // The file system does not say: look.
                FileType::Unknown => FileType::from_raw_mode(
                    fs::statat(fd, name, AtFlags::SYMLINK_NOFOLLOW)
                        .at(Op::Stat, || here.child(name))?
                        .st_mode,
                ),
                kind => kind,
            };
            if kind == FileType::Directory {
                // Owner-only until it is full; its own mode comes last.
                fs::mkdirat(self.dest.top(), name, Mode::RWXU)
                    .at(Op::CreateDir, || self.dest.child_path(name))?;
                self.state.report.directories += 1;
                subdirs.push(name.to_owned());
                continue;
            }
            self.state
                .node(&self.dest, fd, name, kind, &|| here.child(name))?;
        }
        Ok(subdirs)
    }

    fn leave(&mut self, _: BorrowedFd<'_>, _: &CStr, _: &Here<'_>) -> Result<()> {
        self.dest.ascend()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn dir_fd(path: &Path) -> OwnedFd {
        open_dir(fs::CWD, path).unwrap()
    }

    /// A tree of a few files, one larger than the fallback's buffer.
    fn sample(root: &Path) {
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        let big: Vec<u8> = (0..BUFFER * 3 + 17).map(|i| (i % 251) as u8).collect();
        std::fs::write(root.join("a/big"), &big).unwrap();
        std::fs::write(root.join("a/b/small"), b"small").unwrap();
        std::fs::write(root.join("empty"), b"").unwrap();
    }

    fn same_content(a: &Path, b: &Path) {
        for f in ["a/big", "a/b/small", "empty"] {
            assert_eq!(
                std::fs::read(a.join(f)).unwrap(),
                std::fs::read(b.join(f)).unwrap(),
                "{f} differs"
            );
        }
    }

    #[test]
    fn every_way_of_copying_content_copies_every_byte() {
        for methods in [(true, true), (false, true), (false, false)] {
            let t = tempfile::tempdir().unwrap();
            let (src, out) = (t.path().join("src"), t.path().join("out"));
            sample(&src);
            std::fs::create_dir(&out).unwrap();
            let dest = dir_fd(&out);
            let mut copier = Copier::new(dest.as_fd(), &out).unwrap();
            let dev = std::fs::metadata(&src).unwrap().dev();
            copier.state.methods.push((
                dev,
                Methods {
                    clone: methods.0,
                    range: methods.1,
                },
            ));
            let listing = Dir::new(dir_fd(&src)).unwrap();
            walk(listing, &src, &mut copier).unwrap();
            copier.dest.finish_root().unwrap();
            same_content(&src, &out);
            let r = copier.state.report;
            assert_eq!((r.files, r.directories), (3, 2), "{methods:?}: {r:?}");
            assert_eq!(r.bytes, (BUFFER * 3 + 17 + 5) as u64, "{methods:?}");
            if !methods.0 {
                assert_eq!(r.cloned, 0, "cloning was off: {methods:?}");
            }
        }
    }

    #[test]
    fn a_copy_deeper_than_its_open_window_keeps_every_level_and_its_mode() {
        let t = tempfile::tempdir().unwrap();
        let (src, out) = (t.path().join("src"), t.path().join("out"));
        let mut bottom = src.clone();
        for i in 0..3 * OPEN_LEVELS {
            bottom.push(format!("d{i}"));
        }
        std::fs::create_dir_all(&bottom).unwrap();
        std::fs::write(bottom.join("f"), b"deep").unwrap();
        // A sibling at the top, walked after the descent back up.
        std::fs::create_dir(src.join("z")).unwrap();
        std::fs::write(src.join("z/g"), b"top").unwrap();
        std::fs::set_permissions(src.join("d0"), std::fs::Permissions::from_mode(0o751)).unwrap();
        std::fs::create_dir(&out).unwrap();
        let dest = dir_fd(&out);
        let r = copy_dir(dir_fd(&src), &src, dest.as_fd(), &out).unwrap();
        assert_eq!(r.directories as usize, 3 * OPEN_LEVELS + 1);
        let deep = out.join(bottom.strip_prefix(&src).unwrap()).join("f");
        assert_eq!(std::fs::read(deep).unwrap(), b"deep");
        assert_eq!(std::fs::read(out.join("z/g")).unwrap(), b"top");
        let mode = std::fs::metadata(out.join("d0")).unwrap().mode() & 0o7777;
        assert_eq!(
            mode, 0o751,
            "a closed and reopened level still gets its mode"
        );
    }

    #[test]
    fn a_destination_inside_the_source_stops_the_copy() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        std::fs::create_dir_all(src.join("inner")).unwrap();
        let out = src.join("inner");
        let dest = dir_fd(&out);
        let err = copy_dir(dir_fd(&src), &src, dest.as_fd(), &out).unwrap_err();
        let source = std::error::Error::source(&err).unwrap().to_string();
        assert!(source.contains("inside the tree"), "{err}: {source}");
    }

    /// A copier that plays an intruder once the root has been listed.
    struct Intruder<'p, F: FnMut()> {
        copier: Copier<'p>,
        act: Option<F>,
    }

    impl<F: FnMut()> Visit for Intruder<'_, F> {
        const SKIP_VANISHED: bool = false;

        fn enter(&mut self, dir: &mut Dir, here: &Here<'_>) -> Result<Vec<CString>> {
            let subdirs = self.copier.enter(dir, here)?;
            if let Some(mut act) = self.act.take() {
                act();
            }
            Ok(subdirs)
        }

        fn leave(&mut self, parent: BorrowedFd<'_>, name: &CStr, here: &Here<'_>) -> Result<()> {
            self.copier.leave(parent, name, here)
        }
    }

    #[test]
    fn a_link_swapped_into_the_destination_stops_the_copy_instead_of_redirecting_it() {
        let t = tempfile::tempdir().unwrap();
        let (src, out, outside) = (
            t.path().join("src"),
            t.path().join("out"),
            t.path().join("outside"),
        );
        for d in ["a", "b"] {
            std::fs::create_dir_all(src.join(d)).unwrap();
            std::fs::write(src.join(d).join("f"), b"x").unwrap();
        }
        std::fs::create_dir_all(&out).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        let dest = dir_fd(&out);
        let mut intruder = Intruder {
            copier: Copier::new(dest.as_fd(), &out).unwrap(),
            // Both copies of the subdirectories exist, empty: swap them
            // for links to a directory outside the copy.
            act: Some(|| {
                for d in ["a", "b"] {
                    std::fs::remove_dir(out.join(d)).unwrap();
                    std::os::unix::fs::symlink(&outside, out.join(d)).unwrap();
                }
            }),
        };
        let err = walk(Dir::new(dir_fd(&src)).unwrap(), &src, &mut intruder).unwrap_err();
        assert!(
            matches!(
                err.errno().map(Errno::from_raw_os_error),
                Some(Errno::LOOP | Errno::NOTDIR)
            ),
            "the swapped directory is refused: {err:?}"
        );
        assert_eq!(
            std::fs::read_dir(&outside).unwrap().count(),
            0,
            "nothing was written through the link"
        );

        // A link where a file is to be created: never followed either.
        let file = t.path().join("file");
        std::fs::write(&file, b"y").unwrap();
        let out2 = t.path().join("out2");
        std::fs::create_dir(&out2).unwrap();
        std::os::unix::fs::symlink(outside.join("file"), out2.join("file")).unwrap();
        let err = copy_path(&file, dir_fd(&out2).as_fd(), &out2).unwrap_err();
        assert_eq!(err.errno(), Some(Errno::EXIST.raw_os_error()), "{err:?}");
        assert!(
            !outside.join("file").exists(),
            "nothing made through the link"
        );
    }

    #[test]
    fn a_path_splits_into_its_directory_and_its_name() {
        fn p(s: &str) -> (&Path, &OsStr) {
            split(Path::new(s))
        }
        assert_eq!(p("a/b"), (Path::new("a"), OsStr::new("b")));
        assert_eq!(p("b"), (Path::new("."), OsStr::new("b")));
        assert_eq!(p("/"), (Path::new("/"), OsStr::new(".")));
        assert_eq!(p("a/.."), (Path::new("a/.."), OsStr::new(".")));
        assert_eq!(p("/x"), (Path::new("/"), OsStr::new("x")));
    }
}
