//! Criterion measures; this keeps the mean time per operation of each
//! measurement so that the bench can end with each operation as a multiple
//! of its floor, measured in the same run.

#![allow(dead_code)]

use std::sync::Mutex;
use std::time::{Duration, Instant};

static MEANS: Mutex<Vec<(String, Duration, u64)>> = Mutex::new(Vec::new());

/// Time `iters` runs of `op` for criterion, and keep the total under `id`.
pub fn timed(id: &str, iters: u64, mut op: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        op();
    }
    let took = start.elapsed();
    record(id, took, iters);
    took
}

/// Keep `took` for `ops` operations under `id`.
pub fn record(id: &str, took: Duration, ops: u64) {
    let mut means = MEANS.lock().unwrap_or_else(|p| p.into_inner());
    match means.iter_mut().find(|(k, ..)| k == id) {
        Some((_, t, n)) => {
            *t += took;
            *n += ops;
        }
        None => means.push((id.to_owned(), took, ops)),
    }
}

/// The mean time per operation recorded under `id`.
pub fn mean(id: &str) -> Option<Duration> {
    let means = MEANS.lock().unwrap_or_else(|p| p.into_inner());
    means
        .iter()
        .find(|(k, ..)| k == id)
        .map(|(_, t, n)| *t / u32::try_from((*n).max(1)).unwrap_or(u32::MAX))
}

/// Print `ours` against `floor`: both per operation, and the ratio.
pub fn report(what: &str, ours: &str, floor: &str) {
    if let (Some(a), Some(b)) = (mean(ours), mean(floor)) {
        let ratio = a.as_secs_f64() / b.as_secs_f64();
        println!(
            "ratio {what:<28} ours {:>9.2} µs  floor {:>9.2} µs  {ratio:.2}x ({:.0}/s vs {:.0}/s)",
            a.as_secs_f64() * 1e6,
            b.as_secs_f64() * 1e6,
            1.0 / a.as_secs_f64(),
            1.0 / b.as_secs_f64(),
        );
    }
}
