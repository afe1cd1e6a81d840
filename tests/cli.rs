//! The `fscache` command, run as a real process: every subcommand's
//! success path, the JSON schema of every read command (the README's),
//! the exit statuses, a closed stdout, sizes and durations, the warnings
//! about `cache.info`, and boot attribution that says "unknown" rather
//! than guess.

#![cfg(feature = "cli")]

mod common;

use std::fs::{File, FileTimes};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use common::command::*;
use common::schema::{check, Schema, T};
use common::*;
use fscache::lock::{FileLock, LockKind};
use fscache::{FsCache, MaxSize, Wait};
use serde_json::Value;

/// The application id `new_cache` (tests/common) opens caches with.
const APP: &str = "fscache-tests";

/// Run with `--json`, require success, and parse what it printed.
#[track_caller]
fn json(args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    let out = expect(0, &args);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("fscache {args:?} printed no JSON ({e}): {}", stdout(&out)))
}

fn s(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// Store `name` with a file of `len` bytes.
fn put(cache: &FsCache, name: &str, len: usize) -> TestResult {
    let entry = cache.store(name)?;
    std::fs::write(entry.path().join("payload"), vec![7u8; len])?;
    let outcome = entry.commit()?;
    assert!(outcome.is_stored(), "{name}: {outcome:?}");
    Ok(())
}

/// Make `name` look unused for `ago` (its last use is its lock's atime).
fn last_used(root: &Path, name: &str, ago: Duration) -> TestResult {
    let lock = root.join("objects").join(name).join("object.lock");
    File::options()
        .write(true)
        .open(lock)?
        .set_times(FileTimes::new().set_accessed(SystemTime::now() - ago))?;
    Ok(())
}

const DAY: Duration = Duration::from_secs(86400);

/// A cache with three entries: `small` (4 KiB), `big` (1 MiB) and `old`
/// (16 KiB, unused for 40 days).
fn cache_with_entries(
) -> Result<(tempfile::TempDir, std::path::PathBuf, FsCache), Box<dyn std::error::Error>> {
    let (t, root) = new_cache(MaxSize::Bytes(64 << 20));
    let cache = FsCache::open(APP, &root)?;
    put(&cache, "small", 4 << 10)?;
    put(&cache, "big", 1 << 20)?;
    put(&cache, "old", 16 << 10)?;
    last_used(&root, "old", 40 * DAY)?;
    Ok((t, root, cache))
}

// ---------------------------------------------------------------------
// The JSON schema (README, "JSON output"), as a checker.

/// Every element of the array `v[key]` follows `schema`.
#[track_caller]
fn check_items(v: &Value, key: &str, schema: Schema, what: &str) {
    for item in v[key].as_array().expect("an array") {
        check(item, schema, &format!("{what}.{key}[]"));
    }
}

const STATS: Schema = &[
    ("path", &[T::Str]),
    ("app_id", &[T::Str, T::Null]),
    ("entries", &[T::Int]),
    ("entries_this_boot", &[T::Int, T::Null]),
    ("entries_earlier_boots", &[T::Int, T::Null]),
    ("invalid_entries", &[T::Int]),
    ("accounted_bytes", &[T::Int, T::Null]),
    ("recorded_bytes", &[T::Int]),
    ("reserved_bytes", &[T::Int]),
    ("measured_bytes", &[T::Int]),
    ("maximum_bytes", &[T::Int, T::Null]),
    ("low_watermark_bytes", &[T::Int, T::Null]),
    ("orphans", &[T::Int]),
    ("orphans_from_earlier_boots", &[T::Int]),
    ("in_progress", &[T::Int]),
    ("oldest_use", &[T::Str, T::Null]),
    ("newest_use", &[T::Str, T::Null]),
    ("counters", &[T::Obj]),
    ("counters_zeroed", &[T::Bool]),
];

const COUNTERS: Schema = &[
    ("hits", &[T::Int]),
    ("misses", &[T::Int]),
    ("stored", &[T::Int]),
    ("name_taken", &[T::Int]),
    ("evicted", &[T::Int]),
    ("heals", &[T::Int]),
    ("mismatches", &[T::Int]),
];

const LS: Schema = &[
    ("path", &[T::Str]),
    ("app_id", &[T::Str, T::Null]),
    ("total_entries", &[T::Int]),
    ("invalid_entries", &[T::Int]),
    ("entries", &[T::Arr]),
];

const LS_ENTRY: Schema = &[
    ("name", &[T::Str]),
    ("size_bytes", &[T::Int]),
    ("last_use", &[T::Str]),
    ("boot", &[T::Str]),
    ("durable", &[T::Bool]),
    ("in_use", &[T::Bool]),
];

const CONFIG: Schema = &[
    ("path", &[T::Str]),
    ("version", &[T::Int, T::Null]),
    ("maximum_bytes", &[T::Int, T::Null]),
    ("low_watermark_percent", &[T::Int]),
    ("low_watermark_bytes", &[T::Int, T::Null]),
    ("creation_boot_id", &[T::Str, T::Null]),
    ("min_free_bytes", &[T::Int, T::Null]),
    ("warnings", &[T::Arr]),
];

const INIT: Schema = &[
    ("path", &[T::Str]),
    ("version", &[T::Int, T::Null]),
    ("maximum_bytes", &[T::Int, T::Null]),
    ("low_watermark_percent", &[T::Int]),
    ("low_watermark_bytes", &[T::Int, T::Null]),
    ("creation_boot_id", &[T::Str, T::Null]),
    ("min_free_bytes", &[T::Int, T::Null]),
    ("warnings", &[T::Arr]),
    ("created", &[T::Bool]),
];

const GC: Schema = &[
    ("path", &[T::Str]),
    ("dry_run", &[T::Bool]),
    ("removed", &[T::Arr]),
    ("freed_bytes", &[T::Int]),
    ("in_use", &[T::Int]),
    ("denied", &[T::Int]),
    ("orphans", &[T::Int]),
    ("sweep", &[T::Obj, T::Null]),
    ("unremovable", &[T::Arr]),
];

const GC_REMOVED: Schema = &[
    ("name", &[T::Str]),
    ("size_bytes", &[T::Int]),
    ("reason", &[T::Str]),
];

const EVICT: Schema = &[("path", &[T::Str]), ("results", &[T::Arr])];

const EVICT_RESULT: Schema = &[
    ("name", &[T::Str]),
    ("outcome", &[T::Str]),
    ("size_bytes", &[T::Int, T::Null]),
];

const CLEAR: Schema = &[
    ("path", &[T::Str]),
    ("removed", &[T::Int]),
    ("freed_bytes", &[T::Int]),
    ("in_use", &[T::Int]),
    ("denied", &[T::Int]),
    ("sweep", &[T::Obj]),
    ("unremovable", &[T::Arr]),
];

const SWEEP_REPORT: Schema = &[
    ("orphan_dirs", &[T::Int]),
    ("orphan_files", &[T::Int]),
    ("orphans_from_earlier_boots", &[T::Int]),
    ("invalid_entries", &[T::Int]),
    ("given_back_bytes", &[T::Int]),
    ("in_progress", &[T::Int]),
    ("denied", &[T::Int]),
    ("unremovable", &[T::Arr]),
    ("lockless", &[T::Arr]),
];

const SWEEP: Schema = &[
    ("path", &[T::Str]),
    ("orphan_dirs", &[T::Int]),
    ("orphan_files", &[T::Int]),
    ("orphans_from_earlier_boots", &[T::Int]),
    ("invalid_entries", &[T::Int]),
    ("given_back_bytes", &[T::Int]),
    ("in_progress", &[T::Int]),
    ("denied", &[T::Int]),
    ("unremovable", &[T::Arr]),
    ("lockless", &[T::Arr]),
];

const RESYNC: Schema = &[
    ("path", &[T::Str]),
    ("before_bytes", &[T::Int, T::Null]),
    ("after_bytes", &[T::Int]),
    ("sweep", &[T::Obj]),
];

/// A time in the schema: RFC 3339, UTC, to the second.
#[track_caller]
fn check_time(v: &Value) {
    let t = v.as_str().unwrap_or_else(|| panic!("not a time: {v}"));
    humantime::parse_rfc3339(t).unwrap_or_else(|e| panic!("{t:?} is not RFC 3339: {e}"));
    assert!(t.ends_with('Z') && t.len() == 20, "UTC to the second: {t}");
}

// ---------------------------------------------------------------------
// Success paths.

#[test]
fn every_subcommand_does_its_work_and_says_so_in_human_units() -> TestResult {
    let t = tempfile::tempdir()?;
    let root = t.path().join("new/cache");
    let dir = s(&root);
    let out = expect(
        0,
        &["init", dir, "--max-size", "64M", "--low-watermark", "50"],
    );
    assert!(stdout(&out).contains("created"), "{}", stdout(&out));
    assert!(stdout(&out).contains("64.0 MiB"), "{}", stdout(&out));
    let cache = FsCache::open(APP, &root)?;
    put(&cache, "small", 4 << 10)?;
    put(&cache, "big", 1 << 20)?;
    put(&cache, "old", 16 << 10)?;
    last_used(&root, "old", 40 * DAY)?;

    let out = stdout(&expect(0, &["stats", dir]));
    assert!(out.contains("entries:          3"), "{out}");
    assert!(
        out.contains("64.0 MiB") && out.contains("32.0 MiB"),
        "{out}"
    );
    assert!(out.contains("oldest use:       1 month ago"), "{out}");

    let out = stdout(&expect(0, &["ls", dir]));
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("LAST USE"),
        "{out}"
    );
    assert!(
        lines[1].starts_with("old") && lines[1].contains("1 month ago"),
        "least recently used first: {out}"
    );
    assert!(out.contains("MiB") && out.contains("KiB"), "{out}");

    let out = stdout(&expect(0, &["config", dir]));
    assert!(
        out.contains("maximum size:   64.0 MiB") && out.contains("50%"),
        "{out}"
    );
    let out = stdout(&expect(0, &["config", dir, "--max-size", "unlimited"]));
    assert!(out.contains("maximum size:   unlimited"), "{out}");

    let out = stdout(&expect(0, &["gc", dir, "--max-age", "30d", "--dry-run"]));
    assert!(
        out.contains("would remove old") && out.contains("unused for more than 30days"),
        "{out}"
    );
    assert!(
        root.join("objects/old").exists(),
        "a dry run removes nothing"
    );
    let out = stdout(&expect(0, &["gc", dir, "--max-age", "30d"]));
    assert!(
        out.contains("removed old (") && out.contains("KiB, unused for more than 30days)"),
        "{out}"
    );
    assert!(!root.join("objects/old").exists());

    let out = stdout(&expect(0, &["evict", dir, "--", "small", "missing"]));
    assert!(
        out.contains("small: removed (") && out.contains("KiB)"),
        "{out}"
    );
    assert!(out.contains("missing: not found"), "{out}");

    std::fs::create_dir(root.join("objects/uuid-0123456789abcdef0123456789abcdef"))?;
    let out = stdout(&expect(0, &["sweep", dir]));
    assert!(out.contains("removed 1 orphan directory"), "{out}");

    std::fs::write(root.join("cache.size"), "999999")?;
    let out = stdout(&expect(0, &["resync", dir]));
    assert!(out.contains("999999 bytes ->"), "{out}");
    assert_exact(&root);

    let out = stdout(&expect(0, &["clear", dir]));
    assert!(out.contains("removed 1 entry, 1.0 MiB"), "{out}");
    assert_eq!(names(&root.join("objects")), Vec::<String>::new());

    let scratch = t.path().join("stress");
    let out = stdout(&expect(
        0,
        &["stress", s(&scratch), "--procs", "2", "--seconds", "1"],
    ));
    assert!(out.contains("ok: no violation"), "{out}");
    Ok(())
}

#[test]
fn init_gives_a_new_cache_a_usable_maximum_and_changes_only_what_it_is_given_on_an_existing_one(
) -> TestResult {
    let t = tempfile::tempdir()?;
    let dir = t.path().join("c");
    let doc = json(&["init", s(&dir)]);
    check(&doc, INIT, "init");
    assert_eq!(doc["created"], true);
    assert_eq!(
        doc["maximum_bytes"],
        5u64 << 30,
        "the library's DEFAULT_MAXIMUM"
    );
    let doc = json(&["init", s(&dir), "--low-watermark", "50"]);
    assert_eq!(doc["created"], false);
    assert_eq!(doc["maximum_bytes"], 5u64 << 30, "kept");
    assert_eq!(doc["low_watermark_percent"], 50);
    let doc = json(&["init", s(&dir), "--max-size", "unlimited"]);
    assert_eq!(doc["maximum_bytes"], Value::Null, "null is unlimited");
    assert_eq!(doc["low_watermark_bytes"], Value::Null);
    Ok(())
}

#[test]
fn ls_sorts_by_last_use_size_or_name_and_limits() -> TestResult {
    let (_t, root, _cache) = cache_with_entries()?;
    let dir = s(&root);
    let order = |sort: &str, limit: Option<&str>| -> Vec<String> {
        let mut args = vec!["ls", dir, "--sort", sort];
        if let Some(n) = limit {
            args.extend(["--limit", n]);
        }
        let doc = json(&args);
        doc["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .map(|e| e["name"].as_str().expect("name").to_owned())
            .collect()
    };
    assert_eq!(
        order("last-use", None)[0],
        "old",
        "least recently used first"
    );
    assert_eq!(
        order("size", None),
        ["big", "old", "small"],
        "largest first"
    );
    assert_eq!(order("name", None), ["big", "old", "small"]);
    assert_eq!(order("size", Some("1")), ["big"]);
    let doc = json(&["ls", dir, "--limit", "1"]);
    assert_eq!(doc["total_entries"], 3, "the total before the limit");
    let out = stdout(&expect(0, &["ls", dir, "--limit", "2"]));
    assert!(out.contains("(2 of 3 entries)"), "{out}");
    Ok(())
}

// ---------------------------------------------------------------------
// The JSON schema of every read command.

#[test]
fn the_json_of_every_read_command_has_the_documented_keys_and_types() -> TestResult {
    let (_t, root, cache) = cache_with_entries()?;
    let dir = s(&root);

    let doc = json(&["stats", dir]);
    check(&doc, STATS, "stats");
    check(&doc["counters"], COUNTERS, "stats counters");
    assert_eq!(doc["entries"], 3);
    assert_eq!(doc["maximum_bytes"], 64u64 << 20);
    check_time(&doc["oldest_use"]);
    check_time(&doc["newest_use"]);
    assert_eq!(doc["path"], dir);

    let doc = json(&["ls", dir]);
    check(&doc, LS, "ls");
    check_items(&doc, "entries", LS_ENTRY, "ls");
    assert_eq!(doc["entries"].as_array().map(Vec::len), Some(3));
    for e in doc["entries"].as_array().expect("entries") {
        check_time(&e["last_use"]);
    }
    let big = doc["entries"]
        .as_array()
        .and_then(|v| v.iter().find(|e| e["name"] == "big"))
        .expect("big is listed");
    assert!(big["size_bytes"].as_u64() >= Some(1 << 20), "{big}");

    let doc = json(&["config", dir]);
    check(&doc, CONFIG, "config");
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["low_watermark_percent"], 90);

    let doc = json(&["gc", dir, "--max-age", "30d", "--dry-run"]);
    check(&doc, GC, "gc --dry-run");
    check_items(&doc, "removed", GC_REMOVED, "gc --dry-run");
    assert_eq!(doc["dry_run"], true);
    assert_eq!(doc["sweep"], Value::Null, "a dry run sweeps nothing");
    assert_eq!(doc["removed"][0]["name"], "old");
    assert_eq!(doc["removed"][0]["reason"], "age");

    // What is in use is kept, and counted. (A reader's shared lock goes
    // with the close of its descriptor, and a process that another test
    // thread forks meanwhile keeps a copy until it execs: so no step below
    // counts on an entry loaded here being free the moment it is dropped.)
    let held = cache.load("small")?.expect("small is there");
    let doc = json(&["ls", dir, "--sort", "name"]);
    let in_use: Vec<bool> = doc["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["in_use"].as_bool().expect("in_use"))
        .collect();
    assert_eq!(in_use, [false, false, true], "big, old, small: {doc}");
    let doc = json(&["gc", dir, "--max-size", "0"]);
    check(&doc, GC, "gc");
    check_items(&doc, "removed", GC_REMOVED, "gc");
    check(&doc["sweep"], SWEEP_REPORT, "gc.sweep");
    assert_eq!(doc["dry_run"], false);
    assert_eq!(doc["in_use"], 1);
    let removed: Vec<(&str, &str)> = doc["removed"]
        .as_array()
        .expect("removed")
        .iter()
        .map(|r| {
            (
                r["name"].as_str().expect("name"),
                r["reason"].as_str().expect("reason"),
            )
        })
        .collect();
    assert_eq!(
        removed,
        [("old", "size"), ("big", "size")],
        "least recently used first: {doc}"
    );

    put(&cache, "other", 1024)?;
    let out = expect(3, &["evict", dir, "--json", "--", "other", "small", "gone"]);
    let doc: Value = serde_json::from_slice(&out.stdout)?;
    check(&doc, EVICT, "evict");
    check_items(&doc, "results", EVICT_RESULT, "evict");
    let outcomes: Vec<&str> = doc["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["outcome"].as_str().expect("outcome"))
        .collect();
    assert_eq!(outcomes, ["removed", "in_use", "not_found"]);
    assert!(doc["results"][0]["size_bytes"].is_u64());
    assert_eq!(doc["results"][1]["size_bytes"], Value::Null);

    put(&cache, "another", 1024)?;
    let doc = json(&["clear", dir]);
    check(&doc, CLEAR, "clear");
    check(&doc["sweep"], SWEEP_REPORT, "clear.sweep");
    assert_eq!(
        (doc["removed"].as_u64(), doc["in_use"].as_u64()),
        (Some(1), Some(1)),
        "{doc}"
    );
    drop(held);

    std::fs::create_dir(root.join("stage/uuid-0123456789abcdef0123456789abcdef"))?;
    let doc = json(&["sweep", dir]);
    check(&doc, SWEEP, "sweep");
    assert_eq!(doc["orphan_dirs"], 1);

    std::fs::write(root.join("cache.size"), "not a number")?;
    let doc = json(&["resync", dir]);
    check(&doc, RESYNC, "resync");
    check(&doc["sweep"], SWEEP_REPORT, "resync.sweep");
    assert_eq!(
        doc["before_bytes"],
        Value::Null,
        "a cache.size with no size"
    );
    assert!(doc["after_bytes"].as_u64() > Some(0), "{doc}");
    Ok(())
}

// ---------------------------------------------------------------------
// Exit statuses.

#[test]
fn exit_statuses_tell_usage_busy_not_a_cache_and_other_errors_apart() -> TestResult {
    let (t, root) = new_cache(MaxSize::Unlimited);
    let dir = s(&root);
    // 2: usage.
    expect(2, &["stats"]);
    expect(2, &["no-such-command"]);
    expect(2, &["ls", dir, "--sort", "colour"]);
    expect(2, &["evict", dir, "--", "../etc"]);
    let out = expect(0, &["--help"]);
    assert!(
        stdout(&out).contains("Exit status:"),
        "documented in --help"
    );

    // 3: busy, at once or after the wait, naming the lock.
    let whole = FileLock::open(root.join("cache.lock"), LockKind::Exclusive, Wait::Never)?;
    for wait in ["0", "200ms"] {
        let out = expect(3, &["stats", dir, "--wait", wait]);
        assert!(stderr(&out).contains("cache.lock"), "{}", stderr(&out));
        assert_eq!(
            stderr(&out).lines().count(),
            1,
            "one line: {}",
            stderr(&out)
        );
    }
    drop(whole);

    // 4: not a cache, in one line naming the directory, creating nothing.
    let missing = t.path().join("typo");
    for cmd in ["stats", "ls", "config", "gc", "clear", "sweep", "resync"] {
        let out = expect(4, &[cmd, s(&missing)]);
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{cmd}: one line: {err}");
        assert!(
            err.contains(s(&missing)) && err.contains("is not a cache"),
            "{cmd}: {err}"
        );
    }
    expect(4, &["evict", s(&missing), "--", "x"]);
    assert!(!missing.exists(), "nothing was created");

    // 1: any other error (a version this crate does not read).
    std::fs::write(
        root.join("cache.info"),
        r#"{"version": 2, "maximum-size": 1}"#,
    )?;
    let out = expect(1, &["stats", dir]);
    assert!(
        stderr(&out).contains("does not support"),
        "{}",
        stderr(&out)
    );
    Ok(())
}

#[test]
fn an_empty_application_id_is_refused_with_a_message_that_says_why() {
    let (_t, root) = new_cache(MaxSize::Unlimited);
    let out = expect(2, &["--app-id", "", "stats", s(&root)]);
    let err = stderr(&out);
    assert!(err.contains("application id may not be empty"), "{err}");
}

#[test]
fn a_closed_stdout_ends_every_command_quietly_without_a_panic() -> TestResult {
    let (_t, root, _cache) = cache_with_entries()?;
    let dir = s(&root);
    for args in [
        &["ls", dir][..],
        &["ls", dir, "--json"],
        &["stats", dir],
        &["gc", dir, "--max-age", "1s", "--dry-run"],
        &["config", dir],
        &["--help"],
    ] {
        // The reader is gone before the command starts, so its first
        // write meets a closed pipe.
        let (reader, writer) = std::io::pipe()?;
        drop(reader);
        let out = command(args)
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()?;
        let err = stderr(&out);
        assert_ne!(out.status.code(), Some(101), "{args:?} panicked: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert_eq!(err, "", "{args:?} says nothing");
    }
    Ok(())
}

// ---------------------------------------------------------------------
// Sizes, durations, the directory.

#[test]
fn sizes_and_durations_are_read_in_every_spelling_and_bad_ones_are_usage_errors() -> TestResult {
    let (_t, root) = new_cache(MaxSize::Unlimited);
    let dir = s(&root);
    for (size, bytes) in [
        ("10MB", 10u64 << 20),
        ("10MiB", 10 << 20),
        ("10M", 10 << 20),
        ("1.5G", 3 << 29),
        ("512", 512),
    ] {
        let doc = json(&["config", dir, "--max-size", size]);
        assert_eq!(doc["maximum_bytes"], bytes, "{size}");
    }
    for age in ["1w", "1.5h", "45s", "30d", "1h30m"] {
        json(&["gc", dir, "--max-age", age, "--dry-run"]);
    }
    json(&["gc", dir, "--max-size", "1.5G", "--dry-run"]);
    expect(0, &["stats", dir, "--wait", "1.5s"]);
    for bad in [
        &["config", dir, "--max-size", "10X"][..],
        &["config", dir, "--max-size=-1"],
        &["config", dir, "--max-size", "lots"],
        &["config", dir, "--low-watermark", "0"],
        &["config", dir, "--low-watermark", "101"],
        &["gc", dir, "--max-size", "unlimited"],
        &["gc", dir, "--max-age", "10"],
        &["gc", dir, "--max-age", "soon"],
        &["gc", dir, "--max-age=-1d"],
        &["stats", dir, "--wait", "forever"],
        &["ls", dir, "--limit=-1"],
    ] {
        let out = expect(2, bad);
        assert!(
            stderr(&out).contains("invalid value"),
            "{bad:?}: {}",
            stderr(&out)
        );
    }
    Ok(())
}

#[test]
fn the_directory_may_come_from_fscache_dir() -> TestResult {
    let (_t, root, _cache) = cache_with_entries()?;
    let with_env = |args: &[&str]| {
        command(args)
            .env("FSCACHE_DIR", &root)
            .output()
            .expect("run fscache")
    };
    let out = with_env(&["stats", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let doc: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(doc["entries"], 3);
    let out = with_env(&["evict", "--", "small"]);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout(&out).contains("small: removed"), "{}", stdout(&out));
    // An argument wins over the environment.
    let t = tempfile::tempdir()?;
    let out = with_env(&["stats", s(t.path())]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    Ok(())
}

// ---------------------------------------------------------------------
// What cache.info means, and which boot an entry is from.

#[test]
fn a_maximum_that_reads_as_zero_or_unlimited_is_warned_about_naming_the_file() -> TestResult {
    let (_t, root) = new_cache(MaxSize::Unlimited);
    let dir = s(&root);
    let info = root.join("cache.info");
    for (raw, says) in [
        (r#"{"version": 1, "maximum-size": "10G"}"#, "reads as 0"),
        (r#"{"version": 1, "maximum-size": 1.5}"#, "reads as 0"),
        (
            r#"{"version": 1, "maximum-size": -1}"#,
            "reads as unlimited",
        ),
        (r#"{"version": 1}"#, "reads that as 0"),
    ] {
        std::fs::write(&info, raw)?;
        let out = expect(0, &["stats", dir]);
        let err = stderr(&out);
        assert!(err.starts_with("warning: "), "{raw}: {err}");
        assert!(err.contains(s(&info)), "{raw}: names the file: {err}");
        assert!(err.contains(says), "{raw}: {err}");
        let out = expect(0, &["config", dir, "--json"]);
        let doc: Value = serde_json::from_slice(&out.stdout)?;
        check(&doc, CONFIG, "config");
        assert_eq!(
            doc["warnings"].as_array().map(Vec::len),
            Some(1),
            "{raw}: {doc}"
        );
    }
    // Setting a maximum fixes it, and the warning goes.
    let out = expect(0, &["config", dir, "--max-size", "10G"]);
    assert_eq!(stderr(&out), "", "nothing to warn about once fixed");
    let out = expect(0, &["stats", dir]);
    assert_eq!(stderr(&out), "");
    Ok(())
}

#[test]
fn boots_are_told_apart_only_for_the_application_that_tagged_the_entries() -> TestResult {
    let (_t, root, _cache) = cache_with_entries()?;
    let dir = s(&root);
    // An entry osbuild or a hand wrote without a boot id: "unknown" always.
    let info = root.join("objects/small/object.info");
    let size = serde_json::from_slice::<Value>(&std::fs::read(&info)?)?["size"].clone();
    std::fs::write(&info, format!(r#"{{"size": {size}}}"#))?;

    let boots = |args: &[&str]| -> Vec<(String, String)> {
        let doc = json(args);
        let mut v: Vec<(String, String)> = doc["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .map(|e| {
                (
                    e["name"].as_str().expect("name").to_owned(),
                    e["boot"].as_str().expect("boot").to_owned(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    };
    assert_eq!(
        boots(&["ls", dir]),
        pairs(&[("big", "unknown"), ("old", "unknown"), ("small", "unknown")]),
        "without --app-id nothing is claimed"
    );
    assert_eq!(
        boots(&["--app-id", APP, "ls", dir]),
        pairs(&[("big", "this"), ("old", "this"), ("small", "unknown")])
    );
    assert_eq!(
        boots(&["--app-id", "another-tool", "ls", dir]),
        pairs(&[("big", "earlier"), ("old", "earlier"), ("small", "unknown")])
    );
    let out = stdout(&expect(0, &["ls", dir]));
    assert!(out.contains("unknown") && !out.contains("this"), "{out}");

    let doc = json(&["stats", dir]);
    assert_eq!(doc["app_id"], Value::Null);
    assert_eq!(doc["entries_this_boot"], Value::Null);
    assert_eq!(doc["entries_earlier_boots"], Value::Null);
    let out = stdout(&expect(0, &["stats", dir]));
    assert!(out.contains("boot unknown: pass --app-id"), "{out}");
    let doc = json(&["--app-id", APP, "stats", dir]);
    assert_eq!(doc["app_id"], APP);
    assert_eq!(doc["entries_this_boot"], 2);
    assert_eq!(
        doc["entries_earlier_boots"], 0,
        "the untagged one is neither"
    );
    let out = stdout(&expect(0, &["--app-id", APP, "stats", dir]));
    assert!(
        out.contains("2 from this boot, 0 from earlier boots"),
        "{out}"
    );
    Ok(())
}

#[test]
fn ls_lists_only_valid_entries_and_counts_the_rest_without_following_links() -> TestResult {
    let (t, root, _cache) = cache_with_entries()?;
    let dir = s(&root);
    // A named directory without object.info, a link to a directory that
    // looks like an entry, and an anonymous directory.
    std::fs::create_dir_all(root.join("objects/broken/data"))?;
    std::fs::write(root.join("objects/broken/object.lock"), "")?;
    let elsewhere = t.path().join("elsewhere");
    std::fs::create_dir_all(elsewhere.join("data"))?;
    std::fs::write(elsewhere.join("object.lock"), "")?;
    std::fs::write(elsewhere.join("object.info"), r#"{"size": 1}"#)?;
    std::os::unix::fs::symlink(&elsewhere, root.join("objects/planted"))?;
    std::fs::create_dir(root.join("objects/uuid-0123456789abcdef0123456789abcdef"))?;
    let doc = json(&["ls", dir, "--sort", "name"]);
    let listed: Vec<&str> = doc["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["name"].as_str().expect("name"))
        .collect();
    assert_eq!(listed, ["big", "old", "small"]);
    assert_eq!(doc["invalid_entries"], 1, "broken");
    let out = expect(0, &["ls", dir]);
    assert!(
        stderr(&out).contains("1 invalid entry not listed"),
        "{}",
        stderr(&out)
    );
    Ok(())
}

#[test]
fn put_copies_a_tree_in_get_copies_it_out_and_verify_checks_its_digest() -> TestResult {
    let (_t, root) = new_cache(MaxSize::Unlimited);
    let dir = s(&root);
    let src = tempfile::tempdir()?;
    std::fs::create_dir(src.path().join("sub"))?;
    std::fs::write(src.path().join("sub/file"), "content")?;
    std::os::unix::fs::symlink("/etc/hostname", src.path().join("link"))?;
    let from = s(src.path());

    let out = expect(
        0,
        &["put", dir, "--name", "tree", "--from", from, "--digest"],
    );
    assert!(stdout(&out).contains("tree: stored"), "{}", stdout(&out));
    // A taken name is no error.
    let again = json(&["put", dir, "--name", "tree", "--from", from]);
    assert_eq!(again["outcome"], "name_taken", "{again}");

    let dest = tempfile::tempdir()?;
    let to = dest.path().join("out");
    expect(0, &["get", dir, "--name", "tree", "--to", s(&to)]);
    assert_eq!(std::fs::read_to_string(to.join("sub/file"))?, "content");
    assert_eq!(
        std::fs::read_link(to.join("link"))?,
        Path::new("/etc/hostname"),
        "a link is copied as a link"
    );
    // DEST must not exist; a miss creates nothing.
    expect(1, &["get", dir, "--name", "tree", "--to", s(&to)]);
    let missing = dest.path().join("never");
    let out = expect(1, &["get", dir, "--name", "absent", "--to", s(&missing)]);
    assert!(
        stdout(&out).contains("not in the cache"),
        "{}",
        stdout(&out)
    );
    assert!(!missing.exists());

    let verdict = json(&["verify", dir]);
    assert_eq!(verdict["results"][0]["name"], "tree");
    assert_eq!(verdict["results"][0]["outcome"], "intact", "{verdict}");
    // Damage a file of the committed entry: verify says so, exit 1.
    std::fs::write(root.join("objects/tree/data/sub/file"), "tampered")?;
    let out = expect(1, &["verify", dir, "--", "tree"]);
    assert!(stdout(&out).contains("MISMATCH"), "{}", stdout(&out));
    Ok(())
}

#[test]
fn completions_and_the_manual_page_come_from_the_command_line_definitions() {
    for shell in ["bash", "zsh", "fish"] {
        let out = expect(0, &["completions", shell]);
        let script = stdout(&out);
        assert!(
            script.contains("fscache") && script.contains("put") && script.contains("max-size"),
            "{shell}: {script:.200}"
        );
    }
    let man = stdout(&expect(0, &["man"]));
    assert!(man.contains(".TH fscache 1"), "{man:.200}");
    assert!(
        man.contains("init") && man.contains("verify"),
        "subcommands listed"
    );
    expect(2, &["completions", "no-such-shell"]);
}

#[test]
fn on_a_terminal_long_operations_show_progress_and_still_print_their_result() -> TestResult {
    // util-linux's `script` runs the command on a pseudo-terminal.
    if Command::new("script").arg("--version").output().is_err() {
        println!("SKIPPED progress test: `script` (util-linux) is missing");
        return Ok(());
    }
    let (_t, root) = new_cache(MaxSize::Unlimited);
    let line = format!(
        "{} gc {} --max-size 0",
        env!("CARGO_BIN_EXE_fscache"),
        s(&root)
    );
    let out = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env_remove("FSCACHE_DIR")
        .output()?;
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout(&out).contains("removed 0 entries"),
        "{}",
        stdout(&out)
    );
    Ok(())
}

#[test]
fn stats_shows_what_every_process_counted_and_zero_sets_it_back() -> TestResult {
    let (_t, root) = new_cache(MaxSize::Unlimited);
    {
        // Two handles in turn, as two processes would be: each adds its
        // counts to the file when it closes.
        let a = FsCache::open(APP, &root)?;
        put(&a, "x", 100)?;
        drop(a.load("x")?);
        let b = FsCache::open(APP, &root)?;
        assert!(b.load("y")?.is_none());
    }
    let doc = json(&["stats", s(&root)]);
    let c = &doc["counters"];
    assert_eq!(
        (c["hits"].as_u64(), c["misses"].as_u64()),
        (Some(1), Some(1)),
        "{doc}"
    );
    assert_eq!(c["stored"].as_u64(), Some(1), "{doc}");
    let text = stdout(&expect(0, &["stats", s(&root), "--zero"]));
    assert!(text.contains("1 hits, 1 misses (50.0% hits)"), "{text}");
    let doc = json(&["stats", s(&root)]);
    assert_eq!(doc["counters"]["hits"].as_u64(), Some(0), "zeroed: {doc}");
    Ok(())
}
