//! Namespaces: budgets of their own inside a parent's. Each namespace stays
//! within its own maximum, all of them together within the parent's, and
//! the parent's accounting counts them (also when it recounts).

mod common;

use common::*;
use fscache::{Commit, FsCache, MaxSize};

const APP: &str = "fscache-tests";

fn put(cache: &FsCache, name: &str, bytes: usize) -> fscache::Result<Commit> {
    let entry = cache.store(name)?;
    std::fs::write(entry.path().join("f"), vec![7u8; bytes]).expect("fill");
    Ok(entry.commit()?)
}

#[test]
fn three_namespaces_never_hold_more_than_the_parent_allows() -> TestResult {
    let (_t, root) = new_cache(MaxSize::Unlimited);
    let parent = FsCache::open(APP, &root)?;
    // Learn what one entry occupies on this file system.
    let Commit::Stored { size: one } = put(&parent, "probe", 10_000)? else {
        return Err("the probe was not stored".into());
    };
    assert!(matches!(
        parent.evict("probe")?,
        fscache::Eviction::Removed { .. }
    ));
    parent.set_maximum_size(MaxSize::Bytes(10 * one))?;
    let spaces: Vec<FsCache> = ["compile", "link", "test"]
        .iter()
        .map(|p| parent.namespace(p, Some(MaxSize::Bytes(6 * one))))
        .collect::<fscache::Result<_>>()?;
    assert_eq!(parent.namespaces()?, ["compile", "link", "test"]);
    let mut fullest = 0;
    for round in 0..8 {
        for (i, ns) in spaces.iter().enumerate() {
            match put(ns, &format!("e{round}-{i}"), 10_000)? {
                // A namespace that needs room in the parent evicts its own.
                Commit::Stored { .. } => {}
                other => return Err(format!("unexpected {other}").into()),
            }
            let total: u64 = spaces
                .iter()
                .map(|n| n.accounted_size())
                .collect::<fscache::Result<Vec<_>>>()?
                .iter()
                .sum();
            let above = parent.accounted_size()?;
            fullest = fullest.max(above);
            assert_eq!(above, total, "the parent accounts exactly its namespaces");
            assert!(above <= 10 * one, "{above} > the parent's maximum");
            for n in &spaces {
                assert!(
                    n.accounted_size()? <= 6 * one,
                    "a namespace past its own maximum"
                );
            }
        }
    }
    // 3 x 6 entries would not fit: the parent's budget is what bound them.
    assert!(fullest > 8 * one, "the parent filled up: {fullest}");
    // A namespace with nothing of its own to evict, in a parent full of the
    // others' entries, finds no room.
    let late = parent.namespace("late", None)?;
    let outcome = put(&late, "x", 3 * one as usize)?;
    assert!(matches!(outcome, Commit::NoRoom { .. }), "{outcome}");
    assert!(parent.accounted_size()? <= 10 * one);
    // Each namespace is a cache of its own: its own entries and eviction.
    let hit = spaces[0].load("e7-0")?;
    assert!(hit.is_some(), "the newest entry of a namespace is there");
    let miss = parent.load("e7-0")?;
    assert!(miss.is_none(), "a namespace's entry is not the parent's");
    drop(hit);
    // A recount of the parent counts the namespaces' entries.
    std::fs::write(root.join("cache.size"), "0")?;
    let r = parent.resync()?;
    let total: u64 = spaces.iter().map(|n| n.accounted_size().unwrap_or(0)).sum();
    assert_eq!(r.after, total, "{r:?}");
    // And clearing a namespace gives its sizes back in the parent.
    for n in &spaces {
        n.clear()?;
    }
    assert_eq!(parent.accounted_size()?, 0);
    Ok(())
}

#[test]
fn a_namespace_prefix_is_one_valid_component_and_namespaces_do_not_nest() -> TestResult {
    let (_t, root) = new_cache(MaxSize::Unlimited);
    let parent = FsCache::open(APP, &root)?;
    for bad in ["", "..", "a/b", "uuid-x"] {
        let e = parent.namespace(bad, None).unwrap_err();
        assert_eq!(e.kind(), fscache::ErrorKind::InvalidName, "{bad:?}: {e}");
    }
    let ns = parent.namespace("ok", None)?;
    assert_eq!(
        ns.info().effective_maximum(),
        MaxSize::Unlimited,
        "inherits the maximum"
    );
    let e = ns.namespace("deeper", None).unwrap_err();
    assert_eq!(e.kind(), fscache::ErrorKind::InvalidConfig, "{e}");
    // A link planted as a namespace is refused, never followed.
    let outside = tempfile::tempdir()?;
    std::os::unix::fs::symlink(outside.path(), root.join("namespaces/planted"))?;
    assert!(parent.namespace("planted", None).is_err());
    assert_eq!(parent.namespaces()?, ["ok"]);
    assert_eq!(
        std::fs::read_dir(outside.path())?.count(),
        0,
        "nothing written outside"
    );
    Ok(())
}
