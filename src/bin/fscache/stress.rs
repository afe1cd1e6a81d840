//! `fscache stress`: many processes of random work on one cache, then a
//! check of every invariant.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fscache::stress::{check, Rng, Workload};
use fscache::{FsCache, MaxSize};

use crate::exit::Status;
use crate::output::Out;

/// What the stress commands fail with.
type Failed = Box<dyn std::error::Error>;

/// `writeln!` to `out`, with a failed write (a closed pipe, say) as the
/// boxed error the stress commands return.
macro_rules! say {
    ($out:expr, $($arg:tt)*) => {
        $out.say(format_args!($($arg)*))?
    };
}

/// Options of `fscache stress`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The cache directory (created if needed; use a scratch one).
    dir: PathBuf,
    /// Processes working at once.
    #[arg(long, default_value_t = 8)]
    procs: u32,
    /// How long they work.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// The cache's maximum size in bytes, kept small so eviction runs.
    #[arg(long, default_value_t = 1 << 20)]
    max_size: u64,
    /// How many distinct entry names the processes share.
    #[arg(long, default_value_t = 24)]
    names: u64,
    /// Largest payload in bytes.
    #[arg(long, default_value_t = 32 * 1024)]
    max_payload: u64,
    /// SIGKILL a random worker (and start a new one) this many times
    /// during the run, to leave crash debris for recovery to handle.
    #[arg(long, default_value_t = 0)]
    kills: u32,
    /// Seed of the run (workers derive theirs from it).
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Options of one worker process.
#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    dir: PathBuf,
    #[arg(long)]
    seed: u64,
    #[arg(long)]
    seconds: u64,
    #[arg(long)]
    names: u64,
    #[arg(long)]
    max_payload: u64,
}

/// One worker: run the workload until time is up, then print its tally
/// (`tally STORED TAKEN REFUSED HITS MISSES OTHER`) and any violations.
pub fn worker(app_id: &str, args: &WorkerArgs, out: &mut Out) -> Result<Status, Failed> {
    let cache = FsCache::open(app_id, &args.dir)?;
    let workload = Workload {
        seed: args.seed,
        names: args.names,
        max_payload: args.max_payload,
    };
    let t = workload.run(&cache, u64::MAX, Some(Duration::from_secs(args.seconds)))?;
    for v in &t.violations {
        say!(out, "violation {v}");
    }
    say!(
        out,
        "tally {} {} {} {} {} {}",
        t.stored,
        t.taken,
        t.refused,
        t.hits,
        t.misses,
        t.other
    );
    Ok(Status::Ok)
}

fn spawn(app_id: &str, args: &Args, seed: u64, seconds: u64) -> std::io::Result<Child> {
    Command::new(std::env::current_exe()?)
        .args(["--app-id", app_id, "stress-worker"])
        .arg(&args.dir)
        .args([
            "--seed",
            &seed.to_string(),
            "--seconds",
            &seconds.to_string(),
        ])
        .args([
            "--names",
            &args.names.to_string(),
            "--max-payload",
            &args.max_payload.to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()
}

/// Collect a finished worker's output into `totals` and `violations`.
fn reap(
    mut child: Child,
    totals: &mut [u64; 6],
    violations: &mut Vec<String>,
) -> std::io::Result<()> {
    let out = child.stdout.take().map(BufReader::new);
    for line in out.into_iter().flat_map(|r| r.lines()) {
        let line = line?;
        if let Some(v) = line.strip_prefix("violation ") {
            violations.push(v.to_owned());
        } else if let Some(t) = line.strip_prefix("tally ") {
            for (total, n) in totals.iter_mut().zip(t.split(' ')) {
                *total += n.parse::<u64>().unwrap_or(0);
            }
        }
    }
    let status = child.wait()?;
    if !status.success() {
        violations.push(format!("a worker failed: {status}"));
    }
    Ok(())
}

/// The parent: start the workers, kill some on the way, check at the end.
pub fn run(app_id: &str, args: &Args, out: &mut Out) -> Result<Status, Failed> {
    let cache = FsCache::open(app_id, &args.dir)?;
    cache.set_maximum_size(MaxSize::Bytes(args.max_size))?;
    say!(
        out,
        "stress: {} processes x {}s on {} (maximum {} bytes, {} names, {} kills)",
        args.procs,
        args.seconds,
        args.dir.display(),
        args.max_size,
        args.names,
        args.kills
    );
    let start = Instant::now();
    let mut rng = Rng::new(args.seed);
    let mut workers: Vec<Child> = (0..args.procs)
        .map(|_| spawn(app_id, args, rng.next_u64(), args.seconds))
        .collect::<Result<_, _>>()?;
    let mut totals = [0u64; 6];
    let mut violations = Vec::new();
    let mut killed = 0;
    for k in 0..args.kills {
        // Pace the kills evenly over the run; this is a load generator,
        // not a test waiting for a process.
        let at = Duration::from_secs(args.seconds) * (k + 1) / (args.kills + 1);
        std::thread::sleep(at.saturating_sub(start.elapsed()));
        let victim = rng.below(workers.len() as u64) as usize;
        let mut child = workers.swap_remove(victim);
        let _ = child.kill();
        let _ = child.wait();
        killed += 1;
        let left = args
            .seconds
            .saturating_sub(start.elapsed().as_secs())
            .max(1);
        workers.push(spawn(app_id, args, rng.next_u64(), left)?);
    }
    for child in workers {
        reap(child, &mut totals, &mut violations)?;
    }
    let [stored, taken, refused, hits, misses, other] = totals;
    say!(
        out,
        "commits: {stored} stored, {taken} name-taken, {refused} refused"
    );
    say!(out, "loads:   {hits} hits (all verified), {misses} misses; {other} maintenance/staging operations");
    say!(out, "killed:  {killed} workers");
    violations.extend(check(&cache, killed == 0)?);
    let stats = cache.stats()?;
    say!(
        out,
        "after:   {} entries, {} bytes accounted, {} measured, maximum {:?}",
        stats.entries,
        stats.accounted_bytes.unwrap_or(0),
        stats.measured_bytes,
        stats.maximum
    );
    if violations.is_empty() {
        say!(
            out,
            "ok: no violation in {:.1}s",
            start.elapsed().as_secs_f64()
        );
        Ok(Status::Ok)
    } else {
        for v in &violations {
            say!(out, "VIOLATION: {v}");
        }
        Ok(Status::Error)
    }
}
