//! The on-disk format: we read what osbuild writes, and write what the
//! format says.

mod common;

use std::path::Path;

use common::*;
use fscache::{Commit, FsCache, MaxSize};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Lay out a cache exactly as osbuild's Python code writes one (its JSON
/// comes from `json.dump`, with `", "` and `": "` separators).
fn osbuild_tree(root: &Path, boot_id: &str) {
    std::fs::create_dir_all(root.join("objects/built/data/sub")).unwrap();
    std::fs::create_dir_all(root.join("stage")).unwrap();
    std::fs::write(
        root.join("CACHEDIR.TAG"),
        "Signature: 8a477f597d28d172789f06886806bc55\n# This is a cache directory tag created by osbuild (see https://bford.info/cachedir/)\n",
    )
    .unwrap();
    std::fs::write(
        root.join("cache.info"),
        format!(r#"{{"version": 1, "maximum-size": 1073741824, "creation-boot-id": "{boot_id}", "osbuild-extra": [1, 2]}}"#),
    )
    .unwrap();
    std::fs::write(root.join("cache.lock"), "").unwrap();
    std::fs::write(root.join("cache.size"), "12288").unwrap();
    std::fs::write(
        root.join("objects/built/data/sub/file"),
        "osbuild wrote this",
    )
    .unwrap();
    std::fs::write(root.join("objects/built/object.lock"), "").unwrap();
    std::fs::write(
        root.join("objects/built/object.info"),
        format!(r#"{{"creation-boot-id": "{boot_id}", "size": 12288}}"#),
    )
    .unwrap();
}

#[test]
fn a_cache_laid_out_by_osbuild_is_opened_and_read() -> TestResult {
    let t = tempfile::tempdir()?;
    let root = t.path().join("c");
    let boot = "0123456789abcdef0123456789abcdef";
    osbuild_tree(&root, boot);
    let cache = FsCache::open("osbuild", &root)?;
    let info = cache.info();
    assert!(info.is_supported());
    assert_eq!(info.effective_maximum(), MaxSize::Bytes(1 << 30));
    assert_eq!(info.creation_boot_id.as_deref(), Some(boot));
    assert_eq!(cache.accounted_size()?, 12288);
    let hit = cache.load("built")?.expect("osbuild's entry is a hit");
    assert_eq!(
        std::fs::read_to_string(hit.path().join("sub/file"))?,
        "osbuild wrote this"
    );
    let oi = hit.info().clone();
    assert_eq!(
        (oi.size, oi.creation_boot_id.as_deref()),
        (12288, Some(boot))
    );
    drop(hit);
    // Our update keeps osbuild's keys, known and unknown.
    cache.set_maximum_size(MaxSize::Unlimited)?;
    let raw: serde_json::Value = serde_json::from_slice(&std::fs::read(root.join("cache.info"))?)?;
    assert_eq!(raw["osbuild-extra"], serde_json::json!([1, 2]));
    assert_eq!(raw["creation-boot-id"], boot);
    assert_eq!(raw["maximum-size"], "unlimited");
    assert_eq!(raw["version"], 1);
    Ok(())
}

#[test]
fn a_cache_we_create_has_the_layout_and_json_of_the_format() -> TestResult {
    let t = tempfile::tempdir()?;
    let root = t.path().join("c");
    let cache = FsCache::open("fscache-tests", &root)?;
    assert_eq!(
        names(&root),
        [
            "CACHEDIR.TAG",
            "builds",
            "cache.info",
            "cache.lock",
            "cache.size",
            "objects",
            "stage"
        ]
    );
    let tag = std::fs::read_to_string(root.join("CACHEDIR.TAG"))?;
    assert!(tag.starts_with("Signature: 8a477f597d28d172789f06886806bc55\n"));
    let info: serde_json::Value = serde_json::from_slice(&std::fs::read(root.join("cache.info"))?)?;
    assert_eq!(info, serde_json::json!({"version": 1}));
    assert_eq!(std::fs::read_to_string(root.join("cache.size"))?, "0");
    assert_eq!(std::fs::metadata(root.join("cache.lock"))?.len(), 0);
    // A new cache has maximum 0: it stores nothing.
    let e = cache.store("x")?;
    std::fs::write(e.path().join("f"), "1").unwrap();
    assert!(matches!(
        e.commit().map_err(fscache::Error::from)?,
        Commit::TooLarge { .. }
    ));
    assert!(names(&root.join("objects")).is_empty());

    cache.set_maximum_size(MaxSize::Unlimited)?;
    let e = cache.store("x")?;
    std::fs::write(e.path().join("f"), "1").unwrap();
    let Commit::Stored { size } = e.commit().map_err(fscache::Error::from)? else {
        panic!("not stored")
    };
    assert_eq!(
        names(&root.join("objects/x")),
        ["data", "object.info", "object.lock"]
    );
    let oi: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("objects/x/object.info"))?)?;
    let boot = oi["creation-boot-id"].as_str().expect("boot id string");
    assert!(
        boot.len() == 32
            && boot
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    assert_eq!(boot, cache.boot_id());
    assert_eq!(oi["size"].as_u64(), Some(size));
    assert_eq!(size_file(&root), size);
    assert_eq!(
        std::fs::metadata(root.join("objects/x/object.lock"))?.len(),
        0
    );
    Ok(())
}

#[test]
fn the_boot_id_matches_an_independent_computation_of_the_format_algorithm() {
    let kernel = "a2cc35b3-7a92-474a-8985-d89d6db8ec5c";
    let app = "org.osbuild";
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(kernel.as_bytes()).unwrap();
    mac.update(app.as_bytes());
    let mut h = mac.finalize().into_bytes()[..16].to_vec();
    h[6] = (h[6] & 0x0f) | 0x40;
    h[8] = (h[6] & 0x3f) | 0x80;
    let want: String = h.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(fscache::app_boot_id(app, &format!("{kernel}\n")), want);
    // The same algorithm run once in CPython (hmac, hashlib, uuid) for this
    // input, as osbuild's `proc_boot_id` would:
    assert_eq!(want, "49152f26745c40c0803821401b5e2d6d");
    assert_ne!(
        fscache::app_boot_id("other-app", kernel),
        want,
        "the app id must matter"
    );
}

#[test]
fn an_unsupported_version_degrades_store_to_staging_and_load_to_a_miss() -> TestResult {
    let (_t, root) = new_cache(MaxSize::Unlimited);
    std::fs::write(
        root.join("cache.info"),
        r#"{"version": 2, "maximum-size": "unlimited"}"#,
    )?;
    let cache = FsCache::open("fscache-tests", &root)?;
    let e = cache.store("x")?;
    assert!(
        e.path().starts_with(root.join("stage")),
        "degraded store lives in stage/"
    );
    std::fs::write(e.path().join("f"), "1").unwrap();
    assert_eq!(
        e.commit().map_err(fscache::Error::from)?,
        Commit::Unsupported
    );
    assert!(names(&root.join("objects")).is_empty() && names(&root.join("stage")).is_empty());
    assert!(cache.load("x")?.is_none());
    let s = cache.stage()?;
    assert!(s.path().is_dir(), "staging always works");
    drop(s);
    let bad = fscache::CacheInfo {
        low_watermark_percent: Some(0),
        ..Default::default()
    };
    let err = cache.update_info(&bad).unwrap_err();
    assert_eq!(
        err.kind(),
        fscache::ErrorKind::InvalidConfig,
        "checked before anything is read"
    );
    let err = cache.set_maximum_size(MaxSize::Bytes(1)).unwrap_err();
    assert_eq!(err.kind(), fscache::ErrorKind::UnsupportedVersion);
    Ok(())
}

#[test]
fn hostile_names_are_refused_and_touch_nothing() -> TestResult {
    let (_t, root) = new_cache(MaxSize::Unlimited);
    let cache = FsCache::open("fscache-tests", &root)?;
    for name in [
        "",
        ".",
        "..",
        "../escape",
        "a/b",
        "uuid-0123456789abcdef0123456789abcdef",
        "nul\0byte",
    ] {
        let e = cache.store(name).unwrap_err();
        assert_eq!(e.kind(), fscache::ErrorKind::InvalidName, "{name:?}");
        assert_eq!(
            cache.load(name).unwrap_err().kind(),
            fscache::ErrorKind::InvalidName
        );
    }
    assert!(names(&root.join("objects")).is_empty());
    Ok(())
}

#[test]
fn a_symlink_planted_as_an_entry_is_a_miss_and_is_never_followed() -> TestResult {
    let (t, root) = new_cache(MaxSize::Unlimited);
    let cache = FsCache::open("fscache-tests", &root)?;
    // A real entry elsewhere that the link points at.
    let outside = t.path().join("outside");
    std::fs::create_dir_all(outside.join("data"))?;
    std::fs::write(outside.join("object.lock"), "")?;
    std::fs::write(outside.join("object.info"), r#"{"size": 1}"#)?;
    std::os::unix::fs::symlink(&outside, root.join("objects/evil"))?;
    assert!(
        cache.load("evil")?.is_none(),
        "a link must not be loaded through"
    );
    let e = cache.store("evil")?;
    assert_eq!(
        e.commit().map_err(fscache::Error::from)?,
        Commit::NameTaken,
        "a link holds the name but is not followed"
    );
    assert!(outside.join("object.lock").exists() && outside.join("data").exists());
    assert!(std::fs::symlink_metadata(root.join("objects/evil"))?
        .file_type()
        .is_symlink());
    Ok(())
}

#[test]
fn a_negative_maximum_written_by_osbuild_means_unlimited() -> TestResult {
    for negative in ["-1", "-42", "-123456789012345678901234567890"] {
        let (_t, root) = new_cache(MaxSize::Bytes(0));
        std::fs::write(
            root.join("cache.info"),
            format!(r#"{{"version": 1, "maximum-size": {negative}}}"#),
        )?;
        let cache = FsCache::open("fscache-tests", &root)?;
        assert_eq!(
            cache.info().effective_maximum(),
            MaxSize::Unlimited,
            "{negative}"
        );
        let entry = cache.store("big")?;
        std::fs::write(entry.path().join("f"), vec![7u8; 1 << 20])?;
        let outcome = entry.commit().map_err(fscache::Error::from)?;
        assert!(outcome.is_stored(), "maximum {negative}: {outcome}");
        let hit = cache.load("big")?;
        assert!(hit.is_some(), "{negative}");
    }
    Ok(())
}

#[test]
fn update_info_refuses_what_would_lock_every_tool_out_of_the_cache() -> TestResult {
    let (_t, root) = new_cache(MaxSize::Unlimited);
    let cache = FsCache::open("fscache-tests", &root)?;
    let before = std::fs::read(root.join("cache.info"))?;
    let boot = |id: &str| fscache::CacheInfo {
        creation_boot_id: Some(id.to_owned()),
        ..Default::default()
    };
    let version = |v: i64| fscache::CacheInfo {
        version: Some(v),
        ..Default::default()
    };
    for (update, key) in [
        (version(99), "version"),
        (version(0), "version"),
        (version(-1), "version"),
        (boot("not-a-boot-id"), "creation-boot-id"),
        (boot(&"A".repeat(32)), "creation-boot-id"),
        (boot(&"g".repeat(32)), "creation-boot-id"),
        (boot(&"a".repeat(31)), "creation-boot-id"),
    ] {
        match cache.update_info(&update) {
            Err(fscache::Error::InvalidConfig { key: got, .. }) => {
                assert_eq!(got, key, "{update:?}")
            }
            other => panic!("{update:?} was not refused: {other:?}"),
        }
        assert_eq!(
            std::fs::read(root.join("cache.info"))?,
            before,
            "{update:?}"
        );
    }
    // What is valid is written, and the cache goes on working.
    let now = cache.update_info(&fscache::CacheInfo {
        version: Some(1),
        creation_boot_id: Some("0123456789abcdef0123456789abcdef".into()),
        ..Default::default()
    })?;
    assert!(now.is_supported());
    let entry = cache.store("still-works")?;
    assert!(entry.commit().map_err(fscache::Error::from)?.is_stored());
    let hit = cache.load("still-works")?;
    assert!(hit.is_some());
    Ok(())
}
