//! Repeat one operation many times, for counting its system calls:
//!
//! ```sh
//! cargo build --release --example syscalls
//! strace -f -c -o /tmp/load.txt target/release/examples/syscalls load 1000
//! ```
//!
//! Operations: `load` (a hit), `miss`, `store` (commit into an unlimited
//! cache), `stage`, and `full:N` (commit into a full cache that holds `N`
//! entries, so that every store pays its share of eviction). Setup happens
//! before the marker line on stderr; run once with a count of 0 to learn
//! what setup alone costs. The time per operation goes to stderr.

use fscache::{FsCache, MaxSize};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let op = args.get(1).map(String::as_str).unwrap_or("load");
    let n: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1000);
    // Kept on exit, so that removing it does not count; removed by hand.
    let dir = tempfile::tempdir()?.keep();
    let cache = FsCache::open("fscache-syscalls", &dir)?;
    cache.set_maximum_size(MaxSize::Unlimited)?;
    let e = cache.store("hot")?;
    std::fs::write(e.path().join("f"), b"x")?;
    assert!(e.commit().map_err(fscache::Error::from)?.is_stored());
    let full: Option<u64> = op.strip_prefix("full:").and_then(|n| n.parse().ok());
    if let Some(entries) = full {
        for i in 0..entries {
            let e = cache.store(&format!("seed{i}"))?;
            std::fs::write(e.path().join("f"), [7u8; 100])?;
            assert!(e.commit().map_err(fscache::Error::from)?.is_stored());
        }
    }
    // A new handle: the filling one's reservation goes with it, and the
    // cache is full to the byte.
    drop(cache);
    let cache = FsCache::open("fscache-syscalls", &dir)?;
    if full.is_some() {
        cache.set_maximum_size(MaxSize::Bytes(cache.accounted_size()?))?;
    }
    eprintln!("--- {n} x {op}");
    let start = std::time::Instant::now();
    for i in 0..n {
        match op {
            _ if full.is_some() => {
                let e = cache.store(&format!("new{i}"))?;
                std::fs::write(e.path().join("f"), [7u8; 100])?;
                assert!(e.commit().map_err(fscache::Error::from)?.is_stored());
            }
            "load" => drop(cache.load("hot")?.ok_or("miss")?),
            "miss" => assert!(cache.load("cold")?.is_none()),
            "store" => {
                let e = cache.store(&format!("e{i}"))?;
                assert!(e.commit().map_err(fscache::Error::from)?.is_stored());
            }
            "stage" => drop(cache.stage()?),
            other => return Err(format!("unknown operation {other}").into()),
        }
    }
    let per_op = start.elapsed() / u32::try_from(n.max(1)).unwrap_or(u32::MAX);
    eprintln!("--- {per_op:?} per {op}; remove {}", dir.display());
    Ok(())
}
