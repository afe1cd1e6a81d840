//! Choosing and removing entries: the LRU order and the removal protocol.

use std::os::fd::AsFd;

use rustix::fs::{statat, AtFlags, OFlags, Stat};
use rustix::io::Errno;

use crate::atomic::Dir;
use crate::error::{Error, IoContext, Op, Result};
use crate::layout::{
    in_entry, is_regular, read_info, remove_invalidated, unlink_info, LOCK_FILE, OBJECT_INFO,
};
use crate::lock::{FileLock, LockKind, Wait};
use crate::maint::scan::{scan, Kind};
use crate::maint::Unremovable;
use crate::size::{give_back_in, SizeLock};
use crate::FsCache;

/// How many entries one size critical section gives back at once: enough
/// to amortise the section, few enough to stay far from the fd limit.
const BATCH: usize = 64;

/// The last use of an entry: its lock file's atime.
pub(crate) type LastUse = (i64, i64);

/// A committed entry as seen by a scan.
#[derive(Debug)]
pub(crate) struct Candidate {
    pub(crate) name: String,
    pub(crate) last_use: LastUse,
}

/// An entry we hold exclusively, about to be removed.
#[derive(Debug)]
pub(crate) struct Victim {
    pub(crate) name: String,
    /// Its `object.info` size; `None` if it had none (an invalid entry,
    /// which is not accounted).
    pub(crate) size: Option<u64>,
    dir: Dir,
    lock: FileLock,
}

/// What [`FsCache::take_victim`] found.
#[derive(Debug)]
pub(crate) enum Take {
    /// Held exclusively: ours to remove.
    Held(Box<Victim>),
    /// Someone holds it, or used it since it was chosen.
    InUse,
    /// Another user's, with modes that keep us from locking it for removal.
    Denied,
    /// Not there (any more), or not an entry we may remove: its lock file is
    /// missing or not a regular file.
    Gone,
}

/// Entries taken out of the cache by [`FsCache::unlink_lru`]: their
/// `object.info` files unlinked, the rest still to remove.
#[must_use = "the bytes freed are the caller's to move, the entries to remove"]
pub(crate) struct Unlinked {
    /// The sizes their `object.info` files said.
    pub(crate) freed: u64,
    taken: Vec<Victim>,
    /// The first error met, after which nothing more was taken.
    pub(crate) outcome: Result<()>,
}

impl Unlinked {
    /// Remove what is left of the entries taken (and count them as
    /// evicted); then the error met while taking them, if any. Returns how
    /// many were taken.
    pub(crate) fn remove(self, cache: &FsCache) -> Result<usize> {
        self.settle(cache, |taken| {
            for v in taken {
                v.remove_rest(cache.objects());
            }
        })
    }

    #[cfg(test)]
    pub(crate) fn into_taken(self) -> Vec<Victim> {
        self.taken
    }

    /// [`Unlinked::remove`], but off the caller's path where the handle's
    /// [`Remover`](crate::maint::Remover) has room.
    pub(crate) fn remove_later(self, cache: &FsCache) -> Result<usize> {
        self.settle(cache, |taken| {
            cache.remover().remove(cache.objects(), taken)
        })
    }

    /// Count the entries taken as evicted and hand them to `remove`; then
    /// the error met while taking them, if any.
    fn settle(self, cache: &FsCache, remove: impl FnOnce(Vec<Victim>)) -> Result<usize> {
        let count = self.taken.len();
        cache.count_n(crate::cache::Event::Evicted, count as u64);
        remove(self.taken);
        self.outcome.map(|()| count)
    }
}

impl Victim {
    /// Remove what is left of a victim already taken out of the cache
    /// (its `object.info` unlinked and its size given back); what cannot
    /// be removed is an invalid entry, for a sweep.
    pub(crate) fn remove_rest(self, objects: &Dir) {
        let _ = remove_invalidated(objects, &self.name, &self.dir);
    }

    /// The lock file's status when it was locked.
    pub(crate) fn locked_stat(&self) -> Option<&Stat> {
        self.lock.locked_stat()
    }
}

pub(crate) fn last_use(st: &rustix::fs::Stat) -> LastUse {
    (st.st_atime, st.st_atime_nsec as i64)
}

impl FsCache {
    /// Every named entry with its last use, least recently used first.
    pub(crate) fn lru_candidates(&self) -> Result<Vec<Candidate>> {
        let objects = self.objects();
        let mut out = Vec::new();
        for child in scan(objects, true)? {
            if child.kind != Kind::Named {
                continue;
            }
            let rel = in_entry(&child.name, LOCK_FILE);
            match statat(objects.as_fd(), rel.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => out.push(Candidate {
                    name: child.name,
                    last_use: last_use(&st),
                }),
                Err(Errno::NOENT) | Err(Errno::NOTDIR) => {}
                Err(e) => return Err(e).at(Op::Stat, || objects.join(&rel)),
            }
        }
        out.sort_by(|a, b| {
            a.last_use
                .cmp(&b.last_use)
                .then_with(|| a.name.cmp(&b.name))
        });
        Ok(out)
    }

    /// Take entry `name` exclusively without waiting, unless it is in use,
    /// gone, another user's, or (with `seen`) used since it was chosen.
    pub(crate) fn take_victim(&self, name: &str, seen: Option<LastUse>) -> Result<Take> {
        let objects = self.objects();
        let rel = in_entry(name, LOCK_FILE);
        let open = |extra| {
            FileLock::open_at(
                objects.as_fd(),
                &rel,
                LockKind::Exclusive,
                Wait::Never,
                extra,
                || objects.join(&rel),
            )
        };
        // O_NOATIME keeps the look from counting as a use; only the owner
        // of the file may ask for it.
        let lock = match open(OFlags::NOATIME) {
            Err(e) if e.errno() == Some(Errno::PERM.raw_os_error()) => open(OFlags::empty()),
            other => other,
        };
        let lock = match lock {
            Ok(lock) => lock,
            Err(Error::WouldBlock { .. }) => return Ok(Take::InUse),
            Err(e) if is_gone(&e) => return Ok(Take::Gone),
            Err(e) if e.is_denied() => return Ok(Take::Denied),
            Err(e) => return Err(e),
        };
        let Some(st) = lock.locked_stat().filter(|st| is_regular(st)) else {
            return Ok(Take::Gone);
        };
        if seen.is_some_and(|seen| last_use(st) != seen) {
            return Ok(Take::InUse);
        }
        let dir = match objects.open_dir(name) {
            Ok(dir) => dir,
            Err(e) if is_gone(&e) => return Ok(Take::Gone),
            Err(e) if e.is_denied() => return Ok(Take::Denied),
            Err(e) => return Err(e),
        };
        let size = read_info(dir.as_fd(), OBJECT_INFO, &dir.join(OBJECT_INFO))?.map(|i| i.size);
        Ok(Take::Held(Box::new(Victim {
            name: name.to_owned(),
            size,
            dir,
            lock,
        })))
    }

    /// Evict least recently used entries until `want` bytes are freed or
    /// none is left that is not in use: [`FsCache::evict_held`] in a size
    /// section of its own. Returns how many were removed.
    pub(crate) fn evict_lru(&self, want: u64) -> Result<usize> {
        let mut section = self.accounting().section()?;
        self.evict_held(&mut section, want)
    }

    /// In the size section `section`: take least recently used entries
    /// until `want` bytes are freed or none is left that is not in use
    /// ([`FsCache::unlink_lru`]), give their sizes back and remove them,
    /// all in this one section (which the commit that asks holds anyway:
    /// one section instead of three, and its name is free again if it was
    /// a victim's). Returns how many were taken.
    pub(crate) fn evict_held(&self, section: &mut SizeLock<'_>, want: u64) -> Result<usize> {
        let unlinked = self.unlink_lru(want);
        // What is unlinked is given back, whatever else failed.
        if unlinked.freed > 0 {
            let current = section.value()?;
            section.lower_later(current.saturating_sub(unlinked.freed))?;
            give_back_in(self.accounting().up_section()?.as_mut(), unlinked.freed)?;
        }
        unlinked.remove(self)
    }

    /// Take least recently used entries (with the handle's sampler) and
    /// unlink their `object.info` files until `want` bytes are unlinked or
    /// none is left that is not in use. The bytes are the caller's to move
    /// (back out of `cache.size`, or into a reservation); until it does,
    /// they are counted where they were and in no `object.info`: an
    /// overcount, never an undercount.
    pub(crate) fn unlink_lru(&self, want: u64) -> Unlinked {
        let objects = self.objects();
        let sampler = self.sampler();
        let mut unlinked = Unlinked {
            freed: 0,
            taken: Vec::new(),
            outcome: Ok(()),
        };
        let mut empty_passes = 0;
        'looking: while unlinked.freed < want && empty_passes < 2 {
            let look = match sampler.look(objects) {
                Ok(look) => look,
                Err(e) => {
                    unlinked.outcome = Err(e);
                    break;
                }
            };
            if look.wrapped {
                empty_passes += 1;
            }
            let mut next = look.oldest;
            while let Some(c) = next {
                match self.take_victim(&c.name, Some(c.last_use)) {
                    Ok(Take::Held(v)) => match unlink_info(&v.dir) {
                        Ok(had) => {
                            if had {
                                unlinked.freed = unlinked.freed.saturating_add(v.size.unwrap_or(0));
                            }
                            unlinked.taken.push(*v);
                            empty_passes = 0;
                            break;
                        }
                        // Its lock was ours to take, its directory is not
                        // ours to change: it stays whole and valid.
                        Err(e) if e.is_denied() => {}
                        Err(e) => {
                            unlinked.outcome = Err(e);
                            break 'looking;
                        }
                    },
                    Ok(_) => {}
                    Err(e) => {
                        unlinked.outcome = Err(e);
                        break 'looking;
                    }
                }
                next = sampler.next_oldest();
            }
        }
        unlinked
    }

    /// The removal protocol for entries we hold: in one size critical
    /// section, unlink each `object.info` and give its size back; then
    /// remove the rest of each entry and let go of its lock.
    pub(crate) fn remove_victims(&self, victims: Vec<Victim>) -> Result<Vec<Gone>> {
        if victims.is_empty() {
            return Ok(Vec::new());
        }
        let objects = self.objects();
        let mut size_lock = self.accounting().section()?;
        // A corrupt cache.size fails here, before any entry is touched.
        let current = size_lock.value()?;
        let mut up = self.accounting().up_section()?;
        let mut given_back = 0u64;
        let mut invalidated = Vec::with_capacity(victims.len());
        let mut denied = Vec::new();
        for v in victims {
            match unlink_info(&v.dir) {
                Ok(true) => given_back = given_back.saturating_add(v.size.unwrap_or(0)),
                Ok(false) => {}
                // Its lock was ours to take, but its directory is not ours
                // to change (another user's): it stays whole and valid.
                Err(e) if e.is_denied() => {
                    denied.push(v);
                    continue;
                }
                Err(e) => {
                    // Give back what is already gone before failing.
                    size_lock.set(current.saturating_sub(given_back))?;
                    give_back_in(up.as_mut(), given_back)?;
                    return Err(e);
                }
            }
            invalidated.push(v);
        }
        crate::failpoint!("evict-after-info");
        size_lock.set(current.saturating_sub(given_back))?;
        give_back_in(up.as_mut(), given_back)?;
        drop((up, size_lock));
        let mut removed = Vec::with_capacity(invalidated.len() + denied.len());
        removed.extend(denied.into_iter().map(|v| Gone {
            name: v.name,
            size: 0,
            fate: Fate::Denied,
        }));
        for v in invalidated {
            // The entry is already invalid and given back: a failure here
            // leaves debris for a sweep by someone who may remove it, so
            // report it and keep going.
            let fate = match remove_invalidated(objects, &v.name, &v.dir) {
                Ok(()) => Fate::Removed,
                Err(e) => Fate::Stuck(Unremovable::from_error(v.dir.path(), e)?),
            };
            drop(v.lock);
            removed.push(Gone {
                name: v.name,
                size: v.size.unwrap_or(0),
                fate,
            });
        }
        let out = removed
            .iter()
            .filter(|g| !matches!(g.fate, Fate::Denied))
            .count();
        self.count_n(crate::cache::Event::Evicted, out as u64);
        Ok(removed)
    }
}

/// Victims we hold, each with a caller's tag, removed [`BATCH`] at a time.
pub(crate) struct Batch<'c, T> {
    cache: &'c FsCache,
    held: Vec<(Victim, T)>,
    removed: Vec<Removal<T>>,
}

/// A victim after its removal: taken out of the cache (its `object.info`
/// and size gone), or left whole.
pub(crate) struct Gone {
    pub(crate) name: String,
    /// The size it gave back.
    pub(crate) size: u64,
    pub(crate) fate: Fate,
}

/// What became of a victim.
pub(crate) enum Fate {
    /// Removed entirely.
    Removed,
    /// Taken out of the cache, but what was left of it could not be
    /// removed, for this reason.
    Stuck(Unremovable),
    /// Left whole: its directory is another user's (nothing given back).
    Denied,
}

/// An entry a [`Batch`] took out, with its caller's tag.
pub(crate) struct Removal<T> {
    pub(crate) gone: Gone,
    pub(crate) tag: T,
}

impl<'c, T> Batch<'c, T> {
    pub(crate) fn new(cache: &'c FsCache) -> Self {
        Batch {
            cache,
            held: Vec::new(),
            removed: Vec::new(),
        }
    }

    /// Add a victim; a full batch is removed at once.
    pub(crate) fn push(&mut self, victim: Victim, tag: T) -> Result<()> {
        self.held.push((victim, tag));
        if self.held.len() >= BATCH {
            self.flush()?;
        }
        Ok(())
    }

    /// Remove what is held, and report every removal since [`Batch::new`].
    pub(crate) fn finish(mut self) -> Result<Vec<Removal<T>>> {
        self.flush()?;
        Ok(self.removed)
    }

    fn flush(&mut self) -> Result<()> {
        let (victims, tags): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held).into_iter().unzip();
        let gone = self.cache.remove_victims(victims)?;
        self.removed.extend(
            gone.into_iter()
                .zip(tags)
                .map(|(gone, tag)| Removal { gone, tag }),
        );
        Ok(())
    }
}

/// Errors that mean the entry is not there (any more), or is not one: a
/// link, socket, fifo or directory where a file belongs. Such an entry is
/// skipped, never followed.
pub(crate) fn is_gone(e: &Error) -> bool {
    e.is_not_a_file()
}
