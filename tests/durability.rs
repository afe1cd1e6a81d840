//! Durability: a `Sync` commit makes the entry durable before the rename
//! that publishes it and the rename durable before it answers (seen in an
//! `strace` of a worker); `None` syncs nothing; `object.info` records which
//! it was; `EarlierBoot::MissUnlessDurable` misses what a power cut may
//! have damaged.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{new_cache, TestResult, Worker};
use fscache::{Durability, EarlierBoot, FsCache, MaxSize, ObjectInfo, DURABLE_KEY};

/// `strace`, if it is installed and may trace here.
fn strace() -> Option<PathBuf> {
    let out = Command::new("which").arg("strace").output().ok()?;
    let path = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    let works = Command::new(&path)
        .args(["-o", "/dev/null", "true"])
        .status()
        .is_ok_and(|s| s.success());
    (out.status.success() && works).then_some(path)
}

/// One traced system call: its name and its whole line.
struct Call {
    name: String,
    line: String,
}

impl Call {
    /// The path strace (`-y`) shows for the call's first descriptor.
    fn fd_path(&self) -> Option<&str> {
        let start = self.line.find('<')? + 1;
        let len = self.line[start..].find('>')?;
        Some(&self.line[start..start + len])
    }

    fn is_sync(&self) -> bool {
        matches!(self.name.as_str(), "fsync" | "fdatasync" | "syncfs")
    }
}

/// The calls in an `strace -f -y -o FILE` trace, in order.
fn parse_trace(trace: &Path) -> std::io::Result<Vec<Call>> {
    let text = std::fs::read_to_string(trace)?;
    Ok(text
        .lines()
        .filter_map(|line| {
            // `PID name(args) = result`; the PID is there with -f.
            let call = line.trim_start_matches(|c: char| c.is_ascii_digit() || c == ' ');
            let name = &call[..call.find('(')?];
            Some(Call {
                name: name.to_owned(),
                line: line.to_owned(),
            })
        })
        .collect())
}

/// Run a worker under strace on `cache`: set `durability`, store an entry
/// named `name`, let `fill` add to its `data/`, commit it. Returns the
/// trace, the entry's anonymous path while it was filled, and the reply
/// to `commit`.
fn traced_commit(
    strace: &Path,
    cache: &Path,
    durability: &str,
    name: &str,
    fill: impl FnOnce(&Path) -> std::io::Result<()>,
) -> Result<(Vec<Call>, PathBuf, String), Box<dyn std::error::Error>> {
    let trace = cache.with_file_name("trace");
    let mut cmd = Command::new(strace);
    cmd.args(["-f", "-y", "-o"])
        .arg(&trace)
        .args([
            "-e",
            "trace=fsync,fdatasync,syncfs,renameat2,renameat,rename,write",
        ])
        .arg(env!("CARGO_BIN_EXE_fscache-worker"))
        .arg(cache);
    let mut worker = Worker::from_command(cmd);
    worker.expect("ready");
    assert_eq!(worker.ask(&format!("durability {durability}")), "ok");
    worker.send(&format!("store {name} 3000"));
    let storing = worker.expect("storing ");
    let data = PathBuf::from(&storing["storing ".len()..]);
    fill(&data)?;
    let reply = worker.ask("commit");
    let (status, _) = worker.finish();
    assert!(
        status.success(),
        "the traced worker exits cleanly: {status:?}"
    );
    let entry = data.parent().ok_or("data/ has a parent")?.to_owned();
    Ok((parse_trace(&trace)?, entry, reply))
}

/// Where the call that renames `entry` to `name` is.
#[track_caller]
fn publishing_rename(calls: &[Call], entry: &Path, name: &str) -> usize {
    let uuid = entry.file_name().unwrap().to_string_lossy().into_owned();
    calls
        .iter()
        .position(|c| {
            c.name.starts_with("rename")
                && c.line.contains(&format!("\"{uuid}\""))
                && c.line.contains(&format!("\"{name}\""))
                && c.line.contains(") = 0")
        })
        .unwrap_or_else(|| panic!("no rename of {uuid} to {name} in the trace"))
}

/// Where the worker's reply starting with `reply` is written.
#[track_caller]
fn reply_write(calls: &[Call], reply: &str) -> usize {
    calls
        .iter()
        .position(|c| {
            c.name == "write"
                && c.line.contains("(1<pipe:[")
                && c.line.contains(&format!("\"{reply}"))
        })
        .unwrap_or_else(|| panic!("no reply {reply:?} in the trace"))
}

/// Every file and directory of the committed entry `dir`, relative to it
/// (`""` for the entry directory itself).
fn tree_of(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![PathBuf::new()];
    let mut i = 0;
    while i < out.len() {
        let here = dir.join(&out[i]);
        if here.is_dir() {
            for e in std::fs::read_dir(&here).expect("list the entry") {
                out.push(out[i].join(e.expect("an entry").file_name()));
            }
        }
        i += 1;
    }
    out
}

/// Nested directories and files, as a build leaves them: with the
/// worker's two files, ten to fsync (below the bound where a commit takes
/// a syncfs instead).
fn nested(data: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(data.join("usr/lib/deep"))?;
    std::fs::write(data.join("usr/lib/deep/libx.so"), vec![1u8; 5000])?;
    std::fs::write(data.join("usr/lib/liby.so"), b"y")?;
    std::fs::create_dir(data.join("etc"))?;
    std::fs::write(data.join("etc/conf"), b"z")
}

#[test]
fn a_sync_commit_fsyncs_the_whole_entry_before_the_rename_and_objects_after_it() -> TestResult {
    let Some(strace) = strace() else {
        println!("SKIPPED: strace is not installed or may not trace here");
        return Ok(());
    };
    let (_t, cache) = new_cache(MaxSize::Unlimited);
    let (calls, entry, reply) = traced_commit(&strace, &cache, "sync", "nested", nested)?;
    assert!(reply.starts_with("stored "), "the commit stores: {reply}");
    let rename = publishing_rename(&calls, &entry, "nested");
    let answer = reply_write(&calls, "stored ");
    let synced_before: Vec<&str> = calls[..rename]
        .iter()
        .filter(|c| c.name == "fsync")
        .filter_map(Call::fd_path)
        .collect();
    assert!(
        !calls[..rename].iter().any(|c| c.name == "syncfs"),
        "a tree this small is fsynced file by file, not by syncfs"
    );
    let committed = cache.join("objects/nested");
    let objects = cache.join("objects");
    for rel in tree_of(&committed) {
        let before = entry.join(&rel);
        let before = before.to_string_lossy();
        let before = before.trim_end_matches('/');
        // The lock file's descriptor keeps the name it was made under:
        // `objects/#INODE` (O_TMPFILE), or a `uuid-*` temporary that is
        // gone now (`FSCACHE_DISABLE=tmpfile,noreplace`).
        let ino = std::os::unix::fs::MetadataExt::ino(&committed.join(&rel).metadata()?);
        let made_as = |p: &str| {
            let p = Path::new(p);
            p.parent() == Some(&*objects)
                && p.file_name().is_some_and(|n| {
                    let n = n.to_string_lossy();
                    n == format!("#{ino}") || (n.starts_with("uuid-") && !p.exists())
                })
        };
        let is_lock = rel == Path::new("object.lock");
        assert!(
            synced_before.contains(&before)
                || (is_lock && synced_before.iter().any(|p| made_as(p))),
            "`{before}` is fsynced before the rename; fsynced: {synced_before:#?}"
        );
    }
    for top in ["cache.size", ""] {
        let path = cache.join(top);
        let path = path.to_string_lossy();
        let path = path.trim_end_matches('/');
        assert!(
            synced_before.contains(&path),
            "`{path}` (the size the entry adds) is fsynced before the rename: {synced_before:#?}"
        );
    }
    let objects = objects.to_string_lossy();
    let after = calls[rename..answer]
        .iter()
        .any(|c| c.name == "fsync" && c.fd_path() == Some(&*objects));
    assert!(
        after,
        "objects/ is fsynced after the rename and before the reply; after the rename: {:#?}",
        calls[rename..=answer]
            .iter()
            .map(|c| &c.line)
            .collect::<Vec<_>>()
    );
    Ok(())
}

#[test]
fn a_sync_commit_of_a_tree_with_a_link_uses_syncfs_before_the_rename() -> TestResult {
    let Some(strace) = strace() else {
        println!("SKIPPED: strace is not installed or may not trace here");
        return Ok(());
    };
    let (_t, cache) = new_cache(MaxSize::Unlimited);
    let (calls, entry, reply) = traced_commit(&strace, &cache, "sync", "linked", |data| {
        nested(data)?;
        std::os::unix::fs::symlink("usr/lib/liby.so", data.join("liby"))
    })?;
    assert!(reply.starts_with("stored "), "the commit stores: {reply}");
    let rename = publishing_rename(&calls, &entry, "linked");
    let answer = reply_write(&calls, "stored ");
    assert!(
        calls[..rename].iter().any(|c| c.name == "syncfs"),
        "a link has no descriptor to fsync: a syncfs comes before the rename"
    );
    let objects = cache.join("objects");
    let objects = objects.to_string_lossy();
    assert!(
        calls[rename..answer]
            .iter()
            .any(|c| c.name == "fsync" && c.fd_path() == Some(&*objects)),
        "objects/ is fsynced after the rename and before the reply"
    );
    Ok(())
}

#[test]
fn a_commit_without_durability_syncs_nothing() -> TestResult {
    let Some(strace) = strace() else {
        println!("SKIPPED: strace is not installed or may not trace here");
        return Ok(());
    };
    let (_t, cache) = new_cache(MaxSize::Unlimited);
    let (calls, entry, reply) = traced_commit(&strace, &cache, "none", "plain", nested)?;
    assert!(reply.starts_with("stored "), "the commit stores: {reply}");
    publishing_rename(&calls, &entry, "plain");
    let syncs: Vec<&String> = calls
        .iter()
        .filter(|c| c.is_sync())
        .map(|c| &c.line)
        .collect();
    assert!(
        syncs.is_empty(),
        "Durability::None syncs nothing: {syncs:#?}"
    );
    Ok(())
}

/// The raw `object.info` of the entry `name`.
fn object_info(cache: &Path, name: &str) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let raw = std::fs::read(cache.join("objects").join(name).join("object.info"))?;
    Ok(serde_json::from_slice(&raw)?)
}

/// Rewrite the `creation-boot-id` of the entry `name` to that of another
/// boot (same length, so its size does not change).
fn from_another_boot(cache: &Path, name: &str) -> TestResult {
    let path = cache.join("objects").join(name).join("object.info");
    let mut info = object_info(cache, name)?;
    let ours = info["creation-boot-id"].as_str().ok_or("a boot id")?;
    let other = if ours.starts_with('0') { "1" } else { "0" }.repeat(32);
    info["creation-boot-id"] = other.into();
    std::fs::write(path, serde_json::to_vec(&info)?)?;
    Ok(())
}

fn put(cache: &FsCache, name: &str, durability: Durability) -> TestResult {
    let mut entry = cache.store(name)?;
    entry.set_durability(durability);
    std::fs::write(entry.path().join("f"), name)?;
    let outcome = entry.commit().map_err(fscache::Error::from)?;
    assert!(outcome.is_stored(), "{name} is stored: {outcome}");
    Ok(())
}

#[test]
fn object_info_records_durability_only_for_a_sync_commit() -> TestResult {
    let (_t, path) = new_cache(MaxSize::Unlimited);
    let cache = FsCache::open("fscache-tests", &path)?;
    put(&cache, "plain", Durability::None)?;
    let synced = fscache::OpenOptions::new()
        .durability(Durability::Sync)
        .open("fscache-tests", &path)?;
    put(&synced, "durable", Durability::Sync)?;
    put(&synced, "overridden", Durability::None)?;

    let plain = object_info(&path, "plain")?;
    let keys: Vec<&String> = plain.as_object().ok_or("an object")?.keys().collect();
    assert_eq!(
        keys,
        ["creation-boot-id", "size"],
        "None writes exactly osbuild's object.info: {plain}"
    );
    assert_eq!(
        object_info(&path, "durable")?[DURABLE_KEY],
        serde_json::Value::Bool(true),
        "Sync records itself"
    );
    assert!(
        object_info(&path, "overridden")?.get(DURABLE_KEY).is_none(),
        "set_durability overrides the handle's policy for one entry"
    );
    let hit = cache.load("durable")?.ok_or("durable is a hit")?;
    assert!(hit.info().durable, "the durable entry reads as durable");
    drop(hit);

    // What osbuild writes, without our key, reads as not durable.
    let osbuild = br#"{"creation-boot-id": "0123456789abcdef0123456789abcdef", "size": 8192}"#;
    std::fs::write(path.join("objects/durable/object.info"), osbuild)?;
    // A handle checks an entry once per lock file: a new one reads it anew.
    let cache = FsCache::open("fscache-tests", &path)?;
    let info: ObjectInfo = cache.load("durable")?.ok_or("still a hit")?.info().clone();
    assert!(
        !info.durable,
        "osbuild's object.info is not durable: {info:?}"
    );
    assert_eq!(info.size, 8192, "and its size reads as written");
    Ok(())
}

#[test]
fn miss_unless_durable_misses_only_non_durable_entries_of_an_earlier_boot() -> TestResult {
    let (_t, path) = new_cache(MaxSize::Unlimited);
    let cache = FsCache::open("fscache-tests", &path)?;
    put(&cache, "old-plain", Durability::None)?;
    put(&cache, "old-durable", Durability::Sync)?;
    put(&cache, "now-plain", Durability::None)?;
    put(&cache, "now-torn", Durability::None)?;
    from_another_boot(&path, "old-plain")?;
    from_another_boot(&path, "old-durable")?;
    // What a power cut can leave of a non-durable object.info.
    std::fs::write(path.join("objects/now-torn/object.info"), b"")?;

    let careful = fscache::OpenOptions::new()
        .earlier_boot(EarlierBoot::MissUnlessDurable)
        .open("fscache-tests", &path)?;
    assert!(
        careful.load("old-plain")?.is_none(),
        "a non-durable entry of another boot is a miss"
    );
    assert!(
        careful.load("old-durable")?.is_some(),
        "a durable entry of another boot is served"
    );
    assert!(
        careful.load("now-plain")?.is_some(),
        "a non-durable entry of this boot is served"
    );
    assert!(
        careful.load("now-torn")?.is_none(),
        "an entry whose object.info is unreadable is a miss"
    );
    for name in ["old-plain", "old-durable", "now-plain"] {
        assert!(
            cache.load(name)?.is_some(),
            "the default policy (Serve) serves {name}"
        );
    }
    assert!(
        cache.load("now-torn")?.is_none(),
        "an object.info that is not one makes the entry invalid: a miss under any policy"
    );
    Ok(())
}
