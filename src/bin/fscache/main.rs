//! `fscache`: inspect, prune and stress a cache directory.

mod stress;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{Parser, Subcommand};
use fscache::{CacheInfo, Eviction, GcOptions, MaxSize, OpenOptions, Wait};

/// Inspect, prune and stress an fscache (osbuild format version 1) cache.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// The application id whose boot id tags new entries.
    #[arg(long, global = true, default_value = "fscache")]
    app_id: String,
    /// How long to wait while another process has the whole cache to
    /// itself (e.g. `5s`, `2m`; `0` not at all).
    #[arg(long, global = true, default_value = "5s", value_parser = parse_age)]
    wait: Duration,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a cache (the only command that does; the others refuse a
    /// directory that is not a cache).
    Init {
        /// The cache directory (created with its parents if missing).
        dir: PathBuf,
        /// The maximum size: bytes with an optional K/M/G/T suffix, or
        /// `unlimited`.
        #[arg(long, value_parser = parse_max)]
        max_size: Option<MaxSize>,
        /// The low watermark eviction frees down to, in percent of the
        /// maximum (1-100).
        #[arg(long, value_parser = clap::value_parser!(u8).range(1..=100))]
        low_watermark: Option<u8>,
    },
    /// Show what the cache holds.
    Stats {
        /// The cache directory.
        dir: PathBuf,
    },
    /// Show or change the configuration (`cache.info`).
    Config {
        /// The cache directory.
        dir: PathBuf,
        /// Set the maximum size: bytes with an optional K/M/G/T suffix, or
        /// `unlimited`.
        #[arg(long, value_parser = parse_max)]
        max_size: Option<MaxSize>,
        /// Set the low watermark eviction frees down to, in percent of the
        /// maximum (1-100).
        #[arg(long, value_parser = clap::value_parser!(u8).range(1..=100))]
        low_watermark: Option<u8>,
    },
    /// Remove orphans, old entries and least recently used entries.
    Gc {
        /// The cache directory.
        dir: PathBuf,
        /// Remove least recently used entries until at most this much is
        /// accounted (K/M/G/T suffixes allowed).
        #[arg(long, value_parser = parse_bytes)]
        max_size: Option<u64>,
        /// Remove entries unused for longer than this (e.g. `30d`, `12h`,
        /// `90m`, `45s`).
        #[arg(long, value_parser = parse_age)]
        max_age: Option<Duration>,
        /// Only say what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Remove the named entries (those in use are skipped).
    Evict {
        /// The cache directory.
        dir: PathBuf,
        /// Entry names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove every entry that is not in use.
    Clear {
        /// The cache directory.
        dir: PathBuf,
    },
    /// Remove what crashed processes left behind.
    Sweep {
        /// The cache directory.
        dir: PathBuf,
    },
    /// Recompute `cache.size` from the entries.
    Resync {
        /// The cache directory.
        dir: PathBuf,
    },
    /// Run many processes of random work against a cache and check every
    /// invariant at the end; exits non-zero on any violation.
    Stress(stress::Args),
    /// (internal) One stress worker process.
    #[command(hide = true)]
    StressWorker(stress::WorkerArgs),
}

/// `512`, `64K`, `10M`, `2G`, `1T` (powers of 1024).
fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, shift) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(format!("unknown size suffix in {s:?}")),
            };
            (&s[..i], shift)
        }
        _ => (s, 0),
    };
    let n: u64 = digits.parse().map_err(|_| format!("not a size: {s:?}"))?;
    n.checked_shl(shift)
        .filter(|v| v >> shift == n)
        .ok_or_else(|| format!("size too large: {s:?}"))
}

fn parse_max(s: &str) -> Result<MaxSize, String> {
    if s == "unlimited" {
        Ok(MaxSize::Unlimited)
    } else {
        parse_bytes(s).map(MaxSize::Bytes)
    }
}

/// `45s`, `90m`, `12h`, `30d`, or plain seconds.
fn parse_age(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (digits, unit) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&s[..i], c),
        _ => (s, 's'),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("not a duration: {s:?}"))?;
    let secs = match unit {
        's' => Some(n),
        'm' => n.checked_mul(60),
        'h' => n.checked_mul(3600),
        'd' => n.checked_mul(86400),
        _ => return Err(format!("unknown duration unit in {s:?}")),
    };
    secs.map(Duration::from_secs)
        .ok_or_else(|| format!("duration too long: {s:?}"))
}

fn age(t: Option<SystemTime>) -> String {
    match t.and_then(|t| SystemTime::now().duration_since(t).ok()) {
        Some(d) => format!("{}s ago", d.as_secs()),
        None => "-".into(),
    }
}

fn run(cli: Cli) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let wait = if cli.wait.is_zero() {
        Wait::Never
    } else {
        Wait::Timeout(cli.wait)
    };
    let open = |dir: &PathBuf| {
        OpenOptions::new()
            .create(false)
            .wait(wait)
            .open(&cli.app_id, dir)
    };
    match &cli.command {
        Command::Init {
            dir,
            max_size,
            low_watermark,
        } => {
            let cache = OpenOptions::new().wait(wait).open(&cli.app_id, dir)?;
            let info = cache.update_info(&CacheInfo {
                maximum_size: *max_size,
                low_watermark_percent: *low_watermark,
                ..CacheInfo::default()
            })?;
            println!(
                "{}: maximum size {:?}",
                dir.display(),
                info.effective_maximum()
            );
        }
        Command::Stats { dir } => {
            let s = open(dir)?.stats()?;
            let accounted = s
                .accounted_bytes
                .map_or("corrupt".into(), |b| b.to_string());
            println!("entries:          {}", s.entries);
            println!("bytes accounted:  {accounted}");
            println!("bytes recorded:   {}", s.recorded_bytes);
            println!("bytes measured:   {}", s.measured_bytes);
            println!("maximum:          {:?}", s.maximum);
            println!(
                "orphans:          {} ({} from a previous boot)",
                s.orphans, s.orphans_from_previous_boot
            );
            println!("in progress:      {}", s.live_anonymous);
            println!("invalid entries:  {}", s.invalid_entries);
            println!("previous boots:   {} entries", s.entries_from_previous_boot);
            println!("oldest use:       {}", age(s.oldest_use));
            println!("newest use:       {}", age(s.newest_use));
        }
        Command::Config {
            dir,
            max_size,
            low_watermark,
        } => {
            let cache = open(dir)?;
            let info = if max_size.is_some() || low_watermark.is_some() {
                cache.update_info(&CacheInfo {
                    maximum_size: *max_size,
                    low_watermark_percent: *low_watermark,
                    ..CacheInfo::default()
                })?
            } else {
                cache.info()
            };
            println!("version:        {:?}", info.version);
            println!("maximum size:   {:?}", info.effective_maximum());
            println!("low watermark:  {:?}", info.low_watermark());
            println!("boot id:        {:?}", info.creation_boot_id);
        }
        Command::Gc {
            dir,
            max_size,
            max_age,
            dry_run,
        } => {
            let report = open(dir)?.gc(&GcOptions {
                max_size: *max_size,
                max_age: *max_age,
                dry_run: *dry_run,
            })?;
            let verb = if *dry_run { "would remove" } else { "removed" };
            for r in &report.removed {
                println!("{verb} {} ({} bytes, {:?})", r.name, r.size, r.reason);
            }
            println!(
                "{verb} {} entries, {} bytes; {} in use; {} denied; {} orphans",
                report.removed.len(),
                report.freed,
                report.in_use,
                report.denied,
                if *dry_run {
                    report.orphans_found
                } else {
                    report.sweep.orphan_dirs + report.sweep.orphan_files
                }
            );
            warn_unremovable(&report.sweep.unremovable);
            warn_unremovable(&report.unremovable);
        }
        Command::Evict { dir, names } => {
            let cache = open(dir)?;
            let mut failed = false;
            for name in names {
                match cache.evict(name)? {
                    Eviction::Removed { size } => println!("{name}: removed ({size} bytes)"),
                    Eviction::InUse => {
                        println!("{name}: in use, kept");
                        failed = true;
                    }
                    Eviction::Denied => {
                        println!("{name}: not ours to remove (permissions), kept");
                        failed = true;
                    }
                    Eviction::NotFound => println!("{name}: not found"),
                    other => {
                        println!("{name}: {other:?}");
                        failed = true;
                    }
                }
            }
            if failed {
                return Ok(ExitCode::from(1));
            }
        }
        Command::Clear { dir } => {
            let r = open(dir)?.clear()?;
            println!(
                "removed {} entries, {} bytes; {} in use; {} denied",
                r.removed, r.freed, r.in_use, r.denied
            );
            warn_unremovable(&r.sweep.unremovable);
            warn_unremovable(&r.unremovable);
        }
        Command::Sweep { dir } => {
            let r = open(dir)?.sweep_orphans()?;
            println!(
                "removed {} orphan directories, {} temporary files ({} from previous boots), {} invalid entries; gave back {} bytes; {} in progress; {} denied",
                r.orphan_dirs, r.orphan_files, r.from_previous_boot, r.invalid_entries, r.bytes_given_back, r.live, r.denied
            );
            warn_unremovable(&r.unremovable);
        }
        Command::Resync { dir } => {
            let r = open(dir)?.resync()?;
            let before = r.before.map_or("corrupt".into(), |b| b.to_string());
            println!("cache.size: {before} -> {}", r.after);
            warn_unremovable(&r.sweep.unremovable);
        }
        Command::Stress(args) => return stress::run(&cli.app_id, args),
        Command::StressWorker(args) => return stress::worker(&cli.app_id, args),
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("fscache: {e}");
            let mut source = e.source();
            while let Some(s) = source {
                eprintln!("  caused by: {s}");
                source = s.source();
            }
            ExitCode::from(2)
        }
    }
}

/// What could not be removed (another user's files, say) stays until
/// someone with the rights to remove it sweeps; say which, and why.
fn warn_unremovable(stuck: &[fscache::Unremovable]) {
    for stuck in stuck {
        eprintln!("warning: `{}` stays: {stuck}", stuck.entry.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_ages_parse_with_their_suffixes_and_refuse_overflow() {
        assert_eq!(parse_bytes("512"), Ok(512));
        assert_eq!(parse_bytes("64K"), Ok(64 << 10));
        assert_eq!(parse_bytes("2g"), Ok(2 << 30));
        assert!(parse_bytes("99999999999T").is_err());
        assert!(parse_bytes("1X").is_err());
        assert!(parse_bytes("-1").is_err());
        assert_eq!(parse_max("unlimited"), Ok(MaxSize::Unlimited));
        assert_eq!(parse_age("90m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_age("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_age("10"), Ok(Duration::from_secs(10)));
        assert!(parse_age("1y").is_err());
    }
}
