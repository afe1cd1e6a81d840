//! Many users, one cache (issue 7, item 4): two unprivileged users share a
//! cache whose root is a setgid directory of their common group.
//!
//! With umask 002 everything the crate makes is group-writable and of the
//! root's group, so each user may evict, gc and clear the other's entries.
//! With the default umask 022 each user's entries are the user's own: to
//! the other one they are entries to skip, exactly like entries in use,
//! and nothing fails with `EACCES`.
//!
//! The users are bare numeric ids (nothing is added to /etc), and the
//! workers run as them through `setpriv`. Every test needs root and
//! `setpriv`, and is skipped with a message otherwise.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;

/// The group both users belong to (as their primary group).
const GROUP: u32 = 61000;
/// User A.
const ALICE: u32 = 61001;
/// User B.
const BOB: u32 = 61002;

/// The payload of an ordinary entry, in bytes.
const PAYLOAD: usize = 5000;

/// `setpriv` from util-linux, if it is installed.
fn setpriv() -> Option<PathBuf> {
    let out = Command::new("which").arg("setpriv").output().ok()?;
    let path = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !path.is_empty()).then(|| PathBuf::from(path))
}

/// `setpriv`, or `None` after saying why `test` is skipped.
fn prerequisites(test: &str) -> Option<PathBuf> {
    if !is_root() {
        println!("SKIPPED {test}: it needs root to run workers as uids {ALICE} and {BOB}");
        return None;
    }
    let found = setpriv();
    if found.is_none() {
        println!("SKIPPED {test}: `setpriv` (util-linux) is not installed");
    }
    found
}

/// A cache root both users can reach: `root:GROUP`, mode 2775 (setgid, so
/// that everything made below it is of `GROUP`), in a directory anyone may
/// search (the usual temporary directory is private to its creator).
fn shared_root(prefix: &str) -> (tempfile::TempDir, PathBuf) {
    let (t, root) = cache_path_others_can_reach(prefix);
    std::fs::create_dir(&root).expect("mkdir the cache root");
    std::os::unix::fs::chown(&root, Some(0), Some(GROUP)).expect("chown the cache root");
    // After the chown, which may clear the setgid bit.
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o2775))
        .expect("chmod the cache root");
    (t, root)
}

/// The command line of a worker on `root` under `umask`, as `uid` (with
/// primary group `GROUP` and no other) or, with `None`, as root.
fn wrapped(setpriv: &Path, root: &Path, uid: Option<u32>, umask: &str) -> Command {
    let worker = Worker::command(root);
    let mut cmd = match uid {
        Some(uid) => {
            let mut cmd = Command::new(setpriv);
            cmd.arg(format!("--reuid={uid}"))
                .arg(format!("--regid={GROUP}"))
                .arg("--clear-groups")
                .arg("sh");
            cmd
        }
        None => Command::new("sh"),
    };
    cmd.arg("-c")
        .arg(format!("umask {umask}; exec \"$0\" \"$@\""))
        .arg(worker.get_program())
        .args(worker.get_args())
        .stderr(Stdio::inherit());
    cmd
}

/// A worker on `root` as `uid` under `umask`, ready.
#[track_caller]
fn user(setpriv: &Path, root: &Path, uid: Option<u32>, umask: &str) -> Worker {
    let mut w = Worker::from_command(wrapped(setpriv, root, uid, umask));
    let ready = w.next_line();
    assert_eq!(ready, "ready", "the worker as uid {uid:?} did not start");
    w
}

/// Ask `w` (`who`, for messages) `command`; no answer may be an error.
#[track_caller]
fn ask(w: &mut Worker, who: &str, command: &str) -> String {
    let got = w.ask(command);
    assert!(
        !got.starts_with("error"),
        "{who}: `{command}` failed: {got}"
    );
    got
}

/// Store `name` with a payload of `bytes` as `w`; the commit's answer.
#[track_caller]
fn put(w: &mut Worker, who: &str, name: &str, bytes: usize) -> String {
    let got = ask(w, who, &format!("store {name} {bytes}"));
    assert!(got.starts_with("storing "), "{who}: store {name}: {got}");
    ask(w, who, "commit")
}

/// Store `name` as `w`, which must succeed; its size.
#[track_caller]
fn stored(w: &mut Worker, who: &str, name: &str) -> u64 {
    let got = put(w, who, name, PAYLOAD);
    got.strip_prefix("stored ")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{who}: commit {name}: expected `stored SIZE`, got {got:?}"))
}

/// Assert that `got` is `want` followed by at most the `denied` count (the
/// last number of a `cleared` or `gc` line): exactly `denied` if it is
/// `Some`, else 0 if it is there at all.
#[track_caller]
fn assert_reply(got: &str, want: &str, denied: Option<u64>, context: &str) {
    let rest = got.strip_prefix(want).unwrap_or_else(|| {
        panic!("{context}: expected {want:?} and a count of entries denied, got {got:?}")
    });
    let count = rest.strip_prefix(' ').and_then(|n| n.parse::<u64>().ok());
    match (denied, count) {
        (Some(d), Some(n)) => assert_eq!(n, d, "{context}: entries denied in {got:?}"),
        (None, Some(0)) => {}
        (None, None) if rest.is_empty() => {}
        _ => panic!("{context}: expected {want:?} and {denied:?} denied, got {got:?}"),
    }
}

/// The named (committed) entries in the cache.
fn entries(root: &Path) -> Vec<String> {
    names(&root.join("objects"))
        .into_iter()
        .filter(|n| !n.starts_with("uuid-"))
        .collect()
}

/// Everything below `root` (not `root` itself), without following links.
fn tree(root: &Path) -> Vec<(PathBuf, std::fs::Metadata)> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_owned()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).expect("list") {
            let path = entry.expect("entry").path();
            let m = std::fs::symlink_metadata(&path).expect("stat");
            if m.is_dir() {
                todo.push(path.clone());
            }
            out.push((path, m));
        }
    }
    out
}

/// Everything in the cache is of `GROUP` and group-writable: directories
/// 2775 (setgid, inherited), files 0664.
#[track_caller]
fn assert_group_shared(root: &Path, context: &str) {
    let wrong: Vec<String> = tree(root)
        .into_iter()
        .filter_map(|(path, m)| {
            let want = if m.is_dir() { 0o2775 } else { 0o664 };
            let mode = m.permissions().mode() & 0o7777;
            (m.gid() != GROUP || mode != want).then(|| {
                format!(
                    "{} is {:o} of group {} (want {want:o} of {GROUP})",
                    path.display(),
                    mode,
                    m.gid()
                )
            })
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{context}: not group-shared:\n{}",
        wrong.join("\n")
    );
}

/// Tell the worker to exit, and check that it did so cleanly.
#[track_caller]
fn finish(w: Worker, who: &str) {
    let (status, _) = w.finish();
    assert!(status.success(), "{who} exits cleanly: {status:?}");
}

#[test]
fn two_users_of_a_group_shared_cache_evict_load_gc_and_clear_each_others_entries() {
    let Some(setpriv) = prerequisites("group-shared cache test") else {
        return;
    };
    let (_t, root) = shared_root("fscache-users-");
    let mut a = user(&setpriv, &root, Some(ALICE), "002");
    assert_eq!(ask(&mut a, "A", "max unlimited"), "ok");
    let size = stored(&mut a, "A", "a1");
    // Room for four entries.
    assert_eq!(
        ask(&mut a, "A", &format!("max {}", 4 * size + size / 2)),
        "ok"
    );
    for name in ["a2", "a3"] {
        assert_eq!(stored(&mut a, "A", name), size, "{name}");
    }

    // B fills the cache, and then needs room: A's oldest entry goes.
    let mut b = user(&setpriv, &root, Some(BOB), "002");
    for name in ["b1", "b2"] {
        assert_eq!(stored(&mut b, "B", name), size, "{name}");
    }
    assert_eq!(
        entries(&root),
        ["a2", "a3", "b1", "b2"],
        "B's store evicted A's least recently used entry"
    );
    assert_exact(&root);
    assert_eq!(ask(&mut a, "A", "load a1"), "miss");

    // Each reads the other's entries.
    for name in ["b1", "b2"] {
        assert_eq!(
            ask(&mut a, "A", &format!("load {name}")),
            format!("hit {size}")
        );
    }
    assert_eq!(ask(&mut a, "A", "release"), "released");
    for name in ["a2", "a3"] {
        assert_eq!(
            ask(&mut b, "B", &format!("load {name}")),
            format!("hit {size}")
        );
    }
    assert_eq!(ask(&mut b, "B", "release"), "released");

    // Each evicts one of the other's.
    assert_eq!(ask(&mut a, "A", "evict b1"), format!("evicted {size}"));
    assert_eq!(ask(&mut b, "B", "evict a2"), format!("evicted {size}"));
    assert_eq!(entries(&root), ["a3", "b2"]);
    assert_exact(&root);

    // Entries of both, and a staging entry of B's: all group-shared.
    assert_eq!(stored(&mut b, "B", "b3"), size);
    assert_eq!(stored(&mut a, "A", "a4"), size);
    assert!(ask(&mut b, "B", "stage").starts_with("staged "));
    assert!(
        names(&root.join("stage")).len() == 1,
        "B's staging entry is there"
    );
    assert_group_shared(&root, "entries of both users");
    assert_eq!(ask(&mut b, "B", "unstage"), "unstaged");

    // gc by B removes everything but what A holds, whoever made it; then
    // clear by A removes that.
    assert_eq!(ask(&mut a, "A", "load b2"), format!("hit {size}"));
    let gc = ask(&mut b, "B", "gc 0");
    assert_reply(&gc, &format!("gc 3 {}", 3 * size), None, "B: gc 0");
    assert_eq!(entries(&root), ["b2"], "only the entry A holds is left");
    assert_exact(&root);
    assert_eq!(ask(&mut a, "A", "release"), "released");
    let cleared = ask(&mut a, "A", "clear");
    assert_reply(&cleared, "cleared 1 0 0", None, "A: clear");

    assert_eq!(names(&root.join("objects")), Vec::<String>::new());
    assert_eq!(names(&root.join("stage")), Vec::<String>::new());
    assert_eq!(size_file(&root), 0);
    assert_exact(&root);
    assert_group_shared(&root, "the emptied cache");
    finish(a, "A");
    finish(b, "B");
}

#[test]
fn with_the_default_umask_another_users_entries_are_skipped_like_entries_in_use() {
    let Some(setpriv) = prerequisites("default-umask shared cache test") else {
        return;
    };
    let (_t, root) = shared_root("fscache-umask-");
    // The cache is made group-writable once (as the crate docs say); from
    // then on each user works under the default umask.
    {
        let mut admin = user(&setpriv, &root, None, "002");
        assert_eq!(ask(&mut admin, "root", "max unlimited"), "ok");
        finish(admin, "root");
    }
    let mut a = user(&setpriv, &root, Some(ALICE), "022");
    let size = stored(&mut a, "A", "a1");
    assert_eq!(
        ask(&mut a, "A", &format!("max {}", 4 * size + size / 2)),
        "ok"
    );
    for name in ["a2", "a3"] {
        assert_eq!(stored(&mut a, "A", name), size, "{name}");
    }
    // A's leftovers: an orphan of a killed worker, and an entry A is
    // still filling.
    let mut crashed = user(&setpriv, &root, Some(ALICE), "022");
    assert!(ask(&mut crashed, "A", "store lost 3000").starts_with("storing "));
    crashed.kill();
    assert!(ask(&mut a, "A", "store pending 3000").starts_with("storing "));
    assert_eq!(names(&root.join("objects")).len(), 5);
    assert_exact(&root);

    let mut b = user(&setpriv, &root, Some(BOB), "022");
    for name in ["a1", "a2", "a3"] {
        assert_eq!(
            ask(&mut b, "B", &format!("load {name}")),
            format!("hit {size}")
        );
    }
    assert_eq!(ask(&mut b, "B", "release"), "released");
    // B fills the cache; then needs room, which only its own entry gives.
    assert_eq!(stored(&mut b, "B", "b1"), size);
    assert_eq!(stored(&mut b, "B", "b2"), size);
    assert_eq!(entries(&root), ["a1", "a2", "a3", "b2"]);
    assert_exact(&root);
    // Room that only A's entries could give: none, and no error.
    let big = put(&mut b, "B", "big", 8 * PAYLOAD);
    assert_eq!(big, "no-room", "only A's entries could make room");
    assert_eq!(entries(&root), ["a1", "a2", "a3"]);
    assert_exact(&root);

    // B may not evict A's entry: the answer is the one for an entry in use.
    let evicted = ask(&mut b, "B", "evict a1");
    assert!(
        evicted == "busy" || evicted == "denied",
        "B: evict a1: expected busy or denied, got {evicted:?}"
    );
    assert_eq!(stored(&mut b, "B", "b3"), size);
    assert_eq!(ask(&mut b, "B", "evict b3"), format!("evicted {size}"));

    // gc and clear by B remove B's entries, skip A's and say so.
    assert_eq!(stored(&mut b, "B", "b4"), size);
    let gc = ask(&mut b, "B", "gc 0");
    assert_reply(&gc, &format!("gc 1 {size}"), Some(3), "B: gc 0");
    assert_eq!(entries(&root), ["a1", "a2", "a3"]);
    assert_exact(&root);
    assert_eq!(stored(&mut b, "B", "b5"), size);
    let cleared = ask(&mut b, "B", "clear");
    assert_reply(&cleared, "cleared 1 0 0", Some(3), "B: clear");
    assert_eq!(entries(&root), ["a1", "a2", "a3"]);
    assert_exact(&root);
    // A's orphan and A's entry in the making are skipped by B's sweep.
    let swept = ask(&mut b, "B", "sweep");
    assert_eq!(swept, "swept 0 0 0 0 2", "B's sweep skips A's two");
    assert_eq!(names(&root.join("objects")).len(), 5);

    // A's entries are whole, and A may remove them (and its orphan).
    for name in ["a1", "a2", "a3"] {
        assert_eq!(
            ask(&mut a, "A", &format!("load {name}")),
            format!("hit {size}")
        );
    }
    assert_eq!(ask(&mut a, "A", "release"), "released");
    assert_eq!(ask(&mut a, "A", "abort"), "aborted");
    let cleared = ask(&mut a, "A", "clear");
    assert_reply(&cleared, "cleared 3 0 0", Some(0), "A: clear");
    assert_eq!(names(&root.join("objects")), Vec::<String>::new());
    assert_eq!(size_file(&root), 0);
    assert_exact(&root);
    finish(a, "A");
    finish(b, "B");
}

#[test]
fn a_shared_entry_whose_files_another_user_may_not_remove_is_reported_not_fatal() {
    let Some(setpriv) = prerequisites("unremovable shared entry test") else {
        return;
    };
    let (_t, root) = shared_root("fscache-stuck-users-");
    let mut a = user(&setpriv, &root, Some(ALICE), "002");
    assert_eq!(ask(&mut a, "A", "max unlimited"), "ok");
    let size = stored(&mut a, "A", "c1");
    for name in ["c2", "c3"] {
        assert_eq!(stored(&mut a, "A", name), size, "{name}");
    }
    // B may lock each entry, but not write c1's directory (where its
    // object.info is), nor c2's data.
    let objects = root.join("objects");
    for dir in [objects.join("c1"), objects.join("c2/data")] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o2755)).expect("chmod");
    }

    let mut b = user(&setpriv, &root, Some(BOB), "002");
    let evicted = ask(&mut b, "B", "evict c1");
    assert!(
        evicted == "busy" || evicted == "denied",
        "B: evict c1: expected busy or denied, got {evicted:?}"
    );
    assert!(objects.join("c1/object.info").exists(), "c1 stays whole");
    assert_exact(&root);
    // c2 is taken out of the cache (given back); its files stay as
    // debris that B reports and A can sweep.
    assert_eq!(ask(&mut b, "B", "evict c2"), format!("evicted {size}"));
    assert!(!objects.join("c2/object.info").exists());
    assert!(objects.join("c2/data/payload").exists());
    assert_exact(&root);
    let swept = ask(&mut b, "B", "sweep");
    assert!(
        swept.starts_with("swept 0 0 0 1 ")
            && swept.contains(&format!("`{}` stays: ", objects.join("c2").display())),
        "B's sweep reports c2's debris: {swept}"
    );
    let cleared = ask(&mut b, "B", "clear");
    assert_reply(&cleared, "cleared 1 0 1", Some(1), "B: clear");
    assert_eq!(entries(&root), ["c1", "c2"]);
    assert_exact(&root);

    let cleared = ask(&mut a, "A", "clear");
    assert_reply(&cleared, "cleared 1 0 0", Some(0), "A: clear");
    assert_eq!(names(&objects), Vec::<String>::new());
    assert_eq!(size_file(&root), 0);
    assert_exact(&root);
    finish(a, "A");
    finish(b, "B");
}
