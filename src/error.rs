//! The crate's error type, and the `.at()` trait that gives an I/O error its
//! operation and path.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A `Result` whose error is this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The file-system operation that failed, named in [`Error::Io`] messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Op {
    /// Opening an existing file or directory.
    Open,
    /// Creating a file.
    Create,
    /// Creating a directory.
    CreateDir,
    /// Taking or releasing a lock.
    Lock,
    /// Reading metadata.
    Stat,
    /// Reading a file's content.
    Read,
    /// Writing a file's content.
    Write,
    /// Listing a directory.
    ReadDir,
    /// Renaming into place.
    Rename,
    /// Linking a file into place.
    Link,
    /// Removing a file.
    Unlink,
    /// Removing a directory.
    RemoveDir,
    /// Setting timestamps.
    SetTimes,
    /// Changing permissions.
    Chmod,
    /// Reading the kernel's boot id.
    ReadBootId,
    /// Making a file, a directory or a file system durable (`fsync`,
    /// `syncfs`).
    Sync,
    /// Copying a file's content (sharing its blocks, or
    /// `copy_file_range`), or copying a file that cannot be copied.
    Copy,
    /// Reading a symbolic link's target.
    ReadLink,
    /// Creating a symbolic link.
    Symlink,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Open => "open",
            Op::Create => "create",
            Op::CreateDir => "create directory",
            Op::Lock => "lock",
            Op::Stat => "stat",
            Op::Read => "read",
            Op::Write => "write",
            Op::ReadDir => "list directory",
            Op::Rename => "rename",
            Op::Link => "link",
            Op::Unlink => "remove",
            Op::RemoveDir => "remove directory",
            Op::SetTimes => "set times of",
            Op::Chmod => "change permissions of",
            Op::ReadBootId => "read boot id from",
            Op::Sync => "sync",
            Op::Copy => "copy",
            Op::ReadLink => "read link",
            Op::Symlink => "create symbolic link",
        })
    }
}

/// Everything that can go wrong in this crate.
///
/// Outcomes that are part of normal operation (a miss, a taken name, a cache
/// that is full) are not errors: they are values of [`Commit`](crate::Commit)
/// or `Ok(None)`. The variants here that a caller typically matches on are
/// [`Error::WouldBlock`], [`Error::TimedOut`], [`Error::InvalidName`] and
/// [`Error::UnsupportedVersion`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A system call failed.
    #[error("failed to {op} `{}`", path.display())]
    Io {
        /// What was attempted.
        op: Op,
        /// The path it was attempted on.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A rename failed.
    #[error("failed to rename `{}` to `{}`", from.display(), to.display())]
    Rename {
        /// The source path.
        from: PathBuf,
        /// The target path.
        to: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A non-blocking lock found the file locked by another holder.
    #[error("`{}` is locked by another holder", path.display())]
    WouldBlock {
        /// The lock file.
        path: PathBuf,
    },
    /// A lock could not be taken within the allowed time.
    #[error("`{}` stayed locked for {after:?}", path.display())]
    TimedOut {
        /// The lock file.
        path: PathBuf,
        /// How long we waited.
        after: Duration,
    },
    /// An entry name that the cache cannot use.
    #[error("invalid entry name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A configuration value out of its range.
    #[error("invalid configuration `{key}`: {reason}")]
    InvalidConfig {
        /// The `cache.info` key.
        key: &'static str,
        /// Why it was refused.
        reason: &'static str,
    },
    /// The cache's `cache.info` names a format version this crate does not
    /// support (or none at all), and the operation needs the object store.
    #[error("`{}` has {}", path.display(), match version {
        Some(v) => format!("cache version {v}, which this crate does not support (it supports {}..={})", crate::VERSION_MINIMUM, crate::VERSION_CURRENT),
        None => "no cache version in its cache.info".to_owned(),
    })]
    UnsupportedVersion {
        /// The cache root.
        path: PathBuf,
        /// The version found, if any.
        version: Option<i64>,
    },
    /// The directory is not a cache (it has no `cache.info`, or is missing),
    /// and it was opened without creating one.
    #[error("`{}` is not a cache: {reason}", path.display())]
    NotACache {
        /// The directory.
        path: PathBuf,
        /// What is missing.
        reason: &'static str,
    },
    /// [`FsCache::open_default`](crate::FsCache::open_default) found no
    /// place for caches: neither `$XDG_CACHE_HOME` nor `$HOME` is set to
    /// an absolute path.
    #[error("no cache directory: neither $XDG_CACHE_HOME nor $HOME is set to an absolute path")]
    NoCacheHome,
    /// A file in the cache does not have the form the format requires (bad
    /// JSON, a symbolic link, a directory where a file belongs).
    #[error("`{}` is corrupt: {reason}", path.display())]
    Corrupt {
        /// The offending path.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A request to the remote tier failed (refused, timed out, answered
    /// with an error after the bounded retries). Never carries
    /// credentials: `endpoint` is the store's URL without user
    /// information.
    #[cfg(feature = "remote")]
    #[error("failed to {op} `{key}` at {endpoint}")]
    Remote {
        /// What was attempted.
        op: crate::remote::RemoteOp,
        /// The object key (or the prefix, for a listing).
        key: String,
        /// Where the store is.
        endpoint: String,
        /// The cause, from `object_store` (or the archive writer).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An object of the remote tier is not an archive this crate accepts:
    /// it was refused before anything of it was committed.
    #[cfg(feature = "archive")]
    #[error("remote object `{key}` refused: {reason}")]
    RemoteCorrupt {
        /// The object key.
        key: String,
        /// Why it was refused.
        reason: crate::remote::archive::Refusal,
    },
}

/// A coarse classification of an [`Error`], for callers who branch on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Any failed system call; see [`Error::io_error`].
    Io,
    /// The lock is held by someone else ([`Error::WouldBlock`] or
    /// [`Error::TimedOut`]).
    Contended,
    /// [`Error::InvalidName`].
    InvalidName,
    /// [`Error::InvalidConfig`].
    InvalidConfig,
    /// [`Error::UnsupportedVersion`].
    UnsupportedVersion,
    /// [`Error::Corrupt`].
    Corrupt,
    /// [`Error::NotACache`].
    NotACache,
    /// [`Error::NoCacheHome`].
    NoCacheHome,
    /// `Error::Remote` (feature `remote`): the remote tier could not be
    /// reached or answered with an error.
    Remote,
    /// `Error::RemoteCorrupt` (feature `archive`): a remote object was
    /// refused.
    RemoteCorrupt,
}

impl Error {
    /// The class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Io { .. } | Error::Rename { .. } => ErrorKind::Io,
            Error::WouldBlock { .. } | Error::TimedOut { .. } => ErrorKind::Contended,
            Error::InvalidName { .. } => ErrorKind::InvalidName,
            Error::InvalidConfig { .. } => ErrorKind::InvalidConfig,
            Error::UnsupportedVersion { .. } => ErrorKind::UnsupportedVersion,
            Error::Corrupt { .. } => ErrorKind::Corrupt,
            Error::NotACache { .. } => ErrorKind::NotACache,
            Error::NoCacheHome => ErrorKind::NoCacheHome,
            #[cfg(feature = "remote")]
            Error::Remote { .. } => ErrorKind::Remote,
            #[cfg(feature = "archive")]
            Error::RemoteCorrupt { .. } => ErrorKind::RemoteCorrupt,
        }
    }

    /// The path the error is about, if it is about one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Error::Io { path, .. }
            | Error::WouldBlock { path }
            | Error::TimedOut { path, .. }
            | Error::UnsupportedVersion { path, .. }
            | Error::Corrupt { path, .. }
            | Error::NotACache { path, .. } => Some(path),
            Error::Rename { from, .. } => Some(from),
            Error::InvalidName { .. } | Error::InvalidConfig { .. } | Error::NoCacheHome => None,
            #[cfg(feature = "remote")]
            Error::Remote { .. } => None,
            #[cfg(feature = "archive")]
            Error::RemoteCorrupt { .. } => None,
        }
    }

    /// The underlying system error, if this is one.
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            Error::Io { source, .. } | Error::Rename { source, .. } => Some(source),
            _ => None,
        }
    }

    /// The raw `errno` of the underlying system error, if any.
    pub(crate) fn errno(&self) -> Option<i32> {
        self.io_error().and_then(io::Error::raw_os_error)
    }

    /// Whether this is the failure of opening or reading something that is
    /// not (or no longer) a regular file where one belongs: gone, a link, a
    /// directory, a socket, a fifo.
    pub(crate) fn is_not_a_file(&self) -> bool {
        self.errno()
            .map(rustix::io::Errno::from_raw_os_error)
            .is_some_and(not_a_file)
    }

    /// Whether this is a refusal by permissions (`EACCES`, `EPERM`): a file
    /// of another user's that we may not lock or remove.
    pub(crate) fn is_denied(&self) -> bool {
        self.errno().is_some_and(|e| {
            e == rustix::io::Errno::ACCESS.raw_os_error()
                || e == rustix::io::Errno::PERM.raw_os_error()
        })
    }

    pub(crate) fn corrupt(path: PathBuf, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            path,
            reason: reason.into(),
        }
    }
}

/// The errors that opening or reading a path gives when there is no regular
/// file there: it is gone, or a link, directory, socket or fifo was put in
/// its place.
pub(crate) fn not_a_file(e: rustix::io::Errno) -> bool {
    use rustix::io::Errno;
    matches!(
        e,
        Errno::NOENT
            | Errno::NOTDIR
            | Errno::LOOP
            | Errno::ISDIR
            | Errno::NXIO
            | Errno::AGAIN
            | Errno::SPIPE
            | Errno::OPNOTSUPP
    )
}

/// Attach an operation and a path to a failed system call.
pub(crate) trait IoContext<T> {
    /// Turn the error into [`Error::Io`]; `path` is only built on failure.
    fn at(self, op: Op, path: impl FnOnce() -> PathBuf) -> Result<T>;
}

impl<T> IoContext<T> for std::result::Result<T, rustix::io::Errno> {
    fn at(self, op: Op, path: impl FnOnce() -> PathBuf) -> Result<T> {
        self.map_err(|e| Error::Io {
            op,
            path: path(),
            source: e.into(),
        })
    }
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, op: Op, path: impl FnOnce() -> PathBuf) -> Result<T> {
        self.map_err(|source| Error::Io {
            op,
            path: path(),
            source,
        })
    }
}

impl<T> IoContext<T> for nix::Result<T> {
    fn at(self, op: Op, path: impl FnOnce() -> PathBuf) -> Result<T> {
        self.map_err(|e| Error::Io {
            op,
            path: path(),
            source: io::Error::from_raw_os_error(e as i32),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_io_error_names_the_operation_and_the_path_and_keeps_the_cause() {
        let r: rustix::io::Result<()> = Err(rustix::io::Errno::NOENT);
        let e = r
            .at(Op::Open, || PathBuf::from("/c/objects/x"))
            .unwrap_err();
        assert_eq!(e.to_string(), "failed to open `/c/objects/x`");
        assert_eq!(e.kind(), ErrorKind::Io);
        assert_eq!(e.path(), Some(Path::new("/c/objects/x")));
        assert_eq!(e.errno(), Some(libc_enoent()));
        let source = std::error::Error::source(&e).expect("the cause is the source");
        assert!(source.to_string().contains("No such file"), "{source}");
    }

    fn libc_enoent() -> i32 {
        rustix::io::Errno::NOENT.raw_os_error()
    }
}
