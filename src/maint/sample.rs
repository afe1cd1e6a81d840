//! Choosing what a commit evicts without a scan of every entry.
//!
//! A commit that needs room must not pay for a look at every entry: at
//! 100,000 entries that look alone takes longer than thousands of stores.
//! So each handle keeps a cursor through `objects/` and a small pool of the
//! least recently used entries it has seen (as Redis approximates LRU):
//! each time it evicts, it reads the next [`SAMPLE`] entries' last uses
//! into the pool, keeps the [`POOL`] oldest, and evicts the oldest in the
//! pool, provided it is still unused since it was seen (the removal
//! protocol checks the atime under the entry's write lock anyway). Each
//! entry read is a `stat`, the larger part of what an eviction costs
//! besides the removal itself, so a look reads few: the pool, not the
//! look, is what keeps the choice close to LRU.
//!
//! How close to LRU that is: every entry is looked at once per pass of the
//! cursor, and an evicted entry is the oldest of the pool, which holds the
//! oldest of everything seen since the pass began and of the pool before.
//! An entry that has not been used for a whole pass is evicted ahead of
//! anything used since; among entries used in the same pass the order can
//! be off. Measured on a cache of 3,000 entries with distinct last uses
//! (`maint::a_full_cache_of_thousands_evicts_close_to_lru_one_entry_per_store`),
//! 300 evictions took none newer than the 387th oldest: about the oldest
//! eighth, as reading 8 entries per eviction makes it. A directory of at
//! most [`EXACT`] entries is read whole at every eviction, which is exact
//! LRU. Other processes keep cursors of
//! their own; the lock and the atime check make them agree on nothing but
//! what the protocol already makes safe.

use std::collections::VecDeque;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Mutex;

use rustix::fs::{openat, seek, statat, AtFlags, FileType, Mode, OFlags, RawDir, SeekFrom};
use rustix::io::Errno;

use crate::atomic::Dir;
use crate::error::{IoContext, Op, Result};
use crate::layout::{in_entry, is_anonymous, LOCK_FILE};
use crate::maint::victim::{last_use, Candidate};

/// Entries whose last use one eviction reads.
pub(crate) const SAMPLE: usize = 8;

/// The most entries a directory may hold to be read whole at every
/// eviction (and judged in exact LRU order).
pub(crate) const EXACT: usize = 32;

/// The oldest entries seen that a handle keeps between evictions.
pub(crate) const POOL: usize = 64;

/// The most a cursor reads of `objects/` at once: about 60 names. A
/// `getdents` costs in proportion to what it returns, and a buffer of
/// thousands of names made one eviction in a hundred pay for them all
/// (0.8 ms at 10,000 entries on tmpfs, the p99 of a full cache's stores).
const READ_BYTES: usize = 2048;

/// A cursor through `objects/` and the oldest entries it has shown.
#[derive(Debug)]
struct Cursor {
    dir: OwnedFd,
    /// Names read from `dir` and not looked at yet.
    pending: VecDeque<String>,
    /// Nothing has been read since the cursor last came back to the start.
    at_start: bool,
    /// Entries read in this pass, and in the one before.
    pass_len: usize,
    last_pass_len: usize,
    /// Oldest first.
    pool: Vec<Candidate>,
}

impl Cursor {
    /// The next name of an entry that may be committed; `None` at the end
    /// of `objects/`, where the cursor goes back to the start.
    fn next_name(&mut self, objects: &Dir) -> Result<Option<String>> {
        let failed = || objects.path().to_owned();
        while self.pending.is_empty() {
            let mut buf = [MaybeUninit::<u8>::uninit(); READ_BYTES];
            let mut raw = RawDir::new(&self.dir, &mut buf);
            let mut any = false;
            while let Some(entry) = raw.next() {
                let entry = entry.at(Op::ReadDir, failed)?;
                any = true;
                let name = std::str::from_utf8(entry.file_name().to_bytes()).ok();
                if let Some(name) = name.filter(|n| *n != "." && *n != ".." && !is_anonymous(n)) {
                    if matches!(entry.file_type(), FileType::Directory | FileType::Unknown) {
                        self.pending.push_back(name.to_owned());
                    }
                }
                // One getdents, no more.
                if raw.is_buffer_empty() {
                    break;
                }
            }
            if !any {
                seek(&self.dir, SeekFrom::Start(0)).at(Op::ReadDir, failed)?;
                return Ok(None);
            }
        }
        Ok(self.pending.pop_front())
    }
}

/// A handle's sampler (in its `Inner`); opened at the first eviction.
#[derive(Debug, Default)]
pub(crate) struct Sampler(Mutex<Option<Cursor>>);

/// What one look through the cursor found.
pub(crate) struct Look {
    /// The pool's oldest entry, taken out of it.
    pub(crate) oldest: Option<Candidate>,
    /// The cursor came round to the start of `objects/` in this look.
    pub(crate) wrapped: bool,
}

impl Sampler {
    /// Read the next [`SAMPLE`] entries of `objects` into the pool and take
    /// out its oldest.
    pub(crate) fn look(&self, objects: &Dir) -> Result<Look> {
        let mut cursor = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if cursor.is_none() {
            let fd = openat(
                objects.as_fd(),
                ".",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .at(Op::Open, || objects.path().to_owned())?;
            *cursor = Some(Cursor {
                dir: fd,
                pending: VecDeque::new(),
                at_start: true,
                pass_len: 0,
                last_pass_len: 0,
                pool: Vec::new(),
            });
        }
        let Some(c) = cursor.as_mut() else {
            return Ok(Look {
                oldest: None,
                wrapped: false,
            });
        };
        // A small directory is read whole and judged afresh each time,
        // from all it holds: exact LRU. One more than it may hold is read,
        // so that a directory of exactly EXACT entries comes round in one
        // look too.
        let budget = if c.at_start && c.last_pass_len <= EXACT {
            c.pool.clear();
            EXACT + 1
        } else {
            SAMPLE
        };
        let mut wrapped = false;
        let mut read = 0;
        while read < budget {
            let Some(name) = c.next_name(objects)? else {
                c.at_start = true;
                c.last_pass_len = c.pass_len;
                c.pass_len = 0;
                wrapped = true;
                break;
            };
            c.at_start = false;
            read += 1;
            c.pass_len += 1;
            let rel = in_entry(&name, LOCK_FILE);
            let st = match statat(objects.as_fd(), rel.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(Errno::NOENT) | Err(Errno::NOTDIR) => continue,
                Err(e) => return Err(e).at(Op::Stat, || objects.join(&rel)),
            };
            let seen = Candidate {
                name,
                last_use: last_use(&st),
            };
            c.pool.retain(|p| p.name != seen.name);
            let at = c
                .pool
                .partition_point(|p| (p.last_use, &p.name) < (seen.last_use, &seen.name));
            if at < POOL {
                c.pool.insert(at, seen);
                c.pool.truncate(POOL);
            }
        }
        let oldest = (!c.pool.is_empty()).then(|| c.pool.remove(0));
        Ok(Look { oldest, wrapped })
    }

    /// Take the pool's next oldest entry without reading further.
    pub(crate) fn next_oldest(&self) -> Option<Candidate> {
        let mut cursor = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let c = cursor.as_mut()?;
        (!c.pool.is_empty()).then(|| c.pool.remove(0))
    }
}
