//! What the command prints: a writer that ends quietly when its reader
//! goes away, human units for people, and the pieces of the JSON schema
//! (see the README) that several commands share.

use std::fmt;
use std::io::{self, Write};
use std::path::Path;
use std::time::{Duration, SystemTime};

use fscache::{MaxSize, SweepReport, Unremovable};
use serde_json::{json, Value};

use crate::exit::Failure;

/// Standard output. Every write reports a closed pipe as
/// [`Failure::Closed`], which ends the command quietly: `println!` would
/// panic there instead.
pub struct Out {
    stdout: io::StdoutLock<'static>,
}

impl Out {
    pub fn new() -> Out {
        Out {
            stdout: io::stdout().lock(),
        }
    }

    /// What `write!` and `writeln!` call.
    pub fn write_fmt(&mut self, args: fmt::Arguments<'_>) -> Result<(), Failure> {
        self.stdout.write_fmt(args).map_err(Failure::from_write)
    }

    /// One JSON document, pretty-printed, and a newline.
    pub fn json(&mut self, value: &Value) -> Result<(), Failure> {
        let text = serde_json::to_string_pretty(value).map_err(|e| Failure::Write(e.into()))?;
        writeln!(self, "{text}")
    }

    /// One line, failing with the plain `io::Error` (for `fscache stress`,
    /// whose errors are boxed; [`Failure::from_boxed`] still tells a
    /// closed pipe).
    pub fn say(&mut self, args: fmt::Arguments<'_>) -> io::Result<()> {
        self.stdout.write_fmt(args)?;
        self.stdout.write_all(b"\n")
    }

    /// Bytes as they are (a generated completion script or manual page).
    pub fn write_bytes(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        self.stdout.write_all(bytes).map_err(Failure::from_write)
    }

    pub fn flush(&mut self) -> Result<(), Failure> {
        self.stdout.flush().map_err(Failure::from_write)
    }
}

/// `0 B`, `1023 B`, `1.0 KiB`, `1.5 GiB`.
pub fn bytes(n: u64) -> String {
    bytesize::ByteSize::b(n).display().iec().to_string()
}

/// `1 entry`, `2 entries`.
pub fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// A maximum: `10.0 GiB` or `unlimited`.
pub fn max(m: MaxSize) -> String {
    match m {
        MaxSize::Bytes(n) => bytes(n),
        MaxSize::Unlimited => "unlimited".into(),
    }
}

/// How long ago `t` was, at `now`: `now`, `5 seconds ago`, `3 days ago`;
/// `-` for no time.
pub fn ago(t: Option<SystemTime>, now: SystemTime) -> String {
    match t.map(|t| now.duration_since(t)) {
        None => "-".into(),
        Some(Ok(d)) => timeago::Formatter::new().convert(d),
        Some(Err(_)) => "in the future".into(),
    }
}

/// A duration the user gave, as they would write it: `30days`, `1h 30m`.
pub fn duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// A point in time in JSON: RFC 3339 in UTC to the second
/// (`"2024-05-01T12:00:00Z"`, what `jq`'s `fromdate` reads), or `null`.
pub fn time_json(t: Option<SystemTime>) -> Value {
    t.map_or(Value::Null, |t| {
        Value::from(humantime::format_rfc3339_seconds(t).to_string())
    })
}

/// A maximum in JSON: its bytes, or `null` for unlimited.
pub fn max_json(m: MaxSize) -> Value {
    match m {
        MaxSize::Bytes(n) => Value::from(n),
        MaxSize::Unlimited => Value::Null,
    }
}

/// A path in JSON (not UTF-8: with U+FFFD where the bytes are not).
pub fn path_json(p: &Path) -> Value {
    Value::from(p.to_string_lossy().into_owned())
}

/// What could not be removed, in JSON.
pub fn unremovable_json(stuck: &[Unremovable]) -> Value {
    stuck
        .iter()
        .map(|u| {
            json!({
                "entry": path_json(&u.entry),
                "path": path_json(&u.path),
                "op": u.op.to_string(),
                "errno": u.errno,
                "error": u.errno.map(|e| io::Error::from_raw_os_error(e).to_string()),
            })
        })
        .collect()
}

/// A sweep, in JSON.
pub fn sweep_json(r: &SweepReport) -> Value {
    json!({
        "orphan_dirs": r.orphan_dirs,
        "orphan_files": r.orphan_files,
        "orphans_from_earlier_boots": r.from_previous_boot,
        "invalid_entries": r.invalid_entries,
        "given_back_bytes": r.bytes_given_back,
        "in_progress": r.live,
        "denied": r.denied,
        "unremovable": unremovable_json(&r.unremovable),
        "lockless": r.lockless.iter().map(|p| path_json(p)).collect::<Vec<_>>(),
    })
}

/// Say on stderr what stays behind and why: another user's files, say,
/// stay until someone with the rights to remove them sweeps.
pub fn warn_unremovable(stuck: &[Unremovable]) {
    for stuck in stuck {
        crate::exit::warn_line(&format!(
            "warning: `{}` stays: {stuck}",
            stuck.entry.display()
        ));
    }
}

/// Say on stderr which anonymous directories without a lock the sweep
/// left for a person to look at.
pub fn warn_lockless(lockless: &[std::path::PathBuf]) {
    for dir in lockless {
        crate::exit::warn_line(&format!(
            "warning: `{}` has no lock file but is not empty: no protocol leaves that, so it is left for you to look at",
            dir.display()
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn sizes_and_times_read_as_people_write_them() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1 << 20), "1.0 MiB");
        assert_eq!(bytes(3 << 29), "1.5 GiB");
        assert_eq!(max(MaxSize::Unlimited), "unlimited");
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let days = now - Duration::from_secs(3 * 86400 + 100);
        assert_eq!(ago(Some(days), now), "3 days ago");
        assert_eq!(ago(Some(now), now), "now");
        assert_eq!(ago(None, now), "-");
        assert_eq!(
            ago(Some(now + Duration::from_secs(60)), now),
            "in the future"
        );
        assert_eq!(duration(Duration::from_secs(30 * 86400)), "30days");
        assert_eq!(count(1, "entry", "entries"), "1 entry");
        assert_eq!(count(0, "entry", "entries"), "0 entries");
    }

    #[test]
    fn json_values_keep_one_type_each() {
        assert_eq!(
            time_json(Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000))),
            json!("2023-11-14T22:13:20Z")
        );
        assert_eq!(time_json(None), Value::Null);
        assert_eq!(max_json(MaxSize::Bytes(7)), json!(7));
        assert_eq!(max_json(MaxSize::Unlimited), Value::Null);
    }
}
