//! Owned handles and guards: a guard owns what it needs, outlives the scope
//! (and the handle) that made it, crosses threads, and keeps the cache open
//! until the last of them goes.

mod common;

use common::*;
use fscache::lock::{FileLock, LockKind};
use fscache::{FsCache, LoadGuard, MaxSize, StageGuard, StoreGuard, Wait};

fn owned<T: Send + Sync + 'static>() {}

#[test]
fn handles_and_guards_are_send_sync_and_static() {
    owned::<FsCache>();
    owned::<StoreGuard>();
    owned::<LoadGuard>();
    owned::<StageGuard>();
    owned::<fscache::CommitError>();
}

/// A struct of a build tool's: a handle and the entries it holds.
struct Session {
    cache: FsCache,
    held: Vec<LoadGuard>,
}

#[test]
fn guards_outlive_their_handle_move_across_threads_and_live_in_structs() -> TestResult {
    let (_t, root) = new_cache(MaxSize::Unlimited);
    let entry = {
        let cache = FsCache::open("fscache-tests", &root)?;
        cache.store("made-in-a-thread")?
    };
    let scratch = FsCache::open("fscache-tests", &root)?.stage()?;
    let committed = std::thread::spawn(move || {
        std::fs::write(entry.path().join("out"), b"x").expect("write");
        entry.commit()
    })
    .join()
    .expect("the thread")?;
    assert!(committed.is_stored(), "{committed}");
    std::fs::write(scratch.path().join("tmp"), b"y")?;
    drop(scratch);
    assert!(
        names(&root.join("stage")).is_empty(),
        "the stage went with its guard"
    );

    let cache = FsCache::open("fscache-tests", &root)?;
    let mut session = Session {
        cache: cache.clone(),
        held: Vec::new(),
    };
    drop(cache);
    session
        .held
        .push(session.cache.load("made-in-a-thread")?.ok_or("a hit")?);
    assert_eq!(std::fs::read(session.held[0].path().join("out"))?, b"x");
    Ok(())
}

#[test]
fn the_cache_stays_open_until_the_last_handle_or_guard_is_dropped() -> TestResult {
    let (_t, root) = new_cache(MaxSize::Unlimited);
    let lock = root.join("cache.lock");
    let cache = FsCache::open("fscache-tests", &root)?;
    let entry = cache.store("e")?;
    assert!(entry.commit()?.is_stored());
    let hit = cache.load("e")?.ok_or("a hit")?;
    drop(cache);
    // The guard still holds the cache open: nobody may have it to himself.
    let whole = FileLock::open(&lock, LockKind::Exclusive, Wait::Never);
    assert!(
        matches!(whole, Err(fscache::Error::WouldBlock { .. })),
        "{whole:?}"
    );
    drop(hit);
    let whole = FileLock::open(&lock, LockKind::Exclusive, Wait::Never)?;
    drop(whole);
    Ok(())
}
