//! Opening the cache a command works on, and the warnings about
//! `cache.info` values that do not mean what they seem to.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use fscache::{CacheInfo, FsCache, MaxSize, OpenOptions, Wait, LOW_WATERMARK_KEY};
use serde_json::Value;

use crate::exit::{warn_line, Failure};

/// The application id a cache is opened with when `--app-id` is not
/// given. It only tags what the command itself stores (`stress`); reading
/// commands do not trust it to tell boots apart.
pub const DEFAULT_APP_ID: &str = "fscache";

/// How commands open caches.
#[derive(Clone, Debug)]
pub struct Opener {
    /// `--app-id`, if given.
    pub app_id: Option<String>,
    /// `--wait`.
    pub wait: Duration,
}

impl Opener {
    pub fn app_id(&self) -> &str {
        self.app_id.as_deref().unwrap_or(DEFAULT_APP_ID)
    }

    /// Options that wait as `--wait` says and create nothing.
    pub fn options(&self) -> OpenOptions {
        let wait = if self.wait.is_zero() {
            Wait::Never
        } else {
            Wait::Timeout(self.wait)
        };
        let mut options = OpenOptions::new();
        options.create(false).wait(wait);
        options
    }

    /// Open the existing cache at `dir`, and warn (on stderr) about its
    /// `cache.info`.
    pub fn open(&self, dir: &Path) -> Result<FsCache, Failure> {
        let cache = self.open_unwarned(dir)?;
        warn_about_info(&cache);
        Ok(cache)
    }

    /// Open the existing cache at `dir` with `options` (from
    /// [`Opener::options`]), and warn about its `cache.info`.
    pub fn open_with(&self, options: &OpenOptions, dir: &Path) -> Result<FsCache, Failure> {
        let cache = options.open(self.app_id(), dir)?;
        warn_about_info(&cache);
        Ok(cache)
    }

    /// Open the existing cache at `dir`, for a command that warns itself
    /// (after changing the configuration, say).
    pub fn open_unwarned(&self, dir: &Path) -> Result<FsCache, Failure> {
        Ok(self.options().open(self.app_id(), dir)?)
    }
}

/// Warn about the cache's `cache.info`, and return the warnings.
pub fn warn_about_info(cache: &FsCache) -> Vec<String> {
    let path = cache.path().join("cache.info");
    let warnings = read_small(&path)
        .map(|raw| info_warnings(&path, &raw))
        .unwrap_or_default();
    for w in &warnings {
        warn_line(&format!("warning: {w}"));
    }
    warnings
}

/// A small regular file's bytes, not following a link; `None` for anything
/// else (the library has judged the file already: this is only for
/// warnings).
fn read_small(path: &Path) -> Option<Vec<u8>> {
    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits() as i32)
        .open(path)
        .ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut raw = Vec::new();
    file.take(1 << 20).read_to_end(&mut raw).ok()?;
    Some(raw)
}

/// What in the text of `cache.info` (at `path`) the format reads otherwise
/// than its writer likely meant: a maximum that reads as 0 (the cache
/// stores nothing) or as unlimited, a watermark that reads as the default.
pub fn info_warnings(path: &Path, raw: &[u8]) -> Vec<String> {
    let file = path.display();
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(raw) else {
        return vec![format!(
            "`{file}` is not a JSON object, so the format reads every setting in it as unset: a maximum of 0, which stores nothing"
        )];
    };
    let mut out = Vec::new();
    let set_it =
        "set one with `fscache config --max-size SIZE` (a number of bytes, or \"unlimited\")";
    match map.get("maximum-size") {
        None => out.push(format!(
            "`{file}` sets no \"maximum-size\"; the format reads that as 0, so the cache stores nothing: {set_it}"
        )),
        Some(Value::Number(n)) if n.as_u64().is_some() => {}
        Some(Value::String(s)) if s == "unlimited" => {}
        Some(v) => {
            let read = CacheInfo::from_json(&serde_json::json!({ "maximum-size": v }))
                .effective_maximum();
            let what = match v {
                Value::String(_) => "a string that is not \"unlimited\"",
                Value::Number(_) if read == MaxSize::Unlimited => "a negative number",
                Value::Number(n) if n.to_string().bytes().all(|b| b.is_ascii_digit()) => {
                    "a number too large for 64 bits"
                }
                Value::Number(_) => "not a whole number",
                _ => "neither a number nor a string",
            };
            let means = match read {
                MaxSize::Unlimited => {
                    "as unlimited, so the cache may fill the disk (if that is meant, write \"unlimited\")"
                }
                MaxSize::Bytes(_) => "as 0, so the cache stores nothing",
            };
            out.push(format!(
                "`{file}` has \"maximum-size\": {v}, {what}, which the format reads {means}; {set_it}"
            ));
        }
    }
    if let Some(v) = map.get(LOW_WATERMARK_KEY) {
        if !v.as_u64().is_some_and(|p| (1..=100).contains(&p)) {
            out.push(format!(
                "`{file}` has \"{LOW_WATERMARK_KEY}\": {v}, which is not a whole percentage from 1 to 100, so the default ({}%) applies; set one with `fscache config --low-watermark PCT`",
                fscache::DEFAULT_LOW_WATERMARK_PERCENT
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn warnings(raw: &str) -> Vec<String> {
        info_warnings(Path::new("/c/cache.info"), raw.as_bytes())
    }

    #[test]
    fn a_maximum_that_reads_as_zero_or_unlimited_is_named_with_the_file() {
        for fine in [
            r#"{"version": 1, "maximum-size": 1048576}"#,
            r#"{"version": 1, "maximum-size": "unlimited"}"#,
            r#"{"version": 1, "maximum-size": 0}"#,
            r#"{"version": 1, "maximum-size": 10, "fscache-low-watermark-percent": 50}"#,
        ] {
            assert_eq!(warnings(fine), Vec::<String>::new(), "{fine}");
        }
        for (raw, says) in [
            (
                r#"{"version": 1, "maximum-size": "10G"}"#,
                "reads as 0, so the cache stores nothing",
            ),
            (
                r#"{"version": 1, "maximum-size": 1.5}"#,
                "not a whole number",
            ),
            (r#"{"version": 1, "maximum-size": 1e3}"#, "reads as 0"),
            (
                r#"{"version": 1, "maximum-size": -1}"#,
                "reads as unlimited",
            ),
            (
                r#"{"version": 1, "maximum-size": 99999999999999999999}"#,
                "too large for 64 bits",
            ),
            (r#"{"version": 1, "maximum-size": null}"#, "reads as 0"),
            (r#"{"version": 1}"#, "reads that as 0"),
            ("[1]", "not a JSON object"),
        ] {
            let w = warnings(raw);
            assert_eq!(w.len(), 1, "{raw}: {w:?}");
            assert!(w[0].contains("`/c/cache.info`"), "names the file: {w:?}");
            assert!(w[0].contains(says), "{raw}: {w:?} should say {says:?}");
        }
        let w =
            warnings(r#"{"version": 1, "maximum-size": 5, "fscache-low-watermark-percent": 150}"#);
        assert!(w.len() == 1 && w[0].contains("90%"), "{w:?}");
    }
}
