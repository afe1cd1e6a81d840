//! The commands that remove: `gc`, `evict`, `clear`, `sweep`, `resync`.
//! Each is safe next to live users: an entry in use is kept.

use std::time::Duration;

use fscache::{Eviction, GcOptions, Reason};
use serde_json::{json, Value};

use crate::args::Target;
use crate::exit::{Failure, Status};
use crate::open::Opener;
use crate::output::{
    bytes, count, duration, path_json, sweep_json, unremovable_json, warn_lockless,
    warn_unremovable, Out,
};
use crate::progress;

/// `fscache gc`.
pub fn gc(
    opener: &Opener,
    target: &Target,
    max_size: Option<u64>,
    max_age: Option<Duration>,
    dry_run: bool,
    out: &mut Out,
) -> Result<(), Failure> {
    let cache = opener.open(&target.dir)?;
    let options = GcOptions {
        max_size,
        max_age,
        dry_run,
    };
    let report = progress::while_running("collecting garbage", || cache.gc(&options))?;
    warn_unremovable(&report.sweep.unremovable);
    warn_unremovable(&report.unremovable);
    warn_lockless(&report.sweep.lockless);
    let orphans = if dry_run {
        report.orphans_found
    } else {
        report.sweep.orphan_dirs + report.sweep.orphan_files
    };
    if target.json {
        let removed: Vec<Value> = report
            .removed
            .iter()
            .map(|r| {
                json!({
                    "name": r.name,
                    "size_bytes": r.size,
                    "reason": match r.reason {
                        Reason::Age => "age",
                        Reason::Size => "size",
                    },
                })
            })
            .collect();
        return out.json(&json!({
            "path": path_json(cache.path()),
            "dry_run": dry_run,
            "removed": removed,
            "freed_bytes": report.freed,
            "in_use": report.in_use,
            "denied": report.denied,
            "orphans": orphans,
            "sweep": if dry_run { Value::Null } else { sweep_json(&report.sweep) },
            "unremovable": unremovable_json(&report.unremovable),
        }));
    }
    let verb = if dry_run { "would remove" } else { "removed" };
    for r in &report.removed {
        let why = match (r.reason, max_age, max_size) {
            (Reason::Age, Some(age), _) => format!("unused for more than {}", duration(age)),
            (Reason::Size, _, Some(size)) => {
                format!("least recently used while above {}", bytes(size))
            }
            (Reason::Age, ..) => "unused for too long".into(),
            (Reason::Size, ..) => "least recently used".into(),
        };
        writeln!(out, "{verb} {} ({}, {why})", r.name, bytes(r.size))?;
    }
    let orphans_verb = if dry_run { "to sweep" } else { "swept" };
    writeln!(
        out,
        "{verb} {}, {}; {} in use and {} another user's kept; {} {orphans_verb}",
        count(report.removed.len() as u64, "entry", "entries"),
        bytes(report.freed),
        report.in_use,
        report.denied,
        count(orphans, "orphan", "orphans"),
    )?;
    Ok(())
}

/// `fscache evict`: exit status 3 if an entry was in use, 1 if one was
/// not ours to remove.
pub fn evict(
    opener: &Opener,
    target: &Target,
    names: &[String],
    out: &mut Out,
) -> Result<Status, Failure> {
    let cache = opener.open(&target.dir)?;
    let mut status = Status::Ok;
    let mut results = Vec::new();
    for name in names {
        let (outcome, size, said) = match cache.evict(name)? {
            Eviction::Removed { size } => {
                ("removed", Some(size), format!("removed ({})", bytes(size)))
            }
            Eviction::NotFound => ("not_found", None, "not found".into()),
            Eviction::InUse => {
                if status == Status::Ok {
                    status = Status::Busy;
                }
                ("in_use", None, "in use, kept".into())
            }
            Eviction::Denied => {
                status = Status::Error;
                (
                    "denied",
                    None,
                    "another user's, and its modes keep us from removing it: kept".into(),
                )
            }
            other => {
                status = Status::Error;
                ("other", None, format!("{other:?}"))
            }
        };
        if target.json {
            results.push(json!({ "name": name, "outcome": outcome, "size_bytes": size }));
        } else {
            writeln!(out, "{name}: {said}")?;
        }
    }
    if target.json {
        out.json(&json!({ "path": path_json(cache.path()), "results": results }))?;
    }
    Ok(status)
}

/// `fscache clear`.
pub fn clear(opener: &Opener, target: &Target, out: &mut Out) -> Result<(), Failure> {
    let cache = opener.open(&target.dir)?;
    let r = progress::while_running("clearing", || cache.clear())?;
    warn_unremovable(&r.sweep.unremovable);
    warn_unremovable(&r.unremovable);
    warn_lockless(&r.sweep.lockless);
    if target.json {
        return out.json(&json!({
            "path": path_json(cache.path()),
            "removed": r.removed,
            "freed_bytes": r.freed,
            "in_use": r.in_use,
            "denied": r.denied,
            "sweep": sweep_json(&r.sweep),
            "unremovable": unremovable_json(&r.unremovable),
        }));
    }
    writeln!(
        out,
        "removed {}, {}; {} in use and {} another user's kept; {} swept",
        count(r.removed, "entry", "entries"),
        bytes(r.freed),
        r.in_use,
        r.denied,
        count(
            r.sweep.orphan_dirs + r.sweep.orphan_files,
            "orphan",
            "orphans"
        ),
    )?;
    Ok(())
}

/// `fscache sweep`.
pub fn sweep(opener: &Opener, target: &Target, out: &mut Out) -> Result<(), Failure> {
    let cache = opener.open(&target.dir)?;
    let r = cache.sweep_orphans()?;
    warn_unremovable(&r.unremovable);
    warn_lockless(&r.lockless);
    if target.json {
        let mut doc = sweep_json(&r);
        doc["path"] = path_json(cache.path());
        return out.json(&doc);
    }
    writeln!(
        out,
        "removed {} and {} ({} from earlier boots), {}; gave back {}; {} in progress and {} another user's kept",
        count(r.orphan_dirs, "orphan directory", "orphan directories"),
        count(r.orphan_files, "temporary file", "temporary files"),
        r.from_previous_boot,
        count(r.invalid_entries, "invalid entry", "invalid entries"),
        bytes(r.bytes_given_back),
        r.live,
        r.denied
    )?;
    Ok(())
}

/// `fscache resync`.
pub fn resync(opener: &Opener, target: &Target, out: &mut Out) -> Result<(), Failure> {
    let cache = opener.open(&target.dir)?;
    let r = progress::while_running("recounting", || cache.resync())?;
    warn_unremovable(&r.sweep.unremovable);
    warn_lockless(&r.sweep.lockless);
    if target.json {
        return out.json(&json!({
            "path": path_json(cache.path()),
            "before_bytes": r.before,
            "after_bytes": r.after,
            "sweep": sweep_json(&r.sweep),
        }));
    }
    let before = r.before.map_or("no size".into(), |b| format!("{b} bytes"));
    writeln!(
        out,
        "cache.size: {before} -> {} bytes ({})",
        r.after,
        bytes(r.after)
    )?;
    Ok(())
}
