//! `cache.info`: parsing never panics, and a merge sets exactly the values
//! of the update while keeping every other key of the file as it was.

#![no_main]

use arbitrary::Arbitrary;
use fscache::{CacheInfo, MaxSize, LOW_WATERMARK_KEY, MIN_FREE_KEY};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

#[derive(Arbitrary, Debug)]
enum Max {
    Bytes(u64),
    Unlimited,
}

#[derive(Arbitrary, Debug)]
struct Input {
    version: Option<i64>,
    maximum_size: Option<Max>,
    creation_boot_id: Option<String>,
    low_watermark_percent: Option<u8>,
    min_free_bytes: Option<u64>,
    /// The file's bytes; last, so that it takes the rest of the input and
    /// a JSON seed in the corpus stays mostly JSON.
    raw: Vec<u8>,
}

fuzz_target!(|input: Input| {
    let update = CacheInfo {
        version: input.version,
        maximum_size: input.maximum_size.map(|m| match m {
            Max::Bytes(n) => MaxSize::Bytes(n),
            Max::Unlimited => MaxSize::Unlimited,
        }),
        creation_boot_id: input.creation_boot_id,
        low_watermark_percent: input.low_watermark_percent,
        min_free_bytes: input.min_free_bytes,
    };
    let raw = &input.raw;
    let _ = CacheInfo::parse(raw);
    let Some(out) = update.merge_into(raw) else {
        // Only a file that is not a JSON object may be refused.
        assert!(
            !matches!(serde_json::from_slice(raw), Ok(Value::Object(_))),
            "merge_into refused a JSON object: {:?}",
            String::from_utf8_lossy(raw)
        );
        return;
    };
    check_merge(&update, raw, &out);
});

fn check_merge(update: &CacheInfo, raw: &[u8], out: &[u8]) {
    let Ok(Value::Object(before)) = serde_json::from_slice::<Value>(raw) else {
        panic!(
            "merge_into accepted a non-object: {:?}",
            String::from_utf8_lossy(raw)
        );
    };
    let Ok(Value::Object(after)) = serde_json::from_slice::<Value>(out) else {
        panic!(
            "merge_into wrote a non-object: {:?}",
            String::from_utf8_lossy(out)
        );
    };

    // What the update sets, as JSON, so that values the reader would
    // ignore (a short boot id, a watermark of 0) are checked too.
    let mut set: Vec<(&str, Value)> = Vec::new();
    if let Some(v) = update.version {
        set.push(("version", Value::from(v)));
    }
    if let Some(m) = update.maximum_size {
        let v = match m {
            MaxSize::Bytes(n) => Value::from(n),
            MaxSize::Unlimited => Value::from("unlimited"),
        };
        set.push(("maximum-size", v));
    }
    if let Some(b) = &update.creation_boot_id {
        set.push(("creation-boot-id", Value::from(b.as_str())));
    }
    if let Some(p) = update.low_watermark_percent {
        set.push((LOW_WATERMARK_KEY, Value::from(p)));
    }
    if let Some(b) = update.min_free_bytes {
        set.push((MIN_FREE_KEY, Value::from(b)));
    }
    for (key, want) in &set {
        assert_eq!(
            after.get(*key),
            Some(want),
            "merged key {key:?} in {after:?}"
        );
    }
    for (key, was) in &before {
        if !set.iter().any(|(k, _)| k == key) {
            assert_eq!(after.get(key), Some(was), "unset key {key:?} changed");
        }
    }
    for key in after.keys() {
        assert!(
            before.contains_key(key) || set.iter().any(|(k, _)| k == key),
            "merge invented key {key:?}"
        );
    }

    // Read back, every value set is in force, as far as the (lenient)
    // reader accepts it: it ignores a boot id that is not 32 bytes long and
    // a watermark outside 1..=100, exactly as it would in any file.
    let parsed = CacheInfo::parse(out);
    if update.version.is_some() {
        assert_eq!(parsed.version, update.version, "version");
    }
    if update.maximum_size.is_some() {
        assert_eq!(parsed.maximum_size, update.maximum_size, "maximum-size");
    }
    if let Some(b) = &update.creation_boot_id {
        let readable = b.len() == 32;
        assert_eq!(
            parsed.creation_boot_id.as_ref(),
            readable.then_some(b),
            "creation-boot-id"
        );
    }
    if update.min_free_bytes.is_some() {
        assert_eq!(parsed.min_free_bytes, update.min_free_bytes, "min free");
    }
    if let Some(p) = update.low_watermark_percent {
        let readable = (1..=100).contains(&p);
        assert_eq!(
            parsed.low_watermark_percent,
            readable.then_some(p),
            "low watermark"
        );
    }
}
