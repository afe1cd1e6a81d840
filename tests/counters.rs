//! Counters kept across processes: each handle counts in memory, and adds
//! its counts to the cache's file every 4,096 events and when it closes.

mod common;

use common::*;
use fscache::{FsCache, MaxSize};

#[test]
fn what_processes_counted_is_added_up_when_they_close() -> TestResult {
    let (_t, root) = new_cache(MaxSize::Unlimited);
    for _ in 0..2 {
        let mut w = Worker::spawn(&root);
        for _ in 0..3 {
            assert_eq!(w.ask("load absent"), "miss");
        }
        let (status, _) = w.finish();
        assert!(status.success(), "{status:?}");
    }
    let cache = FsCache::open("fscache-tests", &root)?;
    assert_eq!(cache.all_counters().misses, 6, "both workers' misses");
    assert_eq!(cache.counters().misses, 0, "this handle's own");
    let was = cache.zero_counters()?;
    assert_eq!(was.misses, 6);
    assert_eq!(cache.all_counters().misses, 0);
    Ok(())
}

#[test]
fn a_long_lived_handle_adds_its_counts_now_and_then() -> TestResult {
    let (_t, root) = new_cache(MaxSize::Unlimited);
    let busy = FsCache::open("fscache-tests", &root)?;
    for _ in 0..5000 {
        assert!(busy.load("absent")?.is_none());
    }
    // Another handle, which sees only the file: the first 4,096 are in.
    let other = FsCache::open("fscache-tests", &root)?;
    let seen = other.all_counters().misses;
    assert!((4096..5000).contains(&seen), "flushed every 4096: {seen}");
    drop(busy);
    assert_eq!(other.all_counters().misses, 5000, "the rest at close");
    Ok(())
}
