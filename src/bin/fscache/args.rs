//! The command line: every subcommand and option, and the parsers of sizes
//! and durations.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use fscache::MaxSize;

use crate::stress;

const EXIT_STATUS: &str = "\
Exit status:
  0  success (also when the reader of the output went away); for `doctor`:
     a cache would be safe in DIR (warnings allowed)
  1  an error; for `doctor`: a cache would not be safe in DIR (a FAIL line:
     no working OFD locks, no directory can be made in it, or a
     RENAME_NOREPLACE that replaces)
  2  a usage error (bad arguments, sizes, durations)
  3  busy: another process holds the whole cache past --wait, or an entry
     to evict is in use
  4  not a cache: the directory is missing or has no cache.info (only
     `fscache init` creates one; never from `doctor`, which takes any
     directory)

Every command but `stress` takes the cache directory as DIR, or from
$FSCACHE_DIR (`doctor` any directory, else the current one). Sizes:
bytes, or a number with K, M, G, T (powers of 1024: 10M = 10MB = 10MiB;
fractions such as 1.5G are allowed). Durations: 45s, 90m, 1.5h, 30d, 1w
(and combinations such as 1h30m).";

/// Inspect, prune and stress an fscache (osbuild format version 1) cache.
#[derive(Debug, Parser)]
#[command(version, about, after_help = EXIT_STATUS)]
pub struct Cli {
    /// The application whose boot id tagged the entries: with it, `stats`
    /// and `ls` tell this boot's entries from earlier ones (without it they
    /// say "unknown"); `stress` tags its entries with it (default
    /// `fscache`).
    #[arg(long, global = true, value_name = "ID", value_parser = parse_app_id)]
    pub app_id: Option<String>,
    /// How long to wait while another process has the whole cache to
    /// itself (e.g. `5s`, `2m`; `0`: not at all).
    #[arg(long, global = true, default_value = "5s", value_name = "DURATION", value_parser = parse_duration)]
    pub wait: Duration,
    /// A remote tier, `s3://BUCKET[/PREFIX]`, for `remote`, and behind
    /// `get` (a local miss is fetched from it) and `put` (the entry is
    /// uploaded). Credentials, region and endpoint come from the `AWS_*`
    /// variables (`AWS_ENDPOINT_URL` for a server other than AWS).
    #[cfg(feature = "remote")]
    #[arg(long, global = true, env = "FSCACHE_REMOTE", value_name = "URL")]
    pub remote: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

/// The cache a command works on, and how it reports.
#[derive(Debug, clap::Args)]
pub struct Target {
    /// The cache directory.
    #[arg(env = "FSCACHE_DIR", value_name = "DIR")]
    pub dir: PathBuf,
    /// Print JSON (its schema is in the README) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// What `init` and `config` set in `cache.info`.
#[derive(Debug, clap::Args)]
pub struct Settings {
    /// The maximum size, or `unlimited` [default for a new cache: 5 GiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_max)]
    pub max_size: Option<MaxSize>,
    /// The low watermark eviction frees down to, in percent of the
    /// maximum (1-100) [default: 90].
    #[arg(long, value_name = "PCT", value_parser = clap::value_parser!(u8).range(1..=100))]
    pub low_watermark: Option<u8>,
    /// The free space to leave on the file system: a commit that would
    /// leave less evicts, or finds no room (`0`: no floor).
    #[arg(long, value_name = "SIZE", value_parser = parse_bytes)]
    pub min_free: Option<u64>,
}

impl Settings {
    /// The update these settings make to `cache.info`.
    pub fn update(&self) -> fscache::CacheInfo {
        fscache::CacheInfo {
            maximum_size: self.max_size,
            low_watermark_percent: self.low_watermark,
            min_free_bytes: self.min_free,
            ..fscache::CacheInfo::default()
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a cache (the only command that does; the others refuse a
    /// directory that is not a cache). On an existing cache it sets what
    /// is given and changes nothing else.
    Init {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        settings: Settings,
    },
    /// Show what the cache holds: entries, bytes accounted, recorded and
    /// measured, orphans.
    Stats {
        #[command(flatten)]
        target: Target,
        /// After showing them, set the counters (hits, misses...) back to
        /// zero.
        #[arg(long)]
        zero: bool,
    },
    /// List the entries with their size, last use and boot.
    Ls {
        #[command(flatten)]
        target: Target,
        /// The order: least recently used first (the order eviction
        /// follows), largest first, or by name.
        #[arg(long, value_enum, default_value_t = Sort::LastUse)]
        sort: Sort,
        /// Show at most this many entries.
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
    },
    /// Show or change the configuration (`cache.info`).
    Config {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        settings: Settings,
    },
    /// Remove orphans, entries unused for too long, then least recently
    /// used entries down to a size. Entries in use are kept.
    Gc {
        #[command(flatten)]
        target: Target,
        /// Remove least recently used entries until at most this much is
        /// accounted.
        #[arg(long, value_name = "SIZE", value_parser = parse_bytes)]
        max_size: Option<u64>,
        /// Remove entries unused for longer than this.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        max_age: Option<Duration>,
        /// Only say what would be removed; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Remove the named entries (entries in use are kept: exit status 3).
    #[command(override_usage = "fscache evict [OPTIONS] [DIR] -- <NAME>...")]
    Evict {
        #[command(flatten)]
        target: Target,
        /// Entry names, after `--` (so that DIR may come from
        /// $FSCACHE_DIR).
        #[arg(required = true, last = true, value_name = "NAME", value_parser = parse_name)]
        names: Vec<String>,
    },
    /// Copy a file or a directory tree into the cache as the entry NAME
    /// (sharing blocks where the file system can). A taken name is no
    /// error; an entry the cache will not keep (too large, no room) is.
    Put {
        #[command(flatten)]
        target: Target,
        /// The entry's name.
        #[arg(long, value_name = "NAME", value_parser = parse_name)]
        name: String,
        /// The file or directory to copy in (links in it are copied as
        /// links, never followed).
        #[arg(long, value_name = "PATH")]
        from: PathBuf,
        /// Record a digest of the entry, for `fscache verify`.
        #[arg(long)]
        digest: bool,
    },
    /// Copy the entry NAME out to DEST, a path that must not exist yet.
    Get {
        #[command(flatten)]
        target: Target,
        /// The entry's name.
        #[arg(long, value_name = "NAME", value_parser = parse_name)]
        name: String,
        /// Where to copy it (created; refused if it exists).
        #[arg(long, value_name = "DEST")]
        to: PathBuf,
    },
    /// Check entries against the digest recorded when they were committed
    /// (`put --digest`); all entries without names. Exit status 1 if one
    /// does not match.
    #[command(override_usage = "fscache verify [OPTIONS] [DIR] [-- <NAME>...]")]
    Verify {
        #[command(flatten)]
        target: Target,
        /// Entry names, after `--`.
        #[arg(last = true, value_name = "NAME", value_parser = parse_name)]
        names: Vec<String>,
    },
    /// Remove every entry that is not in use, and every orphan.
    Clear {
        #[command(flatten)]
        target: Target,
    },
    /// Remove what crashed processes left behind.
    Sweep {
        #[command(flatten)]
        target: Target,
    },
    /// Sweep, then recompute `cache.size` from the entries.
    Resync {
        #[command(flatten)]
        target: Target,
    },
    /// Probe what the file system under DIR does for a cache, and what
    /// the crate falls back to.
    ///
    /// Locks, atomic renames, unnamed files, block sharing, access times,
    /// room and sharing between users, tried in a temporary directory it
    /// makes in DIR and removes. DIR need not be a cache and never becomes
    /// one.
    Doctor {
        /// The directory [default: $FSCACHE_DIR, else the current one].
        #[arg(env = "FSCACHE_DIR", value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Print JSON (its schema is in the README) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print a completion script for SHELL (for example
    /// `fscache completions bash > /etc/bash_completion.d/fscache`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), for `man -l -` or `/usr/share/man/man1`.
    Man,
    /// Run many processes of random work against a cache and check every
    /// invariant at the end; exits non-zero on any violation.
    Stress(stress::Args),
    /// The remote tier (`--remote URL` or $FSCACHE_REMOTE): upload local
    /// entries, fetch entries, list and prune the remote.
    #[cfg(feature = "remote")]
    #[command(subcommand)]
    Remote(crate::remote::RemoteCommand),
    /// (internal) One stress worker process.
    #[command(hide = true)]
    StressWorker(stress::WorkerArgs),
}

/// The order of `fscache ls`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Sort {
    /// Least recently used first.
    LastUse,
    /// Largest first.
    Size,
    /// By name.
    Name,
}

/// Sizes in bytes: `512`, `64K`, `10M`, `10MB`, `10MiB`, `1.5G`. Every
/// unit is a power of 1024, as `du`, `ls -h` and systemd read them and as
/// the command prints them (`10M` shows as `10.0 MiB`, not `9.5 MiB`).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    parse_size::Config::new()
        .with_binary()
        .parse_size(s)
        .map_err(|e| {
            format!("{e} (a size is bytes, or a number with K, M, G or T, such as 10M or 1.5G)")
        })
}

/// A maximum: a size, or `unlimited`.
pub fn parse_max(s: &str) -> Result<MaxSize, String> {
    if s.trim() == "unlimited" {
        Ok(MaxSize::Unlimited)
    } else {
        parse_bytes(s).map(MaxSize::Bytes)
    }
}

/// `45s`, `90m`, `1.5h`, `30d`, `1w`, `1h30m`, or `0`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| {
        format!("{e} (a duration is a number with a unit, such as 45s, 1.5h, 30d or 1w)")
    })
}

/// An entry name the cache can hold.
pub fn parse_name(s: &str) -> Result<String, String> {
    fscache::validate_name(s)
        .map(str::to_owned)
        .map_err(|e| e.to_string())
}

/// An application id may not be empty: it keys the boot id.
fn parse_app_id(s: &str) -> Result<String, String> {
    if s.is_empty() {
        Err("the application id may not be empty: it keys the boot id that tags entries".into())
    } else {
        Ok(s.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_every_spelling_of_a_binary_unit_and_refuse_the_rest() {
        assert_eq!(parse_bytes("512"), Ok(512));
        assert_eq!(parse_bytes("64K"), Ok(64 << 10));
        for ten_mib in ["10M", "10MB", "10MiB", "10m", "10 MiB"] {
            assert_eq!(parse_bytes(ten_mib), Ok(10 << 20), "{ten_mib}");
        }
        assert_eq!(parse_bytes("1.5G"), Ok(3 << 29));
        assert_eq!(parse_max("unlimited"), Ok(MaxSize::Unlimited));
        assert_eq!(parse_max("2g"), Ok(MaxSize::Bytes(2 << 30)));
        for bad in ["", "-1", "1X", "ten", "99999999999T", "10G!"] {
            assert!(parse_bytes(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn durations_take_fractions_and_weeks_and_refuse_bare_numbers() {
        assert_eq!(parse_duration("45s"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86400)));
        assert_eq!(parse_duration("1w"), Ok(Duration::from_secs(7 * 86400)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        for bad in ["", "10", "-1s", "1x", "soon"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_empty_application_id_is_a_usage_error() {
        assert!(parse_app_id("").is_err());
        assert_eq!(parse_app_id("osbuild"), Ok("osbuild".into()));
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
