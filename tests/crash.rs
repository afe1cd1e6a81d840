//! The crash matrix: a worker is SIGKILLed at each named crash point in
//! turn; a survivor then sweeps and resyncs, and every invariant must hold
//! and no committed entry may be damaged. Needs `--features failpoints`.

#![cfg(feature = "failpoints")]

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;

use common::*;
use fscache::stress::payload;
use fscache::{FsCache, MaxSize};

/// The script a crashing worker runs: between them, these commands pass
/// every crash point in `fscache::failpoint::ALL`.
const SCRIPT: &[&str] = &[
    "store x 5000",
    "commit",
    "store a 3000",
    "commit",
    "evict b",
    "sweep",
    "max 100000000",
];

/// Committed entries every run starts with.
const KEPT: &[&str] = &["a", "b", "c"];

fn prepare(root: &Path) -> FsCache {
    let cache = FsCache::open("fscache-tests", root).expect("open");
    cache.set_maximum_size(MaxSize::Unlimited).expect("max");
    for (i, name) in KEPT.iter().enumerate() {
        let e = cache.store(name).expect("store");
        payload::write(e.path(), 1000 + i as u64, 2000 * (i + 1)).expect("payload");
        assert!(e.commit().expect("commit").is_stored());
    }
    // An orphan for the sweep to find, as a crashed osbuild leaves it.
    let orphan = root.join("objects").join(PLANTED);
    std::fs::create_dir_all(orphan.join("data")).expect("orphan");
    std::fs::write(orphan.join("object.lock"), "").expect("orphan lock");
    cache
}

/// The orphan `prepare` plants.
const PLANTED: &str = "uuid-0000000000000000000000000000aaaa";

/// What is in the cache besides committed entries and the planted orphan,
/// for the report.
fn debris(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for sub in ["objects", "stage"] {
        for n in names(&root.join(sub)).into_iter().filter(|n| n != PLANTED) {
            let p = root.join(sub).join(&n);
            if n.starts_with("uuid-") {
                let inside = if p.is_dir() {
                    names(&p).join("+")
                } else {
                    "file".into()
                };
                out.push(format!("{sub}/uuid-…[{inside}]"));
            } else if !p.join("object.info").exists() {
                out.push(format!("{sub}/{n} without object.info"));
            }
        }
    }
    out
}

#[test]
fn every_crash_point_leaves_a_cache_that_recovers_without_losing_committed_entries() -> TestResult {
    let mut table = Vec::new();
    for point in fscache::failpoint::ALL {
        let t = tempfile::tempdir()?;
        let root = t.path().join("c");
        let cache = prepare(&root);
        let mut w = Worker::spawn_with(&root, &[("FSCACHE_FAILPOINT", point)]);
        let mut died_at = None;
        for cmd in SCRIPT {
            if w.try_ask(cmd).is_none() {
                died_at = Some(*cmd);
                break;
            }
        }
        let Some(step) = died_at else {
            panic!("crash point {point:?} was never reached by the script");
        };
        let status = w.reap();
        assert_eq!(
            status.signal(),
            Some(9),
            "{point}: the worker must die by SIGKILL, got {status}"
        );

        let left = debris(&root);
        let drift = size_file(&root) as i64
            - info_sizes(&root)
                .iter()
                .map(|(_, s)| *s as i64)
                .sum::<i64>();
        let sweep = cache.sweep_orphans()?;
        let resync = cache.resync()?;
        assert_exact(&root);
        assert!(
            names(&root.join("objects"))
                .iter()
                .all(|n| !n.starts_with("uuid-")),
            "{point}: anonymous debris survived recovery"
        );
        assert!(
            names(&root.join("stage")).is_empty(),
            "{point}: staging debris survived recovery"
        );
        assert!(debris(&root).is_empty(), "{point}: {:?}", debris(&root));
        for name in ["a", "c", "x", "b"] {
            if let Some(hit) = cache.load(name)? {
                payload::verify(hit.path())
                    .unwrap_or_else(|e| panic!("{point}: entry {name} damaged: {e}"));
            } else {
                // `a` and `c` were committed before the crash and nothing
                // in the script removes them; `b` is evicted on purpose.
                assert!(
                    !["a", "c"].contains(&name),
                    "{point}: committed entry {name} lost"
                );
            }
        }
        let info: serde_json::Value =
            serde_json::from_slice(&std::fs::read(root.join("cache.info"))?)?;
        assert_eq!(info["version"], 1, "{point}: cache.info damaged");
        table.push(format!(
            "| `{point}` | `{step}` | {} ; cache.size {drift:+} | swept {} dirs, {} files, {} invalid, gave back {} B; resync {:?} -> {} |",
            if left.is_empty() { "nothing".to_string() } else { left.join(", ") },
            sweep.orphan_dirs,
            sweep.orphan_files,
            sweep.invalid_entries,
            sweep.bytes_given_back,
            resync.before,
            resync.after,
        ));
    }
    println!("| crash point | during | left behind | recovery |\n|---|---|---|---|");
    for row in table {
        println!("{row}");
    }
    Ok(())
}
