//! `put`, `get` and `verify`: trees into and out of the cache, and checks
//! of what was recorded.

use std::path::Path;

use fscache::{Commit, Integrity, Verification};
use serde_json::json;

use crate::args::Target;
use crate::exit::{Failure, Status};
use crate::open::Opener;
use crate::output::{bytes, path_json, Out};
use crate::progress;

/// `fscache put NAME PATH`: copy a file or tree in as the entry `NAME`
/// (sharing blocks where the file system can), recording its digest with
/// `--digest`. A taken name is no error (exit 0, "name taken"); an entry
/// the cache would not keep is (exit 1).
pub fn put(
    opener: &Opener,
    remote: Option<&str>,
    target: &Target,
    name: &str,
    src: &Path,
    digest: bool,
    out: &mut Out,
) -> Result<Status, Failure> {
    let mut options = opener.options();
    if digest {
        options.integrity(Integrity::Record);
    }
    let cache = opener.open_with(&options, &target.dir)?;
    let (outcome, upload) = match remote {
        None => (
            progress::while_running("copying in", || cache.store_tree(name, src))?,
            None,
        ),
        Some(url) => with_remote(&cache, url, name, src)?,
    };
    let (word, size, status) = match outcome {
        Commit::Stored { size } => ("stored", Some(size), Status::Ok),
        Commit::NameTaken => ("name_taken", None, Status::Ok),
        _ => ("not_stored", None, Status::Error),
    };
    if target.json {
        out.json(&json!({
            "path": path_json(cache.path()),
            "name": name,
            "outcome": word,
            "size_bytes": size,
            "message": outcome.to_string(),
            "upload": upload,
        }))?;
    } else {
        match size {
            Some(size) => writeln!(out, "{name}: stored ({})", bytes(size))?,
            None => writeln!(out, "{name}: {outcome}")?,
        }
        if let Some(said) = upload.as_ref().and_then(|u| u["outcome"].as_str()) {
            if said != "deferred" {
                writeln!(out, "{name}: {}", said.replace('_', " "))?;
            }
        }
    }
    Ok(status)
}

/// `put` with a remote: store, then upload; the upload's outcome as JSON
/// (a deferred one is a warning, not a failure).
#[cfg(feature = "remote")]
fn with_remote(
    cache: &fscache::FsCache,
    url: &str,
    name: &str,
    src: &Path,
) -> Result<(Commit, Option<serde_json::Value>), Failure> {
    let tiered =
        fscache::remote::TieredCache::new(cache.clone(), crate::remote::open_remote(Some(url))?);
    let stored =
        progress::while_running("copying in and uploading", || tiered.store_tree(name, src))?;
    let upload = stored
        .upload
        .as_ref()
        .map(|u| crate::remote::upload_json(Some(u)));
    Ok((stored.commit, upload))
}

/// Without the remote feature there is no `--remote`: a plain store.
#[cfg(not(feature = "remote"))]
fn with_remote(
    cache: &fscache::FsCache,
    _: &str,
    name: &str,
    src: &Path,
) -> Result<(Commit, Option<serde_json::Value>), Failure> {
    Ok((cache.store_tree(name, src)?, None))
}

/// `fscache get NAME DEST`: copy the entry out to `DEST`, which must not
/// exist. A miss is exit 1 with a message, and creates nothing.
pub fn get(
    opener: &Opener,
    remote: Option<&str>,
    target: &Target,
    name: &str,
    dest: &Path,
    out: &mut Out,
) -> Result<Status, Failure> {
    let cache = opener.open(&target.dir)?;
    let copied = match remote {
        None => progress::while_running("copying out", || cache.copy_out(name, dest))?,
        Some(url) => fetch(&cache, url, name, dest)?,
    };
    if target.json {
        out.json(&json!({
            "path": path_json(cache.path()),
            "name": name,
            "found": copied.is_some(),
            "bytes": copied.as_ref().map(|c| c.bytes),
            "files": copied.as_ref().map(|c| c.files),
            "cloned": copied.as_ref().map(|c| c.cloned),
        }))?;
    } else {
        match &copied {
            Some(c) => writeln!(
                out,
                "{name}: copied to {} ({} in {} files, {} sharing blocks)",
                dest.display(),
                bytes(c.bytes),
                c.files,
                c.cloned
            )?,
            None => writeln!(out, "{name}: not in the cache")?,
        }
    }
    Ok(if copied.is_some() {
        Status::Ok
    } else {
        Status::Error
    })
}

/// `get` with a remote: a local miss is fetched from it.
#[cfg(feature = "remote")]
fn fetch(
    cache: &fscache::FsCache,
    url: &str,
    name: &str,
    dest: &Path,
) -> Result<Option<fscache::Copied>, Failure> {
    let tiered =
        fscache::remote::TieredCache::new(cache.clone(), crate::remote::open_remote(Some(url))?);
    crate::remote::load_for_get(&tiered, name, dest)
}

/// Without the remote feature there is no `--remote`: a plain copy out.
#[cfg(not(feature = "remote"))]
fn fetch(
    cache: &fscache::FsCache,
    _: &str,
    name: &str,
    dest: &Path,
) -> Result<Option<fscache::Copied>, Failure> {
    Ok(cache.copy_out(name, dest)?)
}

/// `fscache verify [NAME...]`: check entries against the digest their
/// `object.info` records (all entries without names). Exit 1 if any does
/// not match.
pub fn verify(
    opener: &Opener,
    target: &Target,
    names: &[String],
    out: &mut Out,
) -> Result<Status, Failure> {
    let cache = opener.open(&target.dir)?;
    let names = if names.is_empty() {
        let mut names: Vec<String> = cache
            .entries()?
            .entries
            .into_iter()
            .map(|e| e.name)
            .collect();
        names.sort();
        names
    } else {
        names.to_vec()
    };
    let mut status = Status::Ok;
    let mut results = Vec::new();
    for name in &names {
        let verdict = progress::while_running(name, || cache.verify(name))?;
        let word = match &verdict {
            Verification::Intact => "intact",
            Verification::Mismatch { .. } => {
                status = Status::Error;
                "mismatch"
            }
            Verification::NotRecorded => "not_recorded",
            Verification::NotFound => "not_found",
            _ => "unknown",
        };
        if target.json {
            results.push(json!({ "name": name, "outcome": word }));
        } else {
            let said = match &verdict {
                Verification::Mismatch { expected, found } => {
                    format!("MISMATCH (recorded {expected}, now {found})")
                }
                Verification::NotRecorded => "no digest recorded".into(),
                Verification::NotFound => "not found".into(),
                _ => "intact".into(),
            };
            writeln!(out, "{name}: {said}")?;
        }
    }
    if target.json {
        out.json(&json!({ "path": path_json(cache.path()), "results": results }))?;
    }
    Ok(status)
}
