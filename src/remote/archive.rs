//! The archive of one entry, as the remote tier stores it: [`pack`]
//! streams an entry's `data/` into a tar archive with a digest trailer,
//! [`unpack`] streams one back into a new directory without trusting it.
//!
//! The format is written out in the docs of [`crate::remote`]; this module
//! is its only writer and its only reader.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{
    fchmod, fstat, futimens, mkdirat, openat, readlinkat, statat, symlinkat, AtFlags, FileType,
    Mode, OFlags, Timespec, Timestamps, CWD,
};
use sha2::{Digest as _, Sha256};

use crate::error::{Error, IoContext, Op, Result};

/// The name of the trailer member, the last of every archive.
pub const TRAILER_NAME: &str = "fscache-remote.json";

/// The version of the archive format, the trailer's
/// `"fscache-remote-archive"`.
pub const FORMAT_VERSION: u64 = 1;

/// The top-level directory of every member but the trailer.
const DATA: &[u8] = b"data";

/// The longest GNU long name or long link record accepted (`PATH_MAX`
/// and its NUL).
const LONG_NAME_MAX: u64 = 4097;

/// The longest trailer accepted; ours is one block.
const TRAILER_MAX: u64 = 4096;

const BLOCK: usize = 512;

/// How much [`unpack`] accepts before it refuses an archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The most bytes of file content, summed over the archive's files:
    /// a member that would pass it is refused from its header, before
    /// any of its content is read.
    pub max_bytes: u64,
    /// The most members (files, directories and links).
    pub max_members: u64,
}

impl Default for Limits {
    /// [`MAX_ENTRY_SIZE`](crate::MAX_ENTRY_SIZE) bytes, 2²⁰ members.
    fn default() -> Self {
        Limits {
            max_bytes: crate::MAX_ENTRY_SIZE,
            max_members: 1 << 20,
        }
    }
}

/// Why [`unpack`] refused an archive. Each is a property of the archive,
/// not of the machine: the same bytes are refused the same way anywhere.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// Not a tar archive of this format: a header whose checksum or
    /// fields do not parse, a long-name record that is too long or
    /// describes nothing, a directory or link with content.
    Malformed(&'static str),
    /// The archive ends before its end-of-archive blocks.
    Truncated,
    /// A member path that is not below `data/`: absolute, with a `..`,
    /// `.` or empty component, a NUL, or a component of more than 255
    /// bytes.
    Path {
        /// The member's path (lossy UTF-8).
        path: String,
    },
    /// A member whose parent is not a directory made earlier from this
    /// archive: it would be written through a symbolic link, into a
    /// file, or into nothing.
    Parent {
        /// The member's path (lossy UTF-8).
        path: String,
    },
    /// A hard link member (the format has none; the writer stores each
    /// name of a file as a copy).
    HardLink {
        /// The member's path (lossy UTF-8).
        path: String,
    },
    /// A member that is not a directory, a regular file or a symbolic
    /// link: a device file, a fifo, a PAX header, a sparse file, ...
    Type {
        /// The member's path (lossy UTF-8).
        path: String,
        /// Its tar type flag.
        entry_type: u8,
    },
    /// A second member of the same path.
    Duplicate {
        /// The member's path (lossy UTF-8).
        path: String,
    },
    /// The content passes [`Limits::max_bytes`].
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// More members than [`Limits::max_members`].
    TooManyMembers {
        /// The limit.
        limit: u64,
    },
    /// The trailer is missing, not last, not what the format says, or
    /// followed by bytes.
    Trailer(&'static str),
    /// The digest in the trailer is not the SHA-256 of the bytes before it.
    DigestMismatch {
        /// What the trailer says.
        expected: String,
        /// What the bytes hash to.
        actual: String,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Malformed(why) => write!(f, "not an archive of this format: {why}"),
            Refusal::Truncated => f.write_str("the archive is truncated"),
            Refusal::Path { path } => write!(f, "member path {path:?} is not below data/"),
            Refusal::Parent { path } => write!(
                f,
                "member {path:?} is not inside a directory of the archive (a link, a file or nothing)"
            ),
            Refusal::HardLink { path } => write!(f, "member {path:?} is a hard link"),
            Refusal::Type { path, entry_type } => write!(
                f,
                "member {path:?} has type {:?}, not a directory, file or symbolic link",
                char::from(*entry_type)
            ),
            Refusal::Duplicate { path } => write!(f, "member {path:?} appears twice"),
            Refusal::TooLarge { limit } => write!(f, "the content passes the limit of {limit} bytes"),
            Refusal::TooManyMembers { limit } => write!(f, "more than {limit} members"),
            Refusal::Trailer(why) => write!(f, "bad trailer: {why}"),
            Refusal::DigestMismatch { expected, actual } => write!(
                f,
                "the archive's SHA-256 is {actual}, its trailer says {expected}"
            ),
        }
    }
}

/// What [`unpack`] could not do.
#[derive(Debug)]
#[non_exhaustive]
pub enum UnpackError {
    /// The archive was refused.
    Refused(Refusal),
    /// Reading the archive failed (for the remote tier: the download).
    Read(io::Error),
    /// Writing the tree failed.
    Local(Error),
}

impl From<Refusal> for UnpackError {
    fn from(r: Refusal) -> Self {
        UnpackError::Refused(r)
    }
}

impl fmt::Display for UnpackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnpackError::Refused(r) => r.fmt(f),
            UnpackError::Read(e) => write!(f, "reading the archive failed: {e}"),
            UnpackError::Local(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for UnpackError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            UnpackError::Refused(_) => None,
            UnpackError::Read(e) => Some(e),
            UnpackError::Local(e) => Some(e),
        }
    }
}

/// What [`pack`] wrote, or [`unpack`] read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Archived {
    /// The archive's length in bytes, trailer and end blocks included.
    pub bytes: u64,
    /// The SHA-256 of the bytes before the trailer, 64 lowercase hex
    /// digits: the trailer's `"sha256"`.
    pub sha256: String,
    /// Regular files.
    pub files: u64,
    /// Directories, `data/` included.
    pub directories: u64,
    /// Symbolic links.
    pub links: u64,
    /// Bytes of file content.
    pub content: u64,
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

// ---------------------------------------------------------------- writing

/// A writer that hashes and counts what goes through it.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Exactly `left` bytes of a file, or an error: a file that shrank while
/// being read must not leave the archive's framing short.
struct Exact {
    file: File,
    left: u64,
}

impl Read for Exact {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.file.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file shrank while it was archived",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Stream the tree at `data` (an entry's `data/`, as
/// [`LoadGuard::path`](crate::LoadGuard::path) gives it) into `out` as an
/// archive of the remote tier's format, and return what was written.
///
/// Members come in a fixed order (a directory before what it holds,
/// names in byte order), with uid, gid, user and group names empty or 0,
/// so the same tree always gives the same bytes. Memory stays bounded
/// whatever the tree's size: one buffer per file copy, and the names of
/// the directories still to visit.
///
/// # Errors
///
/// [`Error::Io`] naming the path: [`Op::Copy`] for a device file, fifo or
/// socket (the format has none), a file that shrank while it was read,
/// or a failed write to `out`; [`Op::Open`], [`Op::ReadDir`],
/// [`Op::Read`], [`Op::ReadLink`] for what cannot be read.
///
/// # Examples
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// std::fs::write(dir.path().join("out.o"), b"\x7fELF").unwrap();
/// let mut bytes = Vec::new();
/// let packed = fscache::remote::archive::pack(dir.path(), &mut bytes)?;
/// assert_eq!(packed.bytes, bytes.len() as u64);
/// assert_eq!((packed.files, packed.directories), (1, 1));
/// # Ok::<(), fscache::Error>(())
/// ```
pub fn pack<W: Write>(data: &Path, out: W) -> Result<Archived> {
    let root = open_dir_at(CWD, data).at(Op::Open, || data.to_owned())?;
    let write_err = |e: io::Error, path: &Path| Error::Io {
        op: Op::Copy,
        path: path.to_owned(),
        source: e,
    };
    let mut builder = tar::Builder::new(Hashing {
        inner: out,
        hasher: Sha256::new(),
        count: 0,
    });
    builder.mode(tar::HeaderMode::Complete);
    let mut done = Archived::default();

    let st = fstat(&root).at(Op::Stat, || data.to_owned())?;
    let mut header = dir_header(&st);
    builder
        .append_data(&mut header, OsStr::from_bytes(DATA), io::empty())
        .map_err(|e| write_err(e, data))?;
    done.directories += 1;

    // Directories still to visit, as paths below `data`: each is opened
    // again from `root` when its turn comes, so the walk holds two
    // descriptors whatever the tree's depth or width.
    let mut todo: Vec<Vec<u8>> = vec![Vec::new()];
    while let Some(rel) = todo.pop() {
        let dir_path = join(data, &rel);
        let dir = open_rel(root.as_fd(), &rel).at(Op::Open, || dir_path.clone())?;
        let mut names = list(&dir).at(Op::ReadDir, || dir_path.clone())?;
        names.sort();
        let mut subdirs = Vec::new();
        for name in names {
            let child_rel = if rel.is_empty() {
                name.clone()
            } else {
                [&rel[..], b"/", &name[..]].concat()
            };
            let member = [DATA, b"/", &child_rel[..]].concat();
            let member = Path::new(OsStr::from_bytes(&member));
            let path = join(data, &child_rel);
            let st = statat(&dir, OsStr::from_bytes(&name), AtFlags::SYMLINK_NOFOLLOW)
                .at(Op::Stat, || path.clone())?;
            match FileType::from_raw_mode(st.st_mode) {
                FileType::Directory => {
                    let mut header = dir_header(&st);
                    builder
                        .append_data(&mut header, member, io::empty())
                        .map_err(|e| write_err(e, &path))?;
                    done.directories += 1;
                    subdirs.push(child_rel);
                }
                FileType::RegularFile => {
                    let fd = openat(
                        &dir,
                        OsStr::from_bytes(&name),
                        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
                        Mode::empty(),
                    )
                    .at(Op::Open, || path.clone())?;
                    let st = fstat(&fd).at(Op::Stat, || path.clone())?;
                    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
                        return Err(Error::Io {
                            op: Op::Copy,
                            path,
                            source: io::Error::other("its type changed while it was archived"),
                        });
                    }
                    let size = st.st_size.max(0) as u64;
                    let mut header = base_header(&st, tar::EntryType::Regular);
                    header.set_size(size);
                    let body = Exact {
                        file: File::from(fd),
                        left: size,
                    };
                    builder
                        .append_data(&mut header, member, body)
                        .map_err(|e| write_err(e, &path))?;
                    done.files += 1;
                    done.content += size;
                }
                FileType::Symlink => {
                    let target = readlinkat(&dir, OsStr::from_bytes(&name), Vec::new())
                        .at(Op::ReadLink, || path.clone())?;
                    let mut header = base_header(&st, tar::EntryType::Symlink);
                    header.set_size(0);
                    builder
                        .append_link(&mut header, member, OsStr::from_bytes(target.as_bytes()))
                        .map_err(|e| write_err(e, &path))?;
                    done.links += 1;
                }
                _ => {
                    return Err(Error::Io {
                        op: Op::Copy,
                        path,
                        source: io::Error::other(
                            "a device file, fifo or socket cannot be archived",
                        ),
                    })
                }
            }
        }
        // Visited in name order: the last pushed is the first popped.
        todo.extend(subdirs.into_iter().rev());
    }

    // The trailer: the digest of every byte so far, padded to one block
    // with spaces (which JSON ignores).
    let body = builder.get_mut();
    let digest = hex(&body.hasher.clone().finalize());
    let before = body.count;
    let mut json = format!(
        "{{\"fscache-remote-archive\": {FORMAT_VERSION}, \"sha256\": \"{digest}\", \"bytes\": {before}, \"compression\": \"none\"}}\n"
    )
    .into_bytes();
    json.resize(BLOCK, b' ');
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header.set_size(BLOCK as u64);
    builder
        .append_data(&mut header, TRAILER_NAME, &json[..])
        .map_err(|e| write_err(e, data))?;
    let mut inner = builder.into_inner().map_err(|e| write_err(e, data))?;
    inner.flush().map_err(|e| write_err(e, data))?;
    done.bytes = inner.count;
    done.sha256 = digest;
    Ok(done)
}

fn base_header(st: &rustix::fs::Stat, kind: tar::EntryType) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(st.st_mode & 0o7777);
    header.set_mtime(st.st_mtime.max(0) as u64);
    header.set_uid(0);
    header.set_gid(0);
    header
}

fn dir_header(st: &rustix::fs::Stat) -> tar::Header {
    let mut header = base_header(st, tar::EntryType::Directory);
    header.set_size(0);
    header
}

fn join(base: &Path, rel: &[u8]) -> PathBuf {
    if rel.is_empty() {
        base.to_owned()
    } else {
        base.join(OsStr::from_bytes(rel))
    }
}

fn open_dir_at(at: BorrowedFd<'_>, path: &Path) -> rustix::io::Result<OwnedFd> {
    openat(
        at,
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Open the directory `rel` below `root` one component at a time, never
/// following a link.
fn open_rel(root: BorrowedFd<'_>, rel: &[u8]) -> rustix::io::Result<OwnedFd> {
    let mut current: Option<OwnedFd> = None;
    for part in rel.split(|&b| b == b'/').filter(|p| !p.is_empty()) {
        let at = current.as_ref().map_or(root, |fd| fd.as_fd());
        current = Some(open_dir_at(at, Path::new(OsStr::from_bytes(part)))?);
    }
    match current {
        Some(fd) => Ok(fd),
        None => open_dir_at(root, Path::new(".")),
    }
}

/// The names in a directory, without `.` and `..`.
fn list(dir: &OwnedFd) -> rustix::io::Result<Vec<Vec<u8>>> {
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    }
    Ok(names)
}

// ---------------------------------------------------------------- reading

/// The archive being read: counts every byte, and hashes every byte
/// until the trailer's header.
struct Input<R> {
    inner: R,
    hasher: Option<Sha256>,
    count: u64,
}

impl<R: Read> Input<R> {
    /// Fill `buf` entirely; a short archive is [`Refusal::Truncated`].
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), UnpackError> {
        let mut done = 0;
        while done < buf.len() {
            match self.inner.read(&mut buf[done..]) {
                Ok(0) => return Err(Refusal::Truncated.into()),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(UnpackError::Read(e)),
            }
        }
        self.count += buf.len() as u64;
        Ok(())
    }

    fn hash(&mut self, bytes: &[u8]) {
        if let Some(h) = self.hasher.as_mut() {
            h.update(bytes);
        }
    }

    /// Read `buf.len()` bytes and hash them.
    fn take(&mut self, buf: &mut [u8]) -> Result<(), UnpackError> {
        self.fill(buf)?;
        self.hash(buf);
        Ok(())
    }

    /// Skip the padding after `size` bytes of content.
    fn pad(&mut self, size: u64) -> Result<(), UnpackError> {
        let rem = (size % BLOCK as u64) as usize;
        if rem != 0 {
            let mut buf = [0u8; BLOCK];
            self.take(&mut buf[..BLOCK - rem])?;
        }
        Ok(())
    }

    /// Whether the archive has ended: one more byte is an error.
    fn at_end(&mut self) -> Result<bool, UnpackError> {
        let mut one = [0u8; 1];
        loop {
            match self.inner.read(&mut one) {
                Ok(0) => return Ok(true),
                Ok(_) => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(UnpackError::Read(e)),
            }
        }
    }
}

/// Whether a header block's checksum is right: the unsigned sum of its
/// bytes with the checksum field read as spaces.
fn checksum_ok(block: &[u8; BLOCK]) -> bool {
    let sum: u64 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(b)
            }
        })
        .sum();
    let field = &block[148..156];
    let digits: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|&b| b == b' ')
        .take_while(|&b| (b'0'..=b'7').contains(&b))
        .collect();
    if digits.is_empty() {
        return false;
    }
    let Ok(text) = std::str::from_utf8(&digits) else {
        return false;
    };
    u64::from_str_radix(text, 8).is_ok_and(|stored| stored == sum)
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The path of a member below `data/` (empty for `data/` itself), or the
/// refusal.
fn member_path(path: &[u8]) -> Result<Vec<u8>, Refusal> {
    let bad = || Refusal::Path { path: lossy(path) };
    let trimmed = path.strip_suffix(b"/").unwrap_or(path);
    if trimmed == DATA {
        return Ok(Vec::new());
    }
    let Some(rel) = trimmed.strip_prefix(b"data/") else {
        return Err(bad());
    };
    for part in rel.split(|&b| b == b'/') {
        if part.is_empty()
            || part == b"."
            || part == b".."
            || part.contains(&0)
            || part.len() > crate::MAX_NAME_LEN
        {
            return Err(bad());
        }
    }
    Ok(rel.to_vec())
}

/// The directory of the archive a member goes into, opened without
/// following links; the last one is kept, since members of one directory
/// come together.
struct Parents<'a> {
    root: BorrowedFd<'a>,
    last: Option<(Vec<u8>, OwnedFd)>,
}

impl Parents<'_> {
    fn get(&mut self, rel: &[u8]) -> rustix::io::Result<BorrowedFd<'_>> {
        if rel.is_empty() {
            return Ok(self.root);
        }
        let stale = !matches!(&self.last, Some((r, _)) if r == rel);
        if stale {
            let fd = open_rel(self.root, rel)?;
            self.last = Some((rel.to_vec(), fd));
        }
        match &self.last {
            Some((_, fd)) => Ok(fd.as_fd()),
            None => Err(rustix::io::Errno::NOENT),
        }
    }
}

/// Unpack the archive read from `input` into `dest`, an empty directory
/// the caller made (for the remote tier, a [`StoreGuard`]'s
/// [`path`](crate::StoreGuard::path)), trusting nothing in it.
///
/// Members are refused (see [`Refusal`]) unless they are directories,
/// regular files or symbolic links at fresh paths below `data/` whose
/// parent is a directory made earlier from the same archive; nothing is
/// ever created or written through a link (links are made as links and
/// never followed: every directory is opened from `dest` with
/// `O_NOFOLLOW` at each step), and nothing outside `dest` is touched.
/// Content is bounded by `limits` from each member's header, before it
/// is read. Modes are kept but for the set-user-ID and set-group-ID
/// bits, which are dropped; file modification times are kept.
///
/// The digest is checked at the end: on any error, what was unpacked is
/// the caller's to remove (dropping the [`StoreGuard`] does).
///
/// # Errors
///
/// [`UnpackError::Refused`] with the reason; [`UnpackError::Read`] if
/// `input` fails; [`UnpackError::Local`] if `dest` cannot be written.
///
/// # Examples
///
/// ```
/// use fscache::remote::archive::{pack, unpack, Limits};
/// let dir = tempfile::tempdir().unwrap();
/// std::fs::create_dir(dir.path().join("src")).unwrap();
/// std::fs::write(dir.path().join("src/a"), b"hello").unwrap();
/// let mut bytes = Vec::new();
/// pack(&dir.path().join("src"), &mut bytes)?;
/// std::fs::create_dir(dir.path().join("dest")).unwrap();
/// let got = unpack(&bytes[..], &dir.path().join("dest"), &Limits::default()).unwrap();
/// assert_eq!(got.content, 5);
/// assert_eq!(std::fs::read(dir.path().join("dest/a")).unwrap(), b"hello");
/// # Ok::<(), fscache::Error>(())
/// ```
///
/// [`StoreGuard`]: crate::StoreGuard
pub fn unpack<R: Read>(
    input: R,
    dest: &Path,
    limits: &Limits,
) -> std::result::Result<Archived, UnpackError> {
    let root = open_dir_at(CWD, dest)
        .at(Op::Open, || dest.to_owned())
        .map_err(UnpackError::Local)?;
    let mut input = Input {
        inner: input,
        hasher: Some(Sha256::new()),
        count: 0,
    };
    let mut parents = Parents {
        root: root.as_fd(),
        last: None,
    };
    let mut done = Archived::default();
    let mut seen: HashSet<Vec<u8>> = HashSet::new();
    let mut dirs: HashSet<Vec<u8>> = HashSet::from([Vec::new()]);
    // Modes and times of directories, set once everything is in them.
    let mut dir_attrs: Vec<(Vec<u8>, u32, u64)> = Vec::new();
    let mut long_name: Option<Vec<u8>> = None;
    let mut long_link: Option<Vec<u8>> = None;
    let mut trailer = false;
    let mut members = 0u64;
    let mut buf = vec![0u8; 64 << 10];

    loop {
        let offset = input.count;
        let mut block = [0u8; BLOCK];
        input.fill(&mut block)?;
        if block.iter().all(|&b| b == 0) {
            if long_name.is_some() || long_link.is_some() {
                return Err(Refusal::Malformed("a long name describes no member").into());
            }
            input.hash(&block);
            let mut second = [0u8; BLOCK];
            input.take(&mut second)?;
            if second.iter().any(|&b| b != 0) {
                return Err(Refusal::Malformed("one zero block where the end has two").into());
            }
            break;
        }
        if !checksum_ok(&block) {
            return Err(Refusal::Malformed("a header checksum is wrong").into());
        }
        let header = tar::Header::from_byte_slice(&block);
        let kind = header.entry_type().as_byte();
        let size = header
            .entry_size()
            .map_err(|_| Refusal::Malformed("a header's size does not parse"))?;

        if long_name.is_none()
            && kind == b'0'
            && header.path_bytes().as_ref() == TRAILER_NAME.as_bytes()
        {
            if trailer {
                return Err(Refusal::Trailer("there are two").into());
            }
            // The digest covers every byte before this header.
            let digest = input.hasher.take().map(|h| hex(&h.finalize()));
            if size > TRAILER_MAX {
                return Err(Refusal::Trailer("too long").into());
            }
            let mut json = vec![0u8; size as usize];
            input.fill(&mut json)?;
            input.pad(size)?;
            done.sha256 = check_trailer(&json, digest.unwrap_or_default(), offset)?;
            trailer = true;
            continue;
        }
        if trailer {
            return Err(Refusal::Trailer("a member follows it").into());
        }
        input.hash(&block);

        match kind {
            b'L' | b'K' => {
                if size > LONG_NAME_MAX {
                    return Err(Refusal::Malformed("a long name record is too long").into());
                }
                let slot = if kind == b'L' {
                    &mut long_name
                } else {
                    &mut long_link
                };
                if slot.is_some() {
                    return Err(Refusal::Malformed("two long name records for one member").into());
                }
                let mut name = vec![0u8; size as usize];
                input.take(&mut name)?;
                input.pad(size)?;
                while name.last() == Some(&0) {
                    name.pop();
                }
                *slot = Some(name);
                continue;
            }
            _ => {}
        }

        let raw_path = long_name
            .take()
            .unwrap_or_else(|| header.path_bytes().into_owned());
        let link = long_link.take();
        let shown = || lossy(&raw_path);
        members += 1;
        if members > limits.max_members {
            return Err(Refusal::TooManyMembers {
                limit: limits.max_members,
            }
            .into());
        }
        match kind {
            b'0' | 0 | b'5' | b'2' => {}
            b'1' => return Err(Refusal::HardLink { path: shown() }.into()),
            other => {
                return Err(Refusal::Type {
                    path: shown(),
                    entry_type: other,
                }
                .into())
            }
        }
        let rel = member_path(&raw_path)?;
        if !seen.insert(rel.clone()) {
            return Err(Refusal::Duplicate { path: shown() }.into());
        }
        let mode = header
            .mode()
            .map_err(|_| Refusal::Malformed("a header's mode does not parse"))?
            & 0o1777;
        let mtime = header
            .mtime()
            .map_err(|_| Refusal::Malformed("a header's time does not parse"))?;
        if kind != b'0' && kind != 0 && size != 0 {
            return Err(Refusal::Malformed("a directory or link with content").into());
        }
        if rel.is_empty() {
            // `data/` itself: it is `dest`.
            if kind != b'5' {
                return Err(Refusal::Malformed("data/ is not a directory").into());
            }
            dir_attrs.push((rel, mode, mtime));
            done.directories += 1;
            continue;
        }
        let (parent, name) = match rel.iter().rposition(|&b| b == b'/') {
            Some(i) => (&rel[..i], &rel[i + 1..]),
            None => (&rel[..0], &rel[..]),
        };
        if !dirs.contains(parent) {
            return Err(Refusal::Parent { path: shown() }.into());
        }
        let path = || join(dest, &rel);
        let name_os = OsStr::from_bytes(name);
        let at = parents
            .get(parent)
            .at(Op::Open, || join(dest, parent))
            .map_err(UnpackError::Local)?;
        match kind {
            b'5' => {
                mkdirat(at, name_os, Mode::RWXU)
                    .at(Op::CreateDir, path)
                    .map_err(UnpackError::Local)?;
                dirs.insert(rel.clone());
                dir_attrs.push((rel, mode, mtime));
                done.directories += 1;
            }
            b'2' => {
                let target = link.unwrap_or_else(|| {
                    header
                        .link_name_bytes()
                        .map(|t| t.into_owned())
                        .unwrap_or_default()
                });
                if target.is_empty() || target.contains(&0) || target.len() >= 4096 {
                    return Err(Refusal::Malformed("a link target is empty or too long").into());
                }
                symlinkat(OsStr::from_bytes(&target), at, name_os)
                    .at(Op::Symlink, path)
                    .map_err(UnpackError::Local)?;
                done.links += 1;
            }
            _ => {
                if size > limits.max_bytes.saturating_sub(done.content) {
                    return Err(Refusal::TooLarge {
                        limit: limits.max_bytes,
                    }
                    .into());
                }
                let fd = openat(
                    at,
                    name_os,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::RUSR | Mode::WUSR,
                )
                .at(Op::Create, path)
                .map_err(UnpackError::Local)?;
                let mut file = File::from(fd);
                let mut left = size;
                while left > 0 {
                    let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    input.take(&mut buf[..n])?;
                    file.write_all(&buf[..n])
                        .at(Op::Write, path)
                        .map_err(UnpackError::Local)?;
                    left -= n as u64;
                }
                input.pad(size)?;
                set_attrs(file.as_fd(), mode, mtime)
                    .at(Op::Chmod, path)
                    .map_err(UnpackError::Local)?;
                done.files += 1;
                done.content += size;
            }
        }
    }
    if !trailer {
        return Err(Refusal::Trailer("there is none").into());
    }
    if !input.at_end()? {
        return Err(Refusal::Trailer("bytes follow the end of the archive").into());
    }
    // Deepest first, so that a read-only directory is made so after
    // everything below it.
    drop(parents);
    for (rel, mode, mtime) in dir_attrs.into_iter().rev() {
        let path = join(dest, &rel);
        let fd = open_rel(root.as_fd(), &rel)
            .at(Op::Open, || path.clone())
            .map_err(UnpackError::Local)?;
        set_attrs(fd.as_fd(), mode, mtime)
            .at(Op::Chmod, || path.clone())
            .map_err(UnpackError::Local)?;
    }
    done.bytes = input.count;
    Ok(done)
}

fn set_attrs(fd: BorrowedFd<'_>, mode: u32, mtime: u64) -> rustix::io::Result<()> {
    fchmod(fd, Mode::from_raw_mode(mode))?;
    let t = Timespec {
        tv_sec: i64::try_from(mtime).unwrap_or(i64::MAX),
        tv_nsec: 0,
    };
    futimens(
        fd,
        &Timestamps {
            last_access: t,
            last_modification: t,
        },
    )
}

/// The trailer's JSON must name this format, no compression, and the
/// digest and length of the bytes before it.
fn check_trailer(json: &[u8], actual: String, before: u64) -> Result<String, Refusal> {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(json)
    else {
        return Err(Refusal::Trailer("not a JSON object"));
    };
    if map.get("fscache-remote-archive").and_then(|v| v.as_u64()) != Some(FORMAT_VERSION) {
        return Err(Refusal::Trailer("not format version 1"));
    }
    match map.get("compression").map(|v| v.as_str()) {
        Some(Some("none")) => {}
        _ => return Err(Refusal::Trailer("a compression this reader does not know")),
    }
    if map.get("bytes").and_then(|v| v.as_u64()) != Some(before) {
        return Err(Refusal::Trailer("its length is not the archive's"));
    }
    let Some(expected) = map.get("sha256").and_then(|v| v.as_str()) else {
        return Err(Refusal::Trailer("no sha256"));
    };
    if expected != actual {
        return Err(Refusal::DigestMismatch {
            expected: expected.chars().take(64).collect(),
            actual,
        });
    }
    Ok(actual)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn packed(dir: &Path) -> Vec<u8> {
        let mut bytes = Vec::new();
        pack(dir, &mut bytes).expect("pack");
        bytes
    }

    #[test]
    fn a_tree_comes_back_as_it_was_packed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("a/b")).expect("mkdir");
        std::fs::write(src.join("a/b/f"), b"content").expect("write");
        std::fs::write(src.join("top"), vec![7u8; 70_000]).expect("write");
        let long = "n".repeat(200);
        std::fs::write(src.join("a").join(&long), b"long name").expect("write");
        std::os::unix::fs::symlink("../../etc/passwd", src.join("a/link")).expect("symlink");
        std::os::unix::fs::symlink("t".repeat(300), src.join("longlink")).expect("symlink");
        let bytes = packed(&src);
        assert_eq!(bytes.len() % BLOCK, 0);
        let dest = dir.path().join("dest");
        std::fs::create_dir(&dest).expect("mkdir");
        let got = unpack(&bytes[..], &dest, &Limits::default()).expect("unpack");
        assert_eq!((got.files, got.directories, got.links), (3, 3, 2));
        assert_eq!(got.bytes, bytes.len() as u64);
        assert_eq!(
            crate::Digest::of_tree(&src).expect("digest"),
            crate::Digest::of_tree(&dest).expect("digest")
        );
        assert_eq!(packed(&src), bytes, "packing is deterministic");
    }

    #[test]
    fn every_flipped_byte_is_refused_or_harmless() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src");
        std::fs::create_dir(&src).expect("mkdir");
        std::fs::write(src.join("f"), b"0123456789").expect("write");
        let bytes = packed(&src);
        for i in (0..bytes.len()).step_by(7) {
            let mut bad = bytes.clone();
            bad[i] ^= 0x55;
            let dest = dir.path().join(format!("d{i}"));
            std::fs::create_dir(&dest).expect("mkdir");
            let got = unpack(&bad[..], &dest, &Limits::default());
            assert!(got.is_err(), "byte {i} flipped was accepted: {got:?}");
        }
    }

    #[test]
    fn a_member_past_the_limit_is_refused_from_its_header() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src");
        std::fs::create_dir(&src).expect("mkdir");
        std::fs::write(src.join("f"), vec![1u8; 10_000]).expect("write");
        let bytes = packed(&src);
        let dest = dir.path().join("dest");
        std::fs::create_dir(&dest).expect("mkdir");
        let limits = Limits {
            max_bytes: 9_999,
            ..Limits::default()
        };
        match unpack(&bytes[..], &dest, &limits) {
            Err(UnpackError::Refused(Refusal::TooLarge { limit: 9_999 })) => {}
            other => panic!("{other:?}"),
        }
        assert!(!dest.join("f").exists());
    }
}
