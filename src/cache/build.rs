//! `get_or_build(name)`: when many processes or threads ask at once for a
//! missing entry, one of them builds it and the others wait for it.
//!
//! The askers meet at a *build lock*, `builds/<name>`: an empty file that
//! the builder holds exclusively while it builds and commits. A waiter
//! that gets the lock loads first, and so finds what the builder
//! committed. The lock is an OFD lock like every other, so a builder that
//! dies (killed, or panicking with `panic = "abort"`) lets go of it with
//! its last descriptor, and the next waiter builds.
//!
//! Lock files are created atomically where missing and removed only by a
//! holder of their exclusive lock: the builder, once done, or the orphan
//! sweep, for one nobody holds (what a killed builder leaves). A waiter
//! that opened a file since removed finds that out in the safe-open loop
//! and takes the file now at the name.

use std::fmt;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::Instant;

use rustix::fs::{statat, unlinkat, AtFlags, FileType};
use rustix::io::Errno;

use crate::atomic::{Dir, Replace};
use crate::durability::Durability;
use crate::error::{Error, ErrorKind, IoContext, Op, Result};
use crate::info::MaxSize;
use crate::layout::{self, is_regular};
use crate::lock::{FileLock, LockKind, Wait};
use crate::maint::SweepReport;
use crate::name::validate_name;
use crate::FsCache;

use super::{Commit, LoadGuard, StoreGuard};

/// How [`FsCache::get_or_build`] waits for another asker's build, and
/// what it does when it stops waiting.
///
/// The default waits for as long as the other build takes
/// ([`Wait::Forever`]), and commits with the handle's durability.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use fscache::{BuildOptions, Durability, GiveUp, Wait};
/// let mut options = BuildOptions::new();
/// options
///     .wait(Wait::Timeout(Duration::from_secs(30)))
///     .give_up(GiveUp::Fail)
///     .durability(Durability::Sync);
/// assert_eq!(options.wait_policy(), Wait::Timeout(Duration::from_secs(30)));
/// # Ok::<(), fscache::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildOptions {
    wait: Wait,
    give_up: GiveUp,
    durability: Option<Durability>,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions::new()
    }
}

impl BuildOptions {
    /// Wait forever for another asker's build; if that is ever given up
    /// on, build; commit with the handle's durability.
    pub fn new() -> BuildOptions {
        BuildOptions {
            wait: Wait::Forever,
            give_up: GiveUp::Build,
            durability: None,
        }
    }

    /// How long to wait for another asker who is building the entry now.
    /// It bounds the wait for *their* build, not the time a build of our
    /// own takes. When it runs out, [`BuildOptions::give_up`] says what
    /// happens.
    pub fn wait(&mut self, wait: Wait) -> &mut BuildOptions {
        self.wait = wait;
        self
    }

    /// What to do when [`BuildOptions::wait`] runs out (the default is
    /// [`GiveUp::Build`]).
    pub fn give_up(&mut self, give_up: GiveUp) -> &mut BuildOptions {
        self.give_up = give_up;
        self
    }

    /// Commit what is built with `durability` rather than the handle's
    /// (see [`OpenOptions::durability`](crate::OpenOptions::durability)).
    pub fn durability(&mut self, durability: Durability) -> &mut BuildOptions {
        self.durability = Some(durability);
        self
    }

    /// The wait set by [`BuildOptions::wait`].
    pub fn wait_policy(&self) -> Wait {
        self.wait
    }

    /// The policy set by [`BuildOptions::give_up`].
    pub fn give_up_policy(&self) -> GiveUp {
        self.give_up
    }
}

/// What [`FsCache::get_or_build`] does once its [`Wait`] for another
/// asker's build has run out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GiveUp {
    /// Build the entry too, without the build lock. Both builds are
    /// committed; the second finds the name taken and is handed the
    /// first one's entry, so either way the caller gets a whole entry.
    #[default]
    Build,
    /// Fail with the contention error: [`Error::WouldBlock`] for
    /// [`Wait::Never`], [`Error::TimedOut`] for [`Wait::Timeout`] (both of
    /// [`ErrorKind::Contended`]).
    Fail,
}

/// What [`FsCache::get_or_build`] got: the entry from the cache, or what it
/// built when the cache would not keep it.
#[must_use = "dropping it releases the entry (or removes what was built)"]
#[derive(Debug)]
#[non_exhaustive]
pub enum Built {
    /// The entry was in the cache, or another asker built it meanwhile.
    /// Held with a shared lock, as by [`FsCache::load`].
    Found(LoadGuard),
    /// This call built the entry and stored it. It is held with the lock
    /// it was committed under (shared now, never released in between), so
    /// it cannot be evicted between the commit and the caller's use.
    Stored(LoadGuard),
    /// This call built the entry, but the cache did not keep it and has no
    /// other entry of that name to offer. `entry` still holds what was
    /// built, until it is dropped; a caller may also try
    /// [`StoreGuard::commit`] again later (after a [`FsCache::gc`], say).
    Uncached {
        /// What was built, in an entry as before its commit.
        entry: StoreGuard,
        /// Why the cache did not keep it: [`Commit::TooLarge`],
        /// [`Commit::NoRoom`], [`Commit::Unsupported`], or
        /// [`Commit::NameTaken`] by an entry that could then not be
        /// loaded (being evicted, or invalid).
        outcome: Commit,
    },
}

impl Built {
    /// The entry's `data/` directory, whichever way it was got.
    pub fn path(&self) -> &Path {
        match self {
            Built::Found(hit) | Built::Stored(hit) => hit.path(),
            Built::Uncached { entry, .. } => entry.path(),
        }
    }

    /// Whether this call ran the build.
    pub fn built_here(&self) -> bool {
        !matches!(self, Built::Found(_))
    }
}

impl fmt::Display for Built {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Built::Found(_) => f.write_str("found"),
            Built::Stored(_) => f.write_str("built and stored"),
            Built::Uncached { outcome, .. } => write!(f, "built, not cached: {outcome}"),
        }
    }
}

/// Where a `get_or_build` stands before its build.
enum Before {
    /// Done: the entry is there.
    Found(LoadGuard),
    /// Ours to build, holding the build lock (or not, having given up on
    /// it or not being able to use one).
    Build(Option<BuildLock>, Box<StoreGuard>),
}

impl FsCache {
    /// Load the entry `name`, or build it if it is missing, so that of all
    /// the processes and threads that ask for it at the same time, exactly
    /// one runs `build` and the others wait for its commit and then load
    /// it.
    ///
    /// `build` fills the empty directory it is given, which becomes the
    /// entry's `data/`; what it returns is committed (see
    /// [`StoreGuard::commit`]). In order:
    ///
    /// 1. [`FsCache::load`]: a hit is returned as [`Built::Found`].
    /// 2. Take the build lock of `name` exclusively, waiting per
    ///    [`BuildOptions::wait`] while another asker builds it.
    /// 3. Load again: whoever held the lock before may have committed it.
    /// 4. Build, commit, and return the entry as [`Built::Stored`], held
    ///    from the commit on; then release the build lock.
    ///
    /// If the builder fails (`build` returns an error), panics, or dies,
    /// its entry is removed, its lock released, and the next waiter
    /// builds; the error (or the panic, after the release) goes to the
    /// builder's caller. A waiter whose wait runs out builds too or fails,
    /// per [`BuildOptions::give_up`]: a second commit of the same name is
    /// safe (it finds the name taken and hands back the first).
    ///
    /// When the cache does not keep what was built (too large, no room, an
    /// unsupported version), the caller still gets it:
    /// [`Built::Uncached`] holds the uncommitted entry until it is
    /// dropped. Building into an entry the function makes and handing
    /// that back, rather than a separate staging copy, costs nothing when
    /// the entry is stored, which is the common case.
    ///
    /// The single flight needs the build lock; without one, every asker
    /// builds and the first commit wins, as with plain [`FsCache::store`].
    /// That is so in a cache whose maximum is 0 (nothing can be kept, so
    /// nobody waits for a build that cannot be shared), in a cache of an
    /// unsupported version (whose objects we may not touch), where the
    /// build lock is another user's and its mode keeps us from taking it
    /// (see *Sharing a cache between users* in the crate docs), and where
    /// something that is not a file was put at its name.
    ///
    /// # Errors
    ///
    /// What `build` returns, as it is. Otherwise (through `E:
    /// From<`[`Error`]`>`): [`Error::InvalidName`] for a name no entry can
    /// have; [`Error::WouldBlock`] or [`Error::TimedOut`] with
    /// [`GiveUp::Fail`], when another asker kept building past the wait;
    /// [`Error::Io`] or [`Error::Rename`] when loading, locking or
    /// committing fails (what was built is removed).
    ///
    /// # Deadlocks
    ///
    /// A `build` that asks for its own name waits for itself: with
    /// [`Wait::Forever`], forever. A `build` may ask for *other* entries
    /// (its dependencies) as long as no chain of such requests comes back
    /// to a name already being built on it.
    ///
    /// # Examples
    ///
    /// ```
    /// use fscache::{BuildOptions, Built, FsCache, MaxSize};
    /// let dir = tempfile::tempdir().unwrap();
    /// let cache = FsCache::open("my-tool", dir.path())?;
    /// cache.set_maximum_size(MaxSize::Unlimited)?;
    /// let options = BuildOptions::new();
    /// let got = cache.get_or_build("gcc-13", &options, |data| {
    ///     std::fs::write(data.join("out.o"), b"\x7fELF").map_err(|e| fscache::Error::Io {
    ///         op: fscache::Op::Write,
    ///         path: data.join("out.o"),
    ///         source: e,
    ///     })
    /// })?;
    /// assert!(matches!(got, Built::Stored(_)));
    /// assert_eq!(std::fs::read(got.path().join("out.o")).unwrap(), b"\x7fELF");
    /// drop(got);
    /// // The second time it is found, and `build` does not run.
    /// let again = cache.get_or_build("gcc-13", &options, |_| -> fscache::Result<()> {
    ///     unreachable!("it is in the cache")
    /// })?;
    /// assert!(matches!(again, Built::Found(_)));
    /// # Ok::<(), fscache::Error>(())
    /// ```
    ///
    /// A build error of the caller's own type comes back as it is:
    ///
    /// ```
    /// use fscache::{BuildOptions, FsCache, MaxSize};
    /// #[derive(Debug)]
    /// enum MyError { Cache(fscache::Error), Compiler(String) }
    /// impl From<fscache::Error> for MyError {
    ///     fn from(e: fscache::Error) -> Self { MyError::Cache(e) }
    /// }
    /// let dir = tempfile::tempdir().unwrap();
    /// let cache = FsCache::open("my-tool", dir.path())?;
    /// cache.set_maximum_size(MaxSize::Unlimited)?;
    /// let got = cache.get_or_build("broken", &BuildOptions::new(), |_| {
    ///     Err(MyError::Compiler("syntax error".into()))
    /// });
    /// assert!(matches!(got, Err(MyError::Compiler(_))));
    /// assert!(cache.load("broken")?.is_none());
    /// # Ok::<(), fscache::Error>(())
    /// ```
    pub fn get_or_build<F, E>(
        &self,
        name: &str,
        options: &BuildOptions,
        build: F,
    ) -> Result<Built, E>
    where
        F: FnOnce(&Path) -> Result<(), E>,
        E: From<Error>,
    {
        let (lock, entry) = match self.before_build(name, options)? {
            Before::Found(hit) => return Ok(Built::Found(hit)),
            Before::Build(lock, entry) => (lock, entry),
        };
        // On an error or a panic, `entry` goes first (removing what was
        // built), then `lock` (letting the next waiter build).
        build(entry.path())?;
        let built = self.publish(name, *entry)?;
        drop(lock);
        Ok(built)
    }

    /// Steps 1 to 3 of `get_or_build`, and the entry to build into.
    fn before_build(&self, name: &str, options: &BuildOptions) -> Result<Before> {
        validate_name(name)?;
        if let Some(hit) = self.load(name)? {
            return Ok(Before::Found(hit));
        }
        let lock = self.build_lock(name, options)?;
        if lock.is_some() {
            if let Some(hit) = self.load(name)? {
                return Ok(Before::Found(hit));
            }
        }
        let mut entry = self.store(name)?;
        if let Some(durability) = options.durability {
            entry.set_durability(durability);
        }
        Ok(Before::Build(lock, Box::new(entry)))
    }

    /// Commit what was built; hand back the stored entry, the entry that
    /// took the name, or (the cache keeping neither) what was built.
    fn publish(&self, name: &str, mut entry: StoreGuard) -> Result<Built> {
        let (outcome, published) = entry.try_commit(true)?;
        if let Some(held) = published {
            return Ok(Built::Stored(LoadGuard::just_committed(
                self, name, held.info, held.lock,
            )));
        }
        // Not ours in the cache; another's may be (it took the name, or
        // was stored by a plain `store` while we built).
        match self.load(name)? {
            Some(hit) => Ok(Built::Found(hit)),
            None => Ok(Built::Uncached { entry, outcome }),
        }
    }

    /// The build lock of `name`, held exclusively; `None` where there is
    /// none to use (see `get_or_build`) or, with [`GiveUp::Build`], the
    /// wait for it ran out.
    fn build_lock(&self, name: &str, options: &BuildOptions) -> Result<Option<BuildLock>> {
        let info = self.info();
        if !info.is_supported() || info.effective_maximum() == MaxSize::Bytes(0) {
            return Ok(None);
        }
        let builds = match self.builds_dir() {
            Ok(builds) => builds,
            Err(e) if e.is_denied() || e.is_not_a_file() => return Ok(None),
            Err(e) => return Err(e),
        };
        let start = Instant::now();
        loop {
            let wait = options.wait.left_since(start);
            match builds.lock(name, LockKind::Exclusive, wait) {
                Ok(lock) => {
                    return Ok(Some(BuildLock {
                        builds,
                        name: name.to_owned(),
                        lock,
                    }))
                }
                Err(e) if e.kind() == ErrorKind::Contended => {
                    return match options.give_up {
                        GiveUp::Build => Ok(None),
                        GiveUp::Fail => Err(match e {
                            Error::TimedOut { path, .. } => Error::TimedOut {
                                path,
                                after: match options.wait {
                                    Wait::Timeout(limit) => limit,
                                    _ => Default::default(),
                                },
                            },
                            e => e,
                        }),
                    };
                }
                Err(e) if e.is_denied() => return Ok(None),
                Err(e) if e.errno() == Some(Errno::NOENT.raw_os_error()) => {
                    // The first asker, or the file was removed by its last
                    // holder: make one (racing askers make one between
                    // them) and lock that.
                    match builds.write_file(name, b"", Replace::No, self.objects()) {
                        Ok(_) => {}
                        Err(e) if e.is_denied() => return Ok(None),
                        Err(e) => return Err(e),
                    }
                }
                // A link, a directory or a socket planted at the name: no
                // lock to meet at, but no reason to refuse the entry.
                Err(e) if e.is_not_a_file() => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }

    /// `builds/`, created if missing (a cache scaffolded where it could not
    /// be created, or by an older version).
    fn builds_dir(&self) -> Result<Dir> {
        match self.root().open_dir(layout::BUILDS) {
            Err(e) if e.errno() == Some(Errno::NOENT.raw_os_error()) => {
                self.root().create_dir(layout::BUILDS)?;
                self.root().open_dir(layout::BUILDS)
            }
            other => other,
        }
    }

    /// The orphan sweep's part for `builds/`: remove every lock file that
    /// nobody holds (a killed builder's), counted in
    /// [`SweepReport::build_locks`]. One held by a live builder, or one
    /// we may not lock, stays.
    pub(crate) fn sweep_build_locks(&self, report: &mut SweepReport) -> Result<()> {
        let builds = match self.root().open_dir(layout::BUILDS) {
            Ok(builds) => builds,
            Err(e) if e.is_not_a_file() => return Ok(()),
            Err(e) => return Err(e),
        };
        for (name, kind) in crate::tree::list(&builds)? {
            if kind != FileType::RegularFile {
                continue;
            }
            let lock = match builds.lock(&name, LockKind::Exclusive, Wait::Never) {
                Ok(lock) => lock,
                Err(e) if e.kind() == ErrorKind::Contended => continue,
                Err(e) if e.is_not_a_file() || e.is_denied() => continue,
                Err(e) => return Err(e),
            };
            if lock.locked_stat().is_some_and(is_regular) && unlink_held(&builds, &name, &lock)? {
                report.build_locks += 1;
            }
        }
        Ok(())
    }
}

/// The exclusively held build lock of one name. Dropping it removes the
/// file and then releases it: `builds/` keeps no file per name ever built,
/// and waiters on the old file find it gone and meet at a new one.
struct BuildLock {
    builds: Dir,
    name: String,
    lock: FileLock,
}

impl Drop for BuildLock {
    fn drop(&mut self) {
        // Best effort: a file left behind is the sweep's.
        let _ = unlink_held(&self.builds, &self.name, &self.lock);
        // `lock` is released after this, as the fields drop.
    }
}

/// Unlink `name` in `builds`, if it is still the file `lock` holds
/// exclusively. Only a holder of a lock file's exclusive lock removes it,
/// so it cannot have been replaced since the safe-open loop checked; we
/// check again because a file we did not make may be there (a hand's).
/// Returns whether it was removed; one we may not remove stays.
fn unlink_held(builds: &Dir, name: &str, lock: &FileLock) -> Result<bool> {
    let Some(ours) = lock.locked_stat() else {
        return Ok(false);
    };
    match statat(builds.as_fd(), name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if st.st_dev == ours.st_dev && st.st_ino == ours.st_ino => {}
        Ok(_) | Err(Errno::NOENT) => return Ok(false),
        Err(e) => return Err(e).at(Op::Stat, || builds.join(name)),
    }
    match unlinkat(builds.as_fd(), name, AtFlags::empty()) {
        Ok(()) => Ok(true),
        Err(Errno::NOENT) | Err(Errno::ACCESS) | Err(Errno::PERM) => Ok(false),
        Err(e) => Err(e).at(Op::Unlink, || builds.join(name)),
    }
}
