//! Fault injection: a full file system, a read-only one, permission denied
//! and running out of file descriptors. Each fault gives a clear error (or a
//! documented degrade), loses nothing committed and leaks nothing: once the
//! fault is gone, a sweep and a resync leave `cache.size` equal to the sum
//! of the `object.info` sizes, and every committed entry loads whole.
//!
//! The file-system faults need root (to mount a small tmpfs) and are
//! skipped with a message otherwise; the descriptor tests need `prlimit`.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;
use fscache::{Commit, ErrorKind, Eviction, FsCache, GcOptions, MaxSize};
use rustix::io::Errno;

const APP: &str = "fscache-tests";

// ---------------------------------------------------------------------------
// Helpers: a tmpfs that is unmounted whatever happens, and the checks.
// ---------------------------------------------------------------------------

/// Store `name` with `bytes` of content.
fn put(cache: &FsCache, name: &str, bytes: usize) -> fscache::Result<Commit> {
    let e = cache.store(name)?;
    std::fs::write(e.path().join("f"), payload(name, bytes)).expect("write payload");
    Ok(e.commit()?)
}

fn payload(name: &str, bytes: usize) -> Vec<u8> {
    name.bytes().cycle().take(bytes).collect()
}

/// Entries stored before a fault; (name, bytes).
const KEEPERS: &[(&str, usize)] = &[("keep-a", 3000), ("keep-b", 9000)];

/// A cache at `root` with no size limit holding the keepers.
fn populate(root: &Path) {
    let cache = FsCache::open(APP, root).expect("open");
    cache.set_maximum_size(MaxSize::Unlimited).expect("max");
    for (name, bytes) in KEEPERS {
        assert!(put(&cache, name, *bytes).expect("put").is_stored());
    }
}

/// Every keeper except `except` loads with its content.
#[track_caller]
fn assert_keepers_load(cache: &FsCache, except: &[&str], context: &str) {
    for (name, bytes) in KEEPERS.iter().filter(|(n, _)| !except.contains(n)) {
        let hit = cache
            .load(name)
            .unwrap_or_else(|e| panic!("{context}: load {name}: {e}"))
            .unwrap_or_else(|| panic!("{context}: committed entry {name} was lost"));
        assert_eq!(
            std::fs::read(hit.path().join("f")).ok(),
            Some(payload(name, *bytes)),
            "{context}: {name} is not whole"
        );
    }
}

/// With the fault gone: a sweep and a resync restore exact accounting and
/// leave no anonymous entry or temporary behind.
#[track_caller]
fn assert_repaired(root: &Path, context: &str) {
    let cache = FsCache::open(APP, root).unwrap_or_else(|e| panic!("{context}: reopen: {e}"));
    cache
        .sweep_orphans()
        .unwrap_or_else(|e| panic!("{context}: sweep: {e}"));
    cache
        .resync()
        .unwrap_or_else(|e| panic!("{context}: resync: {e}"));
    assert_exact(root);
    for dir in ["objects", "stage"] {
        let left: Vec<_> = names(&root.join(dir))
            .into_iter()
            .filter(|n| n.starts_with("uuid-"))
            .collect();
        assert!(left.is_empty(), "{context}: left in {dir}/: {left:?}");
    }
}

/// `cache.size` never undercounts.
#[track_caller]
fn assert_not_undercounted(root: &Path, context: &str) {
    let sum: u64 = info_sizes(root).iter().map(|(_, s)| s).sum();
    assert!(
        size_file(root) >= sum,
        "{context}: cache.size {} < sum of object.info sizes {sum}",
        size_file(root)
    );
}

/// The errno of an error, if it is an I/O error.
fn errno(e: &fscache::Error) -> Option<Errno> {
    e.io_error()
        .and_then(std::io::Error::raw_os_error)
        .map(Errno::from_raw_os_error)
}

/// Assert that `e` is the I/O error `want`, about a path below `under`,
/// with the path in its message. Returns the path.
#[track_caller]
fn assert_io_error(e: &fscache::Error, want: Errno, under: &Path, context: &str) -> PathBuf {
    assert_eq!(e.kind(), ErrorKind::Io, "{context}: {e:?}");
    assert_eq!(errno(e), Some(want), "{context}: {e:?}");
    let path = e
        .path()
        .unwrap_or_else(|| panic!("{context}: the error names no path: {e}"));
    assert!(
        path.starts_with(under),
        "{context}: the error names {} instead of a path below {}",
        path.display(),
        under.display()
    );
    assert!(
        e.to_string().contains(&path.display().to_string()),
        "{context}: the message does not show the path: {e}"
    );
    path.to_owned()
}

/// The type of every file below `dir` (without following links), and the
/// content of the small ones.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("list").flatten() {
            let t = e.file_type().expect("type");
            let p = e.path();
            let what = if t.is_dir() {
                stack.push(p.clone());
                "dir".to_owned()
            } else if t.is_file() {
                let m = e.metadata().expect("stat");
                format!(
                    "file {}",
                    String::from_utf8_lossy(
                        &std::fs::read(&p).expect("read")[..m.len().min(80) as usize]
                    )
                )
            } else {
                "other".to_owned()
            };
            out.insert(p.strip_prefix(dir).expect("below").to_owned(), what);
        }
    }
    out
}

// ---------------------------------------------------------------------------
// A full file system.
// ---------------------------------------------------------------------------

/// A file that fills a file system to the last page.
struct Filler {
    file: std::fs::File,
    path: PathBuf,
}

/// Fill the file system of `dir` to the last page with a file outside the
/// cache.
fn fill(dir: &Path) -> Filler {
    let path = dir.join("filler");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .expect("create filler");
    let chunk = [0xa5u8; 4096];
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(Errno::NOSPC.raw_os_error()) => break,
            Err(e) => panic!("filling: {e}"),
        }
    }
    // Nothing is left: even one byte more does not fit.
    let probe = std::fs::write(dir.join("probe"), b"x");
    let _ = std::fs::remove_file(dir.join("probe"));
    assert!(probe.is_err(), "the file system still has room");
    Filler { file, path }
}

impl Filler {
    /// Give the space back. Truncating frees the pages at once; unlinking
    /// alone would not while a process forked by a concurrent test still
    /// holds a copy of the descriptor (until it executes its program).
    fn free(self) {
        self.file.set_len(0).expect("truncate filler");
        std::fs::remove_file(&self.path).expect("remove filler");
    }
}

#[test]
fn a_store_whose_data_does_not_fit_on_a_full_file_system_is_aborted_without_a_trace() {
    let Some(fs) = Tmpfs::mount("full fs: data write", "size=512k") else {
        return;
    };
    let root = fs.path().join("cache");
    populate(&root);
    let cache = FsCache::open(APP, &root).expect("open");
    let entry = cache
        .store("big")
        .expect("store needs no space: only a directory");
    let filler = fill(fs.path());
    let wrote = std::fs::write(entry.path().join("f"), vec![1u8; 64 * 1024]);
    assert_eq!(
        wrote.as_ref().map_err(|e| e.raw_os_error()),
        Err(Some(Errno::NOSPC.raw_os_error())),
        "the data write hits ENOSPC"
    );
    let anon = entry.path().parent().expect("entry dir").to_owned();
    entry.abort().expect("aborting needs no space");
    assert!(!anon.exists(), "the aborted entry is gone");
    assert_eq!(
        names(&root.join("objects")),
        ["keep-a", "keep-b"],
        "nothing else in objects/"
    );
    assert_exact(&root);
    assert_keepers_load(&cache, &[], "full fs");
    // Staging needs no space either, and cleans up after itself.
    cache
        .stage()
        .expect("stage on a full fs")
        .close()
        .expect("close");
    filler.free();
    assert!(put(&cache, "big", 64 * 1024).expect("put").is_stored());
    assert_repaired(&root, "after freeing space");
    assert_keepers_load(&cache, &[], "after freeing space");
}

#[test]
fn a_commit_that_cannot_write_object_info_fails_naming_it_and_can_be_retried() {
    let Some(fs) = Tmpfs::mount("full fs: object.info", "size=512k") else {
        return;
    };
    let root = fs.path().join("cache");
    populate(&root);
    let cache = FsCache::open(APP, &root).expect("open");
    let size_before = size_file(&root);
    // An empty entry occupies no block on a tmpfs: its size is 0, so the
    // size file needs no rewrite and object.info is the first write.
    let entry = cache.store("empty").expect("store");
    let info = entry
        .path()
        .parent()
        .expect("entry dir")
        .join("object.info");
    let filler = fill(fs.path());
    let failed = entry.commit().expect_err("object.info cannot be written");
    let path = assert_io_error(&failed.error, Errno::NOSPC, &root, "commit on a full fs");
    assert_eq!(path, info, "the error names object.info");
    assert!(!info.exists(), "no partial object.info is left");
    assert_eq!(size_file(&root), size_before, "nothing was accounted");
    assert!(cache.load("empty").expect("load").is_none());
    // The guard came back: free space and commit it again.
    filler.free();
    let retried = failed.guard.commit().map_err(fscache::Error::from);
    assert_eq!(retried.expect("retry"), Commit::Stored { size: 0 });
    assert!(cache.load("empty").expect("load").is_some());
    assert_repaired(&root, "after the retry");
    assert_keepers_load(&cache, &[], "after the retry");
}

#[test]
fn a_commit_that_cannot_rewrite_cache_size_fails_without_accounting_and_can_be_retried() {
    let Some(fs) = Tmpfs::mount("full fs: cache.size", "size=512k") else {
        return;
    };
    let root = fs.path().join("cache");
    populate(&root);
    let cache = FsCache::open(APP, &root).expect("open");
    let size_before = size_file(&root);
    let entry = cache.store("sized").expect("store");
    std::fs::write(entry.path().join("f"), payload("sized", 5000)).expect("data fits");
    let filler = fill(fs.path());
    let failed = entry.commit().expect_err("cache.size cannot be rewritten");
    // The new total goes to a temporary renamed over cache.size; the error
    // names the file the caller knows, and the temporary is gone.
    assert_io_error(
        &failed.error,
        Errno::NOSPC,
        &root.join("cache.size"),
        "commit on a full fs",
    );
    assert_eq!(size_file(&root), size_before, "cache.size is unchanged");
    assert_eq!(
        names(&root.join("objects"))
            .iter()
            .filter(|n| n.starts_with("uuid-"))
            .count(),
        1,
        "only the entry being stored is there"
    );
    assert_exact(&root);
    filler.free();
    let retried = failed.guard.commit().map_err(fscache::Error::from);
    assert!(retried.expect("retry").is_stored());
    assert_repaired(&root, "after the retry");
    assert_keepers_load(&cache, &[], "after the retry");
}

#[test]
fn size_and_configuration_updates_failing_on_a_full_file_system_never_undercount() {
    let Some(fs) = Tmpfs::mount("full fs: size update", "size=512k") else {
        return;
    };
    let root = fs.path().join("cache");
    populate(&root);
    let cache = FsCache::open(APP, &root).expect("open");
    let info_before = std::fs::read(root.join("cache.info")).expect("read cache.info");
    // Drift, as a crash inside the size section leaves it: too high.
    let exact = size_file(&root);
    std::fs::write(root.join("cache.size"), (exact + 100_000).to_string()).expect("drift");
    let filler = fill(fs.path());

    // A configuration update writes a new cache.info: it fails whole.
    let e = cache
        .set_maximum_size(MaxSize::Bytes(1 << 20))
        .expect_err("no room for a new cache.info");
    assert_io_error(&e, Errno::NOSPC, &root.join("cache.info"), "set maximum");
    assert_eq!(
        std::fs::read(root.join("cache.info")).expect("read"),
        info_before,
        "cache.info is as it was"
    );
    assert_eq!(
        cache.reload_info().expect("reload").effective_maximum(),
        MaxSize::Unlimited
    );

    // A resync must write the corrected total: no room for it.
    let e = cache.resync().expect_err("no room for a new cache.size");
    assert_io_error(&e, Errno::NOSPC, &root.join("cache.size"), "resync");
    assert_eq!(size_file(&root), exact + 100_000, "cache.size is as it was");

    // An eviction unlinks object.info before it rewrites cache.size, which
    // may free the block that the rewrite needs; either way the total
    // never undercounts.
    match cache.evict("keep-a") {
        Ok(r) => assert!(matches!(r, Eviction::Removed { .. }), "{r:?}"),
        Err(e) => {
            assert_io_error(&e, Errno::NOSPC, &root.join("cache.size"), "evict");
        }
    }
    assert_not_undercounted(&root, "after the eviction");
    assert_keepers_load(&cache, &["keep-a"], "after the eviction");
    cache
        .sweep_orphans()
        .expect("a sweep of a full file system");
    assert_not_undercounted(&root, "after the sweep");

    filler.free();
    assert_repaired(&root, "after freeing space");
    assert_keepers_load(&cache, &["keep-a"], "after freeing space");
    assert!(
        matches!(cache.evict("keep-a"), Ok(Eviction::NotFound)),
        "keep-a was evicted, once"
    );
}

// ---------------------------------------------------------------------------
// A read-only file system.
// ---------------------------------------------------------------------------

#[test]
fn a_cache_on_a_read_only_file_system_serves_hits_and_refuses_writes_with_erofs() {
    let Some(fs) = Tmpfs::mount("read-only fs", "size=4m") else {
        return;
    };
    let root = fs.path().join("cache");
    populate(&root);
    let before = snapshot(&root);
    fs.remount("ro");
    {
        let cache = FsCache::open(APP, &root).expect("opening a read-only cache works");
        // Loading works: recording the use (atime) fails and is skipped.
        assert_keepers_load(&cache, &[], "read-only");
        let stats = cache.stats().expect("stats of a read-only cache");
        assert_eq!(stats.entries, 2, "{stats:?}");
        assert_eq!(stats.accounted_bytes, Some(size_file(&root)), "{stats:?}");
        let e = cache
            .store("new")
            .map(drop)
            .expect_err("store needs to write");
        assert_io_error(&e, Errno::ROFS, &root.join("objects"), "store");
        let e = cache.stage().map(drop).expect_err("stage needs to write");
        assert_io_error(&e, Errno::ROFS, &root.join("stage"), "stage");
        let e = cache
            .set_maximum_size(MaxSize::Bytes(1))
            .expect_err("update");
        assert_io_error(&e, Errno::ROFS, &root.join("cache.info"), "set maximum");
        let e = cache.evict("keep-a").expect_err("evict needs to write");
        assert_io_error(&e, Errno::ROFS, &root.join("objects/keep-a"), "evict");
        let e = cache.clear().expect_err("clear needs to write");
        assert_io_error(&e, Errno::ROFS, &root.join("objects"), "clear");
        // With nothing to remove, a sweep and a gc have nothing to write.
        cache.sweep_orphans().expect("an idle sweep only reads");
        cache
            .gc(&GcOptions::default())
            .expect("an idle gc only reads");
        let e = cache.resync().expect_err("resync rewrites cache.size");
        assert_io_error(&e, Errno::ROFS, &root.join("cache.size"), "resync");
        assert_eq!(cache.accounted_size().expect("read"), size_file(&root));
        assert_keepers_load(&cache, &[], "read-only, after everything");
    }
    assert_eq!(snapshot(&root), before, "a read-only cache was changed?");
    fs.remount("rw");
    assert_repaired(&root, "writable again");
    let cache = FsCache::open(APP, &root).expect("open");
    assert_keepers_load(&cache, &[], "writable again");
    assert!(put(&cache, "new", 100).expect("put").is_stored());
}

// ---------------------------------------------------------------------------
// Permission denied: a root-owned cache used by an unprivileged process.
// ---------------------------------------------------------------------------

const NOBODY: u32 = 65534;

#[test]
fn an_unprivileged_user_of_a_root_owned_cache_reads_hits_and_gets_errors_naming_paths() {
    if !is_root() {
        println!(
            "SKIPPED permission test: it needs root to own the cache and to drop to uid {NOBODY}"
        );
        return;
    }
    let (_t, root) = cache_path_others_can_reach("fscache-perm-");
    {
        let mut owner = Worker::spawn(&root);
        assert_eq!(owner.ask("max unlimited"), "ok");
        for name in ["k1", "k2"] {
            assert!(owner
                .ask(&format!("store {name} 5000"))
                .starts_with("storing"));
            assert!(owner.ask("commit").starts_with("stored"));
        }
    }
    // Root owns everything, and nobody else may write anywhere.
    for (path, _) in snapshot(&root) {
        let m = std::fs::symlink_metadata(root.join(&path)).expect("stat");
        assert_eq!(
            (
                std::os::unix::fs::MetadataExt::uid(&m),
                m.permissions().mode() & 0o022
            ),
            (0, 0),
            "{} must be root's and not writable by others",
            path.display()
        );
    }
    let before = snapshot(&root);
    let size_before = size_file(&root);

    let mut cmd = Worker::command(&root);
    // Dropping from root also drops the supplementary groups.
    cmd.uid(NOBODY).gid(NOBODY);
    let mut user = {
        cmd.stderr(Stdio::piped());
        Worker::from_command(cmd)
    };
    assert_eq!(user.next_line(), "ready", "opening needs only read access");
    // Reading works: the use is not recorded, the hit is whole.
    for name in ["k1", "k2"] {
        let got = user.ask(&format!("load {name}"));
        assert!(got.starts_with("hit "), "load {name}: {got}");
    }
    assert_eq!(user.ask("load absent"), "miss");
    // Everything that writes says which path it could not write.
    let objects = root.join("objects").display().to_string();
    let stage = root.join("stage").display().to_string();
    for (command, path) in [
        ("store new 100", format!("`{objects}/uuid-")),
        ("stage", format!("`{stage}/uuid-")),
        (
            "max 1000",
            format!("`{}`", root.join("cache.info").display()),
        ),
        ("resync", format!("`{}`", root.join("cache.size").display())),
    ] {
        let got = user.ask(command);
        assert!(
            got.starts_with("error failed to ") && got.contains(&path),
            "{command}: expected an error naming {path}…, got {got:?}"
        );
    }
    // Entries another user's modes keep us from removing are skipped and
    // reported, like entries in use: never a failure.
    assert_eq!(user.ask("evict k1"), "denied", "evict of root's entry");
    assert_eq!(user.ask("clear"), "cleared 0 0 0 2");
    assert_eq!(user.ask("gc 0"), "gc 0 0 2");
    // An idle sweep only reads.
    assert_eq!(user.ask("sweep"), "swept 0 0 0 0 0");
    assert_eq!(user.ask("release"), "released");
    let (status, stderr) = user.finish();
    assert!(status.success(), "the worker exits cleanly: {status:?}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    assert_eq!(
        snapshot(&root),
        before,
        "the unprivileged user left something behind"
    );
    assert_eq!(size_file(&root), size_before);
    assert_exact(&root);
    let mut owner = Worker::spawn(&root);
    for name in ["k1", "k2"] {
        assert!(owner.ask(&format!("load {name}")).starts_with("hit "));
    }
}

/// Give `path` and everything below it to `uid`.
fn chown_tree(path: &Path, uid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid)).expect("chown");
    if std::fs::symlink_metadata(path).expect("stat").is_dir() {
        for entry in std::fs::read_dir(path).expect("list") {
            chown_tree(&entry.expect("entry").path(), uid);
        }
    }
}

#[test]
fn an_orphan_its_sweeper_cannot_remove_is_reported_and_stops_no_other_sweep() {
    if !is_root() {
        println!("SKIPPED unremovable-orphan test: it needs root to drop to uid {NOBODY}");
        return;
    }
    let (_t, root) = cache_path_others_can_reach("fscache-stuck-");
    FsCache::open(APP, &root)
        .expect("create")
        .set_maximum_size(MaxSize::Unlimited)
        .expect("max");
    // Three dead orphans: one accounted, with root's files inside, which
    // nobody may remove; and two that nobody may.
    let objects = root.join("objects");
    let stuck = objects.join("uuid-00000000000000000000000000000001");
    let free = objects.join("uuid-00000000000000000000000000000002");
    let staged = root.join("stage/uuid-00000000000000000000000000000003");
    for orphan in [&stuck, &free, &staged] {
        std::fs::create_dir_all(orphan.join("data")).expect("plant");
        std::fs::write(orphan.join("object.lock"), "").expect("plant");
        std::fs::write(orphan.join("data/f"), "x").expect("plant");
    }
    std::fs::write(stuck.join("object.info"), r#"{"size": 4096}"#).expect("plant");
    std::fs::write(root.join("cache.size"), "4096").expect("account it");
    // And a named entry whose removal was cut short: no object.info.
    let broken = objects.join("broken");
    std::fs::create_dir_all(broken.join("data")).expect("plant");
    std::fs::write(broken.join("object.lock"), "").expect("plant");
    chown_tree(&root, NOBODY);
    for entry in [&stuck, &broken] {
        std::fs::create_dir(entry.join("data/roots")).expect("plant");
        std::fs::write(entry.join("data/roots/file"), "root's").expect("plant");
    }
    assert_exact(&root);

    let mut cmd = Worker::command(&root);
    cmd.uid(NOBODY).gid(NOBODY);
    let mut user = {
        cmd.stderr(Stdio::piped());
        Worker::from_command(cmd)
    };
    assert_eq!(user.next_line(), "ready");
    let swept = user.ask("sweep");
    assert!(
        swept.starts_with("swept 2 0 4096 2 0; "),
        "the others are swept, the stuck ones are given back and reported: {swept}"
    );
    for entry in [&stuck, &broken] {
        let why = format!(
            "`{}` stays: failed to remove `{}`: {}",
            entry.display(),
            entry.join("data/roots/file").display(),
            std::io::Error::from_raw_os_error(Errno::PERM.raw_os_error())
        );
        assert!(swept.contains(&why), "{why} in {swept}");
        assert!(entry.join("data/roots/file").exists());
    }
    assert!(!free.exists() && !staged.exists());
    assert_exact(&root);
    // Given back once only; and everything that sweeps first still works.
    assert!(user.ask("sweep").starts_with("swept 0 0 0 2 0; "));
    assert_eq!(user.ask("resync"), "resynced Some(0) 0");
    assert_eq!(
        user.ask("clear"),
        "cleared 0 0 1 0",
        "the cut-short entry is not counted as removed"
    );
    assert!(user.ask("store new 100").starts_with("storing "));
    let got = user.ask("commit");
    assert!(got.starts_with("stored "), "{got}");
    let (status, stderr) = user.finish();
    assert!(status.success(), "{status:?} {stderr}");
    assert_exact(&root);

    // Root may remove it.
    let cache = FsCache::open(APP, &root).expect("open");
    let report = cache.sweep_orphans().expect("sweep");
    assert_eq!(
        (
            report.orphan_dirs,
            report.invalid_entries,
            report.unremovable.len()
        ),
        (1, 1, 0)
    );
    assert!(!stuck.exists() && !broken.exists());
    assert_exact(&root);
}

// ---------------------------------------------------------------------------
// Running out of file descriptors.
// ---------------------------------------------------------------------------

#[test]
fn a_worker_under_a_tiny_descriptor_limit_answers_errors_and_leaves_nothing_behind() {
    let Some(prlimit) = prlimit() else {
        println!("SKIPPED descriptor-limit test: `prlimit` is not installed");
        return;
    };
    // The limit is set on the running worker, counted from the descriptors
    // it holds once ready: how many it inherits varies between machines.
    // A stage holds two, so the step that runs out depends on the parity of
    // what is left (the entry's directory, or its lock file): try both.
    for headroom in HEADROOMS {
        worker_under_descriptor_limit(&prlimit, headroom);
    }
}

/// Free descriptors given to the worker: a commit needs 3 at its peak;
/// two values, one of each parity.
const HEADROOMS: [usize; 2] = [5, 6];

fn worker_under_descriptor_limit(prlimit: &Path, headroom: usize) {
    let (_t, root) = new_cache(MaxSize::Unlimited);
    populate(&root);
    {
        // Entries with the worker's self-checking payload: one to keep,
        // one to try to evict.
        let mut owner = Worker::spawn(&root);
        for name in ["w-keep", "w-spare"] {
            assert!(owner
                .ask(&format!("store {name} 3000"))
                .starts_with("storing"));
            assert!(owner.ask("commit").starts_with("stored"));
        }
    }
    let mut w = {
        let mut cmd = Worker::command(&root);
        cmd.stderr(Stdio::piped());
        Worker::from_command(cmd)
    };
    assert_eq!(w.next_line(), "ready");
    let limit = w.limit_descriptors(prlimit, headroom);
    // Hold staging entries (two descriptors each) until none is left.
    let mut staged = 0;
    let refusal = loop {
        let got = w.ask("stage");
        if !got.starts_with("staged ") {
            break got;
        }
        staged += 1;
        assert!(
            staged < limit,
            "{limit} descriptors cannot hold {staged} stages"
        );
    };
    let stage = root.join("stage").display().to_string();
    assert!(
        refusal.starts_with("error failed to ") && refusal.contains(&format!("`{stage}/uuid-")),
        "limit {limit}: out of descriptors, staging answers an error naming its path: {refusal:?}"
    );
    // Every other operation answers too, with a result or an error that
    // names a path in the cache.
    for command in [
        "store x 100",
        "load w-keep",
        "sweep",
        "resync",
        "evict w-spare",
    ] {
        let got = w.ask(command);
        assert!(
            !got.starts_with("error") || got.contains(&format!("`{}", root.display())),
            "{command}: {got:?}"
        );
    }
    // With the descriptors back, the same worker works again.
    assert_eq!(w.ask("unstage"), "unstaged");
    for (command, want) in [
        ("store y 100", "storing "),
        ("commit", "stored "),
        ("load y", "hit "),
        ("load w-keep", "hit "),
    ] {
        let got = w.ask(command);
        assert!(got.starts_with(want), "{command}: {got:?}");
    }
    let (status, stderr) = w.finish();
    assert!(status.success(), "no panic, no abort: {status:?} {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_repaired(&root, "after the worker exited");
    let cache = FsCache::open(APP, &root).expect("open");
    assert_keepers_load(&cache, &[], "after the worker exited");
}

/// The environment variable that turns `out_of_descriptors_child` into the
/// child half of `running_out_of_descriptors_at_every_step_...`.
const FD_CHILD: &str = "FSCACHE_FAULTS_FD_CHILD";

#[test]
fn running_out_of_descriptors_at_every_step_fails_with_emfile_and_leaks_nothing() {
    let Some(prlimit) = prlimit() else {
        println!("SKIPPED descriptor-exhaustion test: `prlimit` is not installed");
        return;
    };
    let (_t, root) = new_cache(MaxSize::Unlimited);
    populate(&root);
    // The child is this test binary running only `out_of_descriptors_child`,
    // under a low limit, so that exhausting descriptors there cannot
    // disturb the tests running here.
    let out = Command::new(prlimit)
        .arg("--nofile=64:64")
        .arg(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "out_of_descriptors_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(FD_CHILD, &root)
        .output()
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("CHILD DONE"),
        "the child failed: {:?}\n{stdout}\n{stderr}",
        out.status
    );
    if let Some(summary) = stdout
        .split("CHILD DONE")
        .nth(1)
        .and_then(|s| s.lines().next())
    {
        println!("child: {summary}");
    }
    assert_repaired(&root, "after the child");
    let cache = FsCache::open(APP, &root).expect("open");
    assert_keepers_load(&cache, &[], "after the child");
}

/// Opens `/dev/null` until the descriptor table is full, then gives back
/// `free` descriptors.
struct Hog(#[allow(dead_code)] Vec<std::fs::File>);

impl Hog {
    fn leaving(free: usize) -> Hog {
        let mut files = Vec::new();
        loop {
            match std::fs::File::open("/dev/null") {
                Ok(f) => files.push(f),
                Err(e) if e.raw_os_error() == Some(Errno::MFILE.raw_os_error()) => break,
                Err(e) => panic!("hogging descriptors: {e}"),
            }
        }
        assert!(
            files.len() > free,
            "the limit is too low to leave {free} free"
        );
        files.truncate(files.len() - free);
        Hog(files)
    }
}

/// Not a test on its own: the child half of
/// `running_out_of_descriptors_at_every_step_fails_with_emfile_and_leaks_nothing`,
/// which runs it in its own process. Without that process's environment
/// variable it does nothing.
#[test]
fn out_of_descriptors_child() {
    let Some(root) = std::env::var_os(FD_CHILD) else {
        return;
    };
    let root = PathBuf::from(root);
    let cache = FsCache::open(APP, &root).expect("open with descriptors to spare");
    let mut failures = BTreeMap::<String, usize>::new();
    // With 0, 1, 2, … descriptors free, every step either works or fails
    // with EMFILE naming a path in the cache; with enough, all work.
    for free in 0..24 {
        let context = format!("{free} descriptors free");
        let name = format!("n{free}");
        let mut outcomes: Vec<(&str, fscache::Result<String>)> = Vec::new();
        {
            let _hog = Hog::leaving(free);
            let stored = cache.store(&name).and_then(|e| {
                match std::fs::write(e.path().join("f"), payload(&name, 2000)) {
                    // The test's own write needs a descriptor too.
                    Err(_) => Ok("payload did not fit".to_owned()),
                    Ok(()) => Ok(format!("{:?}", e.commit()?)),
                }
            });
            outcomes.push(("store", stored));
            for (keeper, _) in KEEPERS {
                let hit = cache.load(keeper).map(|h| match h {
                    Some(h) => format!("hit {}", h.path().display()),
                    None => panic!("{context}: load {keeper} missed: EMFILE is not a miss"),
                });
                outcomes.push(("load", hit));
            }
            outcomes.push((
                "stage",
                cache.stage().and_then(|s| s.close()).map(|()| "ok".into()),
            ));
            outcomes.push(("evict", cache.evict(&name).map(|e| format!("{e:?}"))));
            outcomes.push(("stats", cache.stats().map(|s| format!("{}", s.entries))));
            outcomes.push(("sweep", cache.sweep_orphans().map(|r| format!("{r:?}"))));
            outcomes.push(("resync", cache.resync().map(|r| format!("{}", r.after))));
            outcomes.push((
                "gc",
                cache.gc(&GcOptions::default()).map(|r| format!("{r:?}")),
            ));
        }
        for (step, outcome) in &outcomes {
            match outcome {
                Ok(_) => {}
                Err(e) => {
                    assert_io_error(e, Errno::MFILE, &root, &format!("{context}: {step}"));
                    *failures.entry(step.to_string()).or_default() += 1;
                }
            }
        }
        if free >= 20 {
            assert!(
                outcomes.iter().all(|(_, o)| o.is_ok()),
                "{context}: with enough descriptors everything works: {outcomes:?}"
            );
        }
        // Descriptors are back: nothing was lost, nothing leaks for long.
        assert_not_undercounted(&root, &context);
        assert_keepers_load(&cache, &[], &context);
        cache.sweep_orphans().expect("sweep");
        cache.resync().expect("resync");
        assert_exact(&root);
        let _ = cache.evict(&name);
    }
    assert!(
        failures.contains_key("store") && failures.contains_key("load"),
        "the limits reached every kind of step: {failures:?}"
    );
    println!("CHILD DONE failures by step: {failures:?}");
}

// ---------------------------------------------------------------------------
// A commit that cannot remove what it discards.
// ---------------------------------------------------------------------------

/// A mount point inside an entry's `data/` cannot be removed (`EBUSY`), so
/// neither can the entry: a commit that settles on not keeping it must
/// still report its outcome, and no later call may panic.
#[test]
fn a_commit_that_cannot_remove_its_discarded_entry_reports_the_outcome_and_never_panics(
) -> TestResult {
    if !is_root() {
        println!("SKIPPED busy-entry test: it needs root to mount inside an entry");
        return Ok(());
    }
    // A maximum of 0: every commit is too large, so the entry is discarded.
    let (_t, root) = new_cache(MaxSize::Bytes(0));
    let cache = FsCache::open(APP, &root)?;
    let guard = cache.store("pinned")?;
    std::fs::write(guard.path().join("f"), "x")?;
    let mnt = guard.path().join("mnt");
    std::fs::create_dir(&mnt)?;
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "none"])
        .arg(&mnt)
        .status()?;
    if !mounted.success() {
        println!("SKIPPED busy-entry test: mount -t tmpfs failed ({mounted})");
        return Ok(());
    }
    let unmount = scopeguard::guard(mnt.clone(), |mnt| {
        let _ = Command::new("umount").arg("-l").arg(&mnt).status();
    });
    let outcome = match guard.commit() {
        Ok(outcome) => outcome,
        // What main used to do: hand back a guard whose entry was gone.
        Err(failed) => {
            let again = failed.guard.commit();
            panic!("the commit failed ({}), and again: {again:?}", failed.error);
        }
    };
    assert!(matches!(outcome, Commit::TooLarge { .. }), "{outcome:?}");
    // What could not be removed is an unlocked orphan, reported by a sweep.
    let r = cache.sweep_orphans()?;
    assert_eq!(r.unremovable.len(), 1, "the busy orphan is reported: {r:?}");
    drop(unmount);
    let r = cache.sweep_orphans()?;
    assert_eq!(r.orphan_dirs, 1, "once free it is swept: {r:?}");
    assert_eq!(names(&root.join("objects")), Vec::<String>::new());
    assert_exact(&root);
    Ok(())
}

// ---------------------------------------------------------------------------
// A free-space floor.
// ---------------------------------------------------------------------------

fn free_bytes(path: &Path) -> u64 {
    let st = rustix::fs::statvfs(path).expect("statvfs");
    st.f_bavail * st.f_frsize
}

/// Without a floor an unlimited cache fills its file system until a store
/// cannot even write its data; with one, commits evict so that the free
/// space stays above it, and every store succeeds.
#[test]
fn a_free_space_floor_keeps_an_unlimited_cache_from_filling_its_file_system() -> TestResult {
    let Some(fs) = Tmpfs::mount("free-space floor test", "size=4m") else {
        return Ok(());
    };
    let root = fs.path().join("cache");
    let floor: u64 = 1 << 20;
    let cache = fscache::OpenOptions::new()
        .maximum_size(MaxSize::Unlimited)
        .open(APP, &root)?;
    cache.update_info(&fscache::CacheInfo {
        min_free_bytes: Some(floor),
        ..Default::default()
    })?;
    for i in 0..24 {
        let name = format!("e{i}");
        let outcome = put(&cache, &name, 256 << 10)?;
        assert!(outcome.is_stored(), "{name}: {outcome}");
        let free = free_bytes(fs.path());
        // What a commit checks is the space left with its entry written;
        // only its object.info comes after.
        assert!(
            free + (8 << 10) >= floor,
            "{name}: {free} bytes free, below the floor of {floor}"
        );
    }
    let stats = cache.stats()?;
    assert!(stats.entries < 24, "older entries were evicted: {stats:?}");
    let hit = cache.load("e23")?;
    assert!(hit.is_some(), "the newest entry is kept");
    drop(hit);
    assert_exact(&root);
    // Without the floor the same stores run the file system out of space.
    cache.update_info(&fscache::CacheInfo {
        min_free_bytes: Some(0),
        ..Default::default()
    })?;
    let filled = (24..48).any(|i| {
        let Ok(entry) = cache.store(&format!("f{i}")) else {
            return true;
        };
        std::fs::write(entry.path().join("f"), payload("f", 256 << 10)).is_err()
            || entry.commit().is_err()
    });
    assert!(filled, "without the floor the file system fills up");
    Ok(())
}
