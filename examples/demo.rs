//! A tour of `fscache` with real processes: several copies of this program
//! share one cache, storing and loading overlapping names at once; the
//! parent then reports what happened and checks the books.
//!
//! Run with `cargo run --release --example demo`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use fscache::{Commit, FsCache, MaxSize};

const WORKERS: usize = 6;
const ROUNDS: usize = 40;
const NAMES: usize = 24;
/// Small enough that the workers' entries do not all fit: eviction runs.
const MAXIMUM: u64 = 384 << 10;

/// One worker: store and load names from a small shared pool.
fn child(dir: &Path, id: usize) -> Result<(), Box<dyn std::error::Error>> {
    let cache = FsCache::open("fscache-demo", dir)?;
    let (mut stored, mut taken, mut refused, mut hits, mut misses) = (0, 0, 0, 0, 0);
    for round in 0..ROUNDS {
        let name = format!("artifact-{}", (round * 7 + id * 5) % NAMES);
        match cache.load(&name)? {
            Some(hit) => {
                let body = std::fs::read(hit.path().join("artifact.bin"))?;
                assert!(
                    body.iter().all(|&b| b == body[0]),
                    "a reader saw a torn entry"
                );
                hits += 1;
            }
            None => {
                misses += 1;
                let entry = cache.store(&name)?;
                let len = 4096 * (1 + (round + id) % 8);
                std::fs::write(entry.path().join("artifact.bin"), vec![id as u8; len])?;
                match entry.commit().map_err(fscache::Error::from)? {
                    Commit::Stored { .. } => stored += 1,
                    Commit::NameTaken => taken += 1,
                    _ => refused += 1,
                }
            }
        }
    }
    println!("{stored} {taken} {refused} {hits} {misses}");
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if let [_, mode, dir, id] = args.as_slice() {
        if mode == "child" {
            return child(Path::new(dir), id.parse()?);
        }
    }
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("cache");
    let cache = FsCache::open("fscache-demo", &dir)?;
    cache.set_maximum_size(MaxSize::Bytes(MAXIMUM))?;
    println!(
        "cache at {} (maximum {} KiB), {WORKERS} processes x {ROUNDS} rounds over {NAMES} names",
        dir.display(),
        MAXIMUM >> 10
    );

    let exe = std::env::current_exe()?;
    let children: Vec<_> = (0..WORKERS)
        .map(|id| {
            Command::new(&exe)
                .args(["child", &dir.to_string_lossy(), &id.to_string()])
                .stdout(Stdio::piped())
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    let mut totals = [0u64; 5];
    for mut c in children {
        let out = c.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line)?;
        if !c.wait()?.success() {
            return Err("a worker failed".into());
        }
        for (t, v) in totals.iter_mut().zip(line.split_whitespace()) {
            *t += v.parse::<u64>()?;
        }
    }
    let [stored, taken, refused, hits, misses] = totals;
    println!("commits: {stored} stored, {taken} name-taken, {refused} refused (stored entries beyond the maximum were evicted, least recently used first)");
    println!("loads:   {hits} hits, {misses} misses");

    let stats = cache.stats()?;
    println!(
        "entries: {} now; bytes accounted {}, recorded {}, measured {}",
        stats.entries,
        stats.accounted_bytes.unwrap_or(0),
        stats.recorded_bytes,
        stats.measured_bytes
    );
    if stats.accounted_bytes != Some(stats.measured_bytes)
        || stats.recorded_bytes != stats.measured_bytes
    {
        return Err("accounting drifted".into());
    }
    if stats.orphans + stats.live_anonymous > 0 {
        return Err(format!(
            "{} anonymous entries left behind",
            stats.orphans + stats.live_anonymous
        )
        .into());
    }
    println!("ok: cache.size equals what the entries occupy");
    Ok(())
}
