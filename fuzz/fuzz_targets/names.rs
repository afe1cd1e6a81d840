//! Entry names: `validate_name` never panics and accepts only single,
//! ordinary path components; loading any accepted name from an empty cache
//! is a miss or an error, and creates nothing.

#![no_main]

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::OnceLock;

use fscache::FsCache;
use libfuzzer_sys::fuzz_target;
use tempfile::TempDir;

/// One empty cache per process: opening one per input would cost far more
/// than the check. Statics are never dropped, so the directory outlives the
/// process; `.ci/fuzz` points TMPDIR at a directory it removes.
static CACHE: OnceLock<(TempDir, FsCache)> = OnceLock::new();

fn cache() -> &'static FsCache {
    &CACHE
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let cache = FsCache::open("fscache-fuzz", dir.path()).expect("open a fresh cache");
            (dir, cache)
        })
        .1
}

fuzz_target!(|data: &[u8]| {
    let name = String::from_utf8_lossy(data);
    let Ok(accepted) = fscache::validate_name(&name) else {
        return;
    };
    assert_eq!(accepted, name, "validate_name returned another name");
    assert!(!name.is_empty(), "accepted an empty name");
    assert!(name.len() <= 255, "accepted {} bytes", name.len());
    assert!(!name.contains('/'), "accepted a `/`: {name:?}");
    assert!(!name.contains('\0'), "accepted a NUL: {name:?}");
    assert!(name != "." && name != "..", "accepted {name:?}");
    assert!(
        !name.starts_with("uuid-"),
        "accepted a reserved name: {name:?}"
    );

    let cache = cache();
    match cache.load(&name) {
        Ok(None) | Err(_) => {}
        Ok(Some(hit)) => panic!("{name:?} hit in an empty cache: {hit:?}"),
    }
    let root = cache.path();
    // Nothing but the layout's names (namespaces/ appears only when one is
    // made), and what a load needs is all there.
    let found = listing(root);
    assert!(
        found
            .iter()
            .all(|n| fscache::ROOT_LAYOUT.contains(&n.as_str())),
        "root changed after {name:?}: {found:?}"
    );
    for needed in ["cache.info", "cache.lock", "cache.size", "objects", "stage"] {
        assert!(found.contains(needed), "{needed} is gone after {name:?}");
    }
    for dir in ["objects", "stage"] {
        let found = listing(&root.join(dir));
        assert!(
            found.is_empty(),
            "{dir}/ gained {found:?} after loading {name:?}"
        );
    }
});

fn listing(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .expect("list a cache directory")
        .map(|e| {
            e.expect("read a directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}
