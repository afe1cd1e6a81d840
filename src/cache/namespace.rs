//! Namespaces: caches with budgets of their own inside a parent's.
//!
//! A namespace `<root>/namespaces/<prefix>/` is a whole cache of the format
//! (version-1 readers of the parent ignore the new top-level directory).
//! Every size it accounts in its own `cache.size` it accounts in the
//! parent's too, within its own section and then the parent's (always in
//! that order), so the namespaces together never hold more than the
//! parent's maximum allows, and each no more than its own.

use crate::atomic::Dir;
use crate::error::{Error, Result};
use crate::info::MaxSize;
use crate::layout::NAMESPACES;
use crate::name::validate_name;
use crate::FsCache;

use super::OpenOptions;

impl FsCache {
    /// The namespace `prefix` of this cache, created if needed with
    /// `maximum` (or, if `None`, this cache's maximum): a cache of its own,
    /// with its own entries, maximum and eviction, whose sizes also count
    /// against this cache's maximum. An existing namespace keeps its
    /// maximum (change it with [`FsCache::set_maximum_size`] on it).
    ///
    /// Entries are evicted per namespace: a namespace that needs room
    /// evicts its own least recently used entries, then, if the parent has
    /// no room, the parent's own entries (never another namespace's), and
    /// otherwise reports [`Commit::NoRoom`](crate::Commit::NoRoom).
    /// Namespaces do not nest.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] for a prefix that is not a single valid
    /// component; [`Error::InvalidConfig`] on a namespace itself; as
    /// [`FsCache::open`] otherwise.
    ///
    /// # Examples
    ///
    /// ```
    /// use fscache::{FsCache, MaxSize};
    /// let dir = tempfile::tempdir().unwrap();
    /// let cache = FsCache::open("ci", dir.path())?;
    /// cache.set_maximum_size(MaxSize::Bytes(1 << 30))?;
    /// let compile = cache.namespace("compile", Some(MaxSize::Bytes(600 << 20)))?;
    /// let entry = compile.store("obj-1")?;
    /// assert!(entry.commit()?.is_stored());
    /// assert_eq!(cache.namespaces()?, ["compile"]);
    /// assert_eq!(cache.accounted_size()?, compile.accounted_size()?);
    /// # Ok::<(), fscache::Error>(())
    /// ```
    pub fn namespace(&self, prefix: &str, maximum: Option<MaxSize>) -> Result<FsCache> {
        validate_name(prefix)?;
        if self.inner.parent.is_some() {
            return Err(Error::InvalidConfig {
                key: "namespace",
                reason: "namespaces do not nest",
            });
        }
        self.require_supported()?;
        self.root().create_dir(NAMESPACES)?;
        let parent = self.root().open_dir(NAMESPACES)?;
        parent.create_dir(prefix)?;
        let root = parent.open_dir(prefix)?;
        OpenOptions::new()
            .maximum_size(maximum.unwrap_or(self.info().effective_maximum()))
            .durability(self.durability())
            .earlier_boot(self.earlier_boot())
            .open_root(self.app_id(), root, Some(self.clone()))
    }

    /// The prefixes of this cache's namespaces, sorted: run
    /// [`FsCache::stats`] or [`FsCache::gc`] over all of them with
    /// [`FsCache::namespace`].
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if `namespaces/` cannot be listed.
    pub fn namespaces(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = namespace_dirs(self.root())?
            .iter()
            .filter_map(|d| d.path().file_name()?.to_str().map(str::to_owned))
            .collect();
        names.sort();
        Ok(names)
    }
}

/// The namespace directories of the cache at `root`, each opened without
/// following links (a link or a file there is no namespace).
pub(crate) fn namespace_dirs(root: &Dir) -> Result<Vec<Dir>> {
    let parent = match root.open_dir(NAMESPACES) {
        Ok(dir) => dir,
        Err(e) if e.is_not_a_file() => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for (name, kind) in crate::tree::list(&parent)? {
        if kind == rustix::fs::FileType::Directory && validate_name(&name).is_ok() {
            match parent.open_dir(&name) {
                Ok(dir) => out.push(dir),
                Err(e) if e.is_not_a_file() => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(out)
}
