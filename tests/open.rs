//! Opening a cache: without `create`, a directory that is not a cache is
//! refused and left untouched; a cache another process holds exclusively
//! is refused at once or after a timeout, never waited on forever.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use fscache::lock::{FileLock, LockKind};
use fscache::{Error, ErrorKind, FsCache, MaxSize, OpenOptions, Wait};

const APP: &str = "fscache-tests";

fn open_existing(path: &Path) -> fscache::Result<FsCache> {
    OpenOptions::new().create(false).open(APP, path)
}

#[test]
fn without_create_a_missing_or_foreign_directory_is_refused_and_left_untouched() -> TestResult {
    let t = tempfile::tempdir()?;
    let missing = t.path().join("typo/does/not/exist");
    let e = open_existing(&missing).unwrap_err();
    assert!(
        matches!(&e, Error::NotACache { path, .. } if path == &missing),
        "{e:?}"
    );
    assert_eq!(e.kind(), ErrorKind::NotACache);
    assert!(!t.path().join("typo").exists(), "nothing was created");

    let mine = t.path().join("my-files");
    std::fs::create_dir(&mine)?;
    std::fs::write(mine.join("notes.txt"), "mine")?;
    let e = open_existing(&mine).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotACache, "{e}");
    assert_eq!(names(&mine), ["notes.txt"], "no CACHEDIR.TAG, no cache.*");

    // A cache is one once created; then it opens without creating.
    drop(FsCache::open(APP, &mine)?);
    let cache = open_existing(&mine)?;
    assert!(cache.info().is_supported());
    Ok(())
}

#[test]
fn an_empty_application_id_is_refused() {
    let t = tempfile::tempdir().expect("tempdir");
    let e = FsCache::open("", t.path()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
    assert_eq!(names(t.path()), Vec::<String>::new());
}

#[test]
fn a_cache_held_exclusively_is_refused_at_once_or_after_the_timeout() -> TestResult {
    let (_t, root) = new_cache(MaxSize::Unlimited);
    // OFD locks conflict between two descriptions in one process exactly
    // as between processes.
    let whole = FileLock::open(root.join("cache.lock"), LockKind::Exclusive, Wait::Never)?;
    let e = OpenOptions::new()
        .wait(Wait::Never)
        .open(APP, &root)
        .unwrap_err();
    assert!(matches!(e, Error::WouldBlock { .. }), "{e:?}");
    let e = OpenOptions::new()
        .wait(Wait::Timeout(Duration::from_millis(100)))
        .open(APP, &root)
        .unwrap_err();
    assert!(matches!(e, Error::TimedOut { .. }), "{e:?}");
    assert_eq!(e.kind(), ErrorKind::Contended);
    drop(whole);
    OpenOptions::new().wait(Wait::Never).open(APP, &root)?;
    Ok(())
}

#[cfg(feature = "cli")]
mod command {
    use super::*;

    fn fscache(args: &[&str]) -> std::process::Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_fscache"))
            .args(args)
            .output()
            .expect("run fscache")
    }

    #[test]
    fn only_init_creates_a_cache_from_the_command_line() -> TestResult {
        let t = tempfile::tempdir()?;
        let typo = t.path().join("typo/does/not/exist");
        let typo_s = typo.to_str().ok_or("utf-8")?;
        for command in ["stats", "clear", "sweep", "resync", "config", "gc"] {
            let out = fscache(&[command, typo_s]);
            assert!(!out.status.success(), "{command}: {out:?}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("is not a cache"), "{command}: {err}");
            assert!(!t.path().join("typo").exists(), "{command} created it");
        }
        let mine = t.path().join("mine");
        std::fs::create_dir(&mine)?;
        let out = fscache(&["clear", mine.to_str().ok_or("utf-8")?]);
        assert!(!out.status.success(), "{out:?}");
        assert_eq!(names(&mine), Vec::<String>::new(), "no CACHEDIR.TAG");

        let out = fscache(&["init", typo_s, "--max-size", "1M"]);
        assert!(out.status.success(), "{out:?}");
        let out = fscache(&["stats", typo_s]);
        assert!(out.status.success(), "{out:?}");
        Ok(())
    }

    #[test]
    fn a_busy_cache_ends_the_command_after_its_wait_with_a_message() -> TestResult {
        let (_t, root) = new_cache(MaxSize::Unlimited);
        let whole = FileLock::open(root.join("cache.lock"), LockKind::Exclusive, Wait::Never)?;
        let out = fscache(&["stats", root.to_str().ok_or("utf-8")?, "--wait", "1s"]);
        assert!(!out.status.success(), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("cache.lock"), "names the lock: {err}");
        drop(whole);
        let out = fscache(&["stats", root.to_str().ok_or("utf-8")?, "--wait", "0"]);
        assert!(out.status.success(), "{out:?}");
        Ok(())
    }
}

#[test]
fn a_cache_created_with_a_maximum_is_usable_from_the_first_line_and_an_existing_one_keeps_its_own(
) -> TestResult {
    let t = tempfile::tempdir()?;
    let path = t.path().join("new");
    let cache = OpenOptions::new()
        .maximum_size(MaxSize::Bytes(1 << 30))
        .low_watermark_percent(50)
        .open(APP, &path)?;
    assert_eq!(cache.info().effective_maximum(), MaxSize::Bytes(1 << 30));
    assert_eq!(cache.info().low_watermark_percent, Some(50));
    let entry = cache.store("first")?;
    assert!(entry.commit()?.is_stored(), "the first store is kept");
    drop(cache);
    // Opening again with other creation values changes nothing.
    let again = OpenOptions::new()
        .maximum_size(MaxSize::Unlimited)
        .open(APP, &path)?;
    assert_eq!(again.info().effective_maximum(), MaxSize::Bytes(1 << 30));
    // A watermark out of range is refused before anything is created.
    let e = OpenOptions::new()
        .low_watermark_percent(0)
        .open(APP, t.path().join("never"))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
    assert!(!t.path().join("never").exists());
    Ok(())
}

#[test]
fn too_large_for_a_maximum_of_zero_says_how_to_fix_it() -> TestResult {
    let t = tempfile::tempdir()?;
    let cache = FsCache::open(APP, t.path())?;
    let entry = cache.store("first")?;
    let outcome = entry.commit()?;
    assert!(
        matches!(outcome, fscache::Commit::TooLarge { .. }),
        "{outcome:?}"
    );
    let said = outcome.to_string();
    assert!(
        said.contains("maximum size is 0") && said.contains("set a maximum"),
        "{said}"
    );
    Ok(())
}
