//! Which boot a committed entry is from, as far as the command can tell
//! (the entries themselves come from [`fscache::FsCache::entries`]).

use fscache::EntryInfo as Entry;

/// Which boot an entry is from, as far as the command can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Boot {
    /// Tagged with this boot's id for the application named by `--app-id`.
    This,
    /// Tagged with another id: an earlier boot (or another application).
    Earlier,
    /// No `--app-id` was given, or the entry has no boot id.
    Unknown,
}

impl Boot {
    /// `this_boot` is the boot id of `--app-id` for this boot, if given.
    pub fn of(entry: &Entry, this_boot: Option<&str>) -> Boot {
        match (this_boot, entry.creation_boot_id.as_deref()) {
            (Some(this), Some(id)) if this == id => Boot::This,
            (Some(_), Some(_)) => Boot::Earlier,
            _ => Boot::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Boot::This => "this",
            Boot::Earlier => "earlier",
            Boot::Unknown => "unknown",
        }
    }
}
