//! Maintenance: eviction to a low watermark, the orphan sweep, resync,
//! stats and gc. Everything here is safe next to live users: an entry is
//! only removed under its exclusive lock, taken without waiting, so an
//! entry in use is skipped, never disturbed.

mod entries;
mod gc;
mod remover;
mod sample;
mod scan;
mod stats;
mod sweep;
mod victim;

pub use entries::{EntryInfo, Listing};
pub use gc::{ClearReport, Eviction, GcOptions, GcReport, Reason, Removed};
pub(crate) use remover::Remover;
pub(crate) use sample::Sampler;
pub use stats::{ResyncReport, Stats};
pub use sweep::{SweepReport, Unremovable};
