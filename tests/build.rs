//! `get_or_build`: of many processes or threads asking at once for a
//! missing entry, one builds it and the others load what it committed; a
//! builder that fails, panics or is killed hands over to a waiter.
//!
//! Builders are held at a known step by a *gate*: a file the test holds
//! write-locked, which the worker's build waits to read-lock after it has
//! said `building`. Waiters are known to be waiting when the kernel shows
//! them blocked in `fcntl(F_OFD_SETLKW)`.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Instant;

use common::*;
use fscache::lock::{FileLock, LockKind, Wait};
use fscache::{BuildOptions, Built, Commit, Error, Eviction, FsCache, MaxSize};
use nix::libc;

/// Whether the task at `task` (`/proc/PID` or `/proc/PID/task/TID`) is
/// blocked waiting for an OFD lock.
fn blocked_on_a_lock(task: &Path) -> bool {
    let syscall = std::fs::read_to_string(task.join("syscall"))
        .unwrap_or_else(|e| panic!("read {}/syscall: {e}", task.display()));
    let mut fields = syscall.split_whitespace();
    let number = fields.next().and_then(|n| n.parse::<libc::c_long>().ok());
    let cmd = fields
        .nth(1)
        .and_then(|c| i64::from_str_radix(c.trim_start_matches("0x"), 16).ok());
    number == Some(libc::SYS_fcntl) && cmd == Some(i64::from(libc::F_OFD_SETLKW))
}

/// Wait until the kernel shows `task` blocked waiting for a lock.
#[track_caller]
fn wait_until_blocked(task: &Path) {
    let start = Instant::now();
    while !blocked_on_a_lock(task) {
        assert!(
            start.elapsed() < STEP,
            "{} never blocked on a lock",
            task.display()
        );
        std::thread::yield_now();
    }
}

fn proc_of(w: &Worker) -> PathBuf {
    PathBuf::from(format!("/proc/{}", w.pid()))
}

/// How many builds have appended to `counter`.
fn builds_in(counter: &Path) -> usize {
    std::fs::read_to_string(counter).map_or(0, |s| s.lines().count())
}

/// A file to hold write-locked while a builder must wait at its gate.
fn gate(dir: &Path) -> (PathBuf, FileLock) {
    let path = dir.join("gate");
    std::fs::write(&path, b"").expect("create the gate");
    let held = FileLock::open(&path, LockKind::Exclusive, Wait::Never).expect("close the gate");
    (path, held)
}

/// A worker's answer to `build`, after its `building` line if it built.
#[track_caller]
fn answer(w: &mut Worker) -> String {
    let line = w.next_line();
    if line == "building" {
        w.next_line()
    } else {
        line
    }
}

/// The names in `dir` that are anonymous (`uuid-*`).
fn anonymous_in(dir: &Path) -> Vec<String> {
    names(dir)
        .into_iter()
        .filter(|n| n.starts_with("uuid-"))
        .collect()
}

#[track_caller]
fn assert_nothing_leaked(root: &Path, context: &str) {
    for dir in ["objects", "stage"] {
        let left = anonymous_in(&root.join(dir));
        assert!(left.is_empty(), "{context}: left in {dir}/: {left:?}");
    }
    assert_exact(root);
    assert_eq!(
        names(&root.join("builds")),
        Vec::<String>::new(),
        "{context}: build locks left"
    );
}

#[test]
fn of_eight_processes_asking_at_once_for_a_missing_entry_exactly_one_builds_it() -> TestResult {
    let (t, cache) = new_cache(MaxSize::Unlimited);
    let (gate, held) = gate(t.path());
    let mut workers: Vec<Worker> = (0..8).map(|_| Worker::spawn(&cache)).collect();
    let counter = t.path().join("counter");
    for w in &mut workers {
        w.send(&format!(
            "build e 20000 {} gate={}",
            counter.display(),
            gate.display()
        ));
    }
    // One waits at the gate, seven for its build lock: all are in.
    for w in &workers {
        wait_until_blocked(&proc_of(w));
    }
    drop(held);
    let answers: Vec<String> = workers.iter_mut().map(answer).collect();
    let built = answers.iter().filter(|a| a.starts_with("built ")).count();
    let hits = answers.iter().filter(|a| a.starts_with("hit ")).count();
    assert_eq!((built, hits), (1, 7), "answers: {answers:?}");
    let sizes: Vec<&str> = answers.iter().filter_map(|a| a.split(' ').nth(1)).collect();
    assert!(
        sizes.windows(2).all(|w| w[0] == w[1]),
        "all must get the same entry: {answers:?}"
    );
    assert_eq!(builds_in(&counter), 1, "exactly one build may run");

    // Free-running: no gate, the askers arrive as they come.
    let rounds = 5;
    for round in 0..rounds {
        let counter = t.path().join(format!("counter-{round}"));
        for w in &mut workers {
            w.send(&format!("build r{round} 20000 {}", counter.display()));
        }
        let answers: Vec<String> = workers.iter_mut().map(answer).collect();
        assert!(
            answers
                .iter()
                .all(|a| a.starts_with("built ") || a.starts_with("hit ")),
            "round {round}: {answers:?}"
        );
        assert_eq!(
            builds_in(&counter),
            1,
            "round {round}: one build per name: {answers:?}"
        );
    }
    println!(
        "8 askers per name: 1 build per name, for all of {} names",
        rounds + 1
    );
    for w in workers {
        w.wait();
    }
    assert_nothing_leaked(&cache, "after all rounds");
    Ok(())
}

#[test]
fn when_the_builder_is_killed_mid_build_a_waiter_builds_and_nothing_leaks() -> TestResult {
    let (t, cache) = new_cache(MaxSize::Unlimited);
    let (gate, held) = gate(t.path());
    let counter = t.path().join("counter");
    let mut first = Worker::spawn(&cache);
    first.send(&format!(
        "build e 20000 {} gate={}",
        counter.display(),
        gate.display()
    ));
    first.expect("building");
    let mut waiter = Worker::spawn(&cache);
    waiter.send(&format!("build e 20000 {}", counter.display()));
    wait_until_blocked(&proc_of(&waiter));
    first.kill();
    let got = answer(&mut waiter);
    assert!(
        got.starts_with("built "),
        "the waiter must take over: {got}"
    );
    assert_eq!(builds_in(&counter), 2, "the killed build and the waiter's");
    drop(held);
    waiter.wait();
    let handle = FsCache::open("fscache-tests", &cache)?;
    let report = handle.sweep_orphans()?;
    assert_eq!(
        report.orphan_dirs, 1,
        "the killed build's entry: {report:?}"
    );
    assert_eq!(
        report.build_locks, 0,
        "the waiter removed the lock when done: {report:?}"
    );
    assert_nothing_leaked(&cache, "after the sweep");
    assert!(handle.load("e")?.is_some(), "the waiter's entry is there");
    Ok(())
}

#[test]
fn the_sweep_removes_a_killed_builders_lock_and_leaves_a_live_builders() -> TestResult {
    let (t, cache) = new_cache(MaxSize::Unlimited);
    let (gate, held) = gate(t.path());
    let counter = t.path().join("counter");
    let mut doomed = Worker::spawn(&cache);
    let mut live = Worker::spawn(&cache);
    for (w, name) in [(&mut doomed, "dead"), (&mut live, "alive")] {
        w.send(&format!(
            "build {name} 20000 {} gate={}",
            counter.display(),
            gate.display()
        ));
        w.expect("building");
    }
    doomed.kill();
    assert_eq!(names(&cache.join("builds")), ["alive", "dead"]);
    let handle = FsCache::open("fscache-tests", &cache)?;
    let report = handle.sweep_orphans()?;
    assert_eq!(report.build_locks, 1, "only the dead one's: {report:?}");
    assert_eq!(report.orphan_dirs, 1, "the dead build's entry: {report:?}");
    assert_eq!(report.live, 1, "the live build's entry: {report:?}");
    assert_eq!(
        names(&cache.join("builds")),
        ["alive"],
        "a held build lock stays"
    );
    drop(held);
    let got = live.next_line();
    assert!(got.starts_with("built "), "{got}");
    live.wait();
    let report = handle.sweep_orphans()?;
    assert_eq!(
        (report.orphan_dirs, report.build_locks),
        (0, 0),
        "the live builder left nothing: {report:?}"
    );
    assert_nothing_leaked(&cache, "after the second sweep");
    Ok(())
}

#[test]
fn a_build_that_fails_reports_its_error_and_the_next_waiter_builds() -> TestResult {
    let (t, cache) = new_cache(MaxSize::Unlimited);
    let (gate, held) = gate(t.path());
    let counter = t.path().join("counter");
    let mut failing = Worker::spawn(&cache);
    failing.send(&format!(
        "build e 20000 {} gate={} then=fail",
        counter.display(),
        gate.display()
    ));
    failing.expect("building");
    let mut waiter = Worker::spawn(&cache);
    waiter.send(&format!("build e 20000 {}", counter.display()));
    wait_until_blocked(&proc_of(&waiter));
    drop(held);
    assert_eq!(
        failing.next_line(),
        "failed told to fail",
        "the failing caller gets its build's error"
    );
    let got = answer(&mut waiter);
    assert!(got.starts_with("built "), "the waiter must build: {got}");
    assert_eq!(builds_in(&counter), 2, "the failed build and the waiter's");
    failing.wait();
    waiter.wait();
    assert_nothing_leaked(&cache, "after a failed and a good build");
    Ok(())
}

#[test]
fn a_waiter_whose_wait_runs_out_fails_or_builds_itself_as_told() -> TestResult {
    let (t, cache) = new_cache(MaxSize::Unlimited);
    let (gate, held) = gate(t.path());
    let counter = t.path().join("counter");
    let mut slow = Worker::spawn(&cache);
    slow.send(&format!(
        "build e 20000 {} gate={}",
        counter.display(),
        gate.display()
    ));
    slow.expect("building");
    let mut quitter = Worker::spawn(&cache);
    for wait in ["wait=never", "wait=100"] {
        let got = quitter.ask(&format!(
            "build e 20000 {} {wait} give-up=fail",
            counter.display()
        ));
        assert_eq!(got, "contended", "{wait} with give-up=fail");
    }
    let mut impatient = Worker::spawn(&cache);
    impatient.send(&format!("build e 20000 {} wait=100", counter.display()));
    let got = answer(&mut impatient);
    assert!(got.starts_with("built "), "gave up and built: {got}");
    drop(held);
    let got = slow.next_line();
    assert!(
        got.starts_with("hit "),
        "the slow builder finds the name taken and gets the other entry: {got}"
    );
    assert_eq!(
        builds_in(&counter),
        2,
        "the slow build and the impatient one"
    );
    for w in [slow, quitter, impatient] {
        w.wait();
    }
    assert_nothing_leaked(&cache, "after a duplicate build");
    Ok(())
}

/// What a thread's `get_or_build` ended with, for the test to look at.
#[derive(Debug, PartialEq, Eq)]
enum Got {
    Found,
    Stored,
}

fn write_payload(dir: &Path) -> Result<(), Error> {
    std::fs::write(dir.join("out"), vec![7u8; 10_000]).map_err(|source| Error::Io {
        op: fscache::Op::Write,
        path: dir.join("out"),
        source,
    })
}

/// An asking thread.
type Asker = std::thread::JoinHandle<Result<Got, Error>>;

/// Start `n` threads asking `cache` for `name`. The build of each tells
/// `building` its task, then waits for a word on `release`, then runs
/// `then`. Returns the threads and their tasks (`/proc/PID/task/TID`).
fn askers(
    cache: &FsCache,
    name: &'static str,
    n: usize,
    builds: &Arc<AtomicUsize>,
    building: &mpsc::Sender<PathBuf>,
    release: &Arc<Mutex<mpsc::Receiver<()>>>,
    then: fn(&Path) -> Result<(), Error>,
) -> (Vec<Asker>, Vec<PathBuf>) {
    let (tasks_tx, tasks) = mpsc::channel();
    let threads = (0..n)
        .map(|_| {
            let (cache, builds, building, release, tasks_tx) = (
                cache.clone(),
                Arc::clone(builds),
                building.clone(),
                Arc::clone(release),
                tasks_tx.clone(),
            );
            std::thread::spawn(move || {
                let me = Path::new("/proc")
                    .join(std::fs::read_link("/proc/thread-self").expect("our own task"));
                tasks_tx.send(me.clone()).expect("the test listens");
                let got = cache.get_or_build(name, &BuildOptions::new(), |dir| {
                    builds.fetch_add(1, Ordering::SeqCst);
                    building.send(me).expect("the test listens");
                    release
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .recv()
                        .expect("the test releases");
                    then(dir)
                })?;
                Ok(match got {
                    Built::Found(_) => Got::Found,
                    Built::Stored(_) => Got::Stored,
                    other => panic!("not cached: {other}"),
                })
            })
        })
        .collect();
    let tasks = (0..n)
        .map(|_| tasks.recv_timeout(STEP).expect("every thread starts"))
        .collect();
    (threads, tasks)
}

#[test]
fn of_eight_threads_asking_at_once_exactly_one_builds() -> TestResult {
    let (_t, root) = new_cache(MaxSize::Unlimited);
    let cache = FsCache::open("fscache-tests", &root)?;
    let builds = Arc::new(AtomicUsize::new(0));
    let (building_tx, building) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    let release_rx = Arc::new(Mutex::new(release_rx));
    let (threads, tasks) = askers(
        &cache,
        "e",
        8,
        &builds,
        &building_tx,
        &release_rx,
        write_payload,
    );
    let builder = building.recv_timeout(STEP)?;
    for task in tasks.iter().filter(|t| **t != builder) {
        wait_until_blocked(task);
    }
    release.send(())?;
    let got: Vec<Got> = threads
        .into_iter()
        .map(|t| t.join().expect("no asker panics"))
        .collect::<Result<_, _>>()?;
    assert_eq!(builds.load(Ordering::SeqCst), 1, "exactly one build");
    assert_eq!(
        got.iter().filter(|g| **g == Got::Stored).count(),
        1,
        "one stored it, the others found it: {got:?}"
    );
    assert_eq!(got.len(), 8, "{got:?}");
    println!("8 threads asking: {} build", builds.load(Ordering::SeqCst));
    drop(cache);
    assert_nothing_leaked(&root, "after the threads");
    Ok(())
}

#[test]
fn when_a_build_panics_the_panic_reaches_its_caller_and_a_waiter_builds() -> TestResult {
    let (_t, root) = new_cache(MaxSize::Unlimited);
    let cache = FsCache::open("fscache-tests", &root)?;
    let builds = Arc::new(AtomicUsize::new(0));
    let (building_tx, building) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    let release_rx = Arc::new(Mutex::new(release_rx));
    fn explode(_: &Path) -> Result<(), Error> {
        panic!("the build panics, as it was told to")
    }
    let (mut panicking, _) = askers(&cache, "e", 1, &builds, &building_tx, &release_rx, explode);
    building.recv_timeout(STEP)?;
    let (mut waiting, tasks) = askers(
        &cache,
        "e",
        1,
        &builds,
        &building_tx,
        &release_rx,
        write_payload,
    );
    wait_until_blocked(&tasks[0]);
    release.send(())?;
    let panicked = panicking.remove(0).join();
    assert!(panicked.is_err(), "the panic reaches the caller's thread");
    building.recv_timeout(STEP)?;
    release.send(())?;
    let got = waiting
        .remove(0)
        .join()
        .expect("the waiter does not panic")?;
    assert_eq!(got, Got::Stored, "the waiter builds");
    assert_eq!(
        builds.load(Ordering::SeqCst),
        2,
        "the panicked and the waiter's"
    );
    drop(cache);
    assert_nothing_leaked(&root, "after a panicked build");
    Ok(())
}

#[test]
fn what_the_cache_will_not_keep_is_still_handed_to_the_caller() -> TestResult {
    let (_t, root) = new_cache(MaxSize::Bytes(1));
    let cache = FsCache::open("fscache-tests", &root)?;
    let got = cache.get_or_build("big", &BuildOptions::new(), write_payload)?;
    let Built::Uncached { entry, outcome } = got else {
        panic!("a 1-byte cache cannot keep it: {got:?}");
    };
    assert!(
        matches!(outcome, Commit::TooLarge { .. }),
        "too large: {outcome}"
    );
    assert_eq!(
        std::fs::read(entry.path().join("out"))?.len(),
        10_000,
        "what was built is there"
    );
    assert!(cache.load("big")?.is_none(), "and not in the cache");
    // Once the cache has room, the same entry can still be stored.
    cache.set_maximum_size(MaxSize::Unlimited)?;
    assert!(entry.commit()?.is_stored(), "a second commit stores it");
    drop(cache);
    assert_nothing_leaked(&root, "after storing it late");
    Ok(())
}

#[test]
fn an_entry_just_built_is_held_from_its_commit_on() -> TestResult {
    let (_t, root) = new_cache(MaxSize::Unlimited);
    let cache = FsCache::open("fscache-tests", &root)?;
    let got = cache.get_or_build("held", &BuildOptions::new(), write_payload)?;
    assert!(matches!(got, Built::Stored(_)), "{got}");
    assert!(got.built_here(), "{got}");
    assert_eq!(
        cache.evict("held")?,
        Eviction::InUse,
        "it cannot be evicted while the caller holds it"
    );
    drop(got);
    let again = cache.get_or_build("held", &BuildOptions::new(), |_| -> Result<(), Error> {
        panic!("a present entry is not built again")
    })?;
    assert!(
        matches!(again, Built::Found(_)) && !again.built_here(),
        "{again}"
    );
    drop(again);
    drop(cache);
    assert_nothing_leaked(&root, "after evicting it");
    Ok(())
}

#[test]
fn a_cache_of_an_unsupported_version_builds_without_storing_or_touching_objects() -> TestResult {
    let (_t, root) = new_cache(MaxSize::Unlimited);
    std::fs::write(root.join("cache.info"), br#"{"version": 2}"#)?;
    let cache = FsCache::open("fscache-tests", &root)?;
    let got = cache.get_or_build("e", &BuildOptions::new(), write_payload)?;
    assert!(
        matches!(
            got,
            Built::Uncached {
                outcome: Commit::Unsupported,
                ..
            }
        ),
        "{got}"
    );
    assert!(got.path().join("out").exists(), "what was built is there");
    assert!(
        got.path().starts_with(root.join("stage")),
        "built in stage/: {}",
        got.path().display()
    );
    assert_eq!(names(&root.join("objects")), Vec::<String>::new());
    assert_eq!(names(&root.join("builds")), Vec::<String>::new());
    drop(got);
    assert_eq!(names(&root.join("stage")), Vec::<String>::new());
    Ok(())
}

#[test]
fn a_cache_without_a_builds_directory_gets_one_when_it_first_builds() -> TestResult {
    let (_t, root) = new_cache(MaxSize::Unlimited);
    std::fs::remove_dir(root.join("builds"))?;
    let cache = FsCache::open("fscache-tests", &root)?;
    std::fs::remove_dir(root.join("builds"))?; // as a cache scaffolded elsewhere
    let got = cache.get_or_build("e", &BuildOptions::new(), write_payload)?;
    assert!(matches!(got, Built::Stored(_)), "{got}");
    assert!(root.join("builds").is_dir(), "made when first needed");
    drop((got, cache));
    assert_nothing_leaked(&root, "after the build");
    Ok(())
}

#[test]
fn a_link_planted_at_a_build_lock_is_neither_followed_nor_an_obstacle() -> TestResult {
    let (t, root) = new_cache(MaxSize::Unlimited);
    let target = t.path().join("outside");
    std::fs::write(&target, b"canary")?;
    std::os::unix::fs::symlink(&target, root.join("builds/e"))?;
    let cache = FsCache::open("fscache-tests", &root)?;
    let got = cache.get_or_build("e", &BuildOptions::new(), write_payload)?;
    assert!(
        matches!(got, Built::Stored(_)),
        "built without the lock: {got}"
    );
    drop(got);
    let report = cache.sweep_orphans()?;
    assert_eq!(report.build_locks, 0, "a link is no lock file: {report:?}");
    assert_eq!(
        std::fs::read(&target)?,
        b"canary",
        "the target is untouched"
    );
    assert!(
        std::fs::symlink_metadata(root.join("builds/e"))?.is_symlink(),
        "the link is left for a person to look at"
    );
    Ok(())
}
