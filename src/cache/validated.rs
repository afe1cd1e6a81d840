//! The entries this handle has found valid, so that a load checks an entry
//! once rather than on every hit.
//!
//! A committed entry never changes: its `object.info` is written once,
//! before the entry appears under its name, and a replacement is a new
//! entry with a new `object.lock`. So once a load has checked an entry
//! (`layout::committed`: its `object.info` parses, its `data` is a
//! directory), the next load of the same name needs only to know that it
//! holds the same `object.lock` — same device, inode and ctime, all of
//! which the safe-open loop's `fstat` has read anyway. Any change to the
//! lock file's inode (a new file where an inode number was reused, a
//! `chmod`, another process recording a use) moves its ctime, and the
//! next load checks again. Hands that rewrite an entry's files in place,
//! under the same lock file, could go unnoticed; they could as well change
//! `data/` after any check, which no cache can prevent.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rustix::fs::Stat;

use crate::info::ObjectInfo;

/// How many names a handle remembers; past that it forgets them all and
/// starts again, which costs one check per name.
const REMEMBERED: usize = 4096;

/// What identifies one `object.lock` file for as long as it is unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LockIdentity {
    dev: u64,
    ino: u64,
    ctime: (i64, i64),
}

impl LockIdentity {
    fn of(st: &Stat) -> LockIdentity {
        LockIdentity {
            dev: st.st_dev,
            ino: st.st_ino,
            ctime: (st.st_ctime, st.st_ctime_nsec as i64),
        }
    }
}

/// Entries checked by this handle, by name.
#[derive(Debug, Default)]
pub(crate) struct Validated(Mutex<HashMap<String, (LockIdentity, Arc<ObjectInfo>)>>);

impl Validated {
    /// The `object.info` of `name` if it was checked under the lock file
    /// whose status is `lock`.
    pub(crate) fn get(&self, name: &str, lock: &Stat) -> Option<Arc<ObjectInfo>> {
        let known = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match known.get(name) {
            Some((id, info)) if *id == LockIdentity::of(lock) => Some(Arc::clone(info)),
            _ => None,
        }
    }

    /// Remember that `name`, under the lock file whose status is `lock`,
    /// was checked and holds `info`.
    pub(crate) fn insert(&self, name: &str, lock: &Stat, info: Arc<ObjectInfo>) {
        let mut known = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if known.len() >= REMEMBERED && !known.contains_key(name) {
            known.clear();
        }
        known.insert(name.to_owned(), (LockIdentity::of(lock), info));
    }
}
