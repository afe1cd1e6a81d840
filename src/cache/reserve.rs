//! A handle's reservation: accounted space taken from `cache.size` ahead of
//! need, so that most commits enter no size critical section at all.
//!
//! Entering the section costs a commit a dozen system calls and a new
//! `cache.size` inode (the old one freed, on some disks a synchronous
//! discard), and every commit of every process waits its turn for it. So a
//! handle takes more than one entry needs, in a grant, and commits the
//! next entries against what is left of it:
//!
//! - **On disk** a reservation is an anonymous entry of ours in `objects/`,
//!   locked like any entry being built, whose `object.info` is
//!   `{"size": LEFT, "fscache-reservation": true}` padded with spaces to a
//!   fixed length, so that it is rewritten in place with one `pwrite`.
//!   `LEFT` is never more than what the handle has not used yet.
//! - **Granting** (in the section): `cache.size` goes up by the grant, then
//!   the record does. Grants double, from one entry's size up to a chunk
//!   ([`MAX_CHUNK`] or a sixty-fourth of the maximum, whichever is less),
//!   and a handle's first [`COMMITS_BEFORE_RESERVING`] commits take none:
//!   a process that stores a few entries never makes a reservation.
//! - **In a full cache** a grant holds just the entry being committed,
//!   room made for it by evicting in the grant's section; the next
//!   [`EVICTING_BEFORE_REGRANT`] commits make their room by evicting into
//!   the reservation (with its record locked, the victims' `object.info`
//!   files unlinked, then the record grown by their sizes), so that each
//!   pays for about one removal and none for a section, and `cache.size`
//!   stays where it is. Where that finds nothing to evict (entries in use)
//!   or the free-space floor is reached, the handle gives back what it has
//!   left and commits in the section, evicting as it must.
//! - **Committing against it**: with the record's lock held, write the
//!   record less the entry's size, then the entry's `object.info`, rename
//!   the entry into place, release. A name taken gives the size back to
//!   the record the same way.
//! - **Closing the handle** gives back what is left and removes the
//!   reservation, in the section.
//!
//! Why no total ever undercounts:
//!
//! - At rest, `cache.size` is still exactly the sum of every `object.info`
//!   in `objects/`: the reservation's record is one of them.
//! - A crash can only overcount: each step writes the new home of some
//!   bytes after their old home lets go of them (the record shrinks before
//!   the entry's `object.info` appears; a victim's `object.info` is
//!   unlinked before the record grows; `cache.size` grows before a grant's
//!   record does). A dead reservation is an unlocked anonymous entry: the
//!   sweep removes it and gives back what its record says, and osbuild's
//!   remover, should it get there first, does the same.
//! - A recount ([`reserved_in`]) reads every reservation's record under its
//!   lock first, and holds those locks while it reads the entries: no
//!   bytes move between a record and an entry while it counts. A record
//!   made after it listed them takes no bytes before it ends: a record's
//!   first bytes come from a grant, in the section the recount holds.
//!
//! What others see: `cache.size` counts what live handles hold in reserve
//! (at most a chunk each) as used, so osbuild, and stats, find the cache
//! that much fuller, and evict that much earlier, until the handles close.
//!
//! Durable commits and namespaces do without: a durable commit syncs
//! `cache.size` with its entry, and a namespace accounts in its parent too.

use std::collections::HashSet;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use rustix::fs::{openat, FileType, Mode, OFlags};
use serde_json::Value;

use crate::atomic::{write_all, AnonymousDir, Dir};
use crate::beneath::open_beneath;
use crate::error::{not_a_file, IoContext, Op, Result};
use crate::info::{CacheInfo, MaxSize, ObjectInfo};
use crate::layout::{in_entry, is_anonymous, unlink_info, OBJECT_INFO};
use crate::lock::{lock_fd, unlock_fd, LockKind};
use crate::size::{write_info, Accounting, Held, SizeLock};
use crate::FsCache;

/// The key that marks an `object.info` as a handle's reservation.
pub(crate) const RESERVATION_KEY: &str = "fscache-reservation";

/// The largest grant beyond the entry being committed.
pub(crate) const MAX_CHUNK: u64 = 64 << 20;

/// The length of a record: room for any size, padded with spaces.
const RECORD_LEN: usize = 64;

/// How many commits a handle makes in the section before it reserves: a
/// reservation costs an entry's worth of metadata to make and to remove,
/// and a handle that commits a few entries saves nothing by it.
const COMMITS_BEFORE_RESERVING: u32 = 32;

/// After a grant did not fit, how many commits go straight to the section
/// (which they need in a full cache, to evict) before the next try.
const SKIP_WHEN_FULL: u32 = 64;

/// In a full cache, how many commits make their room by evicting into the
/// reservation before a grant looks at `cache.size` and the maximum again
/// (which another process may have raised, or lowered).
const EVICTING_BEFORE_REGRANT: u32 = 64;

/// The longest `object.info` a recount reads.
const MAX_READ: usize = 4096;

fn record(left: u64) -> Vec<u8> {
    let mut bytes = format!("{{\"size\": {left}, \"{RESERVATION_KEY}\": true}}").into_bytes();
    bytes.resize(RECORD_LEN.max(bytes.len()), b' ');
    bytes
}

/// One handle's reservation.
#[derive(Debug)]
struct Reservation {
    entry: AnonymousDir,
    record: OwnedFd,
    record_path: PathBuf,
    /// Accounted in `cache.size` and not used yet: what the record says,
    /// but while a commit against it is under way.
    left: u64,
}

impl Reservation {
    fn create(objects: &Arc<Dir>) -> Result<Reservation> {
        let entry = objects.create_anonymous()?;
        let record_path = entry.path().join(OBJECT_INFO);
        let made = openat(
            entry.dir().as_fd(),
            OBJECT_INFO,
            OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o666),
        )
        .at(Op::Create, || record_path.clone())
        .and_then(|fd| write_all(fd.as_fd(), &record(0), &record_path).map(|()| fd));
        match made {
            Ok(record) => Ok(Reservation {
                entry,
                record,
                record_path,
                left: 0,
            }),
            Err(e) => {
                let _ = entry.remove();
                Err(e)
            }
        }
    }

    fn write(&self, left: u64) -> Result<()> {
        let bytes = record(left);
        let mut done = 0;
        while done < bytes.len() {
            match rustix::io::pwrite(&self.record, &bytes[done..], done as u64) {
                Ok(0) => {
                    return Err(rustix::io::Errno::NOSPC).at(Op::Write, || self.record_path.clone())
                }
                Ok(n) => done += n,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e).at(Op::Write, || self.record_path.clone()),
            }
        }
        Ok(())
    }
}

/// What a handle holds in reserve, and how much its next grant adds.
#[derive(Debug)]
struct State {
    reservation: Option<Reservation>,
    /// The next grant's extra beyond its entry; 0 before the first commit.
    extra: u64,
    /// Commits to make in the section before trying to grant again, after
    /// a grant was found not to fit.
    skip: u32,
    /// Commits that may make their room by evicting into the reservation:
    /// the last grant found the cache full, at this maximum (a commit
    /// under another maximum grants afresh).
    evicting: u32,
    full_at: u64,
}

impl Default for State {
    fn default() -> State {
        State {
            reservation: None,
            extra: 0,
            skip: COMMITS_BEFORE_RESERVING,
            evicting: 0,
            full_at: 0,
        }
    }
}

/// A handle's reservation, if it has one (in its `Inner`).
#[derive(Debug, Default)]
pub(crate) struct Reserve(Mutex<State>);

impl Reserve {
    fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Give back what is left and remove the reservation: the handle is
    /// closing. Failures leave an overcount, which a sweep or heal mends.
    pub(crate) fn release(&self, accounting: &Accounting<'_>) {
        if let Some(r) = self.state().reservation.take() {
            if accounting.give_back(r.entry.dir(), r.left).is_ok() {
                let _ = r.entry.remove();
            }
        }
    }
}

/// An entry's size accounted, and what holds it until the entry is renamed
/// into place.
#[must_use = "what holds the accounting is released when this is dropped"]
#[derive(Debug)]
// Held once per commit, on the stack: boxing the sections would cost an
// allocation for nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Accounted<'c> {
    /// In the size sections, which the rename happens inside.
    Section(Held<'c>),
    /// Against the handle's reservation, whose record stays locked.
    Reserved(Move<'c>),
}

impl<'c> Accounted<'c> {
    /// Unlink the `object.info` of the entry `dir` and give its `size`
    /// back where it came from. Returns the bytes given back.
    pub(crate) fn give_back(
        &mut self,
        accounting: &Accounting<'c>,
        dir: &Dir,
        size: u64,
    ) -> Result<u64> {
        match self {
            Accounted::Section(held) => accounting.give_back_held(held, dir, size),
            Accounted::Reserved(mv) => mv.give_back(dir),
        }
    }
}

/// A commit against a reservation under way: its record is locked.
#[derive(Debug)]
pub(crate) struct Move<'c> {
    state: MutexGuard<'c, State>,
    size: u64,
}

impl Move<'_> {
    fn give_back(&mut self, dir: &Dir) -> Result<u64> {
        let size = self.size;
        let Some(r) = self.state.reservation.as_mut() else {
            return Ok(0);
        };
        if !unlink_info(dir)? {
            return Ok(0);
        }
        r.write(r.left.saturating_add(size))?;
        r.left = r.left.saturating_add(size);
        self.size = 0;
        Ok(size)
    }
}

impl Drop for Move<'_> {
    fn drop(&mut self) {
        if let Some(r) = self.state.reservation.as_ref() {
            let _ = unlock_fd(r.record.as_fd(), &r.record_path);
        }
    }
}

/// The extra a grant may add beyond its entry under `cfg`.
fn chunk(cfg: &CacheInfo) -> u64 {
    match cfg.effective_maximum() {
        MaxSize::Bytes(max) => (max / 64).min(MAX_CHUNK),
        MaxSize::Unlimited => MAX_CHUNK,
    }
}

impl FsCache {
    /// Account the entry `entry`, whose `object.info` is `info`, and write
    /// that `object.info`: against the handle's reservation where it can,
    /// else in the size section (evicting if it must). `None` if there is
    /// no room even then.
    pub(crate) fn account_entry(
        &self,
        entry: &AnonymousDir,
        info: &ObjectInfo,
        cfg: &CacheInfo,
        durable: bool,
    ) -> Result<Option<Accounted<'_>>> {
        let accounting = self.accounting();
        let in_section = || -> Result<Option<Accounted<'_>>> {
            Ok(accounting
                .account(entry, info, cfg, self)?
                .map(Accounted::Section))
        };
        if durable || accounting.up.is_some() {
            return in_section();
        }
        let size = info.size;
        let mut state = self.reserve().state();
        let covers = |state: &State| state.reservation.as_ref().is_some_and(|r| r.left >= size);
        let max_now = match cfg.effective_maximum() {
            MaxSize::Bytes(max) => Some(max),
            MaxSize::Unlimited => None,
        };
        if state.evicting > 0 && max_now != Some(state.full_at) {
            state.evicting = 0;
        }
        if state.evicting > 0 && !covers(&state) {
            state.evicting -= 1;
            if let Some(r) = state.reservation.as_mut() {
                self.evict_into(r, size)?;
            }
            if !covers(&state) {
                // Nothing to evict that is not in use: let a grant, or the
                // section, find out what to do.
                state.evicting = 0;
            }
        }
        if !covers(&state) || accounting.below_floor(cfg)? > 0 {
            let granted = match (state.extra, state.skip) {
                // A handle's first commits take no reservation: it pays
                // for itself only over many commits. The last of them
                // notes the size the first grant starts from.
                (0, 0) => {
                    state.extra = size.clamp(1, chunk(cfg).max(1));
                    false
                }
                (0, _) => {
                    state.skip -= 1;
                    false
                }
                (_, 0) => self.grant(&accounting, &mut state, size, cfg)?,
                _ => {
                    state.skip -= 1;
                    false
                }
            };
            if !granted {
                drop(state);
                return in_section();
            }
        }
        let Some(r) = state.reservation.as_mut() else {
            drop(state);
            return in_section();
        };
        lock_fd(r.record.as_fd(), LockKind::Exclusive, &r.record_path)?;
        let left = r.left - size;
        let written = r.write(left).and_then(|()| write_info(entry, info));
        if let Err(e) = written {
            let _ = r.write(r.left);
            let _ = unlock_fd(r.record.as_fd(), &r.record_path);
            return Err(e);
        }
        r.left = left;
        Ok(Some(Accounted::Reserved(Move { state, size })))
    }

    /// In the size section: grant the reservation room for an entry of
    /// `size` and the next grant's extra; `false` if that does not fit
    /// without evicting (or below the free-space floor), having given
    /// back what was left.
    fn grant(
        &self,
        accounting: &Accounting<'_>,
        state: &mut State,
        size: u64,
        cfg: &CacheInfo,
    ) -> Result<bool> {
        let mut section = accounting.section()?;
        let left = state.reservation.as_ref().map_or(0, |r| r.left);
        let mut grant = size.saturating_add(state.extra);
        let max = cfg.effective_maximum();
        let fits = |section: &SizeLock<'_>, grant: u64| -> Result<bool> {
            let base = section.value()?.saturating_sub(left);
            Ok(max.admits(base.saturating_add(grant)))
        };
        let floor_ok = accounting.below_floor(cfg)? == 0;
        let mut full = false;
        if floor_ok && !fits(&section, grant)? {
            // Full: room for this entry alone, made in this section; the
            // next commits make theirs by evicting into the reservation,
            // one entry's worth each, without a section.
            grant = size;
            if let MaxSize::Bytes(max) = max {
                full = true;
                state.full_at = max;
                let base = section.value()?.saturating_sub(left);
                let need = base.saturating_add(grant).saturating_sub(max);
                self.evict_held(&mut section, need)?;
            }
        }
        let base = section.value()?.saturating_sub(left);
        if !floor_ok || !fits(&section, grant)? {
            // No room even so (entries in use), or short of disk space:
            // commit in the section, evicting, and hold nothing in
            // reserve that others could use; try again a while later.
            if let Some(r) = state.reservation.as_mut().filter(|r| r.left > 0) {
                r.write(0)?;
                r.left = 0;
                section.set(base)?;
            }
            state.skip = SKIP_WHEN_FULL;
            return Ok(false);
        }
        if state.reservation.is_none() {
            state.reservation = Some(Reservation::create(self.objects())?);
        }
        let Some(r) = state.reservation.as_mut() else {
            return Ok(false);
        };
        section.set(base.saturating_add(grant))?;
        r.write(grant)?;
        r.left = grant;
        if full {
            state.evicting = EVICTING_BEFORE_REGRANT;
        } else {
            state.evicting = 0;
            state.extra = state.extra.saturating_mul(2).min(chunk(cfg)).max(1);
        }
        Ok(true)
    }

    /// In a full cache, without a section: make the reservation `r` cover
    /// an entry of `size` by evicting least recently used entries into it.
    /// With the record locked, so that a recount (which holds every record
    /// while it reads the entries) sees each evicted entry's bytes either
    /// in its `object.info` or in the record, the `object.info` files are
    /// unlinked first and the record grows after: a crash in between
    /// leaves the bytes in `cache.size` alone, an overcount.
    ///
    /// Only a reservation granted in a section takes bytes this way, so
    /// it was in `objects/` before any recount now under way began, and
    /// that recount holds its lock.
    ///
    /// What is left of the victims goes to the handle's remover thread
    /// (`maint::remover`): they are out of the cache already.
    fn evict_into(&self, r: &mut Reservation, size: u64) -> Result<()> {
        lock_fd(r.record.as_fd(), LockKind::Exclusive, &r.record_path)?;
        let unlinked = self.unlink_lru(size.saturating_sub(r.left));
        crate::failpoint!("evict-into-before-record");
        let grown = r.left.saturating_add(unlinked.freed);
        let moved = if unlinked.freed > 0 {
            r.write(grown).map(|()| r.left = grown)
        } else {
            Ok(())
        };
        let unlocked = unlock_fd(r.record.as_fd(), &r.record_path);
        let removed = unlinked.remove_later(self);
        moved.and(unlocked).and(removed.map(drop))
    }
}

/// The reservations in an `objects/` directory, for a recount: each record
/// read under its lock, which is held until this is dropped.
#[derive(Debug, Default)]
pub(crate) struct Reserved {
    /// The sum of their records.
    pub(crate) total: u64,
    /// Their names, which the rest of the recount skips.
    pub(crate) names: HashSet<String>,
    /// The records, locked shared: no commit moves bytes out of one, and
    /// no eviction into one, until the recount has read every entry.
    _held: Vec<OwnedFd>,
}

/// Read every reservation's record in `objects` under its lock, and keep
/// the locks: see [`Reserved`].
pub(crate) fn reserved_in(objects: &Dir) -> Result<Reserved> {
    let mut reserved = Reserved::default();
    for (name, kind) in crate::tree::list(objects)? {
        if kind != FileType::Directory || !is_anonymous(&name) {
            continue;
        }
        let rel = in_entry(&name, OBJECT_INFO);
        let path = || objects.join(&rel);
        let fd = match open_beneath(objects.as_fd(), &rel, OFlags::RDONLY, Mode::empty()) {
            Ok(fd) => fd,
            Err(e) if not_a_file(e) => continue,
            Err(e) => return Err(e).at(Op::Open, path),
        };
        if !read_record(&fd).is_some_and(|(_, reservation)| reservation) {
            continue;
        }
        lock_fd(fd.as_fd(), LockKind::Shared, &path())?;
        if let Some((size, true)) = read_record(&fd) {
            reserved.total = reserved.total.saturating_add(size);
            reserved.names.insert(name);
            reserved._held.push(fd);
        }
    }
    Ok(reserved)
}

/// The size in an `object.info` and whether it is a reservation's.
fn read_record(fd: &OwnedFd) -> Option<(u64, bool)> {
    let mut buf = vec![0u8; MAX_READ];
    let n = rustix::io::pread(fd, &mut buf, 0).ok()?;
    let value: Value = serde_json::from_slice(&buf[..n]).ok()?;
    let size = value.get("size")?.as_u64()?;
    Some((size, value.get(RESERVATION_KEY) == Some(&Value::Bool(true))))
}
