//! The remover thread (`maint::remover`): a store into a full cache leaves
//! its victim's removal to a thread of the handle, which the last handle
//! waits for. One test in its own binary, so that the only threads of the
//! process are the test's and the cache's.

mod common;

use common::*;

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
