//! Hostile input: garbage in the cache's files, foreign file types planted
//! at every path the cache uses, and arbitrary entry names. Whatever is
//! found, an operation must not panic, must not hang, must not touch
//! anything outside the cache root, and must not lose a committed entry; it
//! answers with an error that names the offending path, or with a
//! documented degrade (a miss, a staging-only cache).
//!
//! Every probe runs in a thread with a bounded wait: a fifo opened for
//! reading without `O_NONBLOCK` blocks until a writer appears, so a probe
//! that has not answered in time is unblocked (we open the fifo for writing)
//! and reported as a hang.

// Planting and restoring hostile files is done with plain std::fs on purpose.
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use fscache::{Commit, ErrorKind, Eviction, FsCache, GcOptions, LoadGuard, MaxSize, StoreGuard};

const APP: &str = "fscache-tests";

/// How long one probe may take before it counts as hung. Every probe does a
/// handful of small file operations; this is generous for a debug build on
/// a loaded machine.
const BOUND: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// The scene: a populated cache, and a canary outside it.
// ---------------------------------------------------------------------------

/// Entries committed before anything hostile happens; each must still load
/// whole at the end of every test. (name, file in data/, content)
const KEEPERS: &[(&str, &str, &str)] = &[
    ("keep-flat", "f", "first keeper"),
    ("keep-deep", "sub/dir/f", "second keeper, deeper"),
];

/// A temporary directory holding `cache/` (populated) and `outside/` (a
/// directory with a canary file that no operation may touch).
struct Scene {
    t: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
    canary: CanaryState,
}

/// What is known about the outside directory and its canary. Their access
/// times are kept far in the past, before their modification times, so
/// that any read (a listing through a followed link, say) moves them even
/// under `relatime`.
#[derive(Debug, PartialEq)]
struct CanaryState {
    listing: Vec<String>,
    content: Vec<u8>,
    ino: u64,
    mode: u32,
    mtime: (i64, i64),
    atime: (i64, i64),
    dir_mtime: (i64, i64),
    dir_atime: (i64, i64),
}

/// The access time the canary and its directory are reset to.
const LONG_AGO: rustix::fs::Timespec = rustix::fs::Timespec {
    tv_sec: 1_000_000,
    tv_nsec: 0,
};

fn set_long_ago(path: &Path) {
    let times = rustix::fs::Timestamps {
        last_access: LONG_AGO,
        last_modification: rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT,
        },
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &times,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .expect("reset atime");
}

/// The canary's state; reading it here does not count, because the access
/// times are taken first and reset after.
fn canary_state(outside: &Path) -> CanaryState {
    let canary = outside.join("canary");
    let m = std::fs::symlink_metadata(&canary).expect("stat canary");
    let d = std::fs::symlink_metadata(outside).expect("stat outside");
    let state = CanaryState {
        listing: names(outside),
        content: std::fs::read(&canary).expect("read canary"),
        ino: m.ino(),
        mode: m.mode(),
        mtime: (m.mtime(), m.mtime_nsec()),
        atime: (m.atime(), m.atime_nsec()),
        dir_mtime: (d.mtime(), d.mtime_nsec()),
        dir_atime: (d.atime(), d.atime_nsec()),
    };
    set_long_ago(&canary);
    set_long_ago(outside);
    state
}

/// Store `name` with `file` (a relative path) holding `content`.
fn put(cache: &FsCache, name: &str, file: &str, content: &str) -> fscache::Result<Commit> {
    let e = cache.store(name)?;
    let path = e.path().join(file);
    std::fs::create_dir_all(path.parent().expect("a file has a parent")).expect("mkdir in data");
    std::fs::write(path, content).expect("write payload");
    Ok(e.commit()?)
}

impl Scene {
    /// A cache with no size limit holding the keepers and an entry called
    /// `victim` that the probes may damage.
    fn new() -> Scene {
        let t = tempfile::tempdir().expect("tempdir");
        let outside = t.path().join("outside");
        std::fs::create_dir(&outside).expect("mkdir outside");
        std::fs::write(outside.join("canary"), "canary: must never change").expect("canary");
        set_long_ago(&outside.join("canary"));
        set_long_ago(&outside);
        let root = t.path().join("cache");
        let cache = FsCache::open(APP, &root).expect("open");
        cache.set_maximum_size(MaxSize::Unlimited).expect("max");
        for (name, file, content) in KEEPERS {
            assert!(put(&cache, name, file, content).expect("put").is_stored());
        }
        assert!(put(&cache, "victim", "f", "victim")
            .expect("put")
            .is_stored());
        let canary = canary_state(&outside);
        Scene {
            t,
            root,
            outside,
            canary,
        }
    }

    #[track_caller]
    fn assert_outside_untouched(&self, context: &str) {
        assert_eq!(
            canary_state(&self.outside),
            self.canary,
            "{context}: the canary outside the cache changed"
        );
        assert_eq!(
            names(self.t.path())
                .into_iter()
                .filter(|n| !n.starts_with("saved-"))
                .collect::<Vec<_>>(),
            ["cache", "outside"],
            "{context}: something appeared next to the cache"
        );
    }

    /// Open a fresh handle and check that every keeper loads whole.
    #[track_caller]
    fn assert_keepers_load(&self, context: &str) {
        let cache = FsCache::open(APP, &self.root)
            .unwrap_or_else(|e| panic!("{context}: reopening the repaired cache: {e}"));
        for (name, file, content) in KEEPERS {
            let hit = cache
                .load(name)
                .unwrap_or_else(|e| panic!("{context}: load {name}: {e}"))
                .unwrap_or_else(|| panic!("{context}: committed entry {name} was lost"));
            assert_eq!(
                std::fs::read_to_string(hit.path().join(file))
                    .ok()
                    .as_deref(),
                Some(*content),
                "{context}: entry {name} lost its content"
            );
        }
    }

    /// After the damage is gone: a sweep and a resync leave exact
    /// accounting and no orphan behind.
    #[track_caller]
    fn assert_repairable(&self, context: &str) {
        let cache = FsCache::open(APP, &self.root)
            .unwrap_or_else(|e| panic!("{context}: reopening the repaired cache: {e}"));
        cache
            .sweep_orphans()
            .unwrap_or_else(|e| panic!("{context}: sweep after repair: {e}"));
        cache
            .resync()
            .unwrap_or_else(|e| panic!("{context}: resync after repair: {e}"));
        assert_exact(&self.root);
        for dir in ["objects", "stage"] {
            let left: Vec<_> = names(&self.root.join(dir))
                .into_iter()
                .filter(|n| n.starts_with("uuid-") && !is_reservation(&self.root, n))
                .collect();
            assert!(
                left.is_empty(),
                "{context}: orphans left in {dir}/: {left:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Plants: foreign file types put where the cache expects its own.
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plant {
    /// A symbolic link: to the outside directory where a directory belongs,
    /// to the canary file where a file belongs.
    Symlink,
    /// A named pipe: opening it for reading blocks without `O_NONBLOCK`.
    Fifo,
    /// A unix socket: `open` fails with `ENXIO`.
    Socket,
    /// A plain file where a directory belongs, a directory where a file
    /// belongs.
    WrongType,
}

const ALL_PLANTS: [Plant; 4] = [Plant::Symlink, Plant::Fifo, Plant::Socket, Plant::WrongType];

/// A path the cache uses, relative to its root.
#[derive(Clone, Copy, Debug)]
struct Spot {
    rel: &'static str,
    /// Whether the cache expects a directory there.
    dir: bool,
}

const fn spot(rel: &'static str, dir: bool) -> Spot {
    Spot { rel, dir }
}

const CACHE_INFO: Spot = spot("cache.info", false);
const CACHE_SIZE: Spot = spot("cache.size", false);
const CACHE_LOCK: Spot = spot("cache.lock", false);
const CACHE_TAG: Spot = spot("CACHEDIR.TAG", false);
const OBJECTS: Spot = spot("objects", true);
const STAGE: Spot = spot("stage", true);
const ENTRY: Spot = spot("objects/planted", true);
const ENTRY_DATA: Spot = spot("objects/victim/data", true);
const ENTRY_LOCK: Spot = spot("objects/victim/object.lock", false);
const ENTRY_INFO: Spot = spot("objects/victim/object.info", false);
const STAGE_ANON: Spot = spot("stage/uuid-0123456789abcdef0123456789abcdef", true);
const STAGE_ANON_LOCK: Spot = spot(
    "stage/uuid-0123456789abcdef0123456789abcdef/object.lock",
    false,
);
const OBJECTS_ANON: Spot = spot("objects/uuid-0123456789abcdef0123456789abcdef", true);
const OBJECTS_ANON_LOCK: Spot = spot(
    "objects/uuid-0123456789abcdef0123456789abcdef/object.lock",
    false,
);
const OBJECTS_ANON_INFO: Spot = spot(
    "objects/uuid-0123456789abcdef0123456789abcdef/object.info",
    false,
);

/// Every path the cache uses.
const ALL_SPOTS: &[Spot] = &[
    CACHE_INFO,
    CACHE_SIZE,
    CACHE_LOCK,
    CACHE_TAG,
    OBJECTS,
    STAGE,
    ENTRY,
    ENTRY_DATA,
    ENTRY_LOCK,
    ENTRY_INFO,
    STAGE_ANON,
    STAGE_ANON_LOCK,
    OBJECTS_ANON,
    OBJECTS_ANON_LOCK,
    OBJECTS_ANON_INFO,
];

impl Spot {
    /// The entry name a probe loads and evicts for this spot.
    fn entry_name(self) -> &'static str {
        if self.rel == ENTRY.rel {
            "planted"
        } else {
            "victim"
        }
    }

    /// Whether opening a cache must fail with this plant here: the cache
    /// cannot work without reading `cache.info`, locking `cache.lock`, or
    /// using `objects/` and `stage/`. `None` where either is right: a
    /// directory or a fifo at `cache.lock` can be read-locked like a file
    /// (a directory is, today), and then the cache works.
    fn refuses_open(self, plant: Plant) -> Option<bool> {
        match (self.rel, plant) {
            ("cache.info" | "objects" | "stage", _) => Some(true),
            ("cache.lock", Plant::Symlink | Plant::Socket) => Some(true),
            ("cache.lock", Plant::Fifo | Plant::WrongType) => None,
            _ => Some(false),
        }
    }
}

fn plant(kind: Plant, spot: Spot, path: &Path, outside: &Path) {
    match kind {
        Plant::Symlink => {
            let target = if spot.dir {
                outside.to_owned()
            } else {
                outside.join("canary")
            };
            std::os::unix::fs::symlink(target, path).expect("plant symlink");
        }
        Plant::Fifo => rustix::fs::mknodat(
            rustix::fs::CWD,
            path,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o666),
            0,
        )
        .expect("plant fifo"),
        Plant::Socket => {
            drop(std::os::unix::net::UnixListener::bind(path).expect("plant socket"));
        }
        Plant::WrongType if spot.dir => std::fs::write(path, "planted").expect("plant file"),
        Plant::WrongType => {
            std::fs::create_dir(path).expect("plant dir");
            std::fs::write(path.join("inside"), "planted").expect("plant file in dir");
        }
    }
}

/// Remove whatever is at `path` without following it.
fn unplant(path: &Path) {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path).expect("remove planted dir"),
        Ok(_) => std::fs::remove_file(path).expect("remove plant"),
        Err(_) => {}
    }
}

/// Make room for a plant at `spot`: move what is there aside (so that it can
/// be put back), or create the orphan anonymous entry it sits in.
fn clear_spot(scene: &Scene, spot: Spot) -> Option<PathBuf> {
    let path = scene.root.join(spot.rel);
    let parent = path.parent().expect("a spot has a parent");
    if !parent.exists() {
        // An orphan: an anonymous entry of a dead process.
        std::fs::create_dir(parent).expect("mkdir orphan");
        std::fs::create_dir(parent.join("data")).expect("mkdir orphan data");
        std::fs::write(parent.join("data/f"), "orphan").expect("orphan data");
        if !spot.rel.ends_with("object.lock") {
            std::fs::write(parent.join("object.lock"), "").expect("orphan lock");
        }
    }
    if std::fs::symlink_metadata(&path).is_ok() {
        let saved = scene.t.path().join(format!(
            "saved-{}",
            path.file_name().expect("a name").to_string_lossy()
        ));
        std::fs::rename(&path, &saved).expect("move original aside");
        Some(saved)
    } else {
        None
    }
}

// ---------------------------------------------------------------------------
// Running operations with a bounded wait.
// ---------------------------------------------------------------------------

/// What one operation returned, reduced to what the checks need.
#[derive(Debug)]
enum Outcome {
    Ok(String),
    Err {
        kind: ErrorKind,
        path: Option<PathBuf>,
        message: String,
        errno: Option<i32>,
    },
}

impl Outcome {
    fn of<T>(r: fscache::Result<T>, detail: impl FnOnce(T) -> String) -> Outcome {
        match r {
            Ok(v) => Outcome::Ok(detail(v)),
            Err(e) => Outcome::Err {
                kind: e.kind(),
                path: e.path().map(Path::to_owned),
                message: e.to_string(),
                errno: e.io_error().and_then(std::io::Error::raw_os_error),
            },
        }
    }

    fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok(_))
    }
}

/// The step a probe thread is at, for the report when it hangs.
#[derive(Clone, Default)]
struct Progress(Arc<Mutex<String>>);

impl Progress {
    fn at(&self, step: &str) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = step.to_owned();
    }

    fn get(&self) -> String {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A record of the operations a probe ran: (step, outcome).
#[derive(Default)]
struct Log {
    progress: Progress,
    steps: Vec<(String, Outcome)>,
}

impl Log {
    fn run<T>(
        &mut self,
        step: &str,
        op: impl FnOnce() -> fscache::Result<T>,
        detail: impl FnOnce(T) -> String,
    ) -> &Outcome {
        self.progress.at(step);
        let outcome = Outcome::of(op(), detail);
        self.steps.push((step.to_owned(), outcome));
        &self.steps.last().expect("just pushed").1
    }
}

/// Run `probe` in a thread and wait at most `BOUND` for it. If it does not
/// answer and `fifo` is a fifo, it is taken to be blocked opening it: open
/// the fifo for writing to let it go on, and remember the step it was at.
/// Returns the probe's result and the steps that hung.
fn bounded<T: Send + 'static>(
    fifo: &Path,
    probe: impl FnOnce(&Progress) -> T + Send + 'static,
) -> (T, Vec<String>) {
    let progress = Progress::default();
    let (tx, rx) = channel();
    let theirs = progress.clone();
    let handle = std::thread::spawn(move || {
        let out = probe(&theirs);
        let _ = tx.send(());
        out
    });
    let mut hung = Vec::new();
    let mut wait = BOUND;
    loop {
        match rx.recv_timeout(wait) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {
                hung.push(progress.get());
                let is_fifo = std::fs::symlink_metadata(fifo)
                    .map(|m| m.file_type().is_fifo())
                    .unwrap_or(false);
                assert!(
                    is_fifo && hung.len() < 100,
                    "probe is stuck at {:?} and there is no fifo to unblock it",
                    progress.get()
                );
                // A reader blocked in open() wakes when a writer appears; a
                // non-blocking read-write open is one that never waits.
                let _ = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
                    .open(fifo);
                // Later hangs are the same bug again: do not wait as long.
                wait = Duration::from_millis(200);
            }
        }
    }
    match handle.join() {
        Ok(out) => (out, hung),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// The files below an entry's `data/`, with their content.
fn tree_content(data: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![data.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p
                .strip_prefix(data)
                .expect("below data")
                .display()
                .to_string();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(t) if t.is_file() => {
                    out.insert(rel, std::fs::read_to_string(&p).unwrap_or_default());
                }
                _ => {
                    out.insert(rel, "<special>".into());
                }
            }
        }
    }
    out
}

fn describe_hit(hit: Option<LoadGuard>) -> String {
    match hit {
        None => "miss".into(),
        // Do not follow a link ourselves: the canary would see the read.
        Some(h) if !std::fs::symlink_metadata(h.path()).is_ok_and(|m| m.is_dir()) => {
            format!("hit whose data is not a directory: {}", h.path().display())
        }
        Some(h) => format!("hit {:?}", tree_content(h.path())),
    }
}

fn store_new(cache: &FsCache, name: &str) -> fscache::Result<Commit> {
    let e: StoreGuard = cache.store(name)?;
    std::fs::write(e.path().join("f"), name).expect("write payload");
    Ok(e.commit()?)
}

/// The operations a cache user runs; the ones that change what is stored
/// only when `maintain`.
fn exercise(log: &mut Log, handle: &str, cache: &FsCache, spot: Spot, maintain: bool) {
    let step = |s: &str| format!("{handle}: {s}");
    for (name, _, _) in KEEPERS {
        log.run(
            &step(&format!("load {name}")),
            || cache.load(name),
            describe_hit,
        );
    }
    let entry = spot.entry_name();
    log.run(
        &step(&format!("load {entry}")),
        || cache.load(entry),
        describe_hit,
    );
    let fresh = format!("new-from-{}", handle.replace(' ', "-"));
    log.run(
        &step("store"),
        || store_new(cache, &fresh),
        |c| format!("{c:?}"),
    );
    log.run(
        &step("stage"),
        || {
            let s = cache.stage()?;
            std::fs::write(s.path().join("scratch"), "x").expect("write scratch");
            s.close()
        },
        |()| "staged".into(),
    );
    log.run(
        &step("accounted size"),
        || cache.accounted_size(),
        |s| s.to_string(),
    );
    log.run(&step("stats"), || cache.stats(), |s| format!("{s:?}"));
    log.run(
        &step("reload info"),
        || cache.reload_info(),
        |i| format!("{i:?}"),
    );
    log.run(
        &step("set maximum"),
        || cache.set_maximum_size(MaxSize::Unlimited),
        |()| "set".into(),
    );
    if !maintain {
        return;
    }
    if spot.rel == ENTRY.rel {
        log.run(
            &step("store over the plant"),
            || store_new(cache, entry),
            |c| format!("{c:?}"),
        );
    }
    log.run(
        &step(&format!("evict {entry}")),
        || cache.evict(entry),
        |e| format!("{e:?}"),
    );
    log.run(
        &step("sweep"),
        || cache.sweep_orphans(),
        |r| format!("{r:?}"),
    );
    log.run(&step("resync"), || cache.resync(), |r| format!("{r:?}"));
    log.run(
        &step("gc"),
        || cache.gc(&GcOptions::default()),
        |r| format!("{r:?}"),
    );
    log.run(
        &step("gc dry run"),
        || {
            cache.gc(&GcOptions {
                max_size: Some(0),
                max_age: Some(Duration::ZERO),
                dry_run: true,
            })
        },
        |r| format!("{r:?}"),
    );
}

/// Plant `kind` at `spot` in a populated cache, run every operation on a
/// handle opened before the plant and on one opened after it, and check
/// that nothing panicked or hung, that every error names the planted path,
/// that the keepers survived and nothing outside changed, and that once
/// the plant is gone a sweep and a resync restore exact accounting.
fn probe(spot: Spot, kind: Plant) {
    let scene = Scene::new();
    let context = format!("{kind:?} at {}", spot.rel);
    let path = scene.root.join(spot.rel);
    // A handle opened before the damage: it has read `cache.info` and
    // holds `cache.lock` already. (Not for `objects` and `stage`: it holds
    // descriptors of the directories we move away.)
    let early = (!matches!(spot.rel, "objects" | "stage"))
        .then(|| FsCache::open(APP, &scene.root).expect("open before planting"));
    // Another, holding the keepers while `clear` runs, as a reader would.
    let guardian = FsCache::open(APP, &scene.root).expect("open guardian");
    let saved = clear_spot(&scene, spot);
    plant(kind, spot, &path, &scene.outside);

    let root = scene.root.clone();
    let (log, hung) = bounded(&path, move |progress| {
        let mut log = Log {
            progress: progress.clone(),
            ..Log::default()
        };
        if let Some(early) = &early {
            exercise(&mut log, "early handle", early, spot, false);
        }
        let opened = log.run("open", || FsCache::open(APP, &root), |_| "opened".into());
        if opened.is_ok() {
            let late = FsCache::open(APP, &root).expect("a second open works like the first");
            exercise(&mut log, "late handle", &late, spot, true);
            let held: Vec<_> = KEEPERS
                .iter()
                .filter_map(|(name, _, _)| guardian.load(name).ok().flatten())
                .collect();
            log.run("late handle: clear", || late.clear(), |r| format!("{r:?}"));
            drop(held);
        }
        log.steps
    });
    let report = || {
        log.iter()
            .map(|(step, o)| format!("\n    {step}: {o:?}"))
            .collect::<String>()
    };
    assert!(
        hung.is_empty(),
        "{context}: operations blocked on the fifo (opened without O_NONBLOCK): {hung:?}{}",
        report()
    );

    let step = |name: &str| -> &Outcome {
        &log.iter()
            .find(|(s, _)| s == name)
            .unwrap_or_else(|| panic!("{context}: step {name:?} did not run{}", report()))
            .1
    };
    // Every error is clear: it names the planted path (or a path inside
    // it), and it is an I/O error or a corrupt file.
    for (s, o) in &log {
        if let Outcome::Err {
            kind: k,
            path: p,
            message,
            errno,
        } = o
        {
            let p = p
                .as_deref()
                .unwrap_or_else(|| panic!("{context}: {s}: error names no path: {message}"));
            assert!(
                p.starts_with(&path),
                "{context}: {s}: error names {} instead of the planted {}: {message}",
                p.display(),
                path.display()
            );
            assert!(
                message.contains(&p.display().to_string()),
                "{context}: {s}: message does not show the path: {message}"
            );
            assert!(
                matches!(k, ErrorKind::Io | ErrorKind::Corrupt),
                "{context}: {s}: unexpected kind {k:?}: {message}"
            );
            assert_eq!(
                *k == ErrorKind::Io,
                errno.is_some(),
                "{context}: {s}: an I/O error keeps its cause: {message}"
            );
        }
    }
    // Opening fails exactly where the cache cannot work.
    let opened = step("open").is_ok();
    if let Some(refused) = spot.refuses_open(kind) {
        assert_eq!(
            opened,
            !refused,
            "{context}: open: {:?}{}",
            step("open"),
            report()
        );
    }
    for handle in ["early handle", "late handle"] {
        if !log.iter().any(|(s, _)| s.starts_with(handle)) {
            continue;
        }
        // The keepers load whole from every handle that opened.
        for (name, file, content) in KEEPERS {
            let got = step(&format!("{handle}: load {name}"));
            let want = format!("hit {{{file:?}: {content:?}}}");
            assert!(
                matches!(got, Outcome::Ok(d) if *d == want),
                "{context}: {handle}: load {name}: {got:?}, want {want}"
            );
        }
        // A planted name, and an entry whose object.info is not a file, are
        // misses. Elsewhere the entry next to the plant is a miss, an error
        // naming the plant, or a whole hit (a directory as its lock locks
        // just as well as a file).
        let entry = spot.entry_name();
        let got = step(&format!("{handle}: load {entry}"));
        if spot.rel == ENTRY.rel || spot.rel == ENTRY_INFO.rel {
            assert!(
                matches!(got, Outcome::Ok(d) if d == "miss"),
                "{context}: {handle}: load {entry}: {got:?}"
            );
        }
        // (What a load of an entry whose `data` is not a directory gives is
        // checked by its own test below.)
        if let (Outcome::Ok(d), false) = (got, spot.rel == ENTRY_DATA.rel) {
            assert!(
                d == "miss" || d == r#"hit {"f": "victim"}"#,
                "{context}: {handle}: load {entry} must miss or be whole: {d}"
            );
        }
        // Storing works, also when the size file is what is damaged: the
        // accounting moves the plant aside (never following it), removes
        // it and recounts.
        let stored = step(&format!("{handle}: store"));
        assert!(
            matches!(stored, Outcome::Ok(d) if d.starts_with("Stored")),
            "{context}: {handle}: store: {stored:?}"
        );
        if spot.rel == CACHE_SIZE.rel {
            assert!(
                std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()),
                "{context}: {handle}: cache.size is a file again"
            );
            assert_exact(&scene.root);
        }
        // Staging always works.
        assert!(
            step(&format!("{handle}: stage")).is_ok(),
            "{context}: stage"
        );
    }
    if spot.rel == ENTRY.rel {
        let got = step("late handle: store over the plant");
        assert!(
            matches!(got, Outcome::Ok(d) if d == "NameTaken"),
            "{context}: a planted name is taken, never replaced: {got:?}"
        );
    }
    scene.assert_outside_untouched(&context);

    // Take the damage away and put the original back (a healed cache.size
    // stays: it is exact).
    if spot.rel != CACHE_SIZE.rel {
        unplant(&path);
    }
    if let Some(saved) = saved.filter(|_| spot.rel != CACHE_SIZE.rel) {
        if path.parent().is_some_and(Path::exists) {
            std::fs::rename(&saved, &path).expect("put the original back");
        }
    } else if spot.rel.ends_with("object.lock") && path.parent().is_some_and(Path::exists) {
        // An orphan's lock was the plant: give the dead owner's lock file
        // back. Without one, a directory that is not empty is no orphan a
        // sweep may remove (FORMAT.md, "Cleaning up").
        std::fs::write(&path, "").expect("put an orphan's lock back");
    }
    scene.assert_keepers_load(&context);
    scene.assert_repairable(&context);
    scene.assert_outside_untouched(&context);
}

// ---------------------------------------------------------------------------
// Foreign file types at every path.
// ---------------------------------------------------------------------------

#[test]
fn a_symlink_planted_at_any_path_of_the_cache_is_refused_or_ignored_and_never_followed() {
    for spot in ALL_SPOTS {
        probe(*spot, Plant::Symlink);
    }
}

#[test]
fn a_socket_planted_at_any_path_of_the_cache_fails_cleanly() {
    for spot in ALL_SPOTS {
        probe(*spot, Plant::Socket);
    }
}

#[test]
fn a_file_where_a_directory_belongs_or_a_directory_where_a_file_belongs_fails_cleanly() {
    for spot in ALL_SPOTS {
        probe(*spot, Plant::WrongType);
    }
}

#[test]
fn a_fifo_planted_where_the_cache_never_reads_a_file_blocks_nothing() {
    for spot in [
        CACHE_TAG,
        OBJECTS,
        STAGE,
        ENTRY,
        ENTRY_DATA,
        STAGE_ANON,
        OBJECTS_ANON,
    ] {
        probe(spot, Plant::Fifo);
    }
}

/// The files the cache opens for reading. A fifo there must fail the
/// operation (or be skipped), never block it.
macro_rules! fifo_must_not_block {
    ($($(#[$attr:meta])* $name:ident: $spot:expr;)*) => {$(
        $(#[$attr])*
        #[test]
        fn $name() {
            probe($spot, Plant::Fifo);
        }
    )*};
}

fifo_must_not_block! {
    a_fifo_at_cache_info_fails_open_without_blocking: CACHE_INFO;
    a_fifo_at_cache_size_fails_size_reads_without_blocking: CACHE_SIZE;
    a_fifo_at_cache_lock_fails_open_without_blocking: CACHE_LOCK;
    a_fifo_at_an_entry_lock_fails_load_without_blocking: ENTRY_LOCK;
    a_fifo_at_an_entry_info_fails_maintenance_without_blocking: ENTRY_INFO;
    a_fifo_at_a_staging_lock_fails_stats_without_blocking: STAGE_ANON_LOCK;
    a_fifo_at_an_orphan_lock_fails_stats_without_blocking: OBJECTS_ANON_LOCK;
    a_fifo_at_an_orphan_info_fails_the_sweep_without_blocking: OBJECTS_ANON_INFO;
}

#[test]
fn an_entry_whose_data_is_not_a_directory_is_a_miss_not_a_way_out() {
    for kind in ALL_PLANTS {
        let scene = Scene::new();
        let spot = ENTRY_DATA;
        let path = scene.root.join(spot.rel);
        clear_spot(&scene, spot);
        plant(kind, spot, &path, &scene.outside);
        let (got, hung) = bounded(&path, {
            let root = scene.root.clone();
            move |_| {
                let cache = FsCache::open(APP, &root).expect("open");
                let hit = cache.load("victim").expect("load");
                hit.map(|h| h.path().to_owned())
            }
        });
        assert!(hung.is_empty(), "{kind:?}: load blocked");
        assert!(
            got.is_none(),
            "{kind:?} at data/: load must miss, but it hit {got:?}, which leads the caller to {:?}",
            std::fs::canonicalize(&path).ok()
        );
        scene.assert_outside_untouched(&format!("{kind:?} at data/"));
    }
}

#[test]
fn an_object_info_that_is_not_a_file_is_swept_as_invalid_and_does_not_stop_maintenance() {
    for spot in [ENTRY_INFO, OBJECTS_ANON_INFO] {
        for kind in [Plant::Symlink, Plant::Socket, Plant::WrongType] {
            let context = format!("{kind:?} at {}", spot.rel);
            let scene = Scene::new();
            let path = scene.root.join(spot.rel);
            clear_spot(&scene, spot);
            plant(kind, spot, &path, &scene.outside);
            let cache = FsCache::open(APP, &scene.root).expect("open");
            let swept = cache.sweep_orphans();
            assert!(swept.is_ok(), "{context}: sweep: {swept:?}");
            let entry = path.parent().expect("in an entry");
            assert!(
                std::fs::symlink_metadata(entry).is_err(),
                "{context}: the invalid entry must be swept: {swept:?}"
            );
            let resynced = cache.resync();
            assert!(resynced.is_ok(), "{context}: resync: {resynced:?}");
            assert_exact(&scene.root);
            scene.assert_outside_untouched(&context);
            scene.assert_keepers_load(&context);
        }
    }
}

#[test]
fn a_commit_that_needs_room_is_not_stopped_by_an_entry_with_a_foreign_lock_or_info() {
    for spot in [ENTRY_LOCK, ENTRY_INFO] {
        for kind in [Plant::Symlink, Plant::Socket, Plant::WrongType] {
            let context = format!("{kind:?} at {}", spot.rel);
            let scene = Scene::new();
            let path = scene.root.join(spot.rel);
            clear_spot(&scene, spot);
            plant(kind, spot, &path, &scene.outside);
            // The damaged entry is the least recently used: eviction meets
            // it first. (Times are set on links themselves, not followed.)
            for (name, secs) in [("victim", 1), ("keep-flat", 2), ("keep-deep", 3)] {
                let t = rustix::fs::Timespec {
                    tv_sec: 1_000_000 * secs,
                    tv_nsec: 0,
                };
                rustix::fs::utimensat(
                    rustix::fs::CWD,
                    scene.root.join("objects").join(name).join("object.lock"),
                    &rustix::fs::Timestamps {
                        last_access: t,
                        last_modification: t,
                    },
                    rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
                )
                .expect("set last use");
            }
            let cache = FsCache::open(APP, &scene.root).expect("open");
            cache
                .set_maximum_size(MaxSize::Bytes(size_file(&scene.root)))
                .expect("max");
            let stored = put(&cache, "needs-room", "f", "needs room");
            assert!(
                matches!(stored, Ok(Commit::Stored { .. })),
                "{context}: a full cache must make room: {stored:?}"
            );
            scene.assert_outside_untouched(&context);
        }
    }
}

// ---------------------------------------------------------------------------
// Garbage in the cache's own files.
// ---------------------------------------------------------------------------

/// The type and path of every file below `dir`, without following links.
/// A directory called `outside` is not listed: the canary checks watch it,
/// and listing it would count as a read.
fn is_reservation_dir(entry: &Path) -> bool {
    entry
        .parent()
        .and_then(Path::parent)
        .zip(entry.file_name().and_then(|n| n.to_str()))
        .is_some_and(|(cache, name)| is_reservation(cache, name))
}

fn snapshot(dir: &Path) -> BTreeMap<PathBuf, char> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        if d.file_name().is_some_and(|n| n == "outside") {
            continue;
        }
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let t = e.file_type().expect("file type");
            let p = e.path();
            // A live handle's reservation of accounted space is no trace
            // of any name.
            if t.is_dir() && p.join("object.info").is_file() && is_reservation_dir(&p) {
                continue;
            }
            let c = if t.is_dir() {
                stack.push(p.clone());
                'd'
            } else if t.is_symlink() {
                'l'
            } else if t.is_file() {
                'f'
            } else {
                '?'
            };
            out.insert(p.strip_prefix(dir).expect("below").to_owned(), c);
        }
    }
    out
}

#[test]
fn a_cache_info_that_is_not_a_supported_json_object_makes_the_cache_staging_only() -> TestResult {
    let huge = format!("{{\"version\": 1, \"pad\": \"{}\"}}", "x".repeat(2 << 20));
    for garbage in [
        "not json at all",
        "[1, 2, 3]",
        "null",
        "",
        r#"{"version": "1", "maximum-size": "unlimited"}"#,
        r#"{"version": 1, "maxi"#,
        r#"{"version": 1.0, "maximum-size": "unlimited"}"#,
        r#"{"version": 0, "maximum-size": "unlimited"}"#,
        "\u{0}\u{1}binary",
        huge.as_str(),
    ] {
        let context = format!("cache.info = {:?}", &garbage[..garbage.len().min(40)]);
        let scene = Scene::new();
        std::fs::write(scene.root.join("cache.info"), garbage)?;
        let objects_before = snapshot(&scene.root.join("objects"));
        let cache = FsCache::open(APP, &scene.root)?;
        assert!(
            !cache.info().is_supported(),
            "{context}: {:?}",
            cache.info()
        );
        // Store degrades to a staging entry that a commit throws away.
        let e = cache.store("new")?;
        assert!(
            e.path().starts_with(scene.root.join("stage")),
            "{context}: a degraded store lives in stage/: {}",
            e.path().display()
        );
        std::fs::write(e.path().join("f"), "x")?;
        assert_eq!(
            e.commit().map_err(fscache::Error::from)?,
            Commit::Unsupported,
            "{context}"
        );
        // Load is always a miss, even of what is there.
        for (name, _, _) in KEEPERS {
            assert!(
                cache.load(name)?.is_none(),
                "{context}: load {name} must miss"
            );
        }
        // Staging works.
        cache.stage()?.close()?;
        // Everything that needs the object store says why it refuses.
        let refusals: Vec<(&str, fscache::Error)> = vec![
            (
                "set maximum",
                cache.set_maximum_size(MaxSize::Unlimited).unwrap_err(),
            ),
            ("stats", cache.stats().unwrap_err()),
            ("sweep", cache.sweep_orphans().unwrap_err()),
            ("resync", cache.resync().unwrap_err()),
            ("gc", cache.gc(&GcOptions::default()).unwrap_err()),
            ("evict", cache.evict("victim").unwrap_err()),
            ("clear", cache.clear().unwrap_err()),
        ];
        for (op, e) in refusals {
            assert_eq!(
                e.kind(),
                ErrorKind::UnsupportedVersion,
                "{context}: {op}: {e}"
            );
            assert_eq!(e.path(), Some(scene.root.as_path()), "{context}: {op}: {e}");
        }
        // Nothing was rewritten, nothing in objects/ was touched.
        assert_eq!(
            std::fs::read(scene.root.join("cache.info"))?,
            garbage.as_bytes(),
            "{context}: a cache.info we cannot read must never be rewritten"
        );
        assert_eq!(
            snapshot(&scene.root.join("objects")),
            objects_before,
            "{context}"
        );
        assert!(names(&scene.root.join("stage")).is_empty(), "{context}");
        scene.assert_outside_untouched(&context);
        drop(cache);
        std::fs::write(scene.root.join("cache.info"), r#"{"version": 1}"#)?;
        scene.assert_keepers_load(&context);
    }
    Ok(())
}

#[test]
fn a_cache_info_without_a_usable_maximum_accepts_nothing_new_but_serves_what_it_has() -> TestResult
{
    for info in [
        r#"{"version": 1}"#,
        r#"{"version": 1, "maximum-size": -1.5}"#,
        r#"{"version": 1, "maximum-size": 1.5}"#,
        r#"{"version": 1, "maximum-size": "big"}"#,
        r#"{"version": 1, "maximum-size": null}"#,
        r#"{"version": 1, "maximum-size": 99999999999999999999999}"#,
    ] {
        let context = format!("cache.info = {info}");
        let scene = Scene::new();
        std::fs::write(scene.root.join("cache.info"), info)?;
        let cache = FsCache::open(APP, &scene.root)?;
        assert!(cache.info().is_supported(), "{context}");
        assert_eq!(
            cache.info().effective_maximum(),
            MaxSize::Bytes(0),
            "{context}"
        );
        let e = cache.store("new")?;
        std::fs::write(e.path().join("f"), "x")?;
        assert!(
            matches!(
                e.commit().map_err(fscache::Error::from)?,
                Commit::TooLarge {
                    max: MaxSize::Bytes(0),
                    ..
                }
            ),
            "{context}: nothing fits a maximum of 0"
        );
        scene.assert_keepers_load(&context);
        assert_eq!(cache.stats()?.entries, 3, "{context}");
        scene.assert_repairable(&context);
    }
    Ok(())
}

#[test]
fn a_corrupt_cache_size_is_healed_by_the_next_commit_and_by_resync() -> TestResult {
    let long = format!("{}1", " ".repeat(70));
    for garbage in [
        "garbage",
        "-5",
        "1.5",
        "1e3",
        "99999999999999999999999999",
        "",
        "12 34",
        "\"12\"",
        "null",
        long.as_str(),
    ] {
        let context = format!("cache.size = {garbage:?}");
        let scene = Scene::new();
        let size_path = scene.root.join("cache.size");
        std::fs::write(&size_path, garbage)?;
        let cache = FsCache::open(APP, &scene.root)?;

        // Read without the lock, it is reported as it is.
        let e = cache.accounted_size().unwrap_err();
        assert_eq!(
            (e.kind(), e.path()),
            (ErrorKind::Corrupt, Some(size_path.as_path())),
            "{context}: {e}"
        );
        assert_eq!(cache.stats()?.accounted_bytes, None, "{context}");

        // A commit recounts it under the size lock and goes on.
        assert!(
            put(&cache, "new", "f", "x")?.is_stored(),
            "{context}: a commit heals and stores"
        );
        assert_eq!(cache.counters().heals, 1, "{context}: one heal");
        assert_exact(&scene.root);
        scene.assert_keepers_load(&context);

        // So does a resync, which reports what it found.
        std::fs::write(&size_path, garbage)?;
        let r = cache.resync()?;
        assert_eq!(r.before, None, "{context}");
        assert_exact(&scene.root);
        assert!(
            put(&cache, "after", "f", "x")?.is_stored(),
            "{context}: works again"
        );
        assert_exact(&scene.root);
        scene.assert_outside_untouched(&context);
    }
    Ok(())
}

#[test]
fn an_eviction_with_a_corrupt_cache_size_heals_it_first() -> TestResult {
    let scene = Scene::new();
    std::fs::write(scene.root.join("cache.size"), "garbage")?;
    let cache = FsCache::open(APP, &scene.root)?;
    let r = cache.evict("victim")?;
    assert!(matches!(r, Eviction::Removed { .. }), "{r:?}");
    assert!(cache.load("victim")?.is_none());
    assert_eq!(cache.counters().heals, 1);
    assert_exact(&scene.root);
    Ok(())
}

#[test]
fn an_entry_with_a_corrupt_object_info_is_a_miss_invalid_swept_and_given_no_size() -> TestResult {
    for garbage in [
        "garbage",
        "",
        "[]",
        r#"{"creation-boot-id": "0123456789abcdef0123456789abcdef"}"#,
        r#"{"size": -1}"#,
        r#"{"size": 1.5}"#,
        r#"{"size": "8192"}"#,
        r#"{"size": 99999999999999999999999}"#,
        r#"{"size": 8192"#,
    ] {
        let context = format!("object.info = {garbage:?}");
        let scene = Scene::new();
        let info = scene.root.join("objects/victim/object.info");
        std::fs::write(&info, garbage)?;
        let cache = FsCache::open(APP, &scene.root)?;
        // One definition of an entry (layout::committed): an object.info
        // that is not one makes the entry invalid, so a load misses it,
        // whatever its data holds.
        assert!(
            cache.load("victim")?.is_none(),
            "{context}: an invalid entry is a miss"
        );

        let stats = cache.stats()?;
        assert_eq!(
            (stats.entries, stats.invalid_entries),
            (2, 1),
            "{context}: {stats:?}"
        );
        let r = cache.sweep_orphans()?;
        assert_eq!(r.invalid_entries, 1, "{context}: {r:?}");
        assert!(
            !scene.root.join("objects/victim").exists(),
            "{context}: swept"
        );
        assert!(cache.load("victim")?.is_none(), "{context}");
        // Its size could not be read, so it was not given back: cache.size
        // overcounts (never undercounts) until a resync.
        let sum: u64 = info_sizes(&scene.root).iter().map(|(_, s)| s).sum();
        assert!(size_file(&scene.root) >= sum, "{context}");
        cache.resync()?;
        assert_exact(&scene.root);
        scene.assert_keepers_load(&context);
        scene.assert_outside_untouched(&context);
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Hostile content inside entries.
// ---------------------------------------------------------------------------

#[test]
fn special_files_and_links_inside_stored_data_are_measured_and_removed_never_opened() -> TestResult
{
    let scene = Scene::new();
    let root = scene.root.clone();
    let outside = scene.outside.clone();
    let (result, hung) = bounded(&scene.root.join("objects/odd/data/fifo"), move |_| {
        let cache = FsCache::open(APP, &root)?;
        let e = cache.store("odd")?;
        let data = e.path().to_owned();
        std::os::unix::fs::symlink(&outside, data.join("to-outside"))?;
        std::os::unix::fs::symlink(outside.join("canary"), data.join("to-canary"))?;
        rustix::fs::mknodat(
            rustix::fs::CWD,
            data.join("fifo"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )?;
        drop(std::os::unix::net::UnixListener::bind(data.join("socket"))?);
        let stored = e.commit().map_err(fscache::Error::from)?;
        let hit = cache.load("odd")?.map(|h| tree_content(h.path()));
        let stats = cache.stats()?;
        let evicted = cache.evict("odd")?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>((stored, hit, stats, evicted))
    });
    assert!(hung.is_empty(), "blocked at {hung:?}");
    let (stored, hit, stats, evicted) = result.map_err(|e| e.to_string())?;
    let Commit::Stored { size } = stored else {
        panic!("not stored: {stored:?}")
    };
    assert!(
        size < 64 * 1024,
        "links and special files count as themselves: {size}"
    );
    let hit = hit.expect("a hit");
    assert_eq!(
        hit.keys().collect::<Vec<_>>(),
        ["fifo", "socket", "to-canary", "to-outside"],
        "the tree is whole and was not followed into: {hit:?}"
    );
    assert_eq!(stats.recorded_bytes, stats.measured_bytes, "{stats:?}");
    assert_eq!(evicted, Eviction::Removed { size });
    assert!(!scene.root.join("objects/odd").exists());
    scene.assert_outside_untouched("special files in data");
    scene.assert_keepers_load("special files in data");
    scene.assert_repairable("special files in data");
    Ok(())
}

#[test]
fn a_link_or_fifo_swapped_in_for_the_data_of_a_store_fails_the_commit_and_is_not_followed(
) -> TestResult {
    for kind in [Plant::Symlink, Plant::Fifo, Plant::Socket, Plant::WrongType] {
        let context = format!("{kind:?} swapped in for data/");
        let scene = Scene::new();
        let root = scene.root.clone();
        let outside = scene.outside.clone();
        let (result, hung) = bounded(&scene.t.path().join("no-fifo-here"), move |_| {
            let cache = FsCache::open(APP, &root).expect("open");
            let e = cache.store("swapped").expect("store");
            let data = e.path().to_owned();
            std::fs::remove_dir(&data).expect("rmdir data");
            plant(kind, ENTRY_DATA, &data, &outside);
            let failed = e.commit().map(|c| format!("{c:?}"));
            let outcome = match failed {
                Ok(c) => Err(c),
                Err(f) => {
                    let summary = (
                        f.error.kind(),
                        f.error.path().map(Path::to_owned),
                        f.to_string(),
                    );
                    drop(f.guard);
                    Ok(summary)
                }
            };
            (outcome, data)
        });
        assert!(hung.is_empty(), "{context}: blocked at {hung:?}");
        let (outcome, data) = result;
        let (kind_of, path, message) =
            outcome.unwrap_or_else(|c| panic!("{context}: the commit succeeded: {c}"));
        assert_eq!(kind_of, ErrorKind::Io, "{context}: {message}");
        assert_eq!(
            path.as_deref(),
            Some(data.as_path()),
            "{context}: {message}"
        );
        assert!(
            message.contains(&data.display().to_string()),
            "{context}: {message}"
        );
        assert!(!scene.root.join("objects/swapped").exists(), "{context}");
        assert!(
            names(&scene.root.join("objects"))
                .iter()
                .all(|n| !n.starts_with("uuid-")),
            "{context}: dropping the failed guard removes its entry"
        );
        scene.assert_outside_untouched(&context);
        scene.assert_keepers_load(&context);
        scene.assert_repairable(&context);
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Arbitrary names.
// ---------------------------------------------------------------------------

#[test]
fn arbitrary_names_never_panic_and_never_reach_outside_objects() -> TestResult {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestCaseError, TestRunner};

    let scene = Scene::new();
    let cache = FsCache::open(APP, &scene.root)?;
    let before = snapshot(scene.t.path());
    let names_strategy = prop_oneof![
        any::<String>(),
        "[a-z./\\\\ \\x00-]{0,8}",
        "(\\.\\./|/|\\./)*[a-z]{0,4}(/\\.\\.)*",
        "(uuid-|UUID-)?[0-9a-f]{0,40}",
        "(object\\.lock|object\\.info|data|objects|stage|cache\\.size|\\.\\.|\\.)",
        "[a-zé€]{80,130}",
        "\\PC{250,260}",
    ];
    let mut runner = TestRunner::new(Config {
        cases: 300,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&names_strategy, |name| {
            let fail = |what: String| TestCaseError::fail(format!("{name:?}: {what}"));
            let valid = fscache::validate_name(&name).is_ok();
            if !valid {
                for (op, e) in [
                    ("store", cache.store(&name).map(drop).unwrap_err()),
                    ("load", cache.load(&name).map(drop).unwrap_err()),
                    ("evict", cache.evict(&name).map(drop).unwrap_err()),
                ] {
                    prop_assert_eq!(
                        e.kind(),
                        ErrorKind::InvalidName,
                        "{:?}: {}: {}",
                        name,
                        op,
                        e
                    );
                }
            } else {
                let pre_existing = before.contains_key(&Path::new("cache/objects").join(&name));
                let e = cache
                    .store(&name)
                    .map_err(|e| fail(format!("store: {e}")))?;
                std::fs::write(e.path().join("f"), name.as_bytes()).expect("write payload");
                let outcome = e.commit().map_err(|e| fail(format!("commit: {e}")))?;
                if pre_existing {
                    prop_assert_eq!(outcome, Commit::NameTaken);
                    return Ok(());
                }
                prop_assert!(outcome.is_stored(), "{:?}: {:?}", name, outcome);
                // Everything new is below objects/<name>, one component.
                let now = snapshot(scene.t.path());
                let entry = Path::new("cache/objects").join(&name);
                prop_assert_eq!(entry.components().count(), 3, "{:?}", name);
                for new in now.keys().filter(|p| !before.contains_key(*p)) {
                    prop_assert!(new.starts_with(&entry), "{:?} created {:?}", name, new);
                }
                let hit = cache.load(&name).map_err(|e| fail(format!("load: {e}")))?;
                let hit = hit.ok_or_else(|| fail("stored but not loadable".into()))?;
                prop_assert_eq!(
                    std::fs::read(hit.path().join("f")).ok(),
                    Some(name.clone().into_bytes())
                );
                drop(hit);
                let ev = cache
                    .evict(&name)
                    .map_err(|e| fail(format!("evict: {e}")))?;
                prop_assert!(
                    matches!(ev, Eviction::Removed { .. }),
                    "{:?}: {:?}",
                    name,
                    ev
                );
            }
            prop_assert_eq!(
                &snapshot(scene.t.path()),
                &before,
                "{:?} left a trace",
                name
            );
            Ok(())
        })
        .map_err(|e| e.to_string())?;
    scene.assert_outside_untouched("arbitrary names");
    scene.assert_keepers_load("arbitrary names");
    scene.assert_repairable("arbitrary names");
    Ok(())
}
