//! [`Remote`] (one prefix of one object store) and [`TieredCache`] (a
//! local cache in front of it).

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt};

use super::archive::{self, Archived, Limits, Refusal, UnpackError};
use super::client::{self, Client, Put, RemoteOp, Tuning};
use super::{escape, unescape, KEY_VERSION, STAGING};
use crate::error::{Error, ErrorKind, Result};
use crate::{BuildOptions, Built, Commit, CommitError, FsCache, LoadGuard, MaxSize, StoreGuard};

/// One prefix of one object store: where a [`TieredCache`]'s entries
/// live remotely. Blocking; it owns the small runtime that drives the
/// store.
pub struct Remote {
    client: Client,
    prefix: String,
    limits: Limits,
}

impl fmt::Debug for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Remote")
            .field("endpoint", &self.client.endpoint)
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// An entry of the remote, as a listing shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteEntry {
    /// The entry's name.
    pub name: String,
    /// Its object's key.
    pub key: String,
    /// The archive's size in bytes.
    pub bytes: u64,
    /// When the object was written.
    pub last_modified: SystemTime,
}

/// What became of an upload.
#[derive(Debug)]
#[must_use = "an upload may have been deferred; check what happened"]
#[non_exhaustive]
pub enum Upload {
    /// The entry's archive is now the remote object, `bytes` long.
    Uploaded {
        /// The archive's size.
        bytes: u64,
    },
    /// Another writer's object was there first and stays (like
    /// [`Commit::NameTaken`]): harmless.
    AlreadyThere,
    /// Not uploaded: the remote failed ([`Error::Remote`]) or the entry
    /// cannot be archived (an [`Error::Io`] naming the file: a device,
    /// a fifo, a socket). The local entry is unaffected; try again with
    /// [`TieredCache::push`].
    Deferred(Error),
}

impl fmt::Display for Upload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Upload::Uploaded { bytes } => write!(f, "uploaded ({bytes} bytes)"),
            Upload::AlreadyThere => f.write_str("already on the remote"),
            Upload::Deferred(e) => write!(f, "upload deferred: {e}"),
        }
    }
}

fn not_found(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. })
}

impl Remote {
    /// The remote at `prefix` of `store`; `endpoint` is what messages call
    /// it (any user information in it is dropped).
    ///
    /// For first-writer-wins uploads the store must support
    /// `PutMode::Create` and `copy_if_not_exists` (for S3:
    /// `S3ConditionalPut::ETagMatch`, the default, and
    /// `S3CopyIfNotExists::Multipart`; [`Remote::from_url`] sets both).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for a prefix with empty, `.` or `..`
    /// segments; [`Error::Remote`] if the runtime cannot be made.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use fscache::remote::{object_store::memory::InMemory, Remote};
    /// let remote = Remote::new(Arc::new(InMemory::new()), "team/ci", "memory")?;
    /// assert_eq!(remote.key("gcc 13")?, "team/ci/fscache-v1/gcc%2013");
    /// # Ok::<(), fscache::Error>(())
    /// ```
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &str, endpoint: &str) -> Result<Remote> {
        Remote::with_tuning(store, prefix, endpoint, &Tuning::default())
    }

    /// [`Remote::new`] with a part size of [`Tuning::part_size`] (the
    /// store's own timeouts and retries are the store's).
    ///
    /// # Errors
    ///
    /// As [`Remote::new`].
    pub fn with_tuning(
        store: Arc<dyn ObjectStore>,
        prefix: &str,
        endpoint: &str,
        tuning: &Tuning,
    ) -> Result<Remote> {
        let prefix = prefix.trim_matches('/').to_owned();
        if !prefix.is_empty()
            && Key::parse(&prefix).map(|k| k.to_string()).ok().as_ref() != Some(&prefix)
        {
            return Err(Error::InvalidConfig {
                key: "remote",
                reason:
                    "the prefix has empty, `.` or `..` segments or characters a key cannot hold",
            });
        }
        Ok(Remote {
            client: Client::new(store, client::without_userinfo(endpoint), tuning.part_size)?,
            prefix,
            limits: Limits::default(),
        })
    }

    /// The S3 (or S3-compatible) remote `s3://BUCKET[/PREFIX]`, configured
    /// from the environment as `AmazonS3Builder::from_env` reads it
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
    /// `AWS_REGION`, default `us-east-1`; `AWS_ENDPOINT_URL` for a server
    /// other than AWS, over plain HTTP when it is an `http://` URL), with
    /// the default [`Tuning`].
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for a URL that is not `s3://BUCKET...`;
    /// [`Error::Remote`] ([`RemoteOp::Configure`]) if `object_store`
    /// refuses the configuration. Nothing is contacted yet.
    pub fn from_url(url: &str) -> Result<Remote> {
        Remote::from_url_with(url, &Tuning::default())
    }

    /// [`Remote::from_url`] with other timeouts, retries or part size.
    ///
    /// # Errors
    ///
    /// As [`Remote::from_url`].
    pub fn from_url_with(url: &str, tuning: &Tuning) -> Result<Remote> {
        let (bucket, prefix) = client::parse_s3_url(url)?;
        Remote::from_s3(
            AmazonS3Builder::from_env().with_bucket_name(bucket),
            &prefix,
            tuning,
        )
    }

    /// The S3 remote that `builder` describes (bucket, endpoint,
    /// credentials as the caller set them), at `prefix`, with create-only
    /// puts and copies turned on, `tuning`'s timeouts and retries, region
    /// `us-east-1` unless one is set, and plain HTTP allowed when the
    /// endpoint is an `http://` URL.
    ///
    /// # Errors
    ///
    /// As [`Remote::from_url`].
    ///
    /// # Examples
    ///
    /// ```
    /// use fscache::remote::{object_store::aws::AmazonS3Builder, Remote, Tuning};
    /// let builder = AmazonS3Builder::new()
    ///     .with_bucket_name("ci-cache")
    ///     .with_endpoint("http://127.0.0.1:9000")
    ///     .with_access_key_id("AKID")
    ///     .with_secret_access_key("secret");
    /// let remote = Remote::from_s3(builder, "team-a", &Tuning::default())?;
    /// assert_eq!(remote.endpoint(), "http://127.0.0.1:9000/ci-cache");
    /// # Ok::<(), fscache::Error>(())
    /// ```
    pub fn from_s3(builder: AmazonS3Builder, prefix: &str, tuning: &Tuning) -> Result<Remote> {
        let (store, endpoint) = client::s3(builder, tuning)?;
        Remote::with_tuning(store, prefix, &endpoint, tuning)
    }

    /// Where the store is, as messages name it.
    pub fn endpoint(&self) -> &str {
        &self.client.endpoint
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.client.store
    }

    /// Bound what a download may unpack (besides the local cache's
    /// maximum, which always bounds it too).
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    fn dir(&self, segment: &str) -> String {
        if self.prefix.is_empty() {
            segment.to_owned()
        } else {
            format!("{}/{segment}", self.prefix)
        }
    }

    fn key_of(&self, name: &str) -> Result<Key> {
        crate::validate_name(name)?;
        Key::parse(format!("{}/{}", self.dir(KEY_VERSION), escape(name))).map_err(|_| {
            Error::InvalidName {
                name: name.to_owned(),
                reason: "it gives no valid object key",
            }
        })
    }

    /// The key of the entry `name`'s object (see the format in
    /// [`crate::remote`]).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] for a name no entry can have.
    pub fn key(&self, name: &str) -> Result<String> {
        self.key_of(name).map(|k| k.to_string())
    }

    /// Every entry on the remote, in no particular order.
    ///
    /// # Errors
    ///
    /// [`Error::Remote`] ([`RemoteOp::List`]).
    pub fn list(&self) -> Result<Vec<RemoteEntry>> {
        self.list_under(KEY_VERSION, |dir, location| {
            unescape(location.strip_prefix(dir)?.strip_prefix('/')?)
        })
    }

    /// The objects below `<prefix>/<under>`, each named by `name_of` (given
    /// the listed directory and the object's key), or left out where it
    /// gives none.
    fn list_under(
        &self,
        under: &str,
        name_of: impl Fn(&str, &str) -> Option<String>,
    ) -> Result<Vec<RemoteEntry>> {
        let dir = Key::from(self.dir(under));
        let listing = self.client.store.list(Some(&dir)).try_collect::<Vec<_>>();
        let metas = self
            .client
            .block_on(RemoteOp::List, &dir, listing)?
            .map_err(|e| self.client.error(RemoteOp::List, &dir, e))?;
        Ok(metas
            .into_iter()
            .filter_map(|meta| {
                Some(RemoteEntry {
                    name: name_of(dir.as_ref(), meta.location.as_ref())?,
                    key: meta.location.to_string(),
                    bytes: meta.size,
                    last_modified: meta.last_modified.into(),
                })
            })
            .collect())
    }

    /// The staging objects of uploads in parts (see *Uploads* in
    /// [`crate::remote`]): each is deleted by its upload once copied to its
    /// key, so one that stays was left by a process that died in between.
    /// `name` is the staging object's last key segment.
    ///
    /// # Errors
    ///
    /// [`Error::Remote`] ([`RemoteOp::List`]).
    pub fn staging(&self) -> Result<Vec<RemoteEntry>> {
        self.list_under(STAGING, |_, location| {
            location.rsplit('/').next().map(str::to_owned)
        })
    }

    /// Delete a staging object that [`Remote::staging`] listed. One still
    /// being copied by a live upload makes that upload fail (deferred),
    /// never publishes a partial object: delete only old ones.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for a key outside the staging area;
    /// [`Error::Remote`] ([`RemoteOp::Delete`]).
    pub fn delete_staging(&self, staged: &RemoteEntry) -> Result<()> {
        let dir = format!("{}/", self.dir(STAGING));
        let key = Key::parse(&staged.key)
            .ok()
            .filter(|k| k.as_ref().starts_with(&dir));
        let Some(key) = key else {
            return Err(Error::InvalidConfig {
                key: "remote",
                reason: "not a staging object of this remote",
            });
        };
        match self
            .client
            .block_on(RemoteOp::Delete, &key, self.client.store.delete(&key))?
        {
            Ok(()) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(self.client.error(RemoteOp::Delete, &key, e)),
        }
    }

    /// The entry `name` on the remote, if it is there.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`]; [`Error::Remote`] ([`RemoteOp::Head`]).
    pub fn head(&self, name: &str) -> Result<Option<RemoteEntry>> {
        let key = self.key_of(name)?;
        match self
            .client
            .block_on(RemoteOp::Head, &key, self.client.store.head(&key))?
        {
            Ok(meta) => Ok(Some(RemoteEntry {
                name: name.to_owned(),
                key: key.to_string(),
                bytes: meta.size,
                last_modified: meta.last_modified.into(),
            })),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(self.client.error(RemoteOp::Head, &key, e)),
        }
    }

    /// Delete the entry `name` from the remote; whether it was there.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`]; [`Error::Remote`] ([`RemoteOp::Delete`]).
    pub fn delete(&self, name: &str) -> Result<bool> {
        if self.head(name)?.is_none() {
            return Ok(false);
        }
        let key = self.key_of(name)?;
        match self
            .client
            .block_on(RemoteOp::Delete, &key, self.client.store.delete(&key))?
        {
            Ok(()) => Ok(true),
            Err(e) if not_found(&e) => Ok(false),
            Err(e) => Err(self.client.error(RemoteOp::Delete, &key, e)),
        }
    }

    /// Upload the local entry `entry` (held, so it cannot be evicted
    /// meanwhile) as its name's object, create-only.
    pub fn upload(&self, entry: &LoadGuard) -> Upload {
        match self.try_upload(entry) {
            Ok(Put::Created(bytes)) => Upload::Uploaded { bytes },
            Ok(Put::Exists) => Upload::AlreadyThere,
            Err(e) => Upload::Deferred(e),
        }
    }

    fn try_upload(&self, entry: &LoadGuard) -> Result<Put> {
        let key = self.key_of(entry.name())?;
        let staging = Key::from(format!(
            "{}/{}",
            self.dir(STAGING),
            uuid::Uuid::new_v4().simple()
        ));
        let mut sink = self.client.sink(&key, staging);
        match archive::pack(entry.path(), &mut sink) {
            Ok(_) => sink.finish(),
            Err(e) => {
                // The remote's error, if it made the write fail, is the one
                // to report.
                let e = sink.failed.take().unwrap_or(e);
                sink.abort();
                Err(e)
            }
        }
    }

    /// Download the entry `name` into `dest` (a new entry's `data/`, as
    /// [`StoreGuard::path`] gives it), checked as the format says, with
    /// content bounded by `max_bytes` and the remote's limits. `None`: the
    /// remote has no such entry.
    ///
    /// # Errors
    ///
    /// [`Error::RemoteCorrupt`] for an object refused; [`Error::Remote`]
    /// ([`RemoteOp::Get`]) when the download fails; [`Error::Io`] when
    /// `dest` cannot be written. What was unpacked stays in `dest`: drop
    /// the guard to remove it.
    pub fn download_into(
        &self,
        name: &str,
        dest: &Path,
        max_bytes: u64,
    ) -> Result<Option<Archived>> {
        let key = self.key_of(name)?;
        let Some((mut body, size)) = self.client.get(&key)? else {
            return Ok(None);
        };
        let limits = Limits {
            max_bytes: self.limits.max_bytes.min(max_bytes),
            ..self.limits
        };
        // The archive holds the content and at most ~5 KiB of headers per
        // member: a longer object can only be refused, so it is, unread.
        let most = limits
            .max_bytes
            .saturating_add(limits.max_members.saturating_mul(5120))
            .saturating_add(8192);
        if size > most {
            return Err(Error::RemoteCorrupt {
                key: key.to_string(),
                reason: Refusal::TooLarge {
                    limit: limits.max_bytes,
                },
            });
        }
        match archive::unpack(&mut body, dest, &limits) {
            Ok(done) => Ok(Some(done)),
            Err(UnpackError::Refused(reason)) => Err(Error::RemoteCorrupt {
                key: key.to_string(),
                reason,
            }),
            Err(UnpackError::Read(e)) => Err(match body.failed.take() {
                Some(store) => self.client.error(RemoteOp::Get, &key, store),
                None => self.client.error(RemoteOp::Get, &key, e),
            }),
            Err(UnpackError::Local(e)) => Err(e),
        }
    }
}

/// What [`TieredCache::get`] found.
#[derive(Debug)]
#[must_use = "a fetch may have failed; check what happened"]
#[non_exhaustive]
pub enum Fetch {
    /// A local hit (or another local asker downloaded it meanwhile).
    Local(LoadGuard),
    /// Downloaded, checked and committed locally by this call; held as a
    /// local hit is.
    Remote {
        /// The local entry.
        entry: LoadGuard,
        /// What was downloaded.
        archive: Archived,
    },
    /// Neither tier has it.
    Miss,
    /// The remote failed or its object was refused: a miss, with the
    /// reason ([`Error::Remote`], [`Error::RemoteCorrupt`]).
    Failed(Error),
    /// Downloaded and checked, but the local cache did not keep it (too
    /// large, no room, unsupported version): `entry` holds it until it is
    /// dropped.
    Uncached {
        /// The uncommitted entry.
        entry: StoreGuard,
        /// Why the cache did not keep it.
        outcome: Commit,
    },
}

impl Fetch {
    /// The entry's `data/`, if there is one to use.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Fetch::Local(hit) | Fetch::Remote { entry: hit, .. } => Some(hit.path()),
            Fetch::Uncached { entry, .. } => Some(entry.path()),
            Fetch::Miss | Fetch::Failed(_) => None,
        }
    }
}

/// What [`TieredCache::commit`] did: the local commit, then the upload
/// (only for an entry this call stored).
#[derive(Debug)]
#[must_use = "a commit may store nothing and an upload may be deferred"]
pub struct Stored {
    /// The local commit's outcome.
    pub commit: Commit,
    /// The upload's, if the entry was stored locally.
    pub upload: Option<Upload>,
}

/// What a [`TieredCache`] did since it was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RemoteCounters {
    /// Local hits.
    pub local_hits: u64,
    /// Entries downloaded and committed locally.
    pub downloads: u64,
    /// Misses on both tiers.
    pub misses: u64,
    /// Remote failures (connection, timeout, error answers).
    pub failures: u64,
    /// Remote objects refused ([`Error::RemoteCorrupt`]).
    pub refused: u64,
    /// Entries uploaded.
    pub uploads: u64,
    /// Uploads that found another writer's object.
    pub already_there: u64,
    /// Uploads deferred.
    pub deferred: u64,
}

#[derive(Default)]
struct Live([AtomicU64; 8]);

impl Live {
    fn bump(&self, i: usize) {
        self.0[i].fetch_add(1, Ordering::Relaxed);
    }
}

/// A local [`FsCache`] in front of a [`Remote`]: see [`crate::remote`].
///
/// Cheap to clone (the clones share the remote, its runtime and the
/// counters); `Send + Sync`.
#[derive(Clone)]
pub struct TieredCache {
    local: FsCache,
    remote: Arc<Remote>,
    live: Arc<Live>,
}

impl fmt::Debug for TieredCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TieredCache")
            .field("local", &self.local.path())
            .field("remote", &self.remote)
            .finish()
    }
}

/// Why a download inside `get_or_build` did not give an entry.
enum NotFetched {
    Miss,
    Remote(Error),
    Local(Error),
}

impl From<Error> for NotFetched {
    fn from(e: Error) -> Self {
        NotFetched::Local(e)
    }
}

impl TieredCache {
    /// `local` in front of `remote`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use fscache::remote::{object_store::memory::InMemory, Fetch, Remote, TieredCache, Upload};
    /// use fscache::{FsCache, MaxSize};
    /// let bucket = Arc::new(InMemory::new());
    /// let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    /// let machines: Vec<TieredCache> = dirs.iter().map(|d| {
    ///     let local = FsCache::open("my-tool", d.path())?;
    ///     local.set_maximum_size(MaxSize::Unlimited)?;
    ///     Ok(TieredCache::new(local, Remote::new(bucket.clone(), "ci", "memory")?))
    /// }).collect::<fscache::Result<_>>()?;
    ///
    /// let entry = machines[0].local().store("built")?;
    /// std::fs::write(entry.path().join("out"), b"x").unwrap();
    /// let stored = machines[0].commit(entry)?;
    /// assert!(matches!(stored.upload, Some(Upload::Uploaded { .. })));
    ///
    /// let got = machines[1].get("built")?;
    /// assert!(matches!(got, Fetch::Remote { .. }));
    /// assert_eq!(std::fs::read(got.path().unwrap().join("out")).unwrap(), b"x");
    /// # Ok::<(), fscache::Error>(())
    /// ```
    pub fn new(local: FsCache, remote: Remote) -> TieredCache {
        TieredCache {
            local,
            remote: Arc::new(remote),
            live: Arc::default(),
        }
    }

    /// The local cache.
    pub fn local(&self) -> &FsCache {
        &self.local
    }

    /// The remote.
    pub fn remote(&self) -> &Remote {
        &self.remote
    }

    /// What this handle (and its clones) did so far.
    pub fn counters(&self) -> RemoteCounters {
        let v = |i: usize| self.live.0[i].load(Ordering::Relaxed);
        RemoteCounters {
            local_hits: v(0),
            downloads: v(1),
            misses: v(2),
            failures: v(3),
            refused: v(4),
            uploads: v(5),
            already_there: v(6),
            deferred: v(7),
        }
    }

    /// The entry `name`: from the local cache, or else downloaded from the
    /// remote, checked and committed locally (see [`crate::remote`]).
    ///
    /// # Errors
    ///
    /// Only local ones: [`Error::InvalidName`], and what
    /// [`FsCache::get_or_build`] fails with ([`Error::Io`] on the local
    /// cache). Remote failures and refused objects are
    /// [`Fetch::Failed`].
    pub fn get(&self, name: &str) -> Result<Fetch> {
        crate::validate_name(name)?;
        if let Some(hit) = self.local.load(name)? {
            self.live.bump(0);
            return Ok(Fetch::Local(hit));
        }
        let max = match self.local.info().effective_maximum() {
            MaxSize::Bytes(n) => n,
            MaxSize::Unlimited => u64::MAX,
        };
        let mut fetched = None;
        let built = self.local.get_or_build(name, &BuildOptions::new(), |data| {
            match self.remote.download_into(name, data, max) {
                Ok(Some(done)) => {
                    fetched = Some(done);
                    Ok(())
                }
                Ok(None) => Err(NotFetched::Miss),
                Err(e) if matches!(e.kind(), ErrorKind::Remote | ErrorKind::RemoteCorrupt) => {
                    Err(NotFetched::Remote(e))
                }
                Err(e) => Err(NotFetched::Local(e)),
            }
        });
        match built {
            Ok(Built::Found(hit)) => {
                self.live.bump(0);
                Ok(Fetch::Local(hit))
            }
            Ok(Built::Stored(entry)) => {
                self.live.bump(1);
                Ok(Fetch::Remote {
                    entry,
                    archive: fetched.unwrap_or_default(),
                })
            }
            Ok(Built::Uncached { entry, outcome }) => Ok(Fetch::Uncached { entry, outcome }),
            Err(NotFetched::Miss) => {
                self.live.bump(2);
                Ok(Fetch::Miss)
            }
            Err(NotFetched::Remote(e)) => {
                self.live.bump(if e.kind() == ErrorKind::RemoteCorrupt {
                    4
                } else {
                    3
                });
                Ok(Fetch::Failed(e))
            }
            Err(NotFetched::Local(e)) => Err(e),
        }
    }

    /// [`TieredCache::get`] as a plain hit or miss.
    ///
    /// # Errors
    ///
    /// As [`TieredCache::get`].
    pub fn load(&self, name: &str) -> Result<Option<LoadGuard>> {
        Ok(match self.get(name)? {
            Fetch::Local(hit) | Fetch::Remote { entry: hit, .. } => Some(hit),
            _ => None,
        })
    }

    /// The entry `name` from either tier, or else built by `build` (see
    /// [`FsCache::get_or_build`]: one local asker builds, the others wait
    /// for it) and uploaded. The upload is `Some` only when this call
    /// built and stored the entry; a remote failure never fails the call
    /// (a failed fetch builds, a failed upload is [`Upload::Deferred`]).
    ///
    /// # Errors
    ///
    /// As [`FsCache::get_or_build`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use fscache::remote::{object_store::memory::InMemory, Remote, TieredCache, Upload};
    /// use fscache::{BuildOptions, Built, FsCache, MaxSize};
    /// let bucket = Arc::new(InMemory::new());
    /// let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    /// let machine = |dir: &std::path::Path| -> fscache::Result<TieredCache> {
    ///     let local = FsCache::open("my-tool", dir)?;
    ///     local.set_maximum_size(MaxSize::Unlimited)?;
    ///     Ok(TieredCache::new(local, Remote::new(bucket.clone(), "ci", "memory")?))
    /// };
    /// let build = |data: &std::path::Path| {
    ///     std::fs::write(data.join("out.o"), b"\x7fELF").map_err(|e| fscache::Error::Io {
    ///         op: fscache::Op::Write,
    ///         path: data.join("out.o"),
    ///         source: e,
    ///     })
    /// };
    /// let (built, upload) = machine(a.path())?.get_or_build("gcc", &BuildOptions::new(), build)?;
    /// assert!(matches!(built, Built::Stored(_)));
    /// assert!(matches!(upload, Some(Upload::Uploaded { .. })));
    /// // Machine B finds it on the remote and builds nothing.
    /// let (built, upload) = machine(b.path())?.get_or_build("gcc", &BuildOptions::new(), |_| -> fscache::Result<()> {
    ///     unreachable!("on the remote")
    /// })?;
    /// assert!(matches!(built, Built::Found(_)) && upload.is_none());
    /// # Ok::<(), fscache::Error>(())
    /// ```
    pub fn get_or_build<F, E>(
        &self,
        name: &str,
        options: &BuildOptions,
        build: F,
    ) -> Result<(Built, Option<Upload>), E>
    where
        F: FnOnce(&Path) -> Result<(), E>,
        E: From<Error>,
    {
        match self.get(name)? {
            Fetch::Local(hit) | Fetch::Remote { entry: hit, .. } => {
                return Ok((Built::Found(hit), None))
            }
            Fetch::Uncached { entry, outcome } => {
                return Ok((Built::Uncached { entry, outcome }, None))
            }
            _ => {}
        }
        let built = self.local.get_or_build(name, options, build)?;
        let upload = match &built {
            Built::Stored(hit) => Some(self.upload(hit)),
            _ => None,
        };
        Ok((built, upload))
    }

    /// Commit `entry` locally, then, if it was stored, upload it.
    ///
    /// The upload reads the entry under the lock it was committed with,
    /// turned shared without being released, so that nothing evicts it
    /// between the commit and the upload.
    ///
    /// # Errors
    ///
    /// As [`StoreGuard::commit`]; the upload never fails the call.
    pub fn commit(&self, entry: StoreGuard) -> Result<Stored, CommitError> {
        let name = entry.name().to_owned();
        let (commit, held) = entry.commit_held()?;
        let upload = commit.is_stored().then(|| match held {
            Some(hit) => self.upload(&hit),
            // The kernel would not convert the lock: load it like anyone.
            None => match self.local.load(&name) {
                Ok(Some(hit)) => self.upload(&hit),
                Ok(None) => Upload::Deferred(Error::Corrupt {
                    path: self.local.path().join("objects").join(&name),
                    reason: "evicted before it could be uploaded".into(),
                }),
                Err(e) => Upload::Deferred(e),
            },
        });
        Ok(Stored { commit, upload })
    }

    /// Store a copy of `src` as `name` ([`FsCache::store_tree`]) and
    /// upload it.
    ///
    /// # Errors
    ///
    /// As [`FsCache::store_tree`].
    pub fn store_tree(&self, name: &str, src: impl AsRef<Path>) -> Result<Stored> {
        let entry = self.local.store(name)?;
        entry.copy_in(src)?;
        Ok(self.commit(entry)?)
    }

    /// Upload the local entry `name` if the remote lacks it: `None` if it
    /// is not in the local cache.
    ///
    /// # Errors
    ///
    /// As [`FsCache::load`]; the upload's own failure is
    /// [`Upload::Deferred`].
    pub fn push(&self, name: &str) -> Result<Option<Upload>> {
        match self.local.load(name)? {
            Some(hit) => Ok(Some(self.upload(&hit))),
            None => Ok(None),
        }
    }

    fn upload(&self, hit: &LoadGuard) -> Upload {
        let up = self.remote.upload(hit);
        self.live.bump(match up {
            Upload::Uploaded { .. } => 5,
            Upload::AlreadyThere => 6,
            Upload::Deferred(_) => 7,
        });
        up
    }
}
