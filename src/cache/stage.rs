//! `stage()`: scratch space in `stage/`, removed when done.

use std::fmt;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use rustix::fs::{mkdirat, Mode};

use crate::atomic::AnonymousDir;
use crate::error::{IoContext, Op, Result};
use crate::layout::DATA;
use crate::FsCache;

/// A private scratch directory; [`StageGuard::path`] is its empty `data/`.
/// Dropping the guard removes it. Staging works on every cache, whatever
/// its version.
#[must_use = "the staging directory is removed as soon as the guard is dropped"]
pub struct StageGuard {
    /// Keeps the cache open while the stage lives; a promotion commits
    /// through it.
    cache: FsCache,
    entry: Option<AnonymousDir>,
    data: PathBuf,
}

impl fmt::Debug for StageGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StageGuard")
            .field("data", &self.data)
            .finish()
    }
}

impl FsCache {
    /// Create a scratch directory in `stage/`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`](crate::Error::Io) if it cannot be created.
    ///
    /// # Examples
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let cache = fscache::FsCache::open("my-tool", dir.path())?;
    /// let scratch = cache.stage()?;
    /// std::fs::write(scratch.path().join("tmp"), "x").unwrap();
    /// let path = scratch.path().to_owned();
    /// drop(scratch);
    /// assert!(!path.exists());
    /// # Ok::<(), fscache::Error>(())
    /// ```
    pub fn stage(&self) -> Result<StageGuard> {
        let entry = self.stage_dir().create_anonymous()?;
        let data = entry.path().join(DATA);
        if let Err(e) = mkdirat(entry.dir().as_fd(), DATA, Mode::from_raw_mode(0o777)) {
            let _ = entry.remove();
            return Err(e).at(Op::CreateDir, || data);
        }
        Ok(StageGuard::adopt(self.clone(), entry))
    }
}

impl StageGuard {
    /// A guard for `entry`, an anonymous entry in `stage/` with its
    /// `data/`.
    pub(crate) fn adopt(cache: FsCache, entry: AnonymousDir) -> StageGuard {
        StageGuard {
            cache,
            data: entry.path().join(DATA),
            entry: Some(entry),
        }
    }

    /// The handle the stage was made through.
    pub(crate) fn cache(&self) -> &FsCache {
        &self.cache
    }

    /// Take the entry out of the guard, which then removes nothing.
    pub(crate) fn into_entry(mut self) -> Option<AnonymousDir> {
        self.entry.take()
    }

    /// The scratch directory.
    pub fn path(&self) -> &Path {
        &self.data
    }

    /// Remove the scratch directory, reporting failure.
    ///
    /// # Errors
    ///
    /// [`Error::Io`](crate::Error::Io) if removal fails; what is left is an
    /// unlocked orphan for the next sweep.
    pub fn close(mut self) -> Result<()> {
        self.entry.take().map_or(Ok(()), AnonymousDir::remove)
    }
}

impl Drop for StageGuard {
    fn drop(&mut self) {
        if let Some(entry) = self.entry.take() {
            let _ = entry.remove();
        }
    }
}
