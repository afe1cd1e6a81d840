//! `fscache-worker`: one cache user driven line by line over stdin.
//!
//! The multi-process tests (and `fscache stress`) start workers and send
//! them commands; each command is answered with one line on stdout, so a
//! test knows exactly which step a worker has reached before it makes the
//! next move or kills it. Usage: `fscache-worker DIR [APP_ID]`, then:
//!
//! ```text
//! store NAME BYTES   -> storing PATH        (the guard is kept)
//! durability sync|none -> ok                (for the stores that follow)
//! commit             -> stored SIZE | name-taken | too-large | no-room | unsupported
//! abort              -> aborted
//! load NAME          -> hit SIZE | torn REASON | miss   (a hit is kept)
//! release            -> released            (drops every kept hit)
//! stage              -> staged PATH         (kept until `unstage`)
//! unstage            -> unstaged
//! max BYTES|unlimited -> ok
//! evict NAME         -> evicted SIZE | busy | absent | denied
//! sweep              -> swept DIRS FILES BYTES UNREMOVABLE DENIED[; `ENTRY` stays: WHY]...
//! resync             -> resynced BEFORE AFTER
//! clear              -> cleared REMOVED IN_USE UNREMOVABLE DENIED
//! gc MAX_BYTES       -> gc REMOVED FREED DENIED
//! run SEED OPS NAMES -> ran COUNTERS | violation WHAT   (random ops)
//! fill PREFIX N BYTES -> filled STORED EVICTED (N stores and commits of
//!                       PREFIX0, PREFIX1, ...)
//! replay objects|stage N -> replayed ITER RETRIES ERRORS [; FIRST ERROR]...
//!                       (N iterations of osbuild's create/remove steps,
//!                       `fscache::replay`)
//! sweep-loop         -> sweeping            (a thread sweeps orphans in a
//!                       loop; answered once its first sweep is done)
//! sweep-stop         -> swept-loops N ERRORS [; FIRST ERROR]
//! build NAME BYTES COUNTER [gate=PATH] [then=ok|fail] [wait=forever|never|MS]
//!       [give-up=build|fail]
//!                    -> [building]  built SIZE | hit SIZE | torn REASON
//!                       | uncached OUTCOME | failed WHY | contended
//!                       (get_or_build; its build appends our pid to
//!                       COUNTER, says `building`, waits for a shared lock
//!                       on PATH if given, then writes BYTES of payload or
//!                       fails; an entry got is kept as by `load`)
//! exit               -> (exits 0)
//! ```
//!
//! Entries carry a self-checking payload (`fscache::stress::payload`), so a
//! reader can tell a whole entry from a torn or mixed one.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use fscache::lock::{FileLock, LockKind, Wait};
use fscache::replay::{Replayer, Store};
use fscache::stress::{payload, Workload};
use fscache::{
    BuildOptions, Built, Commit, Durability, ErrorKind, Eviction, FsCache, GcOptions, GiveUp,
    LoadGuard, MaxSize, StageGuard, StoreGuard,
};

struct Worker {
    cache: FsCache,
    root: PathBuf,
    store: Option<StoreGuard>,
    hits: Vec<LoadGuard>,
    stages: Vec<StageGuard>,
    sweeper: Option<SweepLoop>,
    nonce: u64,
    durability: Durability,
}

/// A thread that sweeps orphans until told to stop.
struct SweepLoop {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<SweepTally>,
}

/// What a [`SweepLoop`] did: every failed sweep is counted, the first one
/// described.
#[derive(Default)]
struct SweepTally {
    loops: u64,
    errors: u64,
    first_error: Option<String>,
}

impl SweepLoop {
    /// Start sweeping `cache`; returns once the first sweep is done.
    fn start(cache: FsCache) -> Result<SweepLoop, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let (started, first) = mpsc::channel();
        let thread = std::thread::spawn({
            let stop = Arc::clone(&stop);
            move || {
                let mut tally = SweepTally::default();
                loop {
                    if let Err(e) = cache.sweep_orphans() {
                        tally.errors += 1;
                        tally.first_error.get_or_insert_with(|| chain(&e));
                    }
                    tally.loops += 1;
                    if tally.loops == 1 {
                        let _ = started.send(());
                    }
                    if stop.load(Ordering::Acquire) {
                        break tally;
                    }
                }
            }
        });
        match first.recv() {
            Ok(()) => Ok(SweepLoop { stop, thread }),
            Err(_) => Err("the sweeping thread died before its first sweep".into()),
        }
    }

    /// Stop after the sweep in progress and say what was done.
    fn stop(self) -> Result<SweepTally, String> {
        self.stop.store(true, Ordering::Release);
        self.thread
            .join()
            .map_err(|_| "the sweeping thread panicked".to_string())
    }
}

/// An error and its sources, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text += &format!(": {s}");
        source = s.source();
    }
    text
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

/// Why a `build` command's get_or_build failed: the cache, or the build.
#[derive(Debug)]
enum BuildFailure {
    Cache(fscache::Error),
    Build(String),
}

impl From<fscache::Error> for BuildFailure {
    fn from(e: fscache::Error) -> Self {
        BuildFailure::Cache(e)
    }
}

impl Worker {
    /// The `build` command (see the table at the top).
    fn build(&mut self, name: &str, bytes: &str, counter: &str, flags: &[&str]) -> String {
        let mut options = BuildOptions::new();
        let mut gate = None;
        let mut fail = false;
        for flag in flags {
            match flag.split_once('=') {
                Some(("gate", path)) => gate = Some(PathBuf::from(path)),
                Some(("then", "ok")) => fail = false,
                Some(("then", "fail")) => fail = true,
                Some(("wait", "forever")) => {
                    options.wait(Wait::Forever);
                }
                Some(("wait", "never")) => {
                    options.wait(Wait::Never);
                }
                Some(("wait", ms)) => match ms.parse() {
                    Ok(ms) => {
                        options.wait(Wait::Timeout(Duration::from_millis(ms)));
                    }
                    Err(_) => return format!("error bad wait {ms:?}"),
                },
                Some(("give-up", "build")) => {
                    options.give_up(GiveUp::Build);
                }
                Some(("give-up", "fail")) => {
                    options.give_up(GiveUp::Fail);
                }
                _ => return format!("error unknown flag {flag:?}"),
            }
        }
        self.nonce += 1;
        let nonce = u64::from(std::process::id()) << 32 | self.nonce;
        let len = bytes.parse().unwrap_or(0);
        let got = self.cache.get_or_build(name, &options, |data| {
            let mut log = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(counter)
                .map_err(|e| BuildFailure::Build(format!("open {counter}: {e}")))?;
            writeln!(log, "{}", std::process::id())
                .map_err(|e| BuildFailure::Build(format!("append to {counter}: {e}")))?;
            let mut out = std::io::stdout();
            let _ = writeln!(out, "building");
            let _ = out.flush();
            if let Some(gate) = &gate {
                drop(FileLock::open(gate, LockKind::Shared, Wait::Forever)?);
            }
            if fail {
                return Err(BuildFailure::Build("told to fail".into()));
            }
            payload::write(data, nonce, len).map_err(|e| BuildFailure::Build(e.to_string()))
        });
        match got {
            Ok(Built::Uncached { outcome, .. }) => format!("uncached {}", describe(outcome)),
            Ok(built) => {
                let verb = if built.built_here() { "built" } else { "hit" };
                let (Built::Found(hit) | Built::Stored(hit)) = built else {
                    return "error an outcome this worker does not know".into();
                };
                match payload::verify(hit.path()) {
                    Ok(()) => {
                        let size = hit.info().size;
                        self.hits.push(hit);
                        format!("{verb} {size}")
                    }
                    Err(why) => format!("torn {why}"),
                }
            }
            Err(BuildFailure::Build(why)) => format!("failed {why}"),
            Err(BuildFailure::Cache(e)) if e.kind() == ErrorKind::Contended => "contended".into(),
            Err(BuildFailure::Cache(e)) => format!("error {}", chain(&e)),
        }
    }

    fn run(&mut self, line: &str) -> Result<String, Box<dyn std::error::Error + '_>> {
        let words: Vec<&str> = line.split_whitespace().collect();
        Ok(match words.as_slice() {
            ["store", name, bytes] => {
                let mut guard = self.cache.store(name)?;
                guard.set_durability(self.durability);
                self.nonce += 1;
                let nonce = u64::from(std::process::id()) << 32 | self.nonce;
                payload::write(guard.path(), nonce, bytes.parse().unwrap_or(0))?;
                let reply = format!("storing {}", guard.path().display());
                self.store = Some(guard);
                reply
            }
            ["durability", "sync"] => {
                self.durability = Durability::Sync;
                "ok".into()
            }
            ["durability", "none"] => {
                self.durability = Durability::None;
                "ok".into()
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
                        let size = hit.info().size;
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
                Eviction::Denied => "denied".into(),
                other => format!("other {other:?}"),
            },
            ["sweep"] => {
                let r = self.cache.sweep_orphans()?;
                let mut reply = format!(
                    "swept {} {} {} {} {}",
                    r.orphan_dirs,
                    r.orphan_files,
                    r.bytes_given_back,
                    r.unremovable.len(),
                    r.denied
                );
                for stuck in &r.unremovable {
                    reply += &format!("; `{}` stays: {stuck}", stuck.entry.display());
                }
                reply
            }
            ["resync"] => {
                let r = self.cache.resync()?;
                format!("resynced {:?} {}", r.before, r.after)
            }
            ["clear"] => {
                let r = self.cache.clear()?;
                format!(
                    "cleared {} {} {} {}",
                    r.removed,
                    r.in_use,
                    r.unremovable.len(),
                    r.denied
                )
            }
            ["gc", max] => {
                let options = GcOptions {
                    max_size: max.parse().ok(),
                    ..GcOptions::default()
                };
                let r = self.cache.gc(&options)?;
                format!("gc {} {} {}", r.removed.len(), r.freed, r.denied)
            }
            ["run", seed, ops, names] => {
                let workload = Workload {
                    seed: seed.parse().unwrap_or(1),
                    names: names.parse().unwrap_or(1),
                    max_payload: 16 * 1024,
                };
                let tally = workload.run(&self.cache, ops.parse().unwrap_or(0), None)?;
                match tally.violations.first() {
                    Some(v) => format!("violation {v}"),
                    None => format!("ran {tally}"),
                }
            }
            ["fill", prefix, count, bytes] => {
                let bytes = bytes.parse().unwrap_or(0);
                let evicted = self.cache.counters().evicted;
                let mut stored = 0;
                for i in 0..count.parse().unwrap_or(0) {
                    let guard = self.cache.store(&format!("{prefix}{i}"))?;
                    self.nonce += 1;
                    let nonce = u64::from(std::process::id()) << 32 | self.nonce;
                    payload::write(guard.path(), nonce, bytes)?;
                    stored += usize::from(guard.commit()?.is_stored());
                }
                let evicted = self.cache.counters().evicted - evicted;
                format!("filled {stored} evicted {evicted}")
            }
            ["replay", store, n] => {
                let store: Store = store.parse()?;
                let tally = Replayer::open(&self.root)?.run(store, n.parse()?);
                format!("replayed {tally}")
            }
            ["build", name, bytes, counter, flags @ ..] => self.build(name, bytes, counter, flags),
            ["sweep-loop"] => match self.sweeper {
                Some(_) => "error already sweeping".into(),
                None => {
                    self.sweeper = Some(SweepLoop::start(self.cache.clone())?);
                    "sweeping".into()
                }
            },
            ["sweep-stop"] => match self.sweeper.take() {
                None => "error not sweeping".into(),
                Some(sweeper) => {
                    let tally = sweeper.stop()?;
                    let mut reply = format!("swept-loops {} {}", tally.loops, tally.errors);
                    if let Some(first) = tally.first_error {
                        reply += &format!("; {first}");
                    }
                    reply
                }
            },
            _ => format!("error unknown command {line:?}"),
        })
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
        cache,
        root: PathBuf::from(&dir),
        store: None,
        hits: Vec::new(),
        stages: Vec::new(),
        sweeper: None,
        nonce: 0,
        durability: Durability::None,
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
