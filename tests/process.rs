//! Real processes sharing one cache: visibility, races on one name, locks
//! held across processes, accounting under concurrency, and crashes.

mod common;

use common::*;
use fscache::lock::{FileLock, LockKind, Wait};
use fscache::MaxSize;

#[test]
fn an_uncommitted_entry_is_invisible_to_readers() -> TestResult {
    let (_t, cache) = new_cache(MaxSize::Unlimited);
    let mut writer = Worker::spawn(&cache);
    let mut reader = Worker::spawn(&cache);
    writer.expect_store("e", 5000);
    assert_eq!(
        reader.ask("load e"),
        "miss",
        "an entry being filled must not be visible"
    );
    assert!(writer.ask("commit").starts_with("stored "));
    assert!(
        reader.ask("load e").starts_with("hit "),
        "a committed entry must be visible"
    );
    Ok(())
}

#[test]
fn two_processes_committing_one_name_store_exactly_one_and_leave_nothing_else() -> TestResult {
    for round in 0..5 {
        let (_t, cache) = new_cache(MaxSize::Unlimited);
        let mut a = Worker::spawn(&cache);
        let mut b = Worker::spawn(&cache);
        a.expect_store("same", 3000);
        b.expect_store("same", 7000);
        // Both are filled; let them race to the rename.
        a.send("commit");
        b.send("commit");
        let mut outcomes = [a.next_line(), b.next_line()];
        outcomes.sort();
        assert_eq!(outcomes[0], "name-taken", "round {round}: {outcomes:?}");
        assert!(
            outcomes[1].starts_with("stored "),
            "round {round}: {outcomes:?}"
        );
        assert_eq!(
            names(&cache.join("objects")),
            vec!["same"],
            "the loser must leave nothing"
        );
        assert_exact(&cache);
        let mut r = Worker::spawn(&cache);
        assert!(
            r.ask("load same").starts_with("hit "),
            "the winner is whole"
        );
    }
    Ok(())
}

#[test]
fn a_reader_in_another_process_makes_a_write_lock_fail_without_waiting() -> TestResult {
    let (_t, cache) = new_cache(MaxSize::Unlimited);
    let mut w = Worker::spawn(&cache);
    w.expect_store("held", 100);
    assert!(w.ask("commit").starts_with("stored"));
    assert!(w.ask("load held").starts_with("hit"));
    let lock = cache.join("objects/held/object.lock");
    let err = FileLock::open(&lock, LockKind::Exclusive, Wait::Never).unwrap_err();
    assert!(matches!(err, fscache::Error::WouldBlock { .. }), "{err:?}");
    drop(FileLock::open(&lock, LockKind::Shared, Wait::Never).expect("readers share"));
    assert_eq!(w.ask("release"), "released");
    drop(
        FileLock::open(&lock, LockKind::Exclusive, Wait::Never)
            .expect("free once the reader is done"),
    );
    Ok(())
}

#[test]
fn after_concurrent_storers_the_size_file_equals_the_sum_of_entry_sizes() -> TestResult {
    let (_t, cache) = new_cache(MaxSize::Unlimited);
    let mut workers: Vec<Worker> = (0..4).map(|_| Worker::spawn(&cache)).collect();
    let mut stored = 0;
    for i in 0..15 {
        // Overlapping names: each round, all four race for two names.
        for (k, w) in workers.iter_mut().enumerate() {
            w.expect_store(&format!("n{}-{}", i, k % 2), 1000 + 997 * k);
        }
        for w in &mut workers {
            w.send("commit");
        }
        for w in &mut workers {
            let out = w.next_line();
            assert!(out.starts_with("stored ") || out == "name-taken", "{out}");
            stored += usize::from(out.starts_with("stored "));
        }
    }
    assert_eq!(stored, 30, "exactly one winner per name");
    drop(workers);
    assert_exact(&cache);
    assert_eq!(info_sizes(&cache).len(), 30);
    Ok(())
}

#[test]
fn a_process_killed_holding_a_store_guard_leaves_only_an_unlocked_anonymous_dir() -> TestResult {
    let (_t, cache) = new_cache(MaxSize::Unlimited);
    let mut w = Worker::spawn(&cache);
    w.expect_store("doomed", 4096);
    let status = w.kill();
    assert!(!status.success());
    let left = names(&cache.join("objects"));
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(
        left[0].starts_with("uuid-") && left[0].len() == 37,
        "{left:?}"
    );
    let lock = cache.join("objects").join(&left[0]).join("object.lock");
    drop(
        FileLock::open(&lock, LockKind::Exclusive, Wait::Never)
            .expect("the dead process's lock is gone"),
    );
    assert_eq!(size_file(&cache), 0, "nothing was accounted");
    let mut r = Worker::spawn(&cache);
    assert_eq!(r.ask("load doomed"), "miss");
    Ok(())
}

#[test]
fn a_staging_dir_is_private_and_vanishes_with_its_guard() -> TestResult {
    let (_t, cache) = new_cache(MaxSize::Bytes(0));
    let mut w = Worker::spawn(&cache);
    let staged = w.ask("stage");
    let path = std::path::PathBuf::from(staged.strip_prefix("staged ").expect("staged"));
    assert!(path.is_dir() && path.starts_with(cache.join("stage")));
    let lock = path.parent().unwrap().join("object.lock");
    assert!(
        FileLock::open(&lock, LockKind::Shared, Wait::Never).is_err(),
        "held by its owner"
    );
    assert_eq!(w.ask("unstage"), "unstaged");
    assert!(names(&cache.join("stage")).is_empty());
    Ok(())
}

trait StoreStep {
    fn expect_store(&mut self, name: &str, bytes: usize);
}

impl StoreStep for Worker {
    #[track_caller]
    fn expect_store(&mut self, name: &str, bytes: usize) {
        let out = self.ask(&format!("store {name} {bytes}"));
        assert!(out.starts_with("storing "), "{out}");
    }
}
