//! `fscache-worker`: one cache user driven line by line over stdin.
//!
//! The multi-process tests (and `fscache stress`) start workers and send
//! them commands; each command is answered with one line on stdout, so a
//! test knows exactly which step a worker has reached before it makes the
//! next move or kills it. Usage: `fscache-worker DIR [APP_ID]`, then:
//!
//! ```text
//! store NAME BYTES   -> storing PATH        (the guard is kept)
//! commit             -> stored SIZE | name-taken | too-large | no-room | unsupported
//! abort              -> aborted
//! load NAME          -> hit SIZE | torn REASON | miss   (a hit is kept)
//! release            -> released            (drops every kept hit)
//! stage              -> staged PATH         (kept until `unstage`)
//! unstage            -> unstaged
//! max BYTES|unlimited -> ok
//! evict NAME         -> evicted SIZE | busy | absent
//! sweep              -> swept DIRS FILES BYTES
//! resync             -> resynced BEFORE AFTER
//! clear              -> cleared REMOVED IN_USE
//! gc MAX_BYTES       -> gc REMOVED FREED
//! run SEED OPS NAMES MAX -> ran COUNTERS | violation WHAT   (random ops)
//! exit               -> (exits 0)
//! ```
//!
//! Entries carry a self-checking payload (see `payload` below), so a reader
//! can tell a whole entry from a torn or mixed one.

use std::io::{BufRead, Write};
use std::path::Path;

use fscache::{Commit, Eviction, FsCache, GcOptions, LoadGuard, MaxSize, StageGuard, StoreGuard};

mod payload {
    //! A payload whose `digest` file proves the `payload` file beside it:
    //! `NONCE LEN HASH`, where the content is a function of the nonce.

    use sha2::{Digest, Sha256};
    use std::path::Path;

    fn content(nonce: u64, len: usize) -> Vec<u8> {
        let mut state = nonce ^ 0x9e37_79b9_7f4a_7c15;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    }

    fn hash(bytes: &[u8]) -> String {
        Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Fill `dir` with a payload of `len` bytes.
    pub fn write(dir: &Path, nonce: u64, len: usize) -> std::io::Result<()> {
        let body = content(nonce, len);
        std::fs::write(dir.join("payload"), &body)?;
        std::fs::write(dir.join("digest"), format!("{nonce} {len} {}", hash(&body)))
    }

    /// Check the payload in `dir`; `Err` says how it is torn.
    pub fn verify(dir: &Path) -> Result<(), String> {
        let digest =
            std::fs::read_to_string(dir.join("digest")).map_err(|e| format!("digest: {e}"))?;
        let body = std::fs::read(dir.join("payload")).map_err(|e| format!("payload: {e}"))?;
        let mut parts = digest.split(' ');
        let (Some(nonce), Some(len), Some(want)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("digest malformed: {digest:?}"));
        };
        let (nonce, len): (u64, usize) = match (nonce.parse(), len.parse()) {
            (Ok(n), Ok(l)) => (n, l),
            _ => return Err(format!("digest malformed: {digest:?}")),
        };
        if body.len() != len || hash(&body) != want || body != content(nonce, len) {
            return Err(format!("payload does not match digest (nonce {nonce})"));
        }
        Ok(())
    }
}

struct Worker {
    cache: &'static FsCache,
    store: Option<StoreGuard<'static>>,
    hits: Vec<LoadGuard<'static>>,
    stages: Vec<StageGuard<'static>>,
    nonce: u64,
}

fn describe(c: Commit) -> String {
    match c {
        Commit::Stored { size } => format!("stored {size}"),
        Commit::NameTaken => "name-taken".into(),
        Commit::TooLarge { .. } => "too-large".into(),
        Commit::NoRoom { .. } => "no-room".into(),
        Commit::Unsupported => "unsupported".into(),
        other => format!("other {other}"),
    }
}

impl Worker {
    fn run(&mut self, line: &str) -> Result<String, Box<dyn std::error::Error + '_>> {
        let words: Vec<&str> = line.split_whitespace().collect();
        Ok(match words.as_slice() {
            ["store", name, bytes] => {
                let guard = self.cache.store(name)?;
                self.nonce += 1;
                let nonce = u64::from(std::process::id()) << 32 | self.nonce;
                payload::write(guard.path(), nonce, bytes.parse().unwrap_or(0))?;
                let reply = format!("storing {}", guard.path().display());
                self.store = Some(guard);
                reply
            }
            ["commit"] => match self.store.take() {
                Some(guard) => describe(guard.commit()?),
                None => "error nothing to commit".into(),
            },
            ["abort"] => {
                if let Some(g) = self.store.take() {
                    g.abort()?;
                }
                "aborted".into()
            }
            ["load", name] => match self.cache.load(name)? {
                None => "miss".into(),
                Some(hit) => match payload::verify(hit.path()) {
                    Ok(()) => {
                        let size = hit.info()?.size;
                        self.hits.push(hit);
                        format!("hit {size}")
                    }
                    Err(why) => format!("torn {why}"),
                },
            },
            ["release"] => {
                self.hits.clear();
                "released".into()
            }
            ["stage"] => {
                let s = self.cache.stage()?;
                let reply = format!("staged {}", s.path().display());
                self.stages.push(s);
                reply
            }
            ["unstage"] => {
                self.stages.clear();
                "unstaged".into()
            }
            ["max", "unlimited"] => {
                self.cache.set_maximum_size(MaxSize::Unlimited)?;
                "ok".into()
            }
            ["max", bytes] => {
                self.cache
                    .set_maximum_size(MaxSize::Bytes(bytes.parse().unwrap_or(0)))?;
                "ok".into()
            }
            ["evict", name] => match self.cache.evict(name)? {
                Eviction::Removed { size } => format!("evicted {size}"),
                Eviction::InUse => "busy".into(),
                Eviction::NotFound => "absent".into(),
            },
            ["sweep"] => {
                let r = self.cache.sweep_orphans()?;
                format!(
                    "swept {} {} {}",
                    r.orphan_dirs, r.orphan_files, r.bytes_given_back
                )
            }
            ["resync"] => {
                let r = self.cache.resync()?;
                format!("resynced {:?} {}", r.before, r.after)
            }
            ["clear"] => {
                let r = self.cache.clear()?;
                format!("cleared {} {}", r.removed, r.in_use)
            }
            ["gc", max] => {
                let options = GcOptions {
                    max_size: max.parse().ok(),
                    ..GcOptions::default()
                };
                let r = self.cache.gc(&options)?;
                format!("gc {} {}", r.removed.len(), r.freed)
            }
            ["run", seed, ops, names, max] => self.random_ops(
                seed.parse().unwrap_or(1),
                ops.parse().unwrap_or(0),
                names.parse().unwrap_or(1),
                max.parse().unwrap_or(u64::MAX),
            )?,
            _ => format!("error unknown command {line:?}"),
        })
    }
}

/// A small deterministic generator (xorshift64*), so a run is repeatable
/// from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

impl Worker {
    /// `ops` random operations over `names` names; checks every hit and
    /// that `cache.size` never passes `max`. Answers with counters, or
    /// `violation ...` at the first broken invariant.
    fn random_ops(
        &mut self,
        seed: u64,
        ops: u64,
        names: u64,
        max: u64,
    ) -> Result<String, Box<dyn std::error::Error + '_>> {
        let cache = self.cache;
        let mut rng = Rng(seed | 1);
        let mut n = [0u64; 6]; // stored, taken, refused, hits, misses, other
        for _ in 0..ops {
            let name = format!("k{}", rng.below(names));
            match rng.below(20) {
                0..=7 => match cache.load(&name)? {
                    Some(hit) => {
                        if let Err(why) = payload::verify(hit.path()) {
                            return Ok(format!("violation torn entry {name}: {why}"));
                        }
                        n[3] += 1;
                    }
                    None => n[4] += 1,
                },
                8..=15 => {
                    let guard = cache.store(&name)?;
                    self.nonce += 1;
                    let nonce = u64::from(std::process::id()) << 32 | self.nonce;
                    payload::write(guard.path(), nonce, rng.below(16 * 1024) as usize)?;
                    match guard.commit().map_err(fscache::Error::from)? {
                        Commit::Stored { .. } => n[0] += 1,
                        Commit::NameTaken => n[1] += 1,
                        _ => n[2] += 1,
                    }
                }
                16 => {
                    let _ = cache.evict(&name)?;
                    n[5] += 1;
                }
                17 => {
                    let stage = cache.stage()?;
                    std::fs::write(stage.path().join("scratch"), b"x")?;
                    n[5] += 1;
                }
                18 => {
                    cache.sweep_orphans()?;
                    n[5] += 1;
                }
                _ => {
                    cache.gc(&GcOptions {
                        max_size: Some(max / 2),
                        ..GcOptions::default()
                    })?;
                    n[5] += 1;
                }
            }
            let size = cache.accounted_size()?;
            if size > max {
                return Ok(format!("violation cache.size {size} > maximum {max}"));
            }
        }
        Ok(format!(
            "ran stored={} taken={} refused={} hits={} misses={} other={}",
            n[0], n[1], n[2], n[3], n[4], n[5]
        ))
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next() else {
        eprintln!("usage: fscache-worker DIR [APP_ID]");
        std::process::exit(2);
    };
    let app = args.next().unwrap_or_else(|| "fscache-tests".into());
    let cache = match FsCache::open(&app, Path::new(&dir)) {
        Ok(c) => c,
        Err(e) => {
            println!("error {e}");
            std::process::exit(1);
        }
    };
    let mut worker = Worker {
        cache: Box::leak(Box::new(cache)),
        store: None,
        hits: Vec::new(),
        stages: Vec::new(),
        nonce: 0,
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let _ = writeln!(out, "ready");
    let _ = out.flush();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if line.trim() == "exit" {
            break;
        }
        let reply = worker.run(&line).unwrap_or_else(|e| format!("error {e}"));
        let _ = writeln!(out, "{reply}");
        let _ = out.flush();
    }
}
