//! `OpenOptions`: how a cache is opened (whether to create it, how long to
//! wait for it), in the builder shape of `std::fs::OpenOptions`.

use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Arc;

use rustix::fs::{statat, AtFlags, FileType};
use rustix::io::Errno;

use crate::atomic::{Dir, Replace};
use crate::durability::{Durability, EarlierBoot};
use crate::error::{Error, IoContext, Op, Result};
use crate::info::{CacheInfo, MaxSize};
use crate::integrity::Integrity;
use crate::layout;
use crate::lock::{LockKind, Wait};
use crate::size::HealGate;
use crate::FsCache;

use super::{read_info, Inner, LiveCounters};

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;
    use std::path::PathBuf;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |var| {
            vars.iter()
                .find(|(k, _)| *k == var)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn the_default_directory_follows_xdg_and_says_what_is_missing() {
        let dir = |vars| default_dir("tool", env(vars));
        assert_eq!(
            dir(&[("XDG_CACHE_HOME", "/x"), ("HOME", "/h")]).unwrap(),
            PathBuf::from("/x/tool")
        );
        assert_eq!(
            dir(&[("HOME", "/h")]).unwrap(),
            PathBuf::from("/h/.cache/tool")
        );
        // A relative XDG_CACHE_HOME is ignored, as the specification says.
        assert_eq!(
            dir(&[("XDG_CACHE_HOME", "rel"), ("HOME", "/h")]).unwrap(),
            PathBuf::from("/h/.cache/tool")
        );
        let e = dir(&[("HOME", "")]).unwrap_err();
        assert!(matches!(e, Error::NoCacheHome), "{e:?}");
        assert!(e.to_string().contains("XDG_CACHE_HOME") && e.to_string().contains("HOME"));
        let e = default_dir("../etc", env(&[("HOME", "/h")])).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::InvalidName);
    }
}

/// Options for opening a cache; [`FsCache::open`] is
/// `OpenOptions::new().open(..)`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use fscache::{ErrorKind, OpenOptions, Wait};
/// let dir = tempfile::tempdir().unwrap();
/// // A directory that is not a cache is refused, and left as it is.
/// let e = OpenOptions::new().create(false).open("my-tool", dir.path()).unwrap_err();
/// assert_eq!(e.kind(), ErrorKind::NotACache);
/// assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
/// // Create it, then open it again without waiting long for a busy cache.
/// let cache = OpenOptions::new().open("my-tool", dir.path())?;
/// let again = OpenOptions::new()
///     .create(false)
///     .wait(Wait::Timeout(Duration::from_secs(5)))
///     .open("my-tool", dir.path())?;
/// # Ok::<(), fscache::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct OpenOptions {
    create: bool,
    /// What a cache this open creates starts with.
    initial: CacheInfo,
    wait: Wait,
    durability: Durability,
    earlier_boot: EarlierBoot,
    integrity: Integrity,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions::new()
    }
}

impl OpenOptions {
    /// What [`FsCache::open`] does: create a missing cache (and the path to
    /// it), and wait for as long as another holder keeps the whole cache
    /// (an exclusive lock on `cache.lock`).
    pub fn new() -> OpenOptions {
        OpenOptions {
            create: true,
            initial: CacheInfo::default(),
            wait: Wait::Forever,
            durability: Durability::None,
            earlier_boot: EarlierBoot::Serve,
            integrity: Integrity::None,
        }
    }

    /// Whether to create the cache if the directory is missing or is not
    /// one. Without it, such a directory is refused with
    /// [`Error::NotACache`] and nothing is written to it.
    pub fn create(&mut self, create: bool) -> &mut OpenOptions {
        self.create = create;
        self
    }

    /// The maximum size of a cache this open creates (written into its
    /// new `cache.info`; an existing cache keeps its own). Without it a new
    /// cache has osbuild's default, a maximum of 0: a staging area that
    /// stores nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// use fscache::{MaxSize, OpenOptions};
    /// let dir = tempfile::tempdir().unwrap();
    /// let cache = OpenOptions::new()
    ///     .maximum_size(MaxSize::Bytes(10 << 30))
    ///     .open("my-tool", dir.path())?;
    /// let entry = cache.store("first")?;
    /// assert!(entry.commit()?.is_stored(), "usable from the first line");
    /// # Ok::<(), fscache::Error>(())
    /// ```
    pub fn maximum_size(&mut self, max: MaxSize) -> &mut OpenOptions {
        self.initial.maximum_size = Some(max);
        self
    }

    /// The low watermark (1 to 100 percent of the maximum) of a cache this
    /// open creates; an existing cache keeps its own.
    pub fn low_watermark_percent(&mut self, percent: u8) -> &mut OpenOptions {
        self.initial.low_watermark_percent = Some(percent);
        self
    }

    /// How long to wait while another holder has the whole cache to
    /// itself: [`Wait::Never`] fails at once with [`Error::WouldBlock`],
    /// [`Wait::Timeout`] with [`Error::TimedOut`] once it has passed.
    pub fn wait(&mut self, wait: Wait) -> &mut OpenOptions {
        self.wait = wait;
        self
    }

    /// Commit the handle's entries with `durability` (the default is
    /// [`Durability::None`]); [`StoreGuard::set_durability`] overrides it
    /// for one entry. See the crate docs for what survives a power cut.
    ///
    /// [`StoreGuard::set_durability`]: crate::StoreGuard::set_durability
    ///
    /// # Examples
    ///
    /// ```
    /// use fscache::{Durability, OpenOptions};
    /// let dir = tempfile::tempdir().unwrap();
    /// let cache = OpenOptions::new().durability(Durability::Sync).open("my-tool", dir.path())?;
    /// # Ok::<(), fscache::Error>(())
    /// ```
    pub fn durability(&mut self, durability: Durability) -> &mut OpenOptions {
        self.durability = durability;
        self
    }

    /// Load entries under `policy` (the default is [`EarlierBoot::Serve`]):
    /// with [`EarlierBoot::MissUnlessDurable`], an entry committed without
    /// [`Durability::Sync`] during an earlier boot is a miss, since a power
    /// cut may have emptied its files.
    ///
    /// # Examples
    ///
    /// ```
    /// use fscache::{EarlierBoot, OpenOptions};
    /// let dir = tempfile::tempdir().unwrap();
    /// let cache = OpenOptions::new()
    ///     .earlier_boot(EarlierBoot::MissUnlessDurable)
    ///     .open("my-tool", dir.path())?;
    /// assert!(cache.load("anything")?.is_none());
    /// # Ok::<(), fscache::Error>(())
    /// ```
    pub fn earlier_boot(&mut self, policy: EarlierBoot) -> &mut OpenOptions {
        self.earlier_boot = policy;
        self
    }

    /// Commit the handle's entries with `integrity` (the default is
    /// [`Integrity::None`]): with [`Integrity::Record`], a digest of each
    /// entry's `data/` goes into its `object.info`, for
    /// [`FsCache::verify`] and [`FsCache::load_verified`] to check.
    /// [`StoreGuard::set_integrity`] overrides it for one entry.
    ///
    /// [`StoreGuard::set_integrity`]: crate::StoreGuard::set_integrity
    ///
    /// # Examples
    ///
    /// ```
    /// use fscache::{Integrity, MaxSize, OpenOptions, Verification};
    /// let dir = tempfile::tempdir().unwrap();
    /// let cache = OpenOptions::new().integrity(Integrity::Record).open("my-tool", dir.path())?;
    /// cache.set_maximum_size(MaxSize::Unlimited)?;
    /// let entry = cache.store("checked")?;
    /// std::fs::write(entry.path().join("out"), b"result").unwrap();
    /// assert!(entry.commit()?.is_stored());
    /// assert_eq!(cache.verify("checked")?, Verification::Intact);
    /// # Ok::<(), fscache::Error>(())
    /// ```
    pub fn integrity(&mut self, integrity: Integrity) -> &mut OpenOptions {
        self.integrity = integrity;
        self
    }

    /// Open the cache at `path` for the application `app_id`.
    ///
    /// A directory is a cache when it holds `cache.info`; what else the
    /// format's layout needs (`objects/`, `stage/`, the other top-level
    /// files) is completed if missing, each atomically, never rewriting
    /// what exists, as every osbuild process does when it opens a cache.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for an empty `app_id` or a low watermark
    /// outside 1..=100;
    /// [`Error::NotACache`] without [`OpenOptions::create`] for a missing
    /// directory or one without `cache.info`; [`Error::WouldBlock`] or
    /// [`Error::TimedOut`] per [`OpenOptions::wait`]; [`Error::Io`] if the
    /// directories or files cannot be created or opened (a symbolic link
    /// planted at `objects`, `stage` or a top-level file is refused), or
    /// the boot id cannot be read.
    pub fn open(&self, app_id: &str, path: impl AsRef<Path>) -> Result<FsCache> {
        if app_id.is_empty() {
            return Err(Error::InvalidConfig {
                key: "app-id",
                reason: "an application id that is not empty (it keys the boot id)",
            });
        }
        self.initial.validate()?;
        let path = path.as_ref();
        if self.create {
            std::fs::create_dir_all(path).at(Op::CreateDir, || path.to_owned())?;
        }
        let root = match Dir::open(path) {
            Err(e) if !self.create && e.is_not_a_file() => {
                return Err(Error::NotACache {
                    path: path.to_owned(),
                    reason: "there is no such directory",
                })
            }
            other => other?,
        };
        self.open_root(app_id, root, None)
    }

    /// Open the cache whose root directory is `root`; `parent` for a
    /// namespace, whose sizes its parent accounts too.
    pub(crate) fn open_root(
        &self,
        app_id: &str,
        root: Dir,
        parent: Option<FsCache>,
    ) -> Result<FsCache> {
        if !self.create && !has_file(&root, layout::CACHE_INFO)? {
            return Err(Error::NotACache {
                path: root.path().to_owned(),
                reason: "it has no cache.info",
            });
        }
        let objects = scaffold(&root, &self.initial)?;
        let stage = root.open_dir(layout::STAGE)?;
        let boot_id = crate::bootid::current(app_id)?;
        let cache_lock = root.lock(layout::CACHE_LOCK, LockKind::Shared, self.wait)?;
        let info = read_info(&root)?;
        Ok(FsCache::from(Inner {
            root,
            objects: Arc::new(objects),
            stage: Arc::new(stage),
            app_id: app_id.to_owned(),
            boot_id,
            info: super::Config::new(info),
            heal_gate: HealGate::default(),
            counters: LiveCounters::default(),
            durability: self.durability,
            earlier_boot: self.earlier_boot,
            parent,
            integrity: self.integrity,
            validated: Default::default(),
            reserve: Default::default(),
            sampler: Default::default(),
            remover: crate::maint::Remover::new(),
            _cache_lock: cache_lock,
        }))
    }
}

/// The maximum of a cache [`FsCache::open_default`] creates: ccache's
/// default, room for a build tool's working set that does not surprise on
/// a laptop.
pub const DEFAULT_MAXIMUM: MaxSize = MaxSize::Bytes(5 << 30);

impl OpenOptions {
    /// Open the cache of the application `app_id` where the user's caches
    /// live: `$XDG_CACHE_HOME/<app_id>`, else `$HOME/.cache/<app_id>` (the
    /// XDG base directories; a relative value is ignored, as the
    /// specification asks). A cache it creates gets the maximum set by
    /// [`OpenOptions::maximum_size`], or [`DEFAULT_MAXIMUM`]: a cache in a
    /// user's home that stores nothing would only surprise, one without a
    /// limit could fill the disk.
    ///
    /// # Errors
    ///
    /// [`Error::NoCacheHome`] if neither variable holds an absolute path;
    /// [`Error::InvalidName`] if `app_id` cannot be a directory name; as
    /// [`OpenOptions::open`] otherwise.
    pub fn open_default(&self, app_id: &str) -> Result<FsCache> {
        let dir = default_dir(app_id, |var| std::env::var_os(var))?;
        let mut options = self.clone();
        if options.initial.maximum_size.is_none() {
            options.initial.maximum_size = Some(DEFAULT_MAXIMUM);
        }
        options.open(app_id, dir)
    }
}

impl FsCache {
    /// `OpenOptions::new().open_default(app_id)`: the application's cache
    /// in the user's cache directory, created with [`DEFAULT_MAXIMUM`] if
    /// it does not exist yet.
    ///
    /// # Errors
    ///
    /// As [`OpenOptions::open_default`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let cache = fscache::FsCache::open_default("my-build-tool")?;
    /// # Ok::<(), fscache::Error>(())
    /// ```
    pub fn open_default(app_id: &str) -> Result<FsCache> {
        OpenOptions::new().open_default(app_id)
    }
}

/// Where the cache of `app_id` lives, by the XDG rules, with `env` to look
/// up variables.
fn default_dir(
    app_id: &str,
    env: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Result<std::path::PathBuf> {
    crate::name::validate_name(app_id)?;
    let absolute = |var| {
        env(var)
            .map(std::path::PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    let base = match absolute("XDG_CACHE_HOME") {
        Some(dir) => dir,
        None => absolute("HOME").ok_or(Error::NoCacheHome)?.join(".cache"),
    };
    Ok(base.join(app_id))
}

/// Whether `root` holds a regular file `name` (not following a link).
fn has_file(root: &Dir, name: &str) -> Result<bool> {
    match statat(root.as_fd(), name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(FileType::from_raw_mode(st.st_mode) == FileType::RegularFile),
        Err(Errno::NOENT) => Ok(false),
        Err(e) => Err(e).at(Op::Stat, || root.join(name)),
    }
}

/// Create what the layout needs and is missing, tolerating racing
/// creators; returns `objects/`.
fn scaffold(root: &Dir, initial: &CacheInfo) -> Result<Dir> {
    root.create_dir(layout::OBJECTS)?;
    root.create_dir(layout::STAGE)?;
    // Best effort: only `get_or_build` needs it, and creates it if missing;
    // a version-1 cache made elsewhere must still open where we may not
    // write (a read-only mount).
    let _ = root.create_dir(layout::BUILDS);
    let objects = root.open_dir(layout::OBJECTS)?;
    let initial_info = initial.initial();
    for (name, content) in [
        (layout::CACHE_TAG, layout::CACHE_TAG_CONTENT),
        (layout::CACHE_INFO, initial_info.as_slice()),
        (layout::CACHE_LOCK, b"".as_slice()),
        (layout::CACHE_SIZE, b"0".as_slice()),
    ] {
        match statat(root.as_fd(), name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(_) => {}
            Err(Errno::NOENT) => {
                let _ = root.write_file(name, content, Replace::No, &objects)?;
            }
            Err(e) => return Err(e).at(Op::Stat, || root.join(name)),
        }
    }
    Ok(objects)
}
