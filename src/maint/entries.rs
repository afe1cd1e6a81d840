//! The committed entries, listed: what `fscache ls` shows.

use std::os::fd::AsFd;
use std::time::SystemTime;

use rustix::fs::{statat, AtFlags};

use crate::error::Result;
use crate::layout::{committed, in_entry, LOCK_FILE};
use crate::maint::scan::{is_live, scan, Kind};
use crate::FsCache;

/// One committed entry, as [`FsCache::entries`] found it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EntryInfo {
    /// Its name.
    pub name: String,
    /// The size its `object.info` records (what `cache.size` accounts).
    pub size: u64,
    /// Its last use: the access time of its `object.lock`.
    pub last_use: SystemTime,
    /// The boot id it was tagged with, if any.
    pub creation_boot_id: Option<String>,
    /// Committed with [`Durability::Sync`](crate::Durability::Sync).
    pub durable: bool,
    /// Someone holds it now (a reader, or its remover).
    pub in_use: bool,
}

/// What [`FsCache::entries`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Listing {
    /// The committed entries, in no particular order.
    pub entries: Vec<EntryInfo>,
    /// Named directories that are not valid entries (see
    /// [`FsCache::sweep_orphans`]).
    pub invalid: u64,
}

impl FsCache {
    /// Every committed entry (by the one definition of an entry, see the
    /// crate docs), looked at without taking a lock or counting as a use:
    /// whether someone holds it is asked with `F_OFD_GETLK`.
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedVersion`](crate::Error::UnsupportedVersion);
    /// [`Error::Io`](crate::Error::Io) on I/O failure. Entries that vanish
    /// meanwhile are left out.
    ///
    /// # Examples
    ///
    /// ```
    /// use fscache::{FsCache, MaxSize};
    /// let dir = tempfile::tempdir().unwrap();
    /// let cache = FsCache::open("my-tool", dir.path())?;
    /// cache.set_maximum_size(MaxSize::Unlimited)?;
    /// assert!(cache.store("a")?.commit()?.is_stored());
    /// let listing = cache.entries()?;
    /// assert_eq!(listing.entries[0].name, "a");
    /// # Ok::<(), fscache::Error>(())
    /// ```
    pub fn entries(&self) -> Result<Listing> {
        self.require_supported()?;
        let objects = self.objects();
        let mut listing = Listing::default();
        for child in scan(objects, true)? {
            if child.kind != Kind::Named {
                continue;
            }
            let Some(info) = committed(objects, &child.name, None)? else {
                listing.invalid += 1;
                continue;
            };
            let lock = in_entry(&child.name, LOCK_FILE);
            let Ok(st) = statat(objects.as_fd(), lock.as_str(), AtFlags::SYMLINK_NOFOLLOW) else {
                continue; // removed meanwhile
            };
            listing.entries.push(EntryInfo {
                in_use: is_live(objects, &child.name, Kind::Named)?,
                name: child.name,
                size: info.size,
                last_use: crate::maint::stats::to_time(st.st_atime, st.st_atime_nsec as i64),
                creation_boot_id: info.creation_boot_id,
                durable: info.durable,
            });
        }
        Ok(listing)
    }
}
