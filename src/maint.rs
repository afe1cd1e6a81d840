//! Maintenance: eviction to a low watermark, the orphan sweep, resync,
//! stats and gc. Everything here is safe next to live users: an entry is
//! only removed under its exclusive lock, taken without waiting, so an
//! entry in use is skipped, never disturbed.

mod gc;
mod stats;
mod sweep;
mod victim;

pub use gc::{ClearReport, Eviction, GcOptions, GcReport, Reason, Removed};
pub use stats::{ResyncReport, Stats};
pub use sweep::{SweepReport, Unremovable};

use crate::error::Result;
use crate::info::{CacheInfo, MaxSize};
use crate::size::SizeLock;
use crate::FsCache;

/// How many times one commit may evict before it gives up with no room.
const EVICTION_ROUNDS: u32 = 3;

impl FsCache {
    /// Enter the size critical section with room for `size` more bytes,
    /// evicting least recently used entries down to the low watermark if
    /// needed; `None` if there is no room even then.
    pub(crate) fn make_room(&self, size: u64, cfg: &CacheInfo) -> Result<Option<SizeLock<'_>>> {
        let max = cfg.effective_maximum();
        // Others may take the room we free before we get back into the
        // section: try again while eviction makes progress, a few times.
        let mut rounds = 0;
        loop {
            let size_lock = self.lock_size()?;
            let current = size_lock.value()?;
            if max.admits(current.saturating_add(size)) {
                return Ok(Some(size_lock));
            }
            let MaxSize::Bytes(max) = max else {
                unreachable!("an unlimited maximum admits everything")
            };
            if rounds == EVICTION_ROUNDS {
                return Ok(None);
            }
            drop(size_lock);
            // Free enough that the cache ends at the low watermark with
            // this entry in it, so the stores that follow fit without a
            // scan; if the entry alone passes the watermark, free to fit.
            let low = match cfg.low_watermark() {
                MaxSize::Bytes(low) => low,
                MaxSize::Unlimited => max,
            };
            let target = if low >= size {
                low - size
            } else {
                max.saturating_sub(size)
            };
            let need = (current.saturating_add(size)).saturating_sub(max);
            if self.evict_lru(current.saturating_sub(target).max(need))? == 0 {
                rounds = EVICTION_ROUNDS;
            } else {
                rounds += 1;
            }
        }
    }
}
