//! Repeat one operation many times, for counting its system calls:
//!
//! ```sh
//! cargo build --release --example syscalls
//! strace -f -c -o /tmp/load.txt target/release/examples/syscalls load 1000
//! ```
//!
//! Operations: `load` (a hit), `miss`, `store` (commit into an unlimited
//! cache), `stage`. Setup happens before the marker line on stderr.

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
    eprintln!("--- {n} x {op}");
    for i in 0..n {
        match op {
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
    eprintln!("--- done; remove {}", dir.display());
    Ok(())
}
