//! Small blobs: `put_blobs` stores an ordinary entry that `get_blob` reads
//! back blob by blob and `has` sees without using it; hostile names are
//! refused before anything is written; nothing in a blob's place is
//! followed; no blob is read past its limit.

mod common;

use std::io::ErrorKind as IoKind;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::{Duration, SystemTime};

use common::{assert_exact, names, new_cache, TestResult};
use fscache::{Commit, ErrorKind, FsCache, MaxSize, BLOB_LIMIT};

fn open(path: &Path) -> fscache::Result<FsCache> {
    FsCache::open("fscache-tests", path)
}

/// When `object.lock` of `name` was last used (its atime).
fn last_use(cache: &Path, name: &str) -> std::io::Result<SystemTime> {
    std::fs::metadata(cache.join("objects").join(name).join("object.lock"))?.accessed()
}

/// Set the last use of `name` to an hour ago.
fn age(cache: &Path, name: &str) -> std::io::Result<SystemTime> {
    let then = SystemTime::now() - Duration::from_secs(3600);
    let lock = std::fs::File::open(cache.join("objects").join(name).join("object.lock"))?;
    lock.set_times(std::fs::FileTimes::new().set_accessed(then))?;
    last_use(cache, name)
}

#[test]
fn put_blobs_stores_an_ordinary_entry_whose_blobs_get_blob_reads_back() -> TestResult {
    let (_t, path) = new_cache(MaxSize::Unlimited);
    let cache = open(&path)?;
    let output: Vec<u8> = (0..=255u8).cycle().take(1 << 20).collect();
    let outcome = cache.put_blobs(
        "cc-7f3a",
        &[
            ("output", output.as_slice()),
            ("stdout", b"".as_slice()),
            ("exit-code", b"0\n\0".as_slice()),
        ],
    )?;
    assert!(
        matches!(outcome, Commit::Stored { .. }),
        "stored: {outcome}"
    );
    assert_eq!(
        cache.get_blob("cc-7f3a", "output")?.as_deref(),
        Some(output.as_slice()),
        "a 1 MiB blob reads back whole"
    );
    assert_eq!(
        cache.get_blob("cc-7f3a", "stdout")?,
        Some(Vec::new()),
        "an empty blob is there, and empty"
    );
    assert_eq!(
        cache.get_blob("cc-7f3a", "exit-code")?.as_deref(),
        Some(b"0\n\0".as_slice()),
        "bytes are bytes, NUL included"
    );
    // An ordinary entry: one file per blob in data/, read by any loader.
    let hit = cache.load("cc-7f3a")?.ok_or("a plain load finds it")?;
    assert_eq!(
        names(hit.path()),
        ["exit-code", "output", "stdout"],
        "one file per blob in data/"
    );
    assert_eq!(
        std::fs::read(hit.path().join("output"))?,
        output,
        "the blob is the file's content"
    );
    assert_eq!(
        hit.read_blob("stdout")?,
        Some(Vec::new()),
        "through the guard"
    );
    assert_eq!(
        names(&path.join("objects")),
        ["cc-7f3a"],
        "nothing but the entry is left in objects/"
    );
    assert_exact(&path);
    Ok(())
}

#[test]
fn a_missing_blob_or_a_missing_entry_is_none() -> TestResult {
    let (_t, path) = new_cache(MaxSize::Unlimited);
    let cache = open(&path)?;
    assert!(cache.put_blobs("k", &[("v", b"1")])?.is_stored(), "stored");
    assert_eq!(cache.get_blob("k", "w")?, None, "a blob the entry lacks");
    assert_eq!(cache.get_blob("gone", "v")?, None, "an entry never stored");
    let counted = cache.counters();
    assert_eq!(
        (counted.hits, counted.misses),
        (1, 1),
        "a get is a load: the found entry is a hit, the missing one a miss"
    );
    assert!(
        cache
            .put_blobs("empty", &[] as &[(&str, &[u8])])?
            .is_stored(),
        "an entry of no blobs is stored too"
    );
    assert_eq!(cache.get_blob("empty", "v")?, None, "and has none");
    Ok(())
}

#[test]
fn a_hostile_blob_name_is_refused_before_anything_is_written() -> TestResult {
    let (_t, path) = new_cache(MaxSize::Unlimited);
    let cache = open(&path)?;
    let long = "x".repeat(256);
    for bad in [
        "",
        ".",
        "..",
        "a/b",
        "../escape",
        "/etc/passwd",
        "a\0b",
        "uuid-1",
        &long,
    ] {
        let e = cache
            .put_blobs("k", &[("fine", b"1".as_slice()), (bad, b"2".as_slice())])
            .expect_err(bad);
        assert_eq!(e.kind(), ErrorKind::InvalidName, "{bad:?}: {e}");
        let e = cache.get_blob("k", bad).expect_err(bad);
        assert_eq!(e.kind(), ErrorKind::InvalidName, "get {bad:?}: {e}");
    }
    let e = cache
        .put_blobs("k", &[("same", b"1"), ("same", b"2")])
        .expect_err("a blob given twice");
    assert_eq!(e.kind(), ErrorKind::InvalidName, "{e}");
    assert!(e.to_string().contains("twice"), "says why: {e}");
    let e = cache
        .put_blobs("../k", &[("v", b"1")])
        .expect_err("entry name");
    assert_eq!(e.kind(), ErrorKind::InvalidName, "{e}");
    assert!(!cache.has("k")?, "nothing was stored");
    assert!(
        names(&path.join("objects")).is_empty(),
        "and nothing was even begun: {:?}",
        names(&path.join("objects"))
    );
    let counted = cache.counters();
    assert_eq!(
        (counted.hits, counted.misses),
        (0, 0),
        "a refused name loads nothing"
    );
    Ok(())
}

#[test]
fn a_planted_link_or_special_file_in_place_of_a_blob_is_not_followed() -> TestResult {
    let (t, path) = new_cache(MaxSize::Unlimited);
    let cache = open(&path)?;
    let secret = t.path().join("secret");
    std::fs::write(&secret, b"SECRET")?;
    let blobs = [("link", b"1"), ("dir", b"2"), ("fifo", b"3"), ("ok", b"4")];
    assert!(cache.put_blobs("k", &blobs)?.is_stored(), "stored");
    let data = path.join("objects/k/data");
    for blob in ["link", "dir", "fifo"] {
        std::fs::remove_file(data.join(blob))?;
    }
    symlink(&secret, data.join("link"))?;
    std::fs::create_dir(data.join("dir"))?;
    nix::unistd::mkfifo(
        &data.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )?;
    assert_eq!(cache.get_blob("k", "link")?, None, "a link is not followed");
    assert_eq!(cache.get_blob("k", "dir")?, None, "a directory is no blob");
    assert_eq!(
        cache.get_blob("k", "fifo")?,
        None,
        "a fifo is no blob, and opening it does not hang"
    );
    assert_eq!(
        cache.get_blob("k", "ok")?,
        Some(b"4".to_vec()),
        "the rest reads"
    );
    // A link in data's place makes the entry invalid; a guard that holds
    // the entry while it happens follows it no more.
    let hit = cache.load("k")?.ok_or("still a hit")?;
    let elsewhere = t.path().join("elsewhere");
    std::fs::create_dir(&elsewhere)?;
    std::fs::write(elsewhere.join("ok"), b"SECRET")?;
    // The test plays the intruder, so it may rename by path.
    #[allow(clippy::disallowed_methods)]
    std::fs::rename(&data, t.path().join("moved"))?;
    symlink(&elsewhere, &data)?;
    assert_eq!(
        hit.read_blob("ok")?,
        None,
        "a link at data/ is not followed"
    );
    drop(hit);
    assert_eq!(cache.get_blob("k", "ok")?, None, "and the entry is a miss");
    assert!(!cache.has("k")?, "which has agrees with");
    Ok(())
}

#[test]
fn a_blob_larger_than_its_limit_is_an_error_and_is_not_read_into_memory() -> TestResult {
    let (_t, path) = new_cache(MaxSize::Unlimited);
    let cache = open(&path)?;
    let log = vec![b'x'; 100_000];
    assert!(cache
        .put_blobs("k", &[("log", log.as_slice())])?
        .is_stored());
    let hit = cache.load("k")?.ok_or("stored")?;
    let e = hit
        .read_blob_limited("log", 99_999)
        .expect_err("one byte over the limit");
    assert_eq!(e.kind(), ErrorKind::Io, "{e}");
    assert_eq!(
        e.io_error().map(std::io::Error::kind),
        Some(IoKind::FileTooLarge),
        "matchable as too large: {e}"
    );
    assert!(
        e.to_string().contains("objects/k/data/log"),
        "names the blob: {e}"
    );
    assert_eq!(
        hit.read_blob_limited("log", 100_000)?.map(|v| v.len()),
        Some(100_000),
        "exactly the limit is fine"
    );
    // A sparse terabyte in a blob's place: refused from its status alone.
    let huge = std::fs::File::create(path.join("objects/k/data/huge"))?;
    huge.set_len(1 << 40)?;
    let e = cache.get_blob("k", "huge").expect_err("past BLOB_LIMIT");
    assert_eq!(
        e.io_error().map(std::io::Error::kind),
        Some(IoKind::FileTooLarge),
        "{e}"
    );
    const {
        assert!(
            BLOB_LIMIT < 1 << 40,
            "the default limit is below a terabyte"
        )
    };
    Ok(())
}

#[test]
fn has_sees_what_a_load_would_find_without_counting_or_marking_a_use() -> TestResult {
    let (_t, path) = new_cache(MaxSize::Unlimited);
    let cache = open(&path)?;
    assert!(!cache.has("k")?, "nothing stored yet");
    assert!(cache.put_blobs("k", &[("v", b"1")])?.is_stored());
    let before = age(&path, "k")?;
    assert!(cache.has("k")?, "stored");
    assert_eq!(last_use(&path, "k")?, before, "has is not a use");
    let counted = cache.counters();
    assert_eq!((counted.hits, counted.misses), (0, 0), "nor a hit or miss");
    // A link to a whole entry elsewhere is no entry of this cache.
    let (_u, other) = new_cache(MaxSize::Unlimited);
    assert!(open(&other)?.put_blobs("real", &[("v", b"1")])?.is_stored());
    symlink(other.join("objects/real"), path.join("objects/planted"))?;
    assert!(!cache.has("planted")?, "a planted link is not followed");
    assert!(cache.load("planted")?.is_none(), "as load does not");
    // An entry being removed has lost its object.info first.
    std::fs::remove_file(path.join("objects/k/object.info"))?;
    assert!(!cache.has("k")?, "an entry without object.info is none");
    let e = cache.has("a/b").expect_err("an invalid name");
    assert_eq!(e.kind(), ErrorKind::InvalidName, "{e}");
    Ok(())
}

#[test]
fn a_blob_is_written_once_and_put_blobs_reports_what_the_commit_did() -> TestResult {
    let (_t, path) = new_cache(MaxSize::Unlimited);
    let cache = open(&path)?;
    let entry = cache.store("k")?;
    entry.write_blob("v", b"1")?;
    let e = entry.write_blob("v", b"2").expect_err("written twice");
    assert_eq!(
        e.io_error().map(std::io::Error::kind),
        Some(IoKind::AlreadyExists),
        "{e}"
    );
    assert!(entry.commit()?.is_stored(), "the first write stands");
    assert_eq!(cache.get_blob("k", "v")?, Some(b"1".to_vec()));
    assert_eq!(
        cache.put_blobs("k", &[("v", b"3")])?,
        Commit::NameTaken,
        "the first entry of a name wins"
    );
    assert_eq!(cache.get_blob("k", "v")?, Some(b"1".to_vec()), "unchanged");
    cache.set_maximum_size(MaxSize::Bytes(0))?;
    assert!(
        matches!(
            cache.put_blobs("big", &[("v", b"1")])?,
            Commit::TooLarge { .. }
        ),
        "a cache that holds nothing takes no blobs"
    );
    assert_eq!(
        names(&path.join("objects")),
        ["k"],
        "and keeps nothing of it"
    );
    assert_exact(&path);
    Ok(())
}
