//! Integrity: a digest of `data/` goes into `object.info` only when asked;
//! it is the same for the same tree and changes with one byte, one mode or
//! one link target; a tampered entry verifies as a mismatch and is a miss
//! for the verifying load; osbuild's entries, which have none, verify as
//! `NotRecorded` and load.

mod common;

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use common::{assert_exact, new_cache, TestResult};
use fscache::{
    Digest, Durability, ErrorKind, FsCache, Integrity, MaxSize, OpenOptions, Verification,
    DIGEST_KEY, DURABLE_KEY,
};

fn open(path: &Path, integrity: Integrity) -> fscache::Result<FsCache> {
    OpenOptions::new()
        .integrity(integrity)
        .open("fscache-tests", path)
}

fn chmod(path: &Path, mode: u32) -> std::io::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// A tree with files, an empty directory, a nested one and a link, every
/// mode set so that no umask changes the digest.
fn build(root: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(root.join("sub/deeper"))?;
    std::fs::create_dir(root.join("empty"))?;
    std::fs::write(root.join("a"), b"hello\n")?;
    std::fs::write(root.join("sub/b"), [0u8, 1, 2, 255])?;
    std::fs::write(root.join("sub/deeper/c"), vec![7u8; 100_000])?;
    symlink("../a", root.join("sub/link"))?;
    for (rel, mode) in [
        ("a", 0o644),
        ("sub", 0o755),
        ("sub/deeper", 0o700),
        ("empty", 0o755),
        ("sub/b", 0o600),
        ("sub/deeper/c", 0o755),
    ] {
        chmod(&root.join(rel), mode)?;
    }
    Ok(())
}

/// Store `name` filled by `fill`, with the handle's policy or `integrity`.
fn put(
    cache: &FsCache,
    name: &str,
    integrity: Option<Integrity>,
    fill: impl FnOnce(&Path) -> std::io::Result<()>,
) -> TestResult {
    let mut entry = cache.store(name)?;
    if let Some(integrity) = integrity {
        entry.set_integrity(integrity);
    }
    fill(entry.path())?;
    let outcome = entry.commit()?;
    assert!(outcome.is_stored(), "{name}: {outcome}");
    Ok(())
}

fn object_info(cache: &Path, name: &str) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let raw = std::fs::read(cache.join("objects").join(name).join("object.info"))?;
    Ok(serde_json::from_slice(&raw)?)
}

/// The digest `object.info` of `name` records, if any.
fn recorded(cache: &Path, name: &str) -> Result<Option<Digest>, Box<dyn std::error::Error>> {
    let info = object_info(cache, name)?;
    Ok(match info.get(DIGEST_KEY) {
        None => None,
        Some(v) => {
            let hex = v.as_str().ok_or("the digest is a string")?;
            Some(Digest::from_hex(hex).ok_or("64 lowercase hex digits")?)
        }
    })
}

#[test]
fn the_digest_is_recorded_only_when_asked() -> TestResult {
    let (_t, path) = new_cache(MaxSize::Unlimited);
    let plain = open(&path, Integrity::None)?;
    let recording = open(&path, Integrity::Record)?;
    put(&plain, "plain", None, build)?;
    put(&recording, "recorded", None, build)?;
    put(&plain, "asked", Some(Integrity::Record), build)?;
    put(&recording, "declined", Some(Integrity::None), build)?;
    for (name, wanted) in [
        ("plain", false),
        ("recorded", true),
        ("asked", true),
        ("declined", false),
    ] {
        let info = object_info(&path, name)?;
        assert_eq!(
            info.get(DIGEST_KEY).is_some(),
            wanted,
            "{name}: object.info {info}"
        );
        let hit = plain.load(name)?.ok_or("stored")?;
        assert_eq!(hit.info().digest.is_some(), wanted, "{name}: ObjectInfo");
    }
    let info = object_info(&path, "plain")?;
    let keys: Vec<&String> = info.as_object().ok_or("an object")?.keys().collect();
    assert_eq!(
        keys,
        ["creation-boot-id", "size"],
        "without integrity, object.info is exactly osbuild's"
    );
    assert_exact(&path);
    Ok(())
}

#[test]
fn the_same_tree_stored_twice_records_the_same_digest_that_digest_of_tree_computes() -> TestResult {
    let (t, path) = new_cache(MaxSize::Unlimited);
    let cache = open(&path, Integrity::Record)?;
    put(&cache, "one", None, build)?;
    put(&cache, "two", None, build)?;
    let one = recorded(&path, "one")?.ok_or("recorded")?;
    assert_eq!(Some(one), recorded(&path, "two")?, "stable across stores");
    let outside = t.path().join("outside");
    std::fs::create_dir(&outside)?;
    build(&outside)?;
    assert_eq!(
        Digest::of_tree(&outside)?,
        one,
        "the same tree anywhere has the same digest"
    );
    assert_eq!(
        cache.load("one")?.ok_or("stored")?.info().digest,
        Some(one),
        "and ObjectInfo reads it"
    );
    Ok(())
}

#[test]
fn one_byte_one_mode_or_one_link_target_changes_the_digest() -> TestResult {
    let (_t, path) = new_cache(MaxSize::Unlimited);
    let cache = open(&path, Integrity::Record)?;
    put(&cache, "base", None, build)?;
    let base = recorded(&path, "base")?.ok_or("recorded")?;
    type Tweak = fn(&Path) -> std::io::Result<()>;
    let tweaks: [(&str, Tweak); 7] = [
        ("byte", |r| {
            let mut c = vec![7u8; 100_000];
            c[50_000] = 8;
            std::fs::write(r.join("sub/deeper/c"), c)
        }),
        ("file mode", |r| chmod(&r.join("sub/b"), 0o640)),
        ("directory mode", |r| chmod(&r.join("empty"), 0o750)),
        ("link target", |r| {
            std::fs::remove_file(r.join("sub/link"))?;
            symlink("../b", r.join("sub/link"))
        }),
        ("empty file added", |r| {
            std::fs::write(r.join("empty/new"), b"")
        }),
        ("name", |r| {
            // The test rearranges its own tree.
            #[allow(clippy::disallowed_methods)]
            std::fs::rename(r.join("a"), r.join("b"))
        }),
        ("file made a link", |r| {
            std::fs::remove_file(r.join("a"))?;
            symlink("hello\n", r.join("a"))
        }),
    ];
    for (what, tweak) in tweaks {
        let name = format!("tweaked-{}", what.replace(' ', "-"));
        put(&cache, &name, None, |r| build(r).and_then(|()| tweak(r)))?;
        let digest = recorded(&path, &name)?.ok_or("recorded")?;
        assert_ne!(digest, base, "one {what} differs");
    }
    Ok(())
}

#[test]
fn tampering_with_a_committed_file_is_a_mismatch_and_a_miss_for_the_verifying_load() -> TestResult {
    let (_t, path) = new_cache(MaxSize::Unlimited);
    let cache = open(&path, Integrity::Record)?;
    put(&cache, "k", None, build)?;
    let expected = recorded(&path, "k")?.ok_or("recorded")?;
    assert_eq!(cache.verify("k")?, Verification::Intact, "as committed");
    assert!(cache.load_verified("k")?.is_some(), "an intact entry loads");
    // One byte changes in place, the length stays.
    let file = path.join("objects/k/data/sub/deeper/c");
    let mut content = std::fs::read(&file)?;
    content[99_999] ^= 1;
    std::fs::write(&file, &content)?;
    let found = Digest::of_tree(path.join("objects/k/data"))?;
    assert_eq!(
        cache.verify("k")?,
        Verification::Mismatch { expected, found },
        "verify names both digests"
    );
    let lock = std::fs::File::open(path.join("objects/k/object.lock"))?;
    let then = SystemTime::now() - Duration::from_secs(3600);
    lock.set_times(std::fs::FileTimes::new().set_accessed(then))?;
    let before = cache.counters();
    assert!(
        cache.load_verified("k")?.is_none(),
        "a damaged entry is a miss"
    );
    let after = cache.counters();
    assert_eq!(
        after.mismatches - before.mismatches,
        1,
        "counted as a mismatch"
    );
    assert_eq!(after.misses - before.misses, 1, "and as a miss");
    assert_eq!(after.hits, before.hits, "not as a hit");
    assert_eq!(
        lock.metadata()?.accessed()?,
        then,
        "a failed verifying load does not mark the entry as used"
    );
    let hit = cache.load("k")?.ok_or("a plain load still serves it")?;
    assert!(
        matches!(hit.verify()?, Verification::Mismatch { .. }),
        "and the guard verifies it as damaged"
    );
    drop(hit);
    // A mode or a new file is damage too.
    content[99_999] ^= 1;
    std::fs::write(&file, &content)?;
    assert_eq!(cache.verify("k")?, Verification::Intact, "repaired");
    chmod(&file, 0o777)?;
    assert!(
        matches!(cache.verify("k")?, Verification::Mismatch { .. }),
        "a changed mode"
    );
    chmod(&file, 0o755)?;
    std::fs::write(path.join("objects/k/data/empty/stray"), b"")?;
    assert!(
        matches!(cache.verify("k")?, Verification::Mismatch { .. }),
        "a new file"
    );
    Ok(())
}

#[test]
fn an_osbuild_object_info_without_a_digest_verifies_as_not_recorded_and_loads() -> TestResult {
    let (_t, path) = new_cache(MaxSize::Unlimited);
    let cache = open(&path, Integrity::Record)?;
    put(&cache, "k", None, build)?;
    // What osbuild writes, as its own store would have written it.
    let size = object_info(&path, "k")?["size"].as_u64().ok_or("a size")?;
    let osbuild = format!(
        r#"{{"creation-boot-id": "{}", "size": {size}}}"#,
        cache.boot_id()
    );
    std::fs::write(path.join("objects/k/object.info"), osbuild)?;
    assert_eq!(cache.verify("k")?, Verification::NotRecorded, "verify");
    let hit = cache
        .load_verified("k")?
        .ok_or("the verifying load serves it")?;
    assert_eq!(hit.info().digest, None, "and it has no digest");
    assert_eq!(hit.verify()?, Verification::NotRecorded, "the guard agrees");
    drop(hit);
    assert!(cache.load("k")?.is_some(), "a plain load too");
    assert_eq!(cache.counters().mismatches, 0, "nothing mismatched");
    // A digest key osbuild would not write, holding no digest, reads as none.
    let odd = format!(r#"{{"size": {size}, "{DIGEST_KEY}": "not hex"}}"#);
    std::fs::write(path.join("objects/k/object.info"), odd)?;
    assert_eq!(cache.verify("k")?, Verification::NotRecorded, "malformed");
    Ok(())
}

#[test]
fn verifying_a_missing_or_invalid_entry_finds_nothing_and_is_not_a_use() -> TestResult {
    let (_t, path) = new_cache(MaxSize::Unlimited);
    let cache = open(&path, Integrity::Record)?;
    assert_eq!(cache.verify("never")?, Verification::NotFound, "missing");
    let e = cache.verify("../x").expect_err("an invalid name");
    assert_eq!(e.kind(), ErrorKind::InvalidName, "{e}");
    put(&cache, "k", None, build)?;
    let lock = std::fs::File::open(path.join("objects/k/object.lock"))?;
    let then = SystemTime::now() - Duration::from_secs(3600);
    lock.set_times(std::fs::FileTimes::new().set_accessed(then))?;
    assert!(cache.verify("k")?.is_intact(), "intact");
    assert_eq!(lock.metadata()?.accessed()?, then, "verifying is not a use");
    let counted = cache.counters();
    assert_eq!(
        (counted.hits, counted.misses),
        (0, 0),
        "nor a hit or a miss"
    );
    // The test breaks its own entry.
    #[allow(clippy::disallowed_methods)]
    std::fs::remove_dir_all(path.join("objects/k/data"))?;
    assert_eq!(
        cache.verify("k")?,
        Verification::NotFound,
        "an entry without data/ is no entry"
    );
    Ok(())
}

#[test]
fn a_durable_commit_that_records_a_digest_records_both_and_the_same_digest() -> TestResult {
    let (_t, path) = new_cache(MaxSize::Unlimited);
    let cache = OpenOptions::new()
        .integrity(Integrity::Record)
        .durability(Durability::Sync)
        .open("fscache-tests", &path)?;
    put(&cache, "durable", None, build)?;
    put(&open(&path, Integrity::Record)?, "plain", None, build)?;
    let info = object_info(&path, "durable")?;
    assert_eq!(info[DURABLE_KEY], true, "durable: {info}");
    assert_eq!(
        recorded(&path, "durable")?,
        recorded(&path, "plain")?,
        "syncing changes no digest"
    );
    assert!(cache.verify("durable")?.is_intact(), "and it verifies");
    Ok(())
}

#[test]
fn blobs_stored_with_integrity_verify() -> TestResult {
    let (_t, path) = new_cache(MaxSize::Unlimited);
    let cache = open(&path, Integrity::Record)?;
    assert!(cache
        .put_blobs("k", &[("out", b"1".as_slice()), ("err", b"")])?
        .is_stored());
    assert!(cache.verify("k")?.is_intact(), "intact");
    std::fs::write(path.join("objects/k/data/out"), b"2")?;
    assert!(cache.load_verified("k")?.is_none(), "tampered: a miss");
    assert_eq!(
        cache.get_blob("k", "out")?,
        Some(b"2".to_vec()),
        "get_blob is a plain load"
    );
    Ok(())
}

/// The serialisation as `Digest`'s docs write it, in Python.
const SPEC_IN_PYTHON: &str = r#"
import hashlib, os, stat, struct, sys
def D(d):
    h = hashlib.sha256()
    for name in sorted(os.listdir(d)):
        p = os.path.join(d, name)
        st = os.lstat(p)
        m, head = st.st_mode, lambda t: t + struct.pack(">I", st.st_mode & 0o7777)
        if stat.S_ISREG(m):
            c = open(p, "rb").read()
            rec = head(b"f") + struct.pack(">Q", len(c)) + hashlib.sha256(c).digest()
        elif stat.S_ISDIR(m):
            rec = head(b"d") + D(p)
        elif stat.S_ISLNK(m):
            t = os.readlink(p)
            rec = head(b"l") + struct.pack(">Q", len(t)) + t
        elif stat.S_ISCHR(m) or stat.S_ISBLK(m):
            dev = struct.pack(">II", os.major(st.st_rdev), os.minor(st.st_rdev))
            rec = head(b"c" if stat.S_ISCHR(m) else b"b") + dev
        elif stat.S_ISFIFO(m):
            rec = head(b"p")
        else:
            rec = head(b"s")
        h.update(struct.pack(">I", len(name)) + name + rec)
    return h.digest()
print(D(os.fsencode(sys.argv[1])).hex())
"#;

#[test]
fn the_recorded_digest_is_what_the_documented_serialisation_gives_in_python() -> TestResult {
    let Ok(python) = Command::new("python3").arg("--version").output() else {
        eprintln!("skipped: no python3 to check the serialisation against");
        return Ok(());
    };
    if !python.status.success() {
        eprintln!("skipped: python3 does not run");
        return Ok(());
    }
    let (_t, path) = new_cache(MaxSize::Unlimited);
    let cache = open(&path, Integrity::Record)?;
    put(&cache, "k", None, |r| {
        build(r)?;
        std::fs::write(r.join("name with spaces and ü"), b"x")?;
        nix::unistd::mkfifo(
            &r.join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )?;
        Ok(())
    })?;
    let out = Command::new("python3")
        .arg("-c")
        .arg(SPEC_IN_PYTHON)
        .arg(path.join("objects/k/data"))
        .output()?;
    assert!(out.status.success(), "python3: {out:?}");
    let theirs = String::from_utf8(out.stdout)?;
    let ours = recorded(&path, "k")?.ok_or("recorded")?;
    assert_eq!(theirs.trim(), ours.to_string(), "the same digest");
    Ok(())
}
