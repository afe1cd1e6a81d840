//! A remote tier on object storage (S3 and friends): entries built on one
//! machine are hits on another.
//!
//! A [`TieredCache`] puts a [`Remote`] (any `object_store` backend: S3 and
//! S3-compatible servers, GCS, Azure, HTTP, memory) behind a local
//! [`FsCache`], which stays the fast front with its locks, accounting and
//! eviction unchanged:
//!
//! * **load** ([`TieredCache::get`]): a local hit is served as always. A
//!   local miss downloads the entry's object, unpacks it into a new local
//!   entry (a [`StoreGuard`]), checks it, and commits it through the
//!   normal store path, inside [`FsCache::get_or_build`]: of all the local
//!   processes and threads that miss one name at once, one downloads and
//!   the others wait and then load what it committed. A remote failure is
//!   a miss, never a local error ([`Fetch::Failed`]).
//! * **store** ([`TieredCache::commit`], [`TieredCache::store_tree`]):
//!   commit locally, then upload at once, create-only: the first writer
//!   across machines wins and a later one gets [`Upload::AlreadyThere`].
//!   A failed upload never fails the local commit: it is reported as
//!   [`Upload::Deferred`], and [`TieredCache::push`] (`fscache remote
//!   push`) tries again later. Nothing is queued, so a crash loses no
//!   committed entry and no upload that had begun leaves a partial
//!   object (see *Crashes* below).
//!
//! ```no_run
//! use fscache::remote::{Remote, TieredCache, Upload};
//! use fscache::{FsCache, MaxSize};
//!
//! // AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, ...
//! let remote = Remote::from_url("s3://ci-cache/team-a")?;
//! let cache = FsCache::open("my-tool", "/var/cache/my-tool")?;
//! cache.set_maximum_size(MaxSize::Bytes(20 << 30))?;
//! let tiered = TieredCache::new(cache, remote);
//!
//! // Machine A:
//! let stored = tiered.store_tree("gcc-13-build-7f3a", "build/out")?;
//! if let Some(Upload::Deferred(e)) = &stored.upload {
//!     eprintln!("cached locally, upload later: {e}");
//! }
//! // Machine B:
//! if let Some(hit) = tiered.load("gcc-13-build-7f3a")? {
//!     println!("{}", hit.path().display());
//! }
//! # Ok::<(), fscache::Error>(())
//! ```
//!
//! # The object format (version 1)
//!
//! Enough for another implementation to read and write it.
//!
//! **Keys.** The entry `NAME` of a remote with prefix `P` is the object
//! `P/fscache-v1/ESCAPED` (`fscache-v1/ESCAPED` for an empty prefix),
//! where `ESCAPED` is `NAME` with every byte outside `A-Z a-z 0-9 . _ -`
//! written as `%` and two uppercase hex digits (so `gcc 13/x` is never a
//! name, since names have no `/`, and `gcc 13` is `gcc%2013`). Only keys
//! whose last segment unescapes to a valid entry name
//! ([`validate_name`](crate::validate_name)) are entries; readers ignore
//! the others. Large uploads pass through `P/fscache-v1-staging/UUID`
//! (see *Uploads*), never read as entries.
//!
//! **The object** is an uncompressed tar archive (GNU headers) of the
//! entry's `data/`, in this order and nothing else:
//!
//! 1. a directory member `data` for `data/` itself (its mode and time);
//! 2. for every file, directory and symbolic link below it, one member
//!    `data/REL`, a directory always before what it holds (the writer goes
//!    through names in byte order, so one tree always gives the same
//!    bytes); names longer than 100 bytes and link targets longer than 100
//!    bytes use GNU `L` and `K` records (at most 4096 bytes each). Types:
//!    `5` directory, `0` regular file, `2` symbolic link (target as it is,
//!    relative or absolute). Mode: the 12 permission bits; mtime: seconds;
//!    uid and gid 0, no user or group names. A file with several hard
//!    links is stored as a copy under each name (type `1` is never
//!    written). Device files, fifos and sockets cannot be archived;
//! 3. the trailer: a regular-file member `fscache-remote.json` whose
//!    content (512 bytes; a reader takes up to 4096) is a JSON object,
//!    padded with spaces:
//!    `{"fscache-remote-archive": 1, "sha256": "<64 hex>", "bytes": <n>,
//!    "compression": "none"}`, where `bytes` is the offset of the
//!    trailer's header (the length of everything before it) and `sha256`
//!    the SHA-256 of those `bytes` bytes;
//! 4. two zero blocks, and nothing after them.
//!
//! Any other compression would be a new format version (a new key
//! segment), so that an old reader never misreads it.
//!
//! **Reading** ([`archive::unpack`]) trusts nothing: it refuses, with an
//! [`Error::RemoteCorrupt`] whose [`Refusal`](archive::Refusal) says why,
//! a path that is absolute or has `..`, `.` or empty components or is not
//! below `data/`; a member whose parent is not a directory made earlier
//! from the archive (so nothing is ever written through a symbolic link
//! the archive planted: links are made as links and never followed, and
//! every directory is opened with `O_NOFOLLOW` at each step); hard links,
//! devices, fifos, PAX headers and every other type; a second member of
//! one path; content past the cache's maximum (from each member's header,
//! before it is read) or past [`archive::Limits`]; a header with a wrong
//! checksum; a truncated archive; a trailer that is missing, not last or
//! followed by bytes; and a digest that does not match. It unpacks into a
//! new anonymous entry and commits it only once everything, the digest
//! included, checked out; on any refusal the entry is dropped, and
//! nothing outside it was written. The set-user-ID and set-group-ID bits
//! are dropped.
//!
//! # Uploads
//!
//! An archive of up to [`Tuning::part_size`] bytes (8 MiB by default)
//! goes up in one `PUT` with `If-None-Match: *` (`PutMode::Create`). A
//! larger one goes up in parts, streamed, to a staging key, and is then
//! copied to its key with a create-only copy (`copy_if_not_exists`; for S3
//! a multipart copy completed with `If-None-Match: *`) and the staging
//! object deleted. Either way the object appears whole at its key, or not
//! at all, and only if no other writer's is there.
//!
//! **Memory is bounded** whatever the entry's size: an upload holds at
//! most three parts (one filling, two in flight: about 24 MiB with the
//! default part size), a download one chunk of the response body and a
//! 64 KiB buffer. Peak RSS of a whole process that uploads or downloads
//! a 1 GiB entry through moto on loopback is measured in
//! `BENCHMARKS.md` (Remote tier).
//!
//! **Crashes.** A process that dies during an upload leaves at most an
//! unfinished multipart upload, which S3 never shows as an object (a
//! bucket lifecycle rule "abort incomplete multipart uploads" reclaims
//! its space), or a complete staging object, which no reader takes for an
//! entry. The local entry was committed before the upload began.
//!
//! # Errors and retries
//!
//! A remote failure is an [`Error::Remote`] naming the operation
//! ([`RemoteOp`]), the key and the endpoint, never credentials; retries
//! are `object_store`'s, bounded by [`Tuning`] (count, total time,
//! connect and read timeouts). The API is blocking: a [`Remote`] owns a
//! small current-thread tokio runtime, and refuses (with an error, not a
//! panic) to be called from inside another runtime.

pub mod archive;
#[cfg(feature = "remote")]
mod client;
#[cfg(feature = "remote")]
mod tiered;

#[cfg(feature = "remote")]
pub use client::{RemoteOp, Tuning};
/// The `object_store` crate this tier is built on, so that callers name
/// the same version (to build a store of their own for [`Remote::new`]).
#[cfg(feature = "remote")]
pub use object_store;
#[cfg(feature = "remote")]
pub use tiered::{Fetch, Remote, RemoteCounters, RemoteEntry, Stored, TieredCache, Upload};

#[allow(unused_imports)]
use crate::{Error, FsCache, StoreGuard};

/// The key segment of format version 1.
pub const KEY_VERSION: &str = "fscache-v1";

/// The key segment of staging objects.
pub const STAGING: &str = "fscache-v1-staging";

/// `name` as the last segment of its key: every byte outside
/// `A-Z a-z 0-9 . _ -` as `%XX`.
///
/// # Examples
///
/// ```
/// use fscache::remote::{escape, unescape};
/// assert_eq!(escape("gcc 13+x"), "gcc%2013%2Bx");
/// assert_eq!(unescape("gcc%2013%2Bx").as_deref(), Some("gcc 13+x"));
/// ```
pub fn escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for &b in name.as_bytes() {
        if b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The name a key segment escapes, if it is one [`escape`] can give (and
/// so not just any percent-encoding of it).
pub fn unescape(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = segment.get(i + 1..i + 3)?;
            if hex.bytes().any(|c| c.is_ascii_lowercase()) {
                return None;
            }
            let v = u8::from_str_radix(hex, 16).ok()?;
            if v.is_ascii_alphanumeric() || v == b'.' || v == b'_' || v == b'-' {
                return None;
            }
            out.push(v);
            i += 3;
        } else if b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-' {
            out.push(b);
            i += 1;
        } else {
            return None;
        }
    }
    let name = String::from_utf8(out).ok()?;
    crate::validate_name(&name).ok()?;
    Some(name)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn every_valid_name_escapes_to_a_key_segment_and_back() {
        for name in [
            "a",
            "...",
            "gcc-13_x.y",
            "with space",
            "ünï/",
            "%41",
            "UUID-x",
        ] {
            let e = escape(name);
            assert!(
                e.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".%_-".contains(&b)),
                "{e}"
            );
            let back = unescape(&e);
            if crate::validate_name(name).is_ok() {
                assert_eq!(back.as_deref(), Some(name), "{name:?}");
            } else {
                assert_eq!(back, None, "{name:?}");
            }
        }
        for bad in ["%4", "%zz", "%41", "%2f", "a b", "..", "uuid-1", ""] {
            assert_eq!(unescape(bad), None, "{bad:?}");
        }
    }
}
