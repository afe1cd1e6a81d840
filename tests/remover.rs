//! The remover thread (`maint::remover`): a store into a full cache leaves
//! its victim's removal to a thread of the handle, which the last handle
//! waits for. In a binary of their own, one test at a time, so that the
//! only remover threads of the process are the test's.

mod common;

use common::*;

/// Held by each test: they count this process's threads.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The names of this process's threads that are remover threads.
fn removers() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("list /proc/self/task")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim() == "fscache-remover")
        .count()
}

/// Named entries in `objects/` that have no `object.info`: victims not yet
/// removed.
fn invalid_entries(root: &std::path::Path) -> Vec<String> {
    names(&root.join("objects"))
        .into_iter()
        .filter(|n| !n.starts_with("uuid-"))
        .filter(|n| !root.join("objects").join(n).join("object.info").exists())
        .collect()
}

#[test]
fn victims_go_to_the_handles_thread_and_are_all_removed_when_the_last_handle_drops() -> TestResult {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let (_t, root, cache) = full_cache(200)?;
    assert_eq!(removers(), 0, "no thread before anything is evicted");
    let clone = cache.clone();
    for i in 0..150 {
        put_own_name(&clone, &format!("new{i:04}"))?;
    }
    assert_eq!(removers(), 1, "one thread per handle, for every clone");
    drop(clone);
    assert_eq!(removers(), 1, "a clone does not end the thread");
    drop(cache);
    assert_eq!(removers(), 0, "the last handle waits for its thread");
    assert_eq!(invalid_entries(&root), Vec::<String>::new());
    let named = names(&root.join("objects"))
        .into_iter()
        .filter(|n| !n.starts_with("uuid-"))
        .count();
    assert_eq!(named, 200, "one victim per store, each entry the same size");
    assert_exact(&root);
    Ok(())
}

#[test]
fn a_few_victims_are_removed_soon_by_a_live_handle_that_stores_nothing_more() -> TestResult {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let (_t, root, cache) = full_cache(200)?;
    // Past the commits that go through the size section, into a few that
    // evict into the reservation: fewer victims than wake the thread.
    for i in 0..40 {
        put_own_name(&cache, &format!("new{i:04}"))?;
    }
    // The thread removes a short batch by itself, after 10 ms. That is a
    // promise about time, made by a thread of this process, with no event
    // to wait on: poll for it, and give it far longer before calling it
    // lost.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !invalid_entries(&root).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(invalid_entries(&root), Vec::<String>::new());
    assert_eq!(removers(), 1, "the handle is still open");
    drop(cache);
    assert_exact(&root);
    Ok(())
}
