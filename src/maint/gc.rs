//! Removing entries on request: `evict`, `clear` and `gc`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::Result;
use crate::layout::committed;
use crate::maint::scan::{is_live, scan, Kind};
use crate::maint::victim::{Batch, Candidate, Fate, Gone, Removal, Take};
use crate::maint::{SweepReport, Unremovable};
use crate::name::validate_name;
use crate::FsCache;

/// What [`FsCache::evict`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
#[non_exhaustive]
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
    /// Another user's, with modes that keep us from locking it for
    /// removal; it stays.
    Denied,
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
    /// Entries that qualified but are another user's, with modes that keep
    /// us from removing them (skipped like entries in use).
    pub denied: u64,
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
    /// Entries another user's modes keep us from removing, left in place.
    pub denied: u64,
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
        Ok(match self.take_victim(name, None)? {
            Take::Held(v) => {
                // Left-overs it could not remove are debris that sweeps
                // report; the entry itself is gone.
                match self.remove_victims(vec![*v])?.pop() {
                    Some(Gone {
                        fate: Fate::Denied, ..
                    }) => Eviction::Denied,
                    gone => Eviction::Removed {
                        size: gone.map_or(0, |gone| gone.size),
                    },
                }
            }
            Take::InUse => Eviction::InUse,
            Take::Denied => Eviction::Denied,
            Take::Gone => Eviction::NotFound,
        })
    }

    /// Remove every entry nobody holds, and every orphan; `cache.size` is
    /// exact afterwards.
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
            match self.take_victim(&c.name, None)? {
                Take::Held(v) => batch.push(*v, ())?,
                Take::InUse => report.in_use += 1,
                Take::Denied => report.denied += 1,
                Take::Gone => {}
            }
        }
        for Removal { gone, .. } in batch.finish()? {
            report.freed = report.freed.saturating_add(gone.size);
            match gone.fate {
                Fate::Removed => report.removed += 1,
                Fate::Stuck(why) => report.unremovable.push(why),
                Fate::Denied => report.denied += 1,
            }
        }
        self.end_exact()?;
        Ok(report)
    }

    /// Collect garbage: sweep orphans, remove entries unused for longer
    /// than `max_age`, then least recently used entries until at most
    /// `max_size` bytes are accounted. Entries in use are skipped.
    /// `cache.size` is exact afterwards (unless this is a dry run, which
    /// changes nothing).
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
        let mut plan = Plan::new(options, self.accounted_size().unwrap_or(0));
        let mut batch = Batch::new(self);
        for c in self.lru_candidates()? {
            let Some(reason) = plan.reason(&c) else {
                continue;
            };
            // A dry run asks what the removal would find, taking no lock.
            let outcome = if options.dry_run {
                self.probe_victim(&c.name)?
            } else {
                Found::Take(self.take_victim(&c.name, Some(c.last_use))?)
            };
            match outcome {
                Found::Take(Take::Held(v)) => {
                    plan.removing(v.size.unwrap_or(0));
                    batch.push(*v, reason)?;
                }
                Found::Would { size } => {
                    plan.removing(size);
                    report.freed = report.freed.saturating_add(size);
                    report.removed.push(Removed {
                        name: c.name,
                        size,
                        reason,
                    });
                }
                Found::Take(Take::InUse) => report.in_use += 1,
                Found::Take(Take::Denied) => report.denied += 1,
                Found::Take(Take::Gone) => {}
            }
        }
        for Removal { gone, tag } in batch.finish()? {
            report.freed = report.freed.saturating_add(gone.size);
            match gone.fate {
                Fate::Removed => report.removed.push(Removed {
                    name: gone.name,
                    size: gone.size,
                    reason: tag,
                }),
                Fate::Stuck(why) => report.unremovable.push(why),
                Fate::Denied => report.denied += 1,
            }
        }
        if !options.dry_run {
            self.end_exact()?;
        }
        Ok(report)
    }

    /// End a removal pass with `cache.size` exact, so that phantom bytes
    /// left by crashes go with the entries. Where we may not write it (a
    /// read-only cache, or another user's `cache.size`) nothing of ours
    /// changed it either, and the pass stands as it is.
    fn end_exact(&self) -> Result<()> {
        match self.accounting().resync() {
            Err(e)
                if e.is_denied() || e.errno() == Some(rustix::io::Errno::ROFS.raw_os_error()) =>
            {
                Ok(())
            }
            other => other.map(drop),
        }
    }

    fn count_orphans(&self) -> Result<u64> {
        let mut n = 0;
        for (dir, holds_entries) in [(self.objects(), true), (self.stage_dir(), false)] {
            for child in scan(dir, holds_entries)? {
                if child.kind != Kind::Named && !is_live(dir, &child.name, child.kind)? {
                    n += 1;
                }
            }
        }
        Ok(n)
    }
}

/// Which entries gc removes, and why: decided entry by entry in LRU order,
/// the same for a dry run and for the real thing.
struct Plan {
    cutoff: Option<Duration>,
    max_size: Option<u64>,
    /// What would be accounted once the entries chosen so far are gone.
    accounted: u64,
}

impl Plan {
    fn new(options: &GcOptions, accounted: u64) -> Plan {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Plan {
            cutoff: options.max_age.map(|age| now.saturating_sub(age)),
            max_size: options.max_size,
            accounted,
        }
    }

    /// Why `c` goes, if it does.
    fn reason(&self, c: &Candidate) -> Option<Reason> {
        let (sec, nsec) = c.last_use;
        let last = Duration::new(
            u64::try_from(sec).unwrap_or(0),
            nsec.clamp(0, 999_999_999) as u32,
        );
        match (self.cutoff, self.max_size) {
            (Some(cut), _) if last < cut => Some(Reason::Age),
            (_, Some(max)) if self.accounted > max => Some(Reason::Size),
            _ => None,
        }
    }

    fn removing(&mut self, size: u64) {
        self.accounted = self.accounted.saturating_sub(size);
    }
}

/// What gc finds at a candidate: a dry run's answer, or a real one.
enum Found {
    /// A dry run: it would be removed, giving back `size`.
    Would {
        size: u64,
    },
    Take(Take),
}

impl FsCache {
    /// What [`FsCache::take_victim`] would find, taking nothing (the lock
    /// is asked with `F_OFD_GETLK`). An invalid entry is left to the sweep.
    fn probe_victim(&self, name: &str) -> Result<Found> {
        if is_live(self.objects(), name, Kind::Named)? {
            return Ok(Found::Take(Take::InUse));
        }
        Ok(match committed(self.objects(), name, None)? {
            Some(info) => Found::Would { size: info.size },
            None => Found::Take(Take::Gone),
        })
    }
}
