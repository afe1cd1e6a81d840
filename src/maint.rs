//! Maintenance: making room, eviction, the orphan sweep, resync and stats.

use crate::error::Result;
use crate::info::CacheInfo;
use crate::size::SizeLock;
use crate::FsCache;

impl FsCache {
    /// Enter the size critical section with room for `size` more bytes, or
    /// `None` if there is none.
    pub(crate) fn make_room(&self, size: u64, cfg: &CacheInfo) -> Result<Option<SizeLock<'_>>> {
        let size_lock = self.lock_size()?;
        let fits = cfg
            .effective_maximum()
            .admits(size_lock.value()?.saturating_add(size));
        Ok(fits.then_some(size_lock))
    }
}
