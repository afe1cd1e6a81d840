//! Reservations (`cache::reserve`): what a handle takes from `cache.size`
//! ahead of need, and why no total is ever too low because of it.

mod common;

use common::*;
use fscache::{FsCache, MaxSize};

fn reservations(root: &std::path::Path) -> Vec<String> {
    names(&root.join("objects"))
        .into_iter()
        .filter(|n| is_reservation(root, n))
        .collect()
}

fn put(cache: &FsCache, name: &str) -> fscache::Result<()> {
    let e = cache.store(name)?;
    std::fs::write(e.path().join("f"), name.as_bytes()).expect("write");
    assert!(e.commit()?.is_stored(), "{name}");
    Ok(())
}

#[test]
fn a_busy_handle_commits_against_a_reservation_that_is_always_exactly_accounted() -> TestResult {
    let (_t, root) = new_cache(MaxSize::Unlimited);
    let cache = FsCache::open("fscache-tests", &root)?;
    for i in 0..10 {
        put(&cache, &format!("few-{i}"))?;
    }
    assert!(
        reservations(&root).is_empty(),
        "a few commits reserve nothing"
    );
    let size_inode = |root: &std::path::Path| {
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(root.join("cache.size")).unwrap())
    };
    let mut replaced = 0;
    let mut last = size_inode(&root);
    for i in 0..300 {
        put(&cache, &format!("many-{i}"))?;
        let now = size_inode(&root);
        replaced += usize::from(now != last);
        last = now;
        // At rest the record is one of the object.info files: exact.
        assert_exact(&root);
    }
    assert_eq!(reservations(&root).len(), 1);
    println!("300 commits replaced cache.size {replaced} times");
    // The handle's first 32 commits each replace it; then one grant per
    // doubling: 2, 3, 5, 9, ... entries' worth.
    assert!(
        replaced <= 22 + 10,
        "most commits leave cache.size alone: {replaced}"
    );
    let stats = cache.stats()?;
    assert!(stats.reserved_bytes > 0, "{stats:?}");
    assert_eq!(
        stats.accounted_bytes,
        Some(stats.recorded_bytes + stats.reserved_bytes),
        "what is accounted is in an entry or in reserve"
    );
    // A recount while the reservation is live counts it once.
    cache.resync()?;
    assert_exact(&root);
    drop(cache);
    assert!(reservations(&root).is_empty(), "closing gives it back");
    assert_eq!(size_file(&root), entry_sizes(&root));
    assert_exact(&root);
    Ok(())
}

#[test]
fn a_killed_process_leaves_its_reservation_to_the_sweep_which_gives_it_back() -> TestResult {
    let (_t, root) = new_cache(MaxSize::Unlimited);
    let mut w = Worker::spawn(&root);
    for i in 0..100 {
        w.ask(&format!("store k{i} 3000"));
        let out = w.ask("commit");
        assert!(out.starts_with("stored"), "{out}");
    }
    assert_eq!(reservations(&root).len(), 1);
    w.ask("store cut 3000");
    assert!(std::os::unix::process::ExitStatusExt::signal(&w.kill()).is_some());
    // Dead, its record still counts what cache.size holds for it.
    assert_exact(&root);
    let cache = FsCache::open("fscache-tests", &root)?;
    let report = cache.sweep_orphans()?;
    assert!(
        report.orphan_dirs >= 1 && report.bytes_given_back > 0,
        "{report:?}"
    );
    assert!(reservations(&root).is_empty());
    assert_eq!(size_file(&root), entry_sizes(&root), "given back exactly");
    Ok(())
}

#[test]
fn recounts_racing_commits_against_reservations_in_other_processes_never_undercount() -> TestResult
{
    let (_t, root) = new_cache(MaxSize::Unlimited);
    let mut workers: Vec<Worker> = (0..2).map(|_| Worker::spawn(&root)).collect();
    for (i, w) in workers.iter_mut().enumerate() {
        w.send(&format!("run {} 600 600", 3 + i));
    }
    let stop = std::sync::atomic::AtomicBool::new(false);
    let recounts = std::thread::scope(|s| {
        let recounter = s.spawn(|| -> fscache::Result<u32> {
            let cache = FsCache::open("fscache-tests", &root)?;
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                cache.resync()?;
                n += 1;
            }
            Ok(n)
        });
        for w in &mut workers {
            let out = w.next_line();
            assert!(out.starts_with("ran "), "{out}");
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        recounter.join().expect("recounter panicked")
    })?;
    println!("{recounts} recounts raced the workers' commits");
    drop(workers);
    // Had a recount missed bytes on their way from a reservation to an
    // entry, the total would now be below the sum (later give-backs
    // subtract what it never counted).
    let sum: u64 = info_sizes(&root).iter().map(|(_, s)| s).sum();
    assert!(size_file(&root) >= sum, "{} < {sum}", size_file(&root));
    let cache = FsCache::open("fscache-tests", &root)?;
    cache.sweep_orphans()?;
    assert!(size_file(&root) >= entry_sizes(&root));
    cache.resync()?;
    assert_exact(&root);
    Ok(())
}
