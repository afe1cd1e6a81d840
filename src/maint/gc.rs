//! Removing entries on request: `evict`, `clear` and `gc`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::Result;
use crate::maint::stats::is_live;
use crate::maint::victim::{Batch, Removal};
use crate::maint::{SweepReport, Unremovable};
use crate::name::validate_name;
use crate::FsCache;

/// What [`FsCache::evict`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Eviction {
    /// Removed, giving back `size` bytes.
    Removed {
        /// The bytes given back to `cache.size`.
        size: u64,
    },
    /// No such entry.
    NotFound,
    /// Someone holds it (a reader, or its remover); it stays.
    InUse,
}

/// Why [`FsCache::gc`] removed an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Not used for longer than `max_age`.
    Age,
    /// Least recently used while the cache was above `max_size`.
    Size,
}

/// One entry [`FsCache::gc`] removed (or, in a dry run, would remove).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Removed {
    /// The entry's name.
    pub name: String,
    /// Its recorded size.
    pub size: u64,
    /// Why.
    pub reason: Reason,
}

/// What [`FsCache::gc`] should do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcOptions {
    /// Remove least recently used entries until at most this many bytes
    /// are accounted.
    pub max_size: Option<u64>,
    /// Remove entries not used for longer than this.
    pub max_age: Option<Duration>,
    /// Only report; remove nothing (orphans are counted, not swept).
    pub dry_run: bool,
}

/// What [`FsCache::gc`] did (or would do, in a dry run).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GcReport {
    /// Entries removed, least recently used first.
    pub removed: Vec<Removed>,
    /// Bytes given back by those entries.
    pub freed: u64,
    /// Entries that qualified but were in use, so stayed.
    pub in_use: u64,
    /// What the orphan sweep removed (empty in a dry run).
    pub sweep: SweepReport,
    /// In a dry run, the orphans a sweep would remove.
    pub orphans_found: u64,
    /// Entries taken out of the cache (given back, counted in `freed`)
    /// whose files could not all be removed: another user's, say.
    pub unremovable: Vec<Unremovable>,
}

/// What [`FsCache::clear`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClearReport {
    /// Entries removed.
    pub removed: u64,
    /// Bytes given back.
    pub freed: u64,
    /// Entries in use, left in place.
    pub in_use: u64,
    /// What the orphan sweep removed.
    pub sweep: SweepReport,
    /// Entries taken out of the cache (given back, counted in `freed`)
    /// whose files could not all be removed: another user's, say.
    pub unremovable: Vec<Unremovable>,
}

impl FsCache {
    /// Remove the entry `name` now, unless someone holds it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`](crate::Error::InvalidName);
    /// [`Error::UnsupportedVersion`](crate::Error::UnsupportedVersion);
    /// [`Error::Io`](crate::Error::Io) on I/O failure.
    ///
    /// # Examples
    ///
    /// ```
    /// use fscache::{Eviction, FsCache};
    /// let dir = tempfile::tempdir().unwrap();
    /// let cache = FsCache::open("my-tool", dir.path())?;
    /// assert_eq!(cache.evict("nothing-here")?, Eviction::NotFound);
    /// # Ok::<(), fscache::Error>(())
    /// ```
    pub fn evict(&self, name: &str) -> Result<Eviction> {
        validate_name(name)?;
        self.require_supported()?;
        match self.lock_victim(name, None)? {
            Some(v) => {
                // Left-overs it could not remove are debris that sweeps
                // report; the entry itself is gone.
                let removed = self.remove_victims(vec![v])?;
                Ok(Eviction::Removed {
                    size: removed.first().map_or(0, |gone| gone.size),
                })
            }
            None if self.entry_exists(name) => Ok(Eviction::InUse),
            None => Ok(Eviction::NotFound),
        }
    }

    fn entry_exists(&self, name: &str) -> bool {
        rustix::fs::statat(self.objects(), name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW).is_ok()
    }

    /// Remove every entry nobody holds, and every orphan.
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedVersion`](crate::Error::UnsupportedVersion);
    /// [`Error::Io`](crate::Error::Io) on I/O failure.
    pub fn clear(&self) -> Result<ClearReport> {
        self.require_supported()?;
        let mut report = ClearReport {
            sweep: self.sweep_orphans()?,
            ..ClearReport::default()
        };
        let mut batch = Batch::new(self);
        for c in self.lru_candidates()? {
            match self.lock_victim(&c.name, None)? {
                Some(v) => batch.push(v, ())?,
                None => report.in_use += u64::from(self.entry_exists(&c.name)),
            }
        }
        for Removal { gone, .. } in batch.finish()? {
            report.freed += gone.size;
            match gone.stuck {
                None => report.removed += 1,
                Some(why) => report.unremovable.push(why),
            }
        }
        Ok(report)
    }

    /// Collect garbage: sweep orphans, remove entries unused for longer
    /// than `max_age`, then least recently used entries until at most
    /// `max_size` bytes are accounted. Entries in use are skipped.
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedVersion`](crate::Error::UnsupportedVersion);
    /// [`Error::Io`](crate::Error::Io) on I/O failure.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use fscache::{FsCache, GcOptions};
    /// let dir = tempfile::tempdir().unwrap();
    /// let cache = FsCache::open("my-tool", dir.path())?;
    /// let plan = cache.gc(&GcOptions { max_age: Some(Duration::from_secs(86400)), dry_run: true, ..Default::default() })?;
    /// assert!(plan.removed.is_empty());
    /// # Ok::<(), fscache::Error>(())
    /// ```
    pub fn gc(&self, options: &GcOptions) -> Result<GcReport> {
        self.require_supported()?;
        let mut report = GcReport::default();
        if options.dry_run {
            report.orphans_found = self.count_orphans()?;
        } else {
            report.sweep = self.sweep_orphans()?;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let cutoff = options.max_age.map(|age| now.saturating_sub(age));
        let mut accounted = self.accounted_size().unwrap_or(0);
        let mut batch = Batch::new(self);
        for c in self.lru_candidates()? {
            let last = Duration::new(
                c.last_use.0.max(0) as u64,
                c.last_use.1.clamp(0, 999_999_999) as u32,
            );
            let reason = match (cutoff, options.max_size) {
                (Some(cut), _) if last < cut => Reason::Age,
                (_, Some(max)) if accounted > max => Reason::Size,
                _ => continue,
            };
            if options.dry_run {
                if is_live(self.objects(), &c.name, true)? {
                    report.in_use += 1;
                } else if let Some(oi) =
                    crate::maint::stats::read_object_info(self.objects(), &c.name)?
                {
                    accounted = accounted.saturating_sub(oi.size);
                    report.freed += oi.size;
                    report.removed.push(Removed {
                        name: c.name,
                        size: oi.size,
                        reason,
                    });
                }
                continue;
            }
            match self.lock_victim(&c.name, Some(c.last_use))? {
                Some(v) => {
                    accounted = accounted.saturating_sub(v.size.unwrap_or(0));
                    batch.push(v, reason)?;
                }
                None => report.in_use += 1,
            }
        }
        for Removal { gone, tag } in batch.finish()? {
            report.freed += gone.size;
            match gone.stuck {
                None => report.removed.push(Removed {
                    name: gone.name,
                    size: gone.size,
                    reason: tag,
                }),
                Some(why) => report.unremovable.push(why),
            }
        }
        Ok(report)
    }

    fn count_orphans(&self) -> Result<u64> {
        let mut n = 0;
        for dir in [self.objects(), self.stage_dir()] {
            for (name, kind) in crate::tree::list(dir)? {
                let is_dir = kind == rustix::fs::FileType::Directory;
                if name.starts_with("uuid-")
                    && (is_dir || kind == rustix::fs::FileType::RegularFile)
                    && !is_live(dir, &name, is_dir)?
                {
                    n += 1;
                }
            }
        }
        Ok(n)
    }
}
