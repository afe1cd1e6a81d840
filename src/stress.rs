//! Building blocks for stress-testing a cache on your own file system:
//! self-verifying payloads, a random workload, and an invariant check.
//!
//! `fscache stress` runs many processes of [`Workload`] at once and then
//! [`check`]s the cache; the test suite does the same in CI.

use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::{Commit, FsCache, GcOptions, MaxSize, Result};

/// A small deterministic generator (xorshift64*): a run is repeatable from
/// its seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value).
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15 | 1)
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `0..n` (0 if `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// Self-verifying content: `payload` is a function of a nonce, and
/// `digest` names the nonce, the length and a SHA-256 of the payload, so a
/// reader can tell a whole entry from a torn or mixed one.
pub mod payload {
    use super::*;

    fn content(nonce: u64, len: usize) -> Vec<u8> {
        let mut rng = Rng::new(nonce);
        (0..len).map(|_| rng.next_u64() as u8).collect()
    }

    fn hash(bytes: &[u8]) -> String {
        Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Fill `dir` with a payload of `len` bytes made from `nonce`.
    ///
    /// # Errors
    ///
    /// Any error writing the two files.
    pub fn write(dir: &Path, nonce: u64, len: usize) -> std::io::Result<()> {
        let body = content(nonce, len);
        std::fs::write(dir.join("payload"), &body)?;
        std::fs::write(dir.join("digest"), format!("{nonce} {len} {}", hash(&body)))
    }

    /// Check the payload in `dir`.
    ///
    /// # Errors
    ///
    /// A description of how it is torn.
    pub fn verify(dir: &Path) -> std::result::Result<(), String> {
        let digest =
            std::fs::read_to_string(dir.join("digest")).map_err(|e| format!("digest: {e}"))?;
        let body = std::fs::read(dir.join("payload")).map_err(|e| format!("payload: {e}"))?;
        let fields: Vec<&str> = digest.split(' ').collect();
        let [nonce, len, want] = fields.as_slice() else {
            return Err(format!("digest malformed: {digest:?}"));
        };
        let (Ok(nonce), Ok(len)) = (nonce.parse::<u64>(), len.parse::<usize>()) else {
            return Err(format!("digest malformed: {digest:?}"));
        };
        if body.len() != len || hash(&body) != *want || body != content(nonce, len) {
            return Err(format!("payload does not match its digest (nonce {nonce})"));
        }
        Ok(())
    }
}

/// Counters of what a [`Workload`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Commits that stored.
    pub stored: u64,
    /// Commits that found the name taken.
    pub taken: u64,
    /// Commits refused (too large, no room).
    pub refused: u64,
    /// Loads that hit (and verified).
    pub hits: u64,
    /// Loads that missed.
    pub misses: u64,
    /// Maintenance and staging operations.
    pub other: u64,
    /// Broken invariants seen (torn entries, a size above the maximum).
    pub violations: Vec<String>,
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "stored={} taken={} refused={} hits={} misses={} other={} violations={}",
            self.stored,
            self.taken,
            self.refused,
            self.hits,
            self.misses,
            self.other,
            self.violations.len()
        )
    }
}

/// A random mix of loads, stores, evictions, staging and maintenance over a
/// small set of names, with self-verifying payloads.
#[derive(Clone, Debug)]
pub struct Workload {
    /// The seed of the run.
    pub seed: u64,
    /// How many distinct names (`k0`, `k1`, …).
    pub names: u64,
    /// Largest payload in bytes.
    pub max_payload: u64,
}

impl Workload {
    /// Run until `ops` operations are done or `deadline` passes, whichever
    /// comes first. After every operation the accounted size is checked
    /// against the maximum in force.
    ///
    /// # Errors
    ///
    /// The first operation that fails with an error (as opposed to an
    /// outcome: misses, taken names and refusals are counted).
    pub fn run(&self, cache: &FsCache, ops: u64, deadline: Option<Duration>) -> Result<Tally> {
        let start = Instant::now();
        let mut rng = Rng::new(self.seed);
        let mut tally = Tally::default();
        let nonce_base = u64::from(std::process::id()) << 32;
        for i in 0..ops {
            if deadline.is_some_and(|d| start.elapsed() >= d) {
                break;
            }
            let name = format!("k{}", rng.below(self.names));
            match rng.below(20) {
                0..=7 => match cache.load(&name)? {
                    Some(hit) => match payload::verify(hit.path()) {
                        Ok(()) => tally.hits += 1,
                        Err(why) => tally.violations.push(format!("torn entry {name}: {why}")),
                    },
                    None => tally.misses += 1,
                },
                8..=15 => {
                    let guard = cache.store(&name)?;
                    let len = rng.below(self.max_payload) as usize;
                    payload::write(guard.path(), nonce_base | i, len).map_err(|e| {
                        crate::Error::corrupt(guard.path().to_owned(), e.to_string())
                    })?;
                    match guard.commit()? {
                        Commit::Stored { .. } => tally.stored += 1,
                        Commit::NameTaken => tally.taken += 1,
                        _ => tally.refused += 1,
                    }
                }
                16 => {
                    let _ = cache.evict(&name)?;
                    tally.other += 1;
                }
                17 => {
                    let stage = cache.stage()?;
                    payload::write(stage.path(), nonce_base | i, 512).map_err(|e| {
                        crate::Error::corrupt(stage.path().to_owned(), e.to_string())
                    })?;
                    tally.other += 1;
                }
                18 => {
                    cache.sweep_orphans()?;
                    tally.other += 1;
                }
                _ => {
                    let max_size = match cache.info().effective_maximum() {
                        MaxSize::Bytes(m) => Some(m / 2),
                        MaxSize::Unlimited => None,
                    };
                    cache.gc(&GcOptions {
                        max_size,
                        ..GcOptions::default()
                    })?;
                    tally.other += 1;
                }
            }
            let size = cache.accounted_size()?;
            if !cache.info().effective_maximum().admits(size) {
                tally
                    .violations
                    .push(format!("cache.size {size} above the maximum"));
            }
        }
        Ok(tally)
    }
}

/// Check a quiescent cache (no other user): after a resync, `cache.size`
/// must equal what it was (no drift without crashes) when `expect_exact`;
/// every entry must verify; after a sweep nothing anonymous may remain;
/// nothing may lie outside the layout. Returns the violations found.
///
/// # Errors
///
/// Any failure of the maintenance operations themselves.
pub fn check(cache: &FsCache, expect_exact: bool) -> Result<Vec<String>> {
    let mut violations = Vec::new();
    let before = cache.accounted_size()?;
    let resync = cache.resync()?;
    if expect_exact && resync.before != Some(resync.after) {
        violations.push(format!(
            "cache.size drifted: {before} accounted, {} recorded",
            resync.after
        ));
    }
    if !cache.info().effective_maximum().admits(resync.after) {
        violations.push(format!(
            "{} bytes recorded, above the maximum",
            resync.after
        ));
    }
    let stats = cache.stats()?;
    if stats.orphans + stats.live_anonymous > 0 {
        violations.push(format!(
            "{} anonymous entries left after a sweep",
            stats.orphans + stats.live_anonymous
        ));
    }
    if stats.invalid_entries > 0 {
        violations.push(format!(
            "{} invalid entries left after a sweep",
            stats.invalid_entries
        ));
    }
    let objects = cache.path().join(crate::layout::OBJECTS);
    for entry in std::fs::read_dir(&objects).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Ok(Some(hit)) = cache.load(&name) {
            if let Err(why) = payload::verify(hit.path()) {
                violations.push(format!("entry {name} is torn: {why}"));
            }
        }
    }
    for entry in std::fs::read_dir(cache.path())
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !crate::ROOT_LAYOUT.contains(&name.as_str()) {
            violations.push(format!("stray file in the cache root: {name}"));
        }
    }
    Ok(violations)
}
