//! A file-system cache that many processes and threads share safely.
//!
//! `fscache` keeps named entries (directory trees) in one cache directory.
//! Any number of processes may open the same directory at once; each entry
//! is committed atomically, read under a shared lock, and evicted only when
//! nobody holds it. The on-disk format and locking protocol are those of
//! osbuild's `fscache` (format version 1), so that an osbuild process and a
//! program using this crate can share one cache at the same time.
//!
//! ```
//! use fscache::{Commit, FsCache, MaxSize};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let cache = FsCache::open("my-build-tool", dir.path())?;
//! cache.set_maximum_size(MaxSize::Bytes(64 << 20))?;
//!
//! // Fill an anonymous entry, then publish it under a name.
//! let entry = cache.store("gcc-13-build-7f3a")?;
//! std::fs::write(entry.path().join("out.o"), b"\x7fELF...").unwrap();
//! match entry.commit()? {
//!     Commit::Stored { size } => println!("cached {size} bytes"),
//!     Commit::NameTaken => println!("another process stored it first"),
//!     other => println!("not cached: {other}"),
//! }
//!
//! // Read it back; the entry cannot be evicted while `hit` lives.
//! if let Some(hit) = cache.load("gcc-13-build-7f3a")? {
//!     assert!(hit.path().join("out.o").exists());
//! }
//! # Ok::<(), fscache::Error>(())
//! ```
//!
//! # The locking model
//!
//! Every lock is an `fcntl` *open-file-description* lock over a whole file
//! (`F_OFD_SETLK`): it belongs to the open file, not to the process, so two
//! guards conflict inside one process exactly as in two processes, and a
//! stray `close` of another descriptor releases nothing. A `*.lock` file
//! locks the directory it sits in.
//!
//! * `cache.lock`: every open [`FsCache`] holds it shared for its whole
//!   life; an exclusive holder would have the cache to itself. How long an
//!   open waits for such a holder is [`OpenOptions::wait`]'s to say.
//! * `objects/<name>/object.lock`: readers ([`FsCache::load`]) hold it
//!   shared; whoever creates or removes the entry holds it exclusive. A
//!   reader never waits: contention is a miss. An evictor never waits
//!   either: an entry in use is skipped.
//! * `cache.size`: its exclusive lock is the *size critical section*. Every
//!   change of the total happens inside it together with the appearance or
//!   disappearance of the `object.info` that it accounts for, so the total
//!   equals the sum of the `object.info` sizes whenever nobody is inside.
//!   The new value is written to a locked temporary that is renamed over
//!   the file; we keep that lock, so the section survives the replacement.
//! * `cache.info`: its exclusive lock orders configuration updates.
//! * `builds/<name>` (our extension; version-1 readers ignore `builds/`):
//!   the *build lock* of a name, held exclusively by the one asker of
//!   [`FsCache::get_or_build`] that builds it while the others wait for
//!   it. Created atomically when missing; removed only by a holder of its
//!   exclusive lock (the builder when done, or the sweep for one a killed
//!   builder left), so a waiter that opened a removed file sees so in the
//!   safe-open loop and meets the others at the new one.
//!
//! Order: the build lock comes first. [`FsCache::get_or_build`] takes it,
//! waiting, before any entry lock or the size section, and never waits
//! for it while holding an entry lock, a stage or the size lock; the
//! builder then takes entry locks and enters the size section as any
//! store does. An entry lock may be held while entering the size section,
//! never the other way round with waiting, and entry locks are only ever
//! taken without waiting, so no two holders can wait on each other. A
//! build that asks for another entry (a dependency) waits for that
//! entry's build lock while holding its own unfinished entry, which is
//! safe because nobody waits for an entry lock; the one cycle left is the
//! caller's to avoid: a build that waits for the build of its own name,
//! directly or through the builds it asks for.
//! A namespace ([`FsCache::namespace`]) accounts every size in its parent
//! too: it enters its own size section, then the parent's, never the other
//! way round (a parent never enters a namespace's section).
//!
//! Opening a lock uses the *safe-open loop*: open, lock, then compare the
//! descriptor with the path (device and inode); if the file was replaced or
//! removed meanwhile (or NFS answers `ESTALE`), start again.
//!
//! **What an entry is**, for every operation alike (load, stats, the
//! sweep, resync, eviction): a directory `objects/<name>` whose
//! `object.lock` is a regular file, whose `object.info` is a JSON object
//! with an integer `size` from 0 to [`MAX_ENTRY_SIZE`], and whose `data` is
//! a directory, none of them a link. Anything else there is an *invalid*
//! entry: a load misses it, stats counts it, the sweep removes it when it
//! can take its lock. `cache.size` accounts every `object.info` that reads
//! as one, valid entry or not, and whoever removes one gives its size back.
//!
//! **On a crash** the kernel drops every lock of the dead process. What it
//! was building is left as an unlocked `uuid-*` directory or file: an
//! orphan, which the sweep removes (liveness is the lock, never an age). A
//! crash inside the size section can only leave `cache.size` too high. A
//! committed entry is never damaged by a process crash: it becomes visible
//! whole, by one rename.
//!
//! **Cleaning up** follows what osbuild's creator and remover expect of a
//! cleaner (FORMAT.md): both pass through states where an anonymous
//! directory has no `object.lock`, so the sweep only ever tries `rmdir` on
//! such a directory (which succeeds only while it is empty) and never puts
//! anything into one. A lockless directory that is not empty is no state
//! of any protocol; it is left in place and reported
//! ([`SweepReport::lockless`]).
//!
//! **The accounting heals itself.** A `cache.size` that is too high (crash
//! debris), holds no number, or was replaced by a link, directory, fifo or
//! socket is recounted from the `object.info` files inside the size
//! section by whoever needs it: a commit that finds no room with nothing
//! left to evict (at most once a minute per handle, so a cache full of
//! entries in use does not rescan on every store), any operation that
//! cannot read a number there, and every [`FsCache::gc`] and
//! [`FsCache::clear`], which end exact. What was planted is moved aside and
//! removed, never followed. [`Counters::heals`] counts the recounts; a
//! healthy cache never makes one. Sums of sizes never overflow: a size past
//! [`MAX_ENTRY_SIZE`] makes its entry invalid, and totals saturate.
//!
//! **Reservations** keep most commits out of the size section. After its
//! first 32 commits, a handle takes accounted space ahead of need, in
//! grants that double from one entry's size up to 64 MiB (or a
//! sixty-fourth of the maximum), and commits against what is left with
//! one `pwrite` of its *record*: the `object.info` of an anonymous
//! `objects/uuid-*` entry of its own, `{"size": LEFT,
//! "fscache-reservation": true}`. The record is one of the `object.info`
//! files, so at rest `cache.size` still equals their sum; a crash leaves
//! an unlocked record, which the sweep (or osbuild's remover) gives back;
//! a recount reads each record under its lock and holds the lock until
//! it has read the entries too. What a live handle holds in reserve counts as used: osbuild,
//! stats and eviction see the cache that much fuller until the handle
//! closes. In a full cache a grant holds one entry, made room for in its
//! section, and the next 64 commits make their room by evicting into the
//! reservation (victims' `object.info` unlinked, then the record grown),
//! so that `cache.size` stays at the maximum and no size section is
//! entered. Durable commits and namespaces do without.
//!
//! **Eviction without a scan.** A commit that needs room evicts what it
//! needs (in the size section it holds, at most two entries of its size
//! more toward the low watermark; against a reservation, just what it
//! needs) and chooses with a sampler: each handle keeps a cursor through
//! `objects/` and a pool of the 64 least recently used entries it has
//! seen, reads 8 more last uses per eviction and evicts the oldest of the
//! pool that is still unused. That is least recently used to within the
//! pool: an entry unused for a whole pass of the cursor goes before
//! anything used since; in a cache of 3,000 entries with distinct last
//! uses, 300 evictions took nothing newer than the oldest eighth; and a
//! directory of at most 32 entries is read whole each time (exact). [`FsCache::gc`]
//! and [`FsCache::clear`] still look at every entry and
//! remove in exact LRU order.
//!
//! **Victims are removed by a thread of the handle.** A victim evicted
//! into a reservation is out of the cache once its `object.info` is
//! unlinked; the rest of its removal (most of the cost of a full store:
//! on a disk that discards freed blocks, about a millisecond) goes to one
//! thread per open cache, started at the first such eviction, while the
//! store returns. The thread holds at most 8 victims, is woken for 4 at
//! a time and removes fewer after 10 ms; when it has no room, or cannot
//! be started, or the handle is used in a child after `fork`, the store
//! removes its own victims. Dropping the last
//! clone of a handle waits until the thread has removed every victim.
//! Until then a victim is an entry without `object.info` whose lock we
//! hold: loads miss it, a store of its name finds the name taken, and a
//! sweep (ours or osbuild's) leaves it alone; if the process dies first,
//! it is an invalid entry that a sweep removes.
//!
//! A load records a use by the lock file's
//! atime, unless one was recorded less than a second ago: within a
//! second, uses count as one.
//!
//! **A load checks an entry once per handle**: the first load of a name
//! reads its `object.info` and `data`; later ones, while the same
//! `object.lock` (device, inode, ctime, as the safe-open `fstat` reads
//! them) is there, trust that check. Files rewritten in place under the
//! same lock go unnoticed by a handle that checked them before, as any
//! change to `data/` after a check would.
//!
//! **A free-space floor** ([`CacheInfo::min_free_bytes`], key
//! [`MIN_FREE_KEY`] in `cache.info`, `fscache init --min-free`) makes a
//! commit that would leave less free space on the file system evict least
//! recently used entries first, or find no room, whatever the maximum: an
//! unlimited cache then no longer fills its disk. Without a floor it costs
//! nothing; with one, a `statvfs` per commit.
//!
//! **Across a reboot** locks vanish with the processes; entries stay, tagged
//! with the boot id that made them, so callers can tell old from new (see
//! [`EarlierBoot`] and *Durability* below for a power cut).
//!
//! **On NFS** OFD locks go through the lock manager and `ESTALE` is handled,
//! but rename and lock coherence are weaker than on a local file system:
//! use a local file system.
//!
//! # Durability
//!
//! A process crash loses nothing that was committed: the kernel keeps what
//! a dead process wrote. A power cut (or a kernel crash) loses what the
//! kernel had not yet written to the disk, and the file system may then
//! have kept a rename but not the data of the files it moved. What a power
//! cut leaves depends on the [`Durability`] a commit used:
//!
//! * [`Durability::None`], the default and what osbuild does: nothing is
//!   synced, and entries committed shortly before the cut (typically in
//!   the last half minute) may be lost entirely or, on ext4, come back
//!   under their name with empty or zero-filled files: ext4 commits the
//!   rename of a new directory within seconds, but may write the data of
//!   the files inside it half a minute later. Their `object.info` may be
//!   empty too. A caller who cares opens the
//!   cache with [`EarlierBoot::MissUnlessDurable`]: the entries at risk are
//!   exactly those that a *different boot* committed without
//!   [`Durability::Sync`], and such entries are then misses.
//! * [`Durability::Sync`]: `commit` makes the entry's files and
//!   directories, its `object.info` and the size it adds to `cache.size`
//!   durable before the rename that publishes it, and the rename before it
//!   returns. Once it has returned [`Commit::Stored`], the entry survives a
//!   power cut whole; before that, a power cut leaves it absent (or as an
//!   orphan `uuid-*` directory, which the sweep removes), never partial.
//!   The entry's `object.info` records it (`"fscache-durable": true`,
//!   [`ObjectInfo::durable`]). It costs a few fsyncs for a small entry and
//!   one `syncfs` for a large one (see `benches/durability.rs`).
//!
//! Choose the policy per handle ([`OpenOptions::durability`]) or per
//! entry ([`StoreGuard::set_durability`]).
//!
//! After a crash of either kind `cache.size` may count too much, never too
//! little: a size is added before the `object.info` that accounts for it
//! appears (and, with [`Durability::Sync`], is durable before the entry
//! is), and is given back only after it is gone. The excess belongs to
//! orphans, whose size the orphan sweep ([`FsCache::sweep_orphans`], also
//! part of [`FsCache::gc`]) gives back, or to an operation cut short,
//! which [`FsCache::resync`] corrects. Removals are not synced: after a
//! power cut an evicted entry may be back, its size still counted (file
//! systems that journal their metadata in order, as ext4 and XFS do, never
//! keep the smaller size without the removal).
//!
//! # Trees in and out
//!
//! [`FsCache::store_tree`] stores a copy of a file or a directory tree,
//! [`LoadGuard::copy_out`] (or [`FsCache::copy_out`]) copies an entry out
//! to a new directory, and [`StageGuard::promote`] publishes a stage by
//! rename, without a copy. Copies keep modes, times, symbolic links (as
//! links, never followed) and hard links, refuse device files, fifos and
//! sockets, and share blocks with the original where the file system can
//! (`FICLONE` on Btrfs, XFS with reflink, bcachefs; else
//! `copy_file_range`, else `read`/`write`).
//!
//! **Shared blocks are accounted in full.** An entry's size is the sum of
//! `st_blocks` over its tree (FORMAT.md), and `st_blocks` charges a
//! reflinked file all of its blocks, shared or not. So an entry cloned
//! from a tree outside the cache, or copied out again, costs the cache
//! its full size in `cache.size` although the disk holds those blocks
//! only once: the cache's maximum bounds the logical size of its entries,
//! not the space they take on disk (which is at most that, and may be
//! much less).
//!
//! # Small blobs
//!
//! [`FsCache::put_blobs`], [`FsCache::get_blob`] and [`FsCache::has`]
//! store and read named byte strings (a compiler's output, its stdout, its
//! exit code) as the files of an ordinary entry, which osbuild can load
//! like any other. Blobs are read through descriptors below the cache,
//! never following a link, and never more than a limit ([`BLOB_LIMIT`],
//! or [`LoadGuard::read_blob_limited`]'s).
//!
//! # Integrity
//!
//! A commit under [`Integrity::Record`] ([`OpenOptions::integrity`],
//! [`StoreGuard::set_integrity`]) records a SHA-256 [`Digest`] of the
//! entry's `data/` (names, types, modes, contents and link targets; the
//! serialisation is written out at [`Digest`]) in its `object.info`
//! (`"fscache-sha256"`, which osbuild ignores), computed by the walk that
//! measures the tree. [`FsCache::verify`] compares an entry with it;
//! [`FsCache::load_verified`] serves an entry only if it still matches
//! (or records no digest), and counts the others in
//! [`Counters::mismatches`]. [`Integrity::None`], the default, costs
//! nothing.
//!
//! # A remote tier
//!
//! With the `remote` feature, `fscache::remote::TieredCache` puts an object store
//! (S3 and friends, through `object_store`) behind a cache, so that
//! entries built on one machine are hits on another; the object format,
//! the checks a download passes and the failure model are in
//! `fscache::remote`'s documentation.
//!
//! # Security
//!
//! Every operation works relative to descriptors of the cache directories
//! and never follows a symbolic link found inside the cache
//! (`openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, or `O_NOFOLLOW` at
//! each step on older kernels); removal never leaves the cache. Entry names
//! are single path components ([`validate_name`]). Trees are measured
//! and removed by a loop that holds at most 17 descriptors whatever their
//! depth, and that stops rather than follow a directory moved out of the
//! tree under it. The cache is meant for cooperating users: anyone who can
//! write to it can delete entries.
//!
//! # Sharing a cache between users
//!
//! Users who share a group can share a cache. Make its root a setgid
//! directory of that group, and have every user work under umask `002`:
//!
//! ```text
//! install -d -m 2775 -g GROUP DIR
//! ```
//!
//! Files are created with mode `0666` and directories with `0777`, minus
//! the umask, and below a setgid directory the kernel gives everything its
//! group (and new directories the setgid bit), so with umask `002` each
//! user may lock, evict and remove every other user's entries and update
//! `cache.size` and `cache.info`. A rewritten `cache.size` or `cache.info`
//! keeps the mode it had.
//!
//! Under the default umask `022` each user's entries are that user's own.
//! Others may load them, but to everything that removes they are entries
//! to skip, just like entries in use: [`FsCache::evict`] answers
//! [`Eviction::Denied`]; [`FsCache::clear`], [`FsCache::gc`] and
//! [`FsCache::sweep_orphans`] go on past them and count them in their
//! `denied` fields; a store that needs room evicts only what it may, or
//! reports [`Commit::NoRoom`]. The cache's own directories and files must
//! still be group-writable, so let the first [`FsCache::open`] (which
//! creates them) run under umask `002`.
//!
//! An entry osbuild made is never group-writable (osbuild creates its
//! files `0644`), so to any other user it is one to skip; and when osbuild
//! rewrites `cache.size`, the new file is writable by its owner only.
//!
//! A build lock is locked exclusively, so it needs the same write access:
//! where another user's `builds/<name>` keeps us out, [`FsCache::get_or_build`]
//! builds without waiting for theirs, and the first commit wins.
//!
//! A load records the entry's last use only when its owner loads it
//! (setting the access time alone is the owner's right), so in a shared
//! cache the eviction order follows the owners' uses.
//!
//! # Limitations
//!
//! Linux only (OFD locks, `renameat2`, `openat2`, `O_TMPFILE`).
//!
//! A handle that is never dropped (one kept in a `static`, or a process
//! that exits with `std::process::exit`) does not wait for its remover
//! thread: up to 8 evicted entries may stay behind as invalid entries,
//! which the next sweep removes.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod atomic;
mod beneath;
mod bootid;
mod cache;
mod durability;
mod error;
#[doc(hidden)]
pub mod failpoint;
mod feature;
mod info;
mod integrity;
mod layout;
pub mod lock;
mod maint;
mod name;
#[cfg(feature = "archive")]
pub mod remote;
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod replay;
mod size;
#[cfg(feature = "stress")]
pub mod stress;
mod sync;
mod tree;

pub use bootid::app_boot_id;
pub use cache::{
    BuildOptions, Built, Commit, CommitError, Counters, FsCache, GiveUp, LoadGuard, OpenOptions,
    PromoteError, StageGuard, StoreGuard, BLOB_LIMIT, DEFAULT_MAXIMUM,
};
pub use durability::{Durability, EarlierBoot};
pub use error::{Error, ErrorKind, Op, Result};
pub use info::{
    parse_size, CacheInfo, MaxSize, ObjectInfo, DEFAULT_LOW_WATERMARK_PERCENT, DIGEST_KEY,
    DURABLE_KEY, LOW_WATERMARK_KEY, MAX_ENTRY_SIZE, MIN_FREE_KEY, VERSION_CURRENT, VERSION_MINIMUM,
};
pub use integrity::{Digest, Integrity, Verification};
pub use layout::ROOT_LAYOUT;
pub use lock::Wait;
pub use maint::{
    ClearReport, EntryInfo, Eviction, GcOptions, GcReport, Listing, Reason, Removed, ResyncReport,
    Stats, SweepReport, Unremovable,
};
pub use name::{validate_name, MAX_NAME_LEN};
pub use tree::Copied;

#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
