//! Store throughput of 1, 2 and 8 processes sharing one cache, ours beside
//! the floor (`common/floor.rs`) made by as many processes, and a 50/50
//! mix of loads and stores; ends with a table of throughputs and how each
//! scales against one process.
//!
//! `cargo bench --bench procs`. Each process is this bench binary again
//! (`FSCACHE_BENCH_CHILD`), released by a byte on its stdin once all have
//! opened the cache; each times its own work, and a round lasts as long as
//! the slowest.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use fscache::{FsCache, MaxSize};

#[path = "common/floor.rs"]
mod floor;
#[path = "common/place.rs"]
mod place;
#[path = "common/ratio.rs"]
mod ratio;

/// Operations per process per round.
const OPS: u64 = 500;
const PAYLOAD: [u8; 4096] = [7u8; 4096];
const PROCS: [usize; 3] = [1, 2, 8];
const MODES: [&str; 3] = ["floor", "store", "mix"];
/// Interleaved repetitions of every configuration.
const REPS: usize = 3;

fn child(spec: &str) {
    let mut parts = spec.splitn(3, ':');
    let (mode, tag, root) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let cache = FsCache::open("fscache-bench", root).expect("open");
    let mut floor = floor::Floor::new(root.as_ref());
    let mut go = [0u8; 1];
    std::io::stdout()
        .write_all(b"r")
        .and_then(|()| std::io::stdout().flush())
        .expect("ready");
    std::io::stdin().read_exact(&mut go).expect("start");
    let mut buf = [0u8; 8192];
    let start = Instant::now();
    for i in 0..OPS {
        let name = format!("{tag}-{i}");
        match mode {
            "floor" => floor.store(&name, &PAYLOAD),
            "mix" if i % 2 == 1 => {
                let hit = cache.load("hot").expect("load").expect("hit");
                let f = std::fs::File::open(hit.path().join("f")).expect("open");
                let _ = (&f).read(&mut buf).expect("read");
            }
            _ => {
                let e = cache.store(&name).expect("store");
                std::fs::write(e.path().join("f"), PAYLOAD).expect("write");
                assert!(e.commit().expect("commit").is_stored());
            }
        }
    }
    // The work alone, without the process's start and exit.
    let took = start.elapsed().as_nanos();
    std::io::stdout()
        .write_all(format!("{took}\n").as_bytes())
        .and_then(|()| std::io::stdout().flush())
        .expect("report");
}

/// One round: `procs` processes doing `OPS` operations each; the time from
/// their release to the last one's exit.
fn round(root: &std::path::Path, mode: &str, procs: usize, round: u64) -> Duration {
    let mut children: Vec<_> = (0..procs)
        .map(|p| {
            Command::new(std::env::current_exe().expect("exe"))
                .env(
                    "FSCACHE_BENCH_CHILD",
                    format!("{mode}:{mode}{round}p{p}:{}", root.display()),
                )
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    // Each says when it has opened the cache; the clock starts after.
    for c in &mut children {
        let mut ready = [0u8; 1];
        c.stdout
            .as_mut()
            .expect("stdout")
            .read_exact(&mut ready)
            .expect("ready");
    }
    for c in &mut children {
        c.stdin.take().expect("stdin").write_all(b"g").expect("go");
    }
    // They start together; the round lasts as long as the slowest one's
    // work (each reports its own, which leaves out its exit).
    let mut slowest = 0u128;
    for c in &mut children {
        let mut report = String::new();
        c.stdout
            .as_mut()
            .expect("stdout")
            .read_to_string(&mut report)
            .expect("report");
        slowest = slowest.max(report.trim().parse().expect("nanoseconds"));
        assert!(c.wait().expect("wait").success());
    }
    Duration::from_nanos(u64::try_from(slowest).unwrap_or(u64::MAX))
}

fn group(c: &mut Criterion) {
    let dir = place::kept_dir("procs");
    let cache = FsCache::open("fscache-bench", &dir).expect("open");
    cache.set_maximum_size(MaxSize::Unlimited).expect("max");
    let e = cache.store("hot").expect("store");
    std::fs::write(e.path().join("f"), PAYLOAD).expect("write");
    assert!(e.commit().expect("commit").is_stored());
    // One throwaway round of each first: the first processes after a
    // build (or a deletion) meet a disk still writing back and discarding.
    let mut n = 0u64;
    for procs in PROCS {
        for mode in MODES {
            n += 1;
            round(&dir, mode, procs, n);
        }
    }
    let mut g = c.benchmark_group("procs");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_secs(2));
    // Interleaved repetitions, so that a disk that drifts as the cache
    // fills moves every configuration alike.
    for rep in 0..REPS {
        for procs in PROCS {
            for mode in MODES {
                g.throughput(Throughput::Elements(OPS * procs as u64));
                g.bench_function(BenchmarkId::new(format!("{mode}/{procs}"), rep), |b| {
                    b.iter_custom(|iters| {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            n += 1;
                            let took = round(&dir, mode, procs, n);
                            ratio::record(&format!("{mode}/{procs}"), took, OPS * procs as u64);
                            total += took;
                        }
                        total
                    })
                });
            }
        }
    }
    g.finish();
}

criterion_group!(benches, group);

fn main() {
    if let Ok(spec) = std::env::var("FSCACHE_BENCH_CHILD") {
        return child(&spec);
    }
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
    for mode in MODES {
        let one = ratio::mean(&format!("{mode}/1"));
        for procs in PROCS {
            if let (Some(one), Some(m)) = (one, ratio::mean(&format!("{mode}/{procs}"))) {
                println!(
                    "procs {mode:<5} x{procs}: {:>8.0} ops/s, {:.2}x one process",
                    1.0 / m.as_secs_f64(),
                    one.as_secs_f64() / m.as_secs_f64()
                );
            }
        }
    }
}
