//! `fscache remote push|pull|ls|gc`, and the remote that `--remote URL`
//! (or `$FSCACHE_REMOTE`) puts behind `get` and `put`.
//!
//! The remote is `s3://BUCKET[/PREFIX]`; credentials, region and endpoint
//! come from the usual `AWS_*` variables (`AWS_ENDPOINT_URL` for a server
//! other than AWS). Nothing printed ever carries a credential: messages
//! name the endpoint without user information, and the variables are
//! read by `object_store`, never echoed.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, SystemTime};

use clap::Subcommand;
use fscache::remote::{Fetch, Remote, RemoteEntry, TieredCache, Upload};
use serde_json::{json, Value};

use crate::args::{parse_duration, parse_name, Target};
use crate::exit::{warn_line, Failure, Status};
use crate::open::Opener;
use crate::output::{ago, bytes, count, duration, path_json, time_json, Out};
use crate::progress;

/// `fscache remote ...`.
#[derive(Debug, Subcommand)]
pub enum RemoteCommand {
    /// Upload every local entry that the remote lacks.
    Push {
        #[command(flatten)]
        target: Target,
    },
    /// Fetch the named entries from the remote into the local cache.
    #[command(override_usage = "fscache remote pull [OPTIONS] [DIR] -- <NAME>...")]
    Pull {
        #[command(flatten)]
        target: Target,
        /// Entry names, after `--`.
        #[arg(required = true, last = true, value_name = "NAME", value_parser = parse_name)]
        names: Vec<String>,
    },
    /// List the remote's entries with their size and age.
    Ls {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Delete the remote's entries older than --max-age (by when they
    /// were uploaded, from the listing), and staging objects of uploads
    /// that died older than that.
    Gc {
        /// Delete entries uploaded longer ago than this.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        max_age: Duration,
        /// Only say what would be deleted; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// The remote of `--remote`/`$FSCACHE_REMOTE`, or why there is none.
pub fn open_remote(url: Option<&str>) -> Result<Remote, Failure> {
    let Some(url) = url else {
        return Err(Failure::Cache(fscache::Error::InvalidConfig {
            key: "remote",
            reason: "no remote: give --remote s3://BUCKET[/PREFIX] or set $FSCACHE_REMOTE",
        }));
    };
    Ok(Remote::from_url(url)?)
}

fn upload_word(u: &Upload) -> &'static str {
    match u {
        Upload::Uploaded { .. } => "uploaded",
        Upload::AlreadyThere => "already_there",
        _ => "deferred",
    }
}

/// `--remote` behind `put`: the upload's outcome as JSON, and a warning
/// when it was deferred (the local commit stands, so the status does too).
pub fn upload_json(upload: Option<&Upload>) -> Value {
    match upload {
        None => Value::Null,
        Some(u) => {
            if let Upload::Deferred(e) = u {
                warn_line(&format!("warning: upload deferred (the local entry stands; `fscache remote push` retries): {}", chain(e)));
            }
            json!({
                "outcome": upload_word(u),
                "bytes": match u { Upload::Uploaded { bytes } => Some(*bytes), _ => None },
                "error": match u { Upload::Deferred(e) => Some(chain(e)), _ => None },
            })
        }
    }
}

/// An error and its causes on one line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}

/// Run `fscache remote ...`.
pub fn run(
    opener: &Opener,
    url: Option<&str>,
    command: &RemoteCommand,
    out: &mut Out,
) -> Result<Status, Failure> {
    if url.is_none() {
        warn_line("fscache: no remote: give --remote s3://BUCKET[/PREFIX] or set $FSCACHE_REMOTE");
        return Ok(Status::Usage);
    }
    let remote = open_remote(url)?;
    match command {
        RemoteCommand::Push { target } => push(opener, remote, target, out),
        RemoteCommand::Pull { target, names } => pull(opener, remote, target, names, out),
        RemoteCommand::Ls { json } => ls(&remote, *json, out),
        RemoteCommand::Gc {
            max_age,
            dry_run,
            json,
        } => gc(&remote, *max_age, *dry_run, *json, out),
    }
}

fn push(
    opener: &Opener,
    remote: Remote,
    target: &Target,
    out: &mut Out,
) -> Result<Status, Failure> {
    let cache = opener.open(&target.dir)?;
    let there: HashSet<String> = progress::while_running("listing the remote", || remote.list())?
        .into_iter()
        .map(|e| e.name)
        .collect();
    let mut names: Vec<String> = cache
        .entries()?
        .entries
        .into_iter()
        .map(|e| e.name)
        .filter(|n| !there.contains(n))
        .collect();
    names.sort();
    let tiered = TieredCache::new(cache, remote);
    let mut status = Status::Ok;
    let mut results = Vec::new();
    for name in &names {
        let Some(upload) = progress::while_running(name, || tiered.push(name))? else {
            continue; // evicted meanwhile
        };
        if let Upload::Deferred(e) = &upload {
            status = Status::Error;
            if !target.json {
                warn_line(&format!("fscache: {name}: {}", chain(e)));
            }
        } else if !target.json {
            match &upload {
                Upload::Uploaded { bytes: n } => writeln!(out, "{name}: uploaded ({})", bytes(*n))?,
                _ => writeln!(out, "{name}: already on the remote")?,
            }
        }
        results.push(json!({
            "name": name,
            "outcome": upload_word(&upload),
            "error": match &upload { Upload::Deferred(e) => Some(chain(e)), _ => None },
        }));
    }
    if target.json {
        out.json(&json!({
            "path": path_json(tiered.local().path()),
            "remote": tiered.remote().endpoint(),
            "results": results,
        }))?;
    } else if names.is_empty() {
        writeln!(out, "nothing to push: the remote has every local entry")?;
    }
    Ok(status)
}

fn pull(
    opener: &Opener,
    remote: Remote,
    target: &Target,
    names: &[String],
    out: &mut Out,
) -> Result<Status, Failure> {
    let tiered = TieredCache::new(opener.open(&target.dir)?, remote);
    let mut status = Status::Ok;
    let mut results = Vec::new();
    for name in names {
        let got = progress::while_running(name, || tiered.get(name))?;
        let (word, said, size) = match &got {
            Fetch::Local(_) => ("local", "already in the local cache".to_owned(), None),
            Fetch::Remote { archive, .. } => (
                "downloaded",
                format!("downloaded ({})", bytes(archive.bytes)),
                Some(archive.bytes),
            ),
            Fetch::Miss => ("miss", "not on the remote".to_owned(), None),
            Fetch::Failed(e) => ("failed", chain(e), None),
            Fetch::Uncached { outcome, .. } => {
                ("not_kept", format!("downloaded, not kept: {outcome}"), None)
            }
            _ => ("unknown", String::new(), None),
        };
        if !matches!(got, Fetch::Local(_) | Fetch::Remote { .. }) {
            status = Status::Error;
        }
        if target.json {
            results.push(json!({ "name": name, "outcome": word, "bytes": size, "message": said }));
        } else if status == Status::Error && matches!(got, Fetch::Failed(_)) {
            warn_line(&format!("fscache: {name}: {said}"));
        } else {
            writeln!(out, "{name}: {said}")?;
        }
    }
    if target.json {
        out.json(&json!({
            "path": path_json(tiered.local().path()),
            "remote": tiered.remote().endpoint(),
            "results": results,
        }))?;
    }
    Ok(status)
}

fn entry_json(e: &RemoteEntry, now: SystemTime) -> Value {
    json!({
        "name": e.name,
        "key": e.key,
        "bytes": e.bytes,
        "last_modified": time_json(Some(e.last_modified)),
        "age_seconds": now.duration_since(e.last_modified).map(|d| d.as_secs()).unwrap_or(0),
    })
}

fn ls(remote: &Remote, as_json: bool, out: &mut Out) -> Result<Status, Failure> {
    let mut entries = progress::while_running("listing the remote", || remote.list())?;
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    let now = SystemTime::now();
    if as_json {
        out.json(&json!({
            "remote": remote.endpoint(),
            "entries": entries.iter().map(|e| entry_json(e, now)).collect::<Vec<_>>(),
        }))?;
        return Ok(Status::Ok);
    }
    let width = entries.iter().map(|e| e.name.len()).max().unwrap_or(0);
    for e in &entries {
        writeln!(
            out,
            "{:width$}  {:>10}  {}",
            e.name,
            bytes(e.bytes),
            ago(Some(e.last_modified), now)
        )?;
    }
    let total: u64 = entries.iter().map(|e| e.bytes).sum();
    writeln!(
        out,
        "{} on {}, {}",
        count(entries.len() as u64, "entry", "entries"),
        remote.endpoint(),
        bytes(total)
    )?;
    Ok(Status::Ok)
}

fn gc(
    remote: &Remote,
    max_age: Duration,
    dry_run: bool,
    as_json: bool,
    out: &mut Out,
) -> Result<Status, Failure> {
    let now = SystemTime::now();
    let older = |entries: Vec<RemoteEntry>| -> Vec<RemoteEntry> {
        entries
            .into_iter()
            .filter(|e| {
                now.duration_since(e.last_modified)
                    .is_ok_and(|age| age > max_age)
            })
            .collect()
    };
    let mut old = older(progress::while_running("listing the remote", || {
        remote.list()
    })?);
    old.sort_by(|a, b| a.name.cmp(&b.name));
    let mut removed = Vec::new();
    for e in &old {
        if dry_run || remote.delete(&e.name)? {
            removed.push(e);
        }
    }
    // Staging objects a dead upload left (each upload deletes its own).
    let mut stale = older(remote.staging()?);
    stale.sort_by(|a, b| a.key.cmp(&b.key));
    if !dry_run {
        for e in &stale {
            remote.delete_staging(e)?;
        }
    }
    let freed: u64 = removed.iter().map(|e| e.bytes).sum();
    if as_json {
        out.json(&json!({
            "remote": remote.endpoint(),
            "dry_run": dry_run,
            "removed": removed.iter().map(|e| entry_json(e, now)).collect::<Vec<_>>(),
            "freed_bytes": freed,
            "stale_staging": stale.iter().map(|e| json!({"key": e.key, "bytes": e.bytes})).collect::<Vec<_>>(),
        }))?;
        return Ok(Status::Ok);
    }
    let verb = if dry_run { "would delete" } else { "deleted" };
    for e in &stale {
        writeln!(
            out,
            "{verb} stale staging object {} ({})",
            e.key,
            bytes(e.bytes)
        )?;
    }
    for e in &removed {
        writeln!(
            out,
            "{verb} {} ({}, uploaded more than {} ago)",
            e.name,
            bytes(e.bytes),
            duration(max_age)
        )?;
    }
    writeln!(
        out,
        "{verb} {}, {}",
        count(removed.len() as u64, "entry", "entries"),
        bytes(freed)
    )?;
    Ok(Status::Ok)
}

/// `get` with a remote: a local miss is fetched from it first. The
/// remote's failure is a warning and a miss.
pub fn load_for_get(
    tiered: &TieredCache,
    name: &str,
    dest: &Path,
) -> Result<Option<fscache::Copied>, Failure> {
    let got = progress::while_running("fetching", || tiered.get(name))?;
    match got {
        Fetch::Local(hit) | Fetch::Remote { entry: hit, .. } => {
            Ok(Some(progress::while_running("copying out", || {
                hit.copy_out(dest)
            })?))
        }
        Fetch::Failed(e) => {
            warn_line(&format!(
                "warning: the remote failed, so this is a miss: {}",
                chain(&e)
            ));
            Ok(None)
        }
        _ => Ok(None),
    }
}
