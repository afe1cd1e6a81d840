//! Our sweep next to another implementation: osbuild's creator and remover
//! of anonymous entries, replayed system call by system call
//! (`fscache::replay`), must never see an error a cleaner caused
//! (FORMAT.md, "Cleaning up"): a cleaner may `rmdir` an empty lockless
//! anonymous directory, and must never create anything in it.

#![cfg(feature = "testing")]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;

use common::{counters, names, new_cache, size_file, TestResult, Worker};
use fscache::replay::{Replayer, Store, Tally};
use fscache::{FsCache, MaxSize};

/// Replayed iterations per replayer: two replayers make the 10,000 the
/// issue asks for.
const PER_REPLAYER: u64 = 5_000;

/// The `uuid-*` names left in `objects/` and `stage/`.
fn anonymous_left(root: &std::path::Path) -> Vec<String> {
    ["objects", "stage"]
        .iter()
        .flat_map(|d| {
            names(&root.join(d))
                .into_iter()
                .filter(|n| n.starts_with("uuid-"))
                .map(move |n| format!("{d}/{n}"))
        })
        .collect()
}

/// After the racing: one more sweep leaves no anonymous entry, and nothing
/// was ever accounted.
#[track_caller]
fn assert_clean_after_a_final_sweep(root: &std::path::Path) -> TestResult {
    let report = FsCache::open("fscache-tests", root)?.sweep_orphans()?;
    assert!(
        report.unremovable.is_empty(),
        "the final sweep left {:?}",
        report.unremovable
    );
    assert_eq!(
        anonymous_left(root),
        Vec::<String>::new(),
        "anonymous entries left after the final sweep ({report:?})"
    );
    assert_eq!(size_file(root), 0, "cache.size was touched");
    Ok(())
}

/// The three counters of a `replayed ITER RETRIES ERRORS[; ...]` line.
#[track_caller]
fn parse_replayed(line: &str) -> Tally {
    let n = counters(line, "replayed", 3);
    Tally {
        iterations: n[0],
        retries: n[1],
        errors: n[2],
        ..Tally::default()
    }
}

/// `(loops, errors)` of a `swept-loops N ERRORS[; ...]` line.
#[track_caller]
fn parse_swept(line: &str) -> (u64, u64) {
    let n = counters(line, "swept-loops", 2);
    (n[0], n[1])
}

#[test]
fn sweeping_threads_never_make_a_replayed_osbuild_creator_or_remover_fail() -> TestResult {
    let (_t, root) = new_cache(MaxSize::Unlimited);
    let stores = [Store::Objects, Store::Stage];
    let sweepers = 2;
    // Replayers start once every sweeper has finished a first sweep.
    let start = Barrier::new(stores.len() + sweepers);
    let done = AtomicBool::new(false);
    let (replayed, swept) = std::thread::scope(|s| -> Result<_, fscache::Error> {
        let sweeping: Vec<_> = (0..sweepers)
            .map(|_| {
                let (root, start, done) = (&root, &start, &done);
                s.spawn(move || -> Result<(u64, Vec<String>), fscache::Error> {
                    let cache = FsCache::open("fscache-tests", root);
                    let mut loops = 0;
                    let mut errors = Vec::new();
                    if let Ok(cache) = &cache {
                        loop {
                            if let Err(e) = cache.sweep_orphans() {
                                errors.push(format!("{e}: {:?}", e.io_error()));
                            }
                            loops += 1;
                            if loops == 1 {
                                start.wait();
                            }
                            if done.load(Ordering::Acquire) {
                                break;
                            }
                        }
                    } else {
                        start.wait();
                    }
                    cache.map(|_| (loops, errors))
                })
            })
            .collect();
        let replaying: Vec<_> = stores
            .iter()
            .map(|&store| {
                let (root, start) = (&root, &start);
                s.spawn(move || -> Result<Tally, fscache::Error> {
                    let replayer = Replayer::open(root);
                    start.wait();
                    Ok(replayer?.run(store, PER_REPLAYER))
                })
            })
            .collect();
        let mut replayed = Tally::default();
        for r in replaying {
            replayed.add(&r.join().expect("a replayer panicked")?);
        }
        done.store(true, Ordering::Release);
        let mut swept = (0, Vec::new());
        for s in sweeping {
            let (loops, errors) = s.join().expect("a sweeper panicked")?;
            swept.0 += loops;
            swept.1.extend(errors);
        }
        Ok((replayed, swept))
    })?;
    println!(
        "replayed {replayed}; failures: [{}]; {} sweeps, {} failed",
        replayed.breakdown(),
        swept.0,
        swept.1.len()
    );
    assert!(
        replayed.iterations >= 10_000,
        "only {} iterations",
        replayed.iterations
    );
    assert_eq!(
        replayed.errors,
        0,
        "the replayed osbuild steps failed next to our sweep ({}): {replayed}",
        replayed.breakdown()
    );
    assert_eq!(swept.1, Vec::<String>::new(), "sweeps failed");
    assert_clean_after_a_final_sweep(&root)
}

#[test]
fn sweeping_processes_never_make_replayed_osbuild_processes_fail() -> TestResult {
    let (_t, root) = new_cache(MaxSize::Unlimited);
    let mut sweepers: Vec<Worker> = (0..2).map(|_| Worker::spawn(&root)).collect();
    for w in &mut sweepers {
        // Answered once the worker's first sweep is done.
        let line = w.ask("sweep-loop");
        assert_eq!(line, "sweeping", "a worker did not start sweeping");
    }
    let mut replayers: Vec<Worker> = (0..2).map(|_| Worker::spawn(&root)).collect();
    for (w, store) in replayers.iter_mut().zip([Store::Objects, Store::Stage]) {
        w.send(&format!("replay {store} {PER_REPLAYER}"));
    }
    let mut replayed = Tally::default();
    let mut lines = Vec::new();
    for w in &mut replayers {
        let line = w.expect("replayed");
        replayed.add(&parse_replayed(&line));
        lines.push(line);
    }
    let mut sweeps = 0;
    let mut swept_lines = Vec::new();
    for w in &mut sweepers {
        let line = w.ask("sweep-stop");
        let (loops, errors) = parse_swept(&line);
        assert_eq!(errors, 0, "a sweeping worker failed: {line}");
        sweeps += loops;
        swept_lines.push(line);
    }
    println!("{lines:?}; {swept_lines:?}");
    assert!(sweeps >= 2, "the sweepers swept {sweeps} times");
    assert!(
        replayed.iterations >= 10_000,
        "only {} iterations: {lines:?}",
        replayed.iterations
    );
    assert_eq!(
        replayed.errors, 0,
        "the replayed osbuild steps failed next to our sweep: {lines:?}"
    );
    for w in replayers.into_iter().chain(sweepers) {
        let (status, _) = w.finish();
        assert!(status.success(), "a worker exited with {status:?}");
    }
    assert_clean_after_a_final_sweep(&root)
}

#[test]
fn a_sweep_removes_an_empty_lockless_anonymous_directory_and_never_touches_one_that_is_not(
) -> TestResult {
    // What osbuild's creator (after its mkdir) and remover (after its
    // unlink of the lock) leave between two steps, and what neither ever
    // leaves: a lockless directory with something in it.
    let (_t, root) = new_cache(MaxSize::Unlimited);
    let empty = root.join("stage/uuid-00000000000000000000000000000001");
    let full = root.join("objects/uuid-00000000000000000000000000000002");
    std::fs::create_dir(&empty)?;
    std::fs::create_dir_all(full.join("data"))?;
    std::fs::write(full.join("data/f"), "someone's")?;
    let report = FsCache::open("fscache-tests", &root)?.sweep_orphans()?;
    assert!(
        !empty.exists(),
        "an empty lockless directory is removed ({report:?})"
    );
    assert_eq!(report.orphan_dirs, 1, "{report:?}");
    assert_eq!(
        (names(&full), names(&full.join("data"))),
        (vec!["data".to_string()], vec!["f".to_string()]),
        "a cleaner may only rmdir a lockless directory: nothing added, nothing removed ({report:?})"
    );
    assert_eq!(size_file(&root), 0, "cache.size was touched");
    Ok(())
}
