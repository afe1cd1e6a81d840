//! `StageGuard::promote(name)`: publish a stage as an entry, by rename.

use std::os::fd::AsFd;

use crate::atomic::AnonymousDir;
use crate::error::Error;
use crate::layout::{read_info, OBJECT_INFO};
use crate::name::validate_name;
use crate::{Commit, CommitError, FsCache, StageGuard, StoreGuard};

/// A failed [`StageGuard::promote`]: the error, and the stage back as it
/// was before the call (its content in a `stage/` directory again), so the
/// caller may retry or drop it.
///
/// `guard` is `None` only where there is no stage to give back: the
/// commit published the entry and then failed to make that durable (see
/// [`StoreGuard::commit`]), or the stage could not be moved back into
/// `stage/` and was removed instead.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct PromoteError {
    /// What went wrong.
    #[source]
    pub error: Error,
    /// The stage, still unpublished.
    pub guard: Option<Box<StageGuard>>,
}

impl From<PromoteError> for Error {
    fn from(e: PromoteError) -> Error {
        e.error
    }
}

impl StageGuard {
    /// Publish the stage as the entry `name`, without copying: its
    /// directory is renamed from `stage/` into `objects/` under a fresh
    /// anonymous name (its lock held throughout, so no sweep takes it for
    /// an orphan) and committed there as [`StoreGuard::commit`] commits,
    /// with the same outcomes and the durability policy of the handle the
    /// stage was made through. A stage that is not stored (the name is
    /// taken, it is too large, finds no room, or the cache's version is
    /// unsupported) is removed.
    ///
    /// # Errors
    ///
    /// A [`PromoteError`] holding the error and, in
    /// [`guard`](PromoteError::guard), the stage back in `stage/` with its
    /// content: [`Error::InvalidName`] for a name the cache cannot use,
    /// [`Error::Rename`] if the stage cannot be moved (`stage/` and
    /// `objects/` on different file systems, say), and whatever
    /// [`StoreGuard::commit`] fails with.
    ///
    /// # Examples
    ///
    /// ```
    /// use fscache::{Commit, FsCache, MaxSize};
    /// let dir = tempfile::tempdir().unwrap();
    /// let cache = FsCache::open("my-tool", dir.path())?;
    /// cache.set_maximum_size(MaxSize::Unlimited)?;
    /// let scratch = cache.stage()?;
    /// std::fs::write(scratch.path().join("result"), b"42").unwrap();
    /// assert!(matches!(scratch.promote("answer")?, Commit::Stored { .. }));
    /// let hit = cache.load("answer")?.expect("just promoted");
    /// assert_eq!(std::fs::read(hit.path().join("result")).unwrap(), b"42");
    ///
    /// // A taken name: the other entry wins, the stage is removed.
    /// let late = cache.stage()?;
    /// let path = late.path().to_owned();
    /// assert_eq!(late.promote("answer")?, Commit::NameTaken);
    /// assert!(!path.exists());
    /// # Ok::<(), fscache::Error>(())
    /// ```
    pub fn promote(self, name: &str) -> Result<Commit, PromoteError> {
        if let Err(error) = validate_name(name) {
            return Err(PromoteError {
                error,
                guard: Some(Box::new(self)),
            });
        }
        let cache = self.cache().clone();
        let Some(entry) = self.into_entry() else {
            unreachable!("a stage holds its entry until it is consumed")
        };
        if !cache.info().is_supported() {
            let _ = entry.remove();
            return Ok(Commit::Unsupported);
        }
        let entry = match entry.move_to(cache.objects()) {
            Ok(entry) => entry,
            Err(failed) => {
                let (error, entry) = *failed;
                return Err(PromoteError {
                    error,
                    guard: Some(Box::new(StageGuard::adopt(cache, entry))),
                });
            }
        };
        match StoreGuard::adopt(cache.clone(), name, entry).commit() {
            Ok(outcome) => Ok(outcome),
            Err(CommitError { error, guard }) => Err(PromoteError {
                error,
                guard: guard.into_entry().and_then(|e| restage(&cache, e)),
            }),
        }
    }
}

/// Put an entry whose commit failed back into `stage/` as it was before:
/// an `object.info` the commit wrote (and accounted) is given back first.
/// What cannot be put back is removed.
fn restage(cache: &FsCache, entry: AnonymousDir) -> Option<Box<StageGuard>> {
    let info_path = entry.path().join(OBJECT_INFO);
    let cleaned = match read_info(entry.dir().as_fd(), OBJECT_INFO, &info_path) {
        Ok(Some(info)) => cache.accounting().give_back(entry.dir(), info.size).is_ok(),
        Ok(None) => true,
        Err(_) => false,
    };
    if !cleaned {
        let _ = entry.remove();
        return None;
    }
    match entry.move_to(cache.stage_dir()) {
        Ok(entry) => Some(Box::new(StageGuard::adopt(cache.clone(), entry))),
        Err(failed) => {
            let _ = failed.1.remove();
            None
        }
    }
}
