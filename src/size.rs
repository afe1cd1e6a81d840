//! `cache.size`: the bytes accounted, changed only under its write lock, and
//! [`Accounting`], the one place that changes it.
//!
//! The critical section is a [`SizeLock`]. A new value is written to a locked
//! `uuid-*` temporary which is renamed over `cache.size`; we keep the lock of
//! the new file, so the section lasts until the guard is dropped even though
//! the file it started on has been replaced. That lets an `object.info`
//! appear or disappear inside the same section as its size change.
//!
//! **Healing.** Crashes can only leave the total too high, and hostile or
//! broken hands can leave garbage, or a link, directory or fifo, at
//! `cache.size`. Rather than wait for a person to resync, the accounting
//! recounts the total itself, in the section, from the `object.info` files
//! present (never following what was planted), whenever it cannot read a
//! number, and when a commit finds no room with nothing left to evict. The
//! latter is bounded: a handle heals for want of room at most once per
//! [`HEAL_INTERVAL`], so a cache full of entries in use does not rescan on
//! every store. A healthy cache never heals: it pays nothing for this.

use std::os::fd::AsFd;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rustix::fs::{renameat, statat, unlinkat, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::atomic::{mode_of, write_all, AnonymousDir, Dir};
use crate::error::{Error, IoContext, Op, Result};
use crate::info::{parse_size, CacheInfo, MaxSize, ObjectInfo};
use crate::layout::{
    anonymous_name, in_entry, is_regular, read_info, unlink_info, CACHE_INFO, CACHE_SIZE,
    OBJECT_INFO,
};
use crate::lock::{FileLock, LockKind, Wait};

/// `cache.size` is one short integer; anything longer is corrupt.
const MAX_SIZE_FILE: usize = 64;

/// How often one handle may recount for want of room. Only crashes make
/// the total drift, so a minute's delay costs little; a rescan per store
/// of a full cache would cost much.
pub(crate) const HEAL_INTERVAL: Duration = Duration::from_secs(60);

/// How many eviction rounds one commit makes in the section before it
/// gives up with no room.
const EVICTION_ROUNDS: u32 = 3;

/// The held write lock on `cache.size` and the value it read.
#[must_use = "the size lock is released when this is dropped"]
#[derive(Debug)]
pub(crate) struct SizeLock<'c> {
    root: &'c Dir,
    temp: &'c Dir,
    lock: FileLock,
    /// What the file holds; `None` if that is not a size.
    on_disk: Option<u64>,
    /// The mode of the `cache.size` we locked, which replacements keep.
    mode: Option<Mode>,
    /// A lower value to write by the end of the section (see
    /// [`SizeLock::lower_later`]).
    lowered: Option<u64>,
}

impl<'c> SizeLock<'c> {
    /// Wait for the write lock on `root/cache.size` and read it. Temporaries
    /// go to `temp` (`objects/`). `None` if there is no regular file to lock
    /// (it is missing, or a link, directory, fifo or socket was put there).
    fn acquire(root: &'c Dir, temp: &'c Dir) -> Result<Option<Self>> {
        let lock = match root.lock(CACHE_SIZE, LockKind::Exclusive, Wait::Forever) {
            Ok(lock) => lock,
            Err(e) if e.is_not_a_file() => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(st) = lock.locked_stat().filter(|st| is_regular(st)) else {
            return Ok(None);
        };
        let mode = Some(mode_of(st));
        let on_disk = read_fd(&lock, root)?;
        Ok(Some(SizeLock {
            root,
            temp,
            lock,
            on_disk,
            mode,
            lowered: None,
        }))
    }

    /// The value read, or [`Error::Corrupt`] if the file held no size. In
    /// a section from [`Accounting::section`] it always holds one.
    pub(crate) fn value(&self) -> Result<u64> {
        if let Some(lowered) = self.lowered {
            return Ok(lowered);
        }
        self.on_disk.ok_or_else(|| {
            Error::corrupt(
                self.root.join(CACHE_SIZE),
                "not a non-negative JSON integer",
            )
        })
    }

    /// Lower the total to `new` (no more than it is) by the end of the
    /// section, in one write with whatever is set next: what was given
    /// back in the section then costs no write of its own. Until then the
    /// file says more than the sum, which a crash leaves as an overcount.
    pub(crate) fn lower_later(&mut self, new: u64) -> Result<()> {
        if new > self.value()? {
            return self.set(new);
        }
        self.lowered = Some(new);
        Ok(())
    }

    /// Write `new`, staying in the critical section.
    pub(crate) fn set(&mut self, new: u64) -> Result<()> {
        self.lowered = None;
        if self.on_disk == Some(new) {
            return Ok(());
        }
        let held = self.root.replace_locked(
            CACHE_SIZE,
            new.to_string().as_bytes(),
            self.temp,
            self.mode,
        )?;
        crate::failpoint!("size-after-rename");
        // Dropping the old guard unlocks the replaced file: anyone waiting
        // on it wakes, sees the replacement and waits again, now on ours.
        self.lock = held;
        self.on_disk = Some(new);
        Ok(())
    }
}

impl Drop for SizeLock<'_> {
    fn drop(&mut self) {
        // Failing here leaves the total too high, never too low.
        if let Some(lowered) = self.lowered.take() {
            let _ = self.set(lowered);
        }
    }
}

fn read_fd(fd: &impl AsFd, root: &Dir) -> Result<Option<u64>> {
    let mut buf = [0u8; MAX_SIZE_FILE + 1];
    let mut len = 0;
    while len < buf.len() {
        match rustix::io::pread(fd, &mut buf[len..], len as u64) {
            Ok(0) => break,
            // A short read of a regular file is its end: save the call
            // that would return 0.
            Ok(n) if n < buf.len() - len => {
                len += n;
                break;
            }
            Ok(n) => len += n,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e).at(Op::Read, || root.join(CACHE_SIZE)),
        }
    }
    Ok(if len > MAX_SIZE_FILE {
        None
    } else {
        parse_size(&buf[..len])
    })
}

/// Read `cache.size` without locking (it is always replaced whole); `None`
/// if it holds no size or is not a regular file.
pub(crate) fn read_unlocked(root: &Dir) -> Result<Option<u64>> {
    let fd =
        match crate::beneath::open_beneath(root.as_fd(), CACHE_SIZE, OFlags::RDONLY, Mode::empty())
        {
            Ok(fd) => fd,
            Err(e) if crate::error::not_a_file(e) => return Ok(None),
            Err(e) => return Err(e).at(Op::Open, || root.join(CACHE_SIZE)),
        };
    match read_fd(&fd, root) {
        Err(e) if e.is_not_a_file() => Ok(None),
        other => other,
    }
}

/// The size sections a commit holds from accounting its entry (or, after
/// syncing it, again) until it has renamed it into place. Every change to
/// which `object.info` files are in `objects/` and under which names then
/// happens inside the section, so that a recount in it sees them all.
#[must_use = "the size sections are left when this is dropped"]
#[derive(Debug)]
pub(crate) struct Held<'c> {
    section: SizeLock<'c>,
    up: Option<SizeLock<'c>>,
}

/// How many entries of its own size a commit evicts beyond what it needs,
/// toward the low watermark: enough to leave room for the commits that
/// follow, few enough that no commit removes thousands.
const TOWARD_WATERMARK: u64 = 2;

/// How much to evict for an entry of `size`: what it needs to fit, and up
/// to [`TOWARD_WATERMARK`] entries of its size more, toward the cache
/// ending at the low watermark with the entry in it (if the entry alone
/// passes the watermark, just what it needs).
fn free_to_watermark(current: u64, size: u64, max: u64, cfg: &CacheInfo) -> u64 {
    let low = match cfg.low_watermark() {
        MaxSize::Bytes(low) => low,
        MaxSize::Unlimited => max,
    };
    let target = if low >= size {
        low - size
    } else {
        max.saturating_sub(size)
    };
    let need = current.saturating_add(size).saturating_sub(max);
    let step = need.saturating_add(size.saturating_mul(TOWARD_WATERMARK));
    current.saturating_sub(target).min(step).max(need)
}

/// Give `size` back in a parent's section, if there is one.
pub(crate) fn give_back_in(up: Option<&mut SizeLock<'_>>, size: u64) -> Result<()> {
    if let Some(up) = up {
        let current = up.value()?;
        up.set(current.saturating_sub(size))?;
    }
    Ok(())
}

/// The sum of the `object.info` sizes of the entries in `objects`.
///
/// A commit renames its entry into place outside the size section (ours
/// after it accounted, osbuild's whenever it does), and a listing taken
/// during a rename may show the entry under neither name; reading the
/// `object.info` of a name listed just before its rename finds nothing.
/// So the directory is listed twice, and what the second listing shows
/// that the first did not is counted too: an entry is missed only if it is
/// renamed twice in that time, and one listed under both names is counted
/// twice, which overcounts but never undercounts.
///
/// Handles' reservations are read first, each under its lock, which is
/// held until the entries are read too (see `cache::reserve`): no bytes
/// move between a reservation and an entry while they are counted.
fn sum_infos(objects: &Dir) -> Result<u64> {
    // Held until every entry is read.
    let reserved = crate::cache::reserved_in(objects)?;
    let mut total = reserved.total;
    let mut seen = std::collections::HashSet::new();
    for pass in 0..2 {
        for (name, kind) in crate::tree::list(objects)? {
            if kind != FileType::Directory
                || reserved.names.contains(&name)
                || (pass == 1 && seen.contains(&name))
            {
                continue;
            }
            let rel = in_entry(&name, OBJECT_INFO);
            if let Some(info) = read_info(objects.as_fd(), &rel, &objects.join(&rel))? {
                total = total.saturating_add(info.size);
            }
            seen.insert(name);
        }
    }
    Ok(total)
}

/// Write the `object.info` of the anonymous entry `entry`, which has none
/// yet; on failure, what was written is unlinked again.
pub(crate) fn write_info(entry: &AnonymousDir, info: &ObjectInfo) -> Result<()> {
    let path = entry.path().join(OBJECT_INFO);
    let written = rustix::fs::openat(
        entry.dir().as_fd(),
        OBJECT_INFO,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o666),
    )
    .at(Op::Create, || path.clone())
    .and_then(|fd| write_all(fd.as_fd(), &info.to_json(), &path));
    if written.is_err() {
        let _ = unlinkat(entry.dir().as_fd(), OBJECT_INFO, AtFlags::empty());
    }
    written
}

/// When this handle last healed for want of room.
#[derive(Debug, Default)]
pub(crate) struct HealGate(Mutex<Option<Instant>>);

impl HealGate {
    /// Whether a heal for want of room may run now; if so, it counts as
    /// run.
    fn admit(&self) -> bool {
        let mut last = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match *last {
            Some(at) if at.elapsed() < HEAL_INTERVAL => false,
            _ => {
                *last = Some(Instant::now());
                true
            }
        }
    }
}

/// The accounting of one cache: every change of `cache.size` goes through
/// here, together with the `object.info` it accounts for.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Accounting<'c> {
    pub(crate) root: &'c Dir,
    pub(crate) objects: &'c Dir,
    pub(crate) gate: &'c HealGate,
    pub(crate) counters: &'c crate::cache::LiveCounters,
    /// A namespace's parent: every size it accounts, the parent accounts
    /// too, in its own section, entered after ours (never the other way
    /// round).
    pub(crate) up: Option<&'c crate::FsCache>,
}

impl<'c> Accounting<'c> {
    /// Enter the size critical section, with a size to work from: a
    /// `cache.size` that holds no number, or that is no regular file, is
    /// healed first.
    pub(crate) fn section(&self) -> Result<SizeLock<'c>> {
        let mut lock = self.locked()?;
        if lock.on_disk.is_none() {
            self.heal(&mut lock)?;
        }
        Ok(lock)
    }

    /// Enter the section on a regular `cache.size`, whatever it holds.
    fn locked(&self) -> Result<SizeLock<'c>> {
        loop {
            if let Some(lock) = SizeLock::acquire(self.root, self.objects)? {
                return Ok(lock);
            }
            if let Some(lock) = self.replace_planted()? {
                return Ok(lock);
            }
        }
    }

    /// In the section: recount the total and count this as a heal.
    fn heal(&self, lock: &mut SizeLock<'c>) -> Result<u64> {
        let total = self.recount()?;
        lock.set(total)?;
        self.counters.count(crate::cache::Event::Heal, 1);
        Ok(total)
    }

    /// Make `cache.size` exact: in the section, set it to the sum of every
    /// `object.info` in `objects/` (committed entries, invalid ones and
    /// anonymous ones alike, since whoever removes one gives its size
    /// back). Returns what it held before (`None` if that was no size, or
    /// no regular file) and the total now.
    pub(crate) fn resync(&self) -> Result<(Option<u64>, u64)> {
        let mut lock = self.locked()?;
        let before = lock.on_disk;
        let after = self.recount()?;
        lock.set(after)?;
        Ok((before, after))
    }

    /// The sum of every `object.info` in `objects/`, and in the `objects/`
    /// of every namespace (whose sizes this cache accounts too).
    fn recount(&self) -> Result<u64> {
        let mut total = sum_infos(self.objects)?;
        for ns in crate::cache::namespace_dirs(self.root)? {
            total = total.saturating_add(sum_infos(&ns.open_dir(crate::layout::OBJECTS)?)?);
        }
        Ok(total)
    }

    /// In a namespace, account `size` more in the parent: its section with
    /// room for it (evicting the parent's own entries if needed). `None`
    /// if the parent has no room; `Some(None)` outside a namespace.
    #[allow(clippy::type_complexity)]
    fn reserve_up(&self, size: u64) -> Result<Option<Option<SizeLock<'c>>>> {
        let Some(parent) = self.up else {
            return Ok(Some(None));
        };
        let cfg = parent.info();
        Ok(parent.accounting().make_room(size, &cfg, parent)?.map(Some))
    }

    /// In a namespace, the parent's section, entered while ours is held
    /// (so that a recount of the parent never sees an `object.info` of
    /// ours gone while its size is still counted there); `None` outside
    /// a namespace.
    pub(crate) fn up_section(&self) -> Result<Option<SizeLock<'c>>> {
        self.up
            .map(|parent| parent.accounting().section())
            .transpose()
    }

    /// Put a fresh, locked `cache.size` where there is none, or where
    /// something that is not a regular file was planted (moved aside and
    /// removed, never followed). Only one of our processes at a time does
    /// this, under the lock of `cache.info`; osbuild never replaces a
    /// `cache.size` it cannot open, so it does not race us. `None` if
    /// someone else put a regular file there meanwhile.
    fn replace_planted(&self) -> Result<Option<SizeLock<'c>>> {
        let _one_repairer = self
            .root
            .lock(CACHE_INFO, LockKind::Exclusive, Wait::Forever)?;
        if let Some(lock) = SizeLock::acquire(self.root, self.objects)? {
            drop(lock);
            return Ok(None);
        }
        let aside = anonymous_name();
        match renameat(self.root, CACHE_SIZE, self.objects, aside.as_str()) {
            Ok(()) => self.remove_aside(&aside)?,
            Err(Errno::NOENT) => {}
            Err(e) => {
                return Err(Error::Rename {
                    from: self.root.join(CACHE_SIZE),
                    to: self.objects.join(&aside),
                    source: e.into(),
                })
            }
        }
        // Until the recount is written, the file says "full": a crash in
        // between overcounts (and heals), it never undercounts.
        match self
            .root
            .create_locked(CACHE_SIZE, u64::MAX.to_string().as_bytes(), self.objects)?
        {
            // What it holds is no count of ours: the caller recounts.
            Some(lock) => Ok(Some(SizeLock {
                root: self.root,
                temp: self.objects,
                lock,
                on_disk: None,
                mode: None,
                lowered: None,
            })),
            // osbuild's scaffolding put a new one there first.
            None => Ok(None),
        }
    }

    /// Remove what was planted at `cache.size`, now at `objects/<aside>`.
    fn remove_aside(&self, aside: &str) -> Result<()> {
        let path = || self.objects.join(aside);
        let st = statat(self.objects, aside, AtFlags::SYMLINK_NOFOLLOW).at(Op::Stat, path)?;
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            let dir = self.objects.open_dir(aside)?;
            crate::tree::remove_contents(dir.as_fd(), dir.path(), None)?;
            unlinkat(self.objects, aside, AtFlags::REMOVEDIR).at(Op::RemoveDir, path)
        } else {
            unlinkat(self.objects, aside, AtFlags::empty()).at(Op::Unlink, path)
        }
    }

    /// Enter the section with room for `size` more bytes under `cfg`'s
    /// maximum, having `owner` (the cache this accounting is of) evict
    /// least recently used entries in the section if needed; `None` if
    /// there is no room even then.
    pub(crate) fn make_room(
        &self,
        size: u64,
        cfg: &CacheInfo,
        owner: &crate::FsCache,
    ) -> Result<Option<SizeLock<'c>>> {
        let mut section = self.section()?;
        let mut rounds = 0;
        loop {
            let current = section.value()?;
            let over = match cfg.effective_maximum() {
                MaxSize::Bytes(max) => current.saturating_add(size).saturating_sub(max),
                MaxSize::Unlimited => 0,
            };
            let below = self.below_floor(cfg)?;
            if over == 0 && below == 0 {
                return Ok(Some(section));
            }
            if rounds == EVICTION_ROUNDS {
                // Nothing (more) to evict: the total may be phantom, left
                // by crashes. Recount, if this handle has not just done so
                // (a recount frees no disk space, so not for the floor).
                if over > 0
                    && below == 0
                    && self.gate.admit()
                    && cfg
                        .effective_maximum()
                        .admits(self.heal(&mut section)?.saturating_add(size))
                {
                    return Ok(Some(section));
                }
                return Ok(None);
            }
            let want = match cfg.effective_maximum() {
                MaxSize::Bytes(max) if over > 0 => free_to_watermark(current, size, max, cfg),
                _ => 0,
            };
            if owner.evict_held(&mut section, want.max(below))? == 0 {
                rounds = EVICTION_ROUNDS;
            } else {
                rounds += 1;
            }
        }
    }

    /// How far the file system's free space is below the cache's floor
    /// ([`CacheInfo::min_free_bytes`]); 0 without a floor, at no cost.
    /// The entry being committed is on the disk already, so what is free
    /// now is what is left once it is in.
    pub(crate) fn below_floor(&self, cfg: &CacheInfo) -> Result<u64> {
        let Some(floor) = cfg.min_free_bytes.filter(|f| *f > 0) else {
            return Ok(0);
        };
        let st =
            rustix::fs::fstatvfs(self.objects).at(Op::Stat, || self.objects.path().to_owned())?;
        let free = st.f_bavail.saturating_mul(st.f_frsize);
        Ok(floor.saturating_sub(free))
    }

    /// In the size critical section: add `info.size` to `cache.size` (making
    /// room with `owner`'s eviction if needed) and write the entry's `object.info`.
    /// Returns `None` if it does not fit, else the sections still held, for
    /// the caller to rename the entry into place inside them (see
    /// [`Held`]). The size goes up before `object.info` appears, so a crash
    /// in between overcounts but never undercounts.
    pub(crate) fn account(
        &self,
        entry: &AnonymousDir,
        info: &ObjectInfo,
        cfg: &CacheInfo,
        owner: &crate::FsCache,
    ) -> Result<Option<Held<'c>>> {
        let mut rounds = 0;
        let (mut section, mut up) = loop {
            let Some(section) = self.make_room(info.size, cfg, owner)? else {
                return Ok(None);
            };
            if let Some(up) = self.reserve_up(info.size)? {
                break (section, up);
            }
            // The parent has no room: what this namespace evicts of its
            // own is given back there too.
            drop(section);
            rounds += 1;
            if rounds > EVICTION_ROUNDS || owner.evict_lru(info.size)? == 0 {
                return Ok(None);
            }
        };
        let mut above = 0;
        if let Some(up) = up.as_mut() {
            above = up.value()?;
            up.set(above.saturating_add(info.size))?;
        }
        let current = section.value()?;
        section.set(current.saturating_add(info.size))?;
        if let Err(e) = write_info(entry, info) {
            section.set(current)?;
            if let Some(up) = up.as_mut() {
                up.set(above)?;
            }
            return Err(e);
        }
        Ok(Some(Held { section, up }))
    }

    /// Enter the section (and a namespace's parent's) to hold across a
    /// rename into place.
    pub(crate) fn hold(&self) -> Result<Held<'c>> {
        let section = self.section()?;
        let up = self.up_section()?;
        Ok(Held { section, up })
    }

    /// In the sections `held`: unlink the `object.info` of the entry `dir`
    /// and give `size` back, if it had one. Returns the bytes given back.
    pub(crate) fn give_back_held(&self, held: &mut Held<'c>, dir: &Dir, size: u64) -> Result<u64> {
        let current = held.section.value()?;
        if !unlink_info(dir)? {
            return Ok(0);
        }
        crate::failpoint!("give-back-after-info-unlink");
        held.section.set(current.saturating_sub(size))?;
        give_back_in(held.up.as_mut(), size)?;
        Ok(size)
    }

    /// In the size critical section: unlink the `object.info` of the entry
    /// `dir` and give `size` back, if it had one. Returns the bytes given
    /// back.
    pub(crate) fn give_back(&self, dir: &Dir, size: u64) -> Result<u64> {
        let mut held = self.hold()?;
        self.give_back_held(&mut held, dir, size)
    }
}
