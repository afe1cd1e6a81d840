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

#[test]
fn a_busy_handle_commits_against_a_reservation_that_is_always_exactly_accounted() -> TestResult {
    let (_t, root) = new_cache(MaxSize::Unlimited);
    let cache = FsCache::open("fscache-tests", &root)?;
    for i in 0..10 {
        put_own_name(&cache, &format!("few-{i}"))?;
    }
    assert!(
        reservations(&root).is_empty(),
        "a few commits reserve nothing"
    );
    let mut replaced = 0;
    let mut last = size_inode(&root);
    for i in 0..300 {
        put_own_name(&cache, &format!("many-{i}"))?;
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
    let sum = info_sum(&root);
    assert!(size_file(&root) >= sum, "{} < {sum}", size_file(&root));
    let cache = FsCache::open("fscache-tests", &root)?;
    cache.sweep_orphans()?;
    resync_is_exact_and_was_no_undercount(&cache, &root)
}

#[test]
fn recounts_racing_evictions_into_reservations_in_a_full_cache_never_undercount() -> TestResult {
    // In a full cache a commit makes its room by evicting into its
    // reservation, outside any size section: bytes move from an entry's
    // object.info into a record while recounts run. A recount's result
    // lasts until the next, so each round races one recount against two
    // processes' stores and then checks the total at rest.
    let (_t, root, cache) = full_cache(200)?;
    let mut workers: Vec<Worker> = (0..2).map(|_| Worker::spawn(&root)).collect();
    // Past the commits that take no reservation, into a full cache.
    for (i, w) in workers.iter_mut().enumerate() {
        assert!(w
            .ask(&format!("fill warm{i}- 40 7"))
            .starts_with("filled 40"));
    }
    let mut evicted = 0;
    for round in 0..60 {
        for (i, w) in workers.iter_mut().enumerate() {
            w.send(&format!("fill r{round}w{i}- 12 7"));
        }
        cache.resync()?;
        for w in &mut workers {
            let out = w.next_line();
            let words: Vec<&str> = out.split_whitespace().collect();
            assert_eq!(words[..2], ["filled", "12"], "{out}");
            evicted += words[3].parse::<u64>().expect("evicted count");
        }
        // At rest every record is an object.info too: a recount that
        // missed bytes on their way from an entry to a record left the
        // total below the sum.
        let sum = info_sum(&root);
        assert!(
            size_file(&root) >= sum,
            "round {round}: {} < {sum}",
            size_file(&root)
        );
    }
    println!("60 recounts raced 1,440 stores that evicted {evicted} entries");
    assert!(evicted >= 1400, "the stores made their room: {evicted}");
    drop(workers);
    cache.sweep_orphans()?;
    resync_is_exact_and_was_no_undercount(&cache, &root)
}

#[test]
fn a_full_cache_takes_each_store_with_one_eviction_and_almost_no_size_section() -> TestResult {
    let (_t, root, cache) = full_cache(400)?;
    let mut replaced = 0;
    let mut last = size_inode(&root);
    let mut evicted_by = Vec::new();
    for i in 0..300 {
        let before = cache.counters().evicted;
        put_own_name(&cache, &format!("new{i:03}"))?;
        evicted_by.push(cache.counters().evicted - before);
        let now = size_inode(&root);
        replaced += usize::from(now != last);
        last = now;
        // With bytes moving from evicted entries into the record: exact.
        assert_exact(&root);
    }
    println!("300 stores into a full cache replaced cache.size {replaced} times");
    // The handle's first 32 commits go through the section, which evicts
    // toward the low watermark (three entries one store in three); after
    // that each store makes room for itself alone. Entries' sizes differ
    // by a byte or two (their names): a store may need a second victim
    // now and then, never more.
    assert!(evicted_by[..33].iter().all(|&n| n <= 3), "{evicted_by:?}");
    assert!(evicted_by[33..].iter().all(|&n| n <= 2), "{evicted_by:?}");
    let evicted: u64 = evicted_by.iter().sum();
    assert!((300..=330).contains(&evicted), "{evicted}");
    // The handle's first 32 commits each go through the section, then a
    // grant once per 64 commits that evict into the reservation.
    assert!(replaced <= 32 + 300 / 64 + 2, "{replaced}");
    assert_eq!(
        size_file(&root),
        entry_sizes(&root) + cache.stats()?.reserved_bytes,
        "cache.size stays at the maximum, what is evicted held in reserve"
    );
    drop(cache);
    assert_exact(&root);
    Ok(())
}

#[cfg(feature = "failpoints")]
#[test]
fn a_process_killed_while_evicting_into_its_reservation_leaves_only_an_overcount() -> TestResult {
    use std::os::unix::process::ExitStatusExt;
    for point in fscache::failpoint::FULL_CACHE {
        let (_t, root, cache) = full_cache(200)?;
        let mut w = Worker::spawn_with(&root, &[("FSCACHE_FAILPOINT", point)]);
        // Past the commits that take no reservation, into the first that
        // evicts into one.
        assert!(w.try_ask("fill k- 100 7").is_none(), "{point} not reached");
        assert_eq!(w.reap().signal(), Some(9), "{point}");
        let drift = size_file(&root) as i64 - info_sum(&root) as i64;
        if *point == "evict-into-before-record" {
            assert!(
                drift > 0,
                "{point}: the victim's bytes are still counted: {drift}"
            );
        } else {
            // The bytes moved into the record before the victim was
            // handed to the remover.
            assert!(drift >= 0, "{point}: undercount {drift}");
        }
        let swept = cache.sweep_orphans()?;
        assert!(
            swept.invalid_entries >= 1,
            "{point}: the victim was left without its object.info: {swept:?}"
        );
        resync_is_exact_and_was_no_undercount(&cache, &root)?;
        for name in names(&root.join("objects")) {
            if let Some(hit) = cache.load(&name)? {
                fscache::stress::payload::verify(hit.path())
                    .or_else(|_| {
                        // The seeds carry their name, not a payload.
                        let f = std::fs::read(hit.path().join("f"))?;
                        if f == name.as_bytes() {
                            Ok(())
                        } else {
                            Err(std::io::Error::other("damaged"))
                        }
                    })
                    .unwrap_or_else(|e| panic!("{point}: {name} damaged: {e}"));
            }
        }
    }
    Ok(())
}

/// After a sweep: `cache.size` was at least what the entries take, and a
/// resync makes it exact.
fn resync_is_exact_and_was_no_undercount(cache: &FsCache, root: &std::path::Path) -> TestResult {
    let (held, sum) = (size_file(root), entry_sizes(root));
    assert!(held >= sum, "undercount: {held} < {sum}");
    cache.resync()?;
    assert_exact(root);
    Ok(())
}

/// The sum of every `object.info` in `objects/`, reservations' records
/// included.
fn info_sum(root: &std::path::Path) -> u64 {
    info_sizes(root).iter().map(|(_, s)| s).sum()
}

fn size_inode(root: &std::path::Path) -> u64 {
    std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(root.join("cache.size")).unwrap())
}
