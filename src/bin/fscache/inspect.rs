//! The commands that create, show and configure: `init`, `stats`, `ls`,
//! `config`.

use std::time::SystemTime;

use fscache::{CacheInfo, ErrorKind, FsCache, DEFAULT_MAXIMUM};
use serde_json::{json, Value};

use crate::args::{Settings, Sort, Target};
use crate::entries::Boot;
use crate::exit::{warn_line, Failure};
use crate::open::{warn_about_info, Opener};
use crate::output::{ago, bytes, max, max_json, path_json, time_json, Out};
use crate::progress;
use fscache::EntryInfo as Entry;

/// `fscache init`: create the cache, or set what is given on one that
/// exists.
pub fn init(
    opener: &Opener,
    target: &Target,
    settings: &Settings,
    out: &mut Out,
) -> Result<(), Failure> {
    let update = settings.update();
    let (cache, created) = match opener.options().open(opener.app_id(), &target.dir) {
        Ok(cache) => {
            if update != CacheInfo::default() {
                cache.update_info(&update)?;
            }
            (cache, false)
        }
        Err(e) if e.kind() == ErrorKind::NotACache => {
            let mut options = opener.options();
            options
                .create(true)
                .maximum_size(settings.max_size.unwrap_or(DEFAULT_MAXIMUM));
            if let Some(percent) = settings.low_watermark {
                options.low_watermark_percent(percent);
            }
            let cache = options.open(opener.app_id(), &target.dir)?;
            if settings.min_free.is_some() {
                cache.update_info(&update)?;
            }
            (cache, true)
        }
        Err(e) => return Err(e.into()),
    };
    // Another process may have created it meanwhile with its own values:
    // show what is in force.
    let info = cache.reload_info()?;
    let warnings = warn_about_info(&cache);
    if target.json {
        let mut doc = config_json(&cache, &info, &warnings);
        doc["created"] = Value::from(created);
        return out.json(&doc);
    }
    let what = if created {
        "created"
    } else {
        "already a cache"
    };
    writeln!(out, "{}: {what}", cache.path().display())?;
    print_config(&info, out)
}

/// `fscache stats`.
pub fn stats(opener: &Opener, target: &Target, zero: bool, out: &mut Out) -> Result<(), Failure> {
    let cache = opener.open(&target.dir)?;
    let s = progress::while_running("measuring every entry", || cache.stats())?;
    // What every process counted (and closed, or flushed), before zeroing.
    let c = if zero {
        cache.zero_counters()?
    } else {
        cache.all_counters()
    };
    // Boots are told apart only for an application the user named; and
    // like `ls`, an entry without a boot id belongs to neither side.
    let (this, earlier) = match this_boot(opener, &cache) {
        Some(this) => {
            let listing = cache.entries()?;
            let count = |b| {
                listing
                    .entries
                    .iter()
                    .filter(|e| Boot::of(e, Some(this)) == b)
                    .count() as u64
            };
            (Some(count(Boot::This)), Some(count(Boot::Earlier)))
        }
        None => (None, None),
    };
    let low = cache.info().low_watermark();
    if target.json {
        return out.json(&json!({
            "path": path_json(cache.path()),
            "app_id": opener.app_id,
            "entries": s.entries,
            "entries_this_boot": this,
            "entries_earlier_boots": earlier,
            "invalid_entries": s.invalid_entries,
            "accounted_bytes": s.accounted_bytes,
            "recorded_bytes": s.recorded_bytes,
            "reserved_bytes": s.reserved_bytes,
            "measured_bytes": s.measured_bytes,
            "maximum_bytes": max_json(s.maximum),
            "low_watermark_bytes": max_json(low),
            "orphans": s.orphans,
            "orphans_from_earlier_boots": s.orphans_from_previous_boot,
            "in_progress": s.live_anonymous,
            "oldest_use": time_json(s.oldest_use),
            "newest_use": time_json(s.newest_use),
            "counters": {
                "hits": c.hits,
                "misses": c.misses,
                "stored": c.stored,
                "name_taken": c.name_taken,
                "evicted": c.evicted,
                "heals": c.heals,
                "mismatches": c.mismatches,
            },
            "counters_zeroed": zero,
        }));
    }
    let now = SystemTime::now();
    let boots = match (this, earlier) {
        (Some(this), Some(earlier)) => {
            format!("{this} from this boot, {earlier} from earlier boots")
        }
        _ => "boot unknown: pass --app-id".into(),
    };
    let accounted = s.accounted_bytes.map_or(
        "unreadable (cache.size holds no size; `fscache resync` repairs it)".into(),
        bytes,
    );
    writeln!(out, "cache:            {}", cache.path().display())?;
    writeln!(out, "entries:          {} ({boots})", s.entries)?;
    writeln!(out, "accounted:        {accounted} (cache.size)")?;
    writeln!(
        out,
        "recorded:         {} (object.info sizes)",
        bytes(s.recorded_bytes)
    )?;
    writeln!(
        out,
        "reserved:         {} (held ahead by handles, in no entry)",
        bytes(s.reserved_bytes)
    )?;
    writeln!(
        out,
        "measured:         {} (data/ now)",
        bytes(s.measured_bytes)
    )?;
    writeln!(
        out,
        "maximum:          {} (evicts down to {})",
        max(s.maximum),
        max(low)
    )?;
    writeln!(
        out,
        "orphans:          {} ({} from earlier boots)",
        s.orphans, s.orphans_from_previous_boot
    )?;
    writeln!(out, "in progress:      {}", s.live_anonymous)?;
    writeln!(out, "invalid entries:  {}", s.invalid_entries)?;
    writeln!(out, "oldest use:       {}", ago(s.oldest_use, now))?;
    writeln!(out, "newest use:       {}", ago(s.newest_use, now))?;
    let loads = c.hits.saturating_add(c.misses);
    let rate = if loads == 0 {
        String::new()
    } else {
        format!(" ({:.1}% hits)", c.hits as f64 * 100.0 / loads as f64)
    };
    writeln!(
        out,
        "loads:            {} hits, {} misses{rate}",
        c.hits, c.misses
    )?;
    writeln!(
        out,
        "stores:           {} stored, {} names taken, {} evicted",
        c.stored, c.name_taken, c.evicted
    )?;
    if zero {
        writeln!(out, "counters:         set back to zero")?;
    }
    Ok(())
}

/// The boot id of this boot for the application the user named, if one.
fn this_boot<'a>(opener: &Opener, cache: &'a FsCache) -> Option<&'a str> {
    opener.app_id.as_ref().map(|_| cache.boot_id())
}

/// `fscache ls`.
pub fn ls(
    opener: &Opener,
    target: &Target,
    sort: Sort,
    limit: Option<usize>,
    out: &mut Out,
) -> Result<(), Failure> {
    let cache = opener.open(&target.dir)?;
    let listing = cache.entries()?;
    let total = listing.entries.len();
    let mut shown = listing.entries;
    match sort {
        // The order eviction follows: least recent first, then by name.
        Sort::LastUse => shown.sort_by(|a, b| (a.last_use, &a.name).cmp(&(b.last_use, &b.name))),
        Sort::Size => shown.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.name.cmp(&b.name))),
        Sort::Name => shown.sort_by(|a, b| a.name.cmp(&b.name)),
    }
    shown.truncate(limit.unwrap_or(usize::MAX));
    let this = this_boot(opener, &cache);
    if target.json {
        let entries: Vec<Value> = shown.iter().map(|e| entry_json(e, this)).collect();
        return out.json(&json!({
            "path": path_json(cache.path()),
            "app_id": opener.app_id,
            "total_entries": total,
            "invalid_entries": listing.invalid,
            "entries": entries,
        }));
    }
    let now = SystemTime::now();
    let rows: Vec<[String; 4]> = shown
        .iter()
        .map(|e| {
            let boot = Boot::of(e, this).as_str();
            let flags = if e.in_use { " (in use)" } else { "" };
            [
                format!("{}{flags}", e.name),
                bytes(e.size),
                ago(Some(e.last_use), now),
                boot.to_owned(),
            ]
        })
        .collect();
    let header = ["NAME", "SIZE", "LAST USE", "BOOT"].map(str::to_owned);
    let mut width = header.clone().map(|h| h.len());
    for row in &rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        writeln!(
            out,
            "{:<w0$}  {:>w1$}  {:<w2$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            w0 = width[0],
            w1 = width[1],
            w2 = width[2],
        )?;
    }
    if shown.len() < total {
        writeln!(out, "({} of {total} entries)", shown.len())?;
    }
    if listing.invalid > 0 {
        warn_line(&format!(
            "note: {} not listed (`fscache sweep` removes what nobody holds)",
            crate::output::count(listing.invalid, "invalid entry", "invalid entries")
        ));
    }
    Ok(())
}

fn entry_json(e: &Entry, this_boot: Option<&str>) -> Value {
    json!({
        "name": e.name,
        "size_bytes": e.size,
        "last_use": time_json(Some(e.last_use)),
        "boot": Boot::of(e, this_boot).as_str(),
        "durable": e.durable,
        "in_use": e.in_use,
    })
}

/// `fscache config`.
pub fn config(
    opener: &Opener,
    target: &Target,
    settings: &Settings,
    out: &mut Out,
) -> Result<(), Failure> {
    let cache = opener.open_unwarned(&target.dir)?;
    let update = settings.update();
    let info = if update != CacheInfo::default() {
        cache.update_info(&update)?
    } else {
        cache.info()
    };
    // After the update: what it fixed is no longer worth a warning.
    let warnings = warn_about_info(&cache);
    if target.json {
        return out.json(&config_json(&cache, &info, &warnings));
    }
    writeln!(out, "cache:          {}", cache.path().display())?;
    print_config(&info, out)
}

fn print_config(info: &CacheInfo, out: &mut Out) -> Result<(), Failure> {
    let version = info
        .version
        .map_or("none (unsupported)".into(), |v| v.to_string());
    writeln!(out, "version:        {version}")?;
    writeln!(out, "maximum size:   {}", max(info.effective_maximum()))?;
    writeln!(
        out,
        "low watermark:  {}% ({})",
        percent(info),
        max(info.low_watermark())
    )?;
    let floor = info
        .min_free_bytes
        .filter(|f| *f > 0)
        .map_or("none".into(), bytes);
    writeln!(out, "free-space floor: {floor}")?;
    writeln!(
        out,
        "boot id:        {}",
        info.creation_boot_id.as_deref().unwrap_or("-")
    )?;
    Ok(())
}

fn percent(info: &CacheInfo) -> u8 {
    info.low_watermark_percent
        .unwrap_or(fscache::DEFAULT_LOW_WATERMARK_PERCENT)
}

fn config_json(cache: &FsCache, info: &CacheInfo, warnings: &[String]) -> Value {
    json!({
        "path": path_json(cache.path()),
        "version": info.version,
        "maximum_bytes": max_json(info.effective_maximum()),
        "low_watermark_percent": percent(info),
        "low_watermark_bytes": max_json(info.low_watermark()),
        "creation_boot_id": info.creation_boot_id,
        "min_free_bytes": info.min_free_bytes.filter(|f| *f > 0),
        "warnings": warnings,
    })
}
