//! The JSON files: `cache.info`, `object.info` and `cache.size`.
//!
//! Parsing is lenient the way osbuild's is: a known key with a value of the
//! wrong type reads as unset, and unknown keys are kept so that a rewrite
//! preserves them.

use serde_json::{Map, Value};

use crate::integrity::Digest;

/// The newest format version this crate reads and writes.
pub const VERSION_CURRENT: i64 = 1;
/// The oldest format version this crate reads and writes.
pub const VERSION_MINIMUM: i64 = 1;

/// Our extension key: the low watermark as a percentage of the maximum.
/// Version-1 readers (osbuild) ignore it.
pub const LOW_WATERMARK_KEY: &str = "fscache-low-watermark-percent";
/// Our extension key: the free space in bytes that commits keep on the
/// file system (0 or missing: no floor). Version-1 readers ignore it.
pub const MIN_FREE_KEY: &str = "fscache-min-free-bytes";
/// The low watermark when `cache.info` sets none.
pub const DEFAULT_LOW_WATERMARK_PERCENT: u8 = 90;

/// Our extension key in `object.info`: `true` when the entry was committed
/// with [`Durability::Sync`](crate::Durability::Sync). Written only then,
/// so that other entries carry exactly osbuild's JSON; version-1 readers
/// (osbuild) ignore it.
pub const DURABLE_KEY: &str = "fscache-durable";

/// Our extension key in `object.info`: the [`Digest`] of the entry's
/// `data/` as 64 lowercase hex digits, when it was committed with
/// [`Integrity::Record`](crate::Integrity::Record). Written only then;
/// version-1 readers (osbuild) ignore it.
pub const DIGEST_KEY: &str = "fscache-sha256";

/// The most the cache may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MaxSize {
    /// At most this many bytes.
    Bytes(u64),
    /// No limit.
    Unlimited,
}

impl MaxSize {
    /// Whether `size` bytes fit under this maximum.
    pub fn admits(self, size: u64) -> bool {
        match self {
            MaxSize::Bytes(max) => size <= max,
            MaxSize::Unlimited => true,
        }
    }

    fn to_json(self) -> Value {
        match self {
            MaxSize::Bytes(n) => Value::from(n),
            MaxSize::Unlimited => Value::from("unlimited"),
        }
    }
}

/// The parsed `cache.info`: the cache's configuration.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CacheInfo {
    /// `"version"`, if it is an integer.
    pub version: Option<i64>,
    /// `"maximum-size"`: an integer (a negative one means unlimited, as
    /// osbuild reads it) or `"unlimited"`; anything else reads as unset.
    pub maximum_size: Option<MaxSize>,
    /// `"creation-boot-id"`, if it is a string of 32 characters.
    pub creation_boot_id: Option<String>,
    /// Our extension: the low watermark in percent of the maximum (1..=100).
    pub low_watermark_percent: Option<u8>,
    /// Our extension: the free space (bytes) a commit leaves on the file
    /// system at least, evicting to keep it, or finding no room
    /// ([`MIN_FREE_KEY`]).
    pub min_free_bytes: Option<u64>,
}

impl CacheInfo {
    /// Read the known keys from a parsed JSON value; anything that is not an
    /// object reads as all unset.
    pub fn from_json(value: &Value) -> CacheInfo {
        let Some(map) = value.as_object() else {
            return CacheInfo::default();
        };
        CacheInfo {
            version: map.get("version").and_then(Value::as_i64),
            maximum_size: match map.get("maximum-size") {
                Some(Value::String(s)) if s == "unlimited" => Some(MaxSize::Unlimited),
                // osbuild reads any negative integer as unlimited (its own
                // tests write -1), however many digits it has.
                Some(Value::Number(n)) if is_negative_integer(n) => Some(MaxSize::Unlimited),
                Some(v) => v.as_u64().map(MaxSize::Bytes),
                None => None,
            },
            creation_boot_id: map
                .get("creation-boot-id")
                .and_then(Value::as_str)
                .filter(|s| s.len() == 32)
                .map(str::to_owned),
            low_watermark_percent: map
                .get(LOW_WATERMARK_KEY)
                .and_then(Value::as_u64)
                .filter(|p| (1..=100).contains(p))
                .map(|p| p as u8),
            min_free_bytes: map.get(MIN_FREE_KEY).and_then(Value::as_u64),
        }
    }

    /// Parse the bytes of a `cache.info` file. Bytes that are not JSON read
    /// as all unset (and the file is never rewritten; see
    /// [`CacheInfo::merge_into`]).
    pub fn parse(bytes: &[u8]) -> CacheInfo {
        serde_json::from_slice::<Value>(bytes)
            .map(|v| CacheInfo::from_json(&v))
            .unwrap_or_default()
    }

    /// Check the values that are set, as an update to write: only versions
    /// this crate supports, boot ids of the format's form, watermarks of
    /// 1 to 100 percent.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`](crate::Error::InvalidConfig) naming the key.
    pub fn validate(&self) -> crate::Result<()> {
        let invalid = |key, reason| Err(crate::Error::InvalidConfig { key, reason });
        if self
            .version
            .is_some_and(|v| !(VERSION_MINIMUM..=VERSION_CURRENT).contains(&v))
        {
            return invalid("version", "a version this crate supports (1)");
        }
        if self
            .creation_boot_id
            .as_deref()
            .is_some_and(|id| !is_boot_id(id))
        {
            return invalid("creation-boot-id", "32 lowercase hex digits");
        }
        if self
            .low_watermark_percent
            .is_some_and(|p| !(1..=100).contains(&p))
        {
            return invalid(LOW_WATERMARK_KEY, "a percentage from 1 to 100");
        }
        Ok(())
    }

    /// Whether this crate may use the object store of a cache with this
    /// configuration.
    pub fn is_supported(&self) -> bool {
        matches!(self.version, Some(v) if (VERSION_MINIMUM..=VERSION_CURRENT).contains(&v))
    }

    /// The maximum that applies: missing or malformed means 0.
    pub fn effective_maximum(&self) -> MaxSize {
        self.maximum_size.unwrap_or(MaxSize::Bytes(0))
    }

    /// The size eviction frees down to.
    pub fn low_watermark(&self) -> MaxSize {
        let percent = u64::from(
            self.low_watermark_percent
                .unwrap_or(DEFAULT_LOW_WATERMARK_PERCENT),
        );
        match self.effective_maximum() {
            MaxSize::Bytes(max) => {
                MaxSize::Bytes((u128::from(max) * u128::from(percent) / 100) as u64)
            }
            MaxSize::Unlimited => MaxSize::Unlimited,
        }
    }

    /// Overlay the values set in `self` onto the JSON object `raw`, keeping
    /// every other key. Returns `None` when `raw` is not an object: such a
    /// file must never be rewritten.
    pub fn merge_into(&self, raw: &[u8]) -> Option<Vec<u8>> {
        let mut map: Map<String, Value> = match serde_json::from_slice::<Value>(raw) {
            Ok(Value::Object(map)) => map,
            _ => return None,
        };
        if let Some(v) = self.version {
            map.insert("version".into(), Value::from(v));
        }
        if let Some(m) = self.maximum_size {
            map.insert("maximum-size".into(), m.to_json());
        }
        if let Some(b) = &self.creation_boot_id {
            map.insert("creation-boot-id".into(), Value::from(b.clone()));
        }
        if let Some(p) = self.low_watermark_percent {
            map.insert(LOW_WATERMARK_KEY.into(), Value::from(p));
        }
        if let Some(b) = self.min_free_bytes {
            map.insert(MIN_FREE_KEY.into(), Value::from(b));
        }
        serde_json::to_vec(&Value::Object(map)).ok()
    }

    /// The content of a new cache's `cache.info`: `{"version": 1}` and
    /// whatever `self` sets (as an update would write it).
    pub(crate) fn initial(&self) -> Vec<u8> {
        let base = format!("{{\"version\": {VERSION_CURRENT}}}").into_bytes();
        if *self == CacheInfo::default() {
            return base;
        }
        self.merge_into(&base).unwrap_or(base)
    }
}

/// Whether `n` is an integer below zero, of any length (the crate keeps
/// numbers as their digits).
fn is_negative_integer(n: &serde_json::Number) -> bool {
    let text = n.to_string();
    text.strip_prefix('-').is_some_and(|digits| {
        !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
            && digits.bytes().any(|b| b != b'0')
    })
}

/// Whether `id` has the form of a boot id: 32 lowercase hex digits.
pub(crate) fn is_boot_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The largest size an `object.info` may record: 2^53 - 1 bytes (8 PiB),
/// the largest integer every JSON reader holds exactly. No file system
/// measures an entry that large, so a bigger one was written by hand or by
/// a broken tool: the `object.info` is not one, and the entry is invalid.
/// That also keeps every total exact: sums of valid sizes overflow only
/// past 2,048 entries of 8 PiB, and saturate rather than wrap even then.
pub const MAX_ENTRY_SIZE: u64 = (1 << 53) - 1;

/// The parsed `object.info` of a committed entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The application-specific boot id of the boot that committed it.
    pub creation_boot_id: Option<String>,
    /// The space its `data/` occupied when committed, as accounted in
    /// `cache.size`.
    pub size: u64,
    /// Our extension ([`DURABLE_KEY`]): it was committed with
    /// [`Durability::Sync`](crate::Durability::Sync), so it was on disk,
    /// whole, before it appeared under its name. False when the key is
    /// missing (osbuild's entries) or anything but `true`.
    pub durable: bool,
    /// Our extension ([`DIGEST_KEY`]): the digest of `data/` recorded at
    /// commit. `None` when the key is missing (osbuild's entries, and ours
    /// committed without [`Integrity::Record`](crate::Integrity::Record))
    /// or holds anything but 64 lowercase hex digits.
    pub digest: Option<Digest>,
}

impl ObjectInfo {
    /// Parse an `object.info`; `None` unless it is a JSON object with an
    /// integer `"size"` from 0 to [`MAX_ENTRY_SIZE`].
    ///
    /// # Examples
    ///
    /// ```
    /// use fscache::ObjectInfo;
    /// // What osbuild writes: not durable.
    /// let osbuild = ObjectInfo::parse(br#"{"creation-boot-id": "0123456789abcdef0123456789abcdef", "size": 4096}"#).unwrap();
    /// assert!(!osbuild.durable);
    /// let ours = ObjectInfo::parse(br#"{"size": 4096, "fscache-durable": true}"#).unwrap();
    /// assert!(ours.durable);
    /// assert!(!ObjectInfo::parse(br#"{"size": 4096, "fscache-durable": "yes"}"#).unwrap().durable);
    /// # Ok::<(), fscache::Error>(())
    /// ```
    pub fn parse(bytes: &[u8]) -> Option<ObjectInfo> {
        let value: Value = serde_json::from_slice(bytes).ok()?;
        let map = value.as_object()?;
        Some(ObjectInfo {
            size: map.get("size")?.as_u64().filter(|s| *s <= MAX_ENTRY_SIZE)?,
            creation_boot_id: map
                .get("creation-boot-id")
                .and_then(Value::as_str)
                .map(str::to_owned),
            durable: map.get(DURABLE_KEY).and_then(Value::as_bool) == Some(true),
            digest: map
                .get(DIGEST_KEY)
                .and_then(Value::as_str)
                .and_then(Digest::from_hex),
        })
    }

    /// The JSON osbuild writes: `{"creation-boot-id": "…", "size": N}`,
    /// followed by `"fscache-durable": true` for a durable entry and
    /// `"fscache-sha256": "…"` for one with a digest.
    pub fn to_json(&self) -> Vec<u8> {
        let mut map = Map::new();
        if let Some(b) = &self.creation_boot_id {
            map.insert("creation-boot-id".into(), Value::from(b.clone()));
        }
        map.insert("size".into(), Value::from(self.size));
        if self.durable {
            map.insert(DURABLE_KEY.into(), Value::from(true));
        }
        if let Some(digest) = &self.digest {
            map.insert(DIGEST_KEY.into(), Value::from(digest.to_string()));
        }
        serde_json::to_vec(&Value::Object(map)).unwrap_or_default()
    }
}

/// Parse `cache.size`: one non-negative JSON integer (surrounding white
/// space allowed).
pub fn parse_size(bytes: &[u8]) -> Option<u64> {
    serde_json::from_slice::<Value>(bytes).ok()?.as_u64()
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn osbuild_style_cache_info_parses_and_wrong_types_read_as_unset() {
        let i = CacheInfo::parse(br#"{"version": 1, "maximum-size": 1048576, "creation-boot-id": "0123456789abcdef0123456789abcdef"}"#);
        assert!(i.is_supported());
        assert_eq!(i.effective_maximum(), MaxSize::Bytes(1 << 20));
        assert_eq!(i.low_watermark(), MaxSize::Bytes((1 << 20) * 9 / 10));
        let bad = CacheInfo::parse(
            br#"{"version": "1", "maximum-size": 1.5, "creation-boot-id": "short"}"#,
        );
        assert_eq!(bad, CacheInfo::default());
        assert!(!bad.is_supported());
        assert_eq!(bad.effective_maximum(), MaxSize::Bytes(0));
        assert_eq!(CacheInfo::parse(b"[1]"), CacheInfo::default());
        assert_eq!(CacheInfo::parse(b"\xff garbage"), CacheInfo::default());
        assert!(!CacheInfo::parse(br#"{"version": 2}"#).is_supported());
        assert_eq!(
            CacheInfo::parse(br#"{"maximum-size": "unlimited"}"#).effective_maximum(),
            MaxSize::Unlimited
        );
    }

    #[test]
    fn a_negative_maximum_means_unlimited_as_osbuild_reads_it() {
        let max = |raw: &str| {
            CacheInfo::parse(format!(r#"{{"version": 1, "maximum-size": {raw}}}"#).as_bytes())
                .effective_maximum()
        };
        for unlimited in [
            "-1",
            "-5",
            "-9223372036854775808",
            "-123456789012345678901234567890",
        ] {
            assert_eq!(max(unlimited), MaxSize::Unlimited, "{unlimited}");
        }
        // Not negative integers: 0, or malformed (and so 0).
        for zero in ["-0", "-1.5", "-1e3", "0", "null"] {
            assert_eq!(max(zero), MaxSize::Bytes(0), "{zero}");
        }
        assert_eq!(max("7"), MaxSize::Bytes(7));
    }

    #[test]
    fn a_merge_keeps_unknown_keys_and_refuses_a_non_object() {
        let update = CacheInfo {
            maximum_size: Some(MaxSize::Unlimited),
            ..CacheInfo::default()
        };
        let out = update
            .merge_into(br#"{"version": 1, "future-key": {"a": [1, 2]}}"#)
            .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["future-key"], serde_json::json!({"a": [1, 2]}));
        assert_eq!(v["maximum-size"], "unlimited");
        assert_eq!(v["version"], 1);
        assert_eq!(update.merge_into(b"[]"), None);
        // Numbers keep every digit and keys keep their order, as Python's
        // json module would write them back.
        let out = update
            .merge_into(br#"{"z": 123456789012345678901234567890, "version": 1, "f": 0.10000000000000000555}"#)
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"z":123456789012345678901234567890,"version":1,"f":0.10000000000000000555,"maximum-size":"unlimited"}"#
        );
        assert_eq!(update.merge_into(b"not json"), None);
    }

    #[test]
    fn object_info_and_size_round_trip_and_reject_garbage() {
        let i = ObjectInfo {
            creation_boot_id: Some("ab".repeat(16)),
            size: 4096,
            durable: false,
            digest: None,
        };
        assert_eq!(ObjectInfo::parse(&i.to_json()), Some(i.clone()));
        let durable = ObjectInfo {
            durable: true,
            ..i.clone()
        };
        assert_eq!(ObjectInfo::parse(&durable.to_json()), Some(durable));
        let digested = ObjectInfo {
            digest: Some(Digest::from([0xab; 32])),
            ..i.clone()
        };
        assert_eq!(ObjectInfo::parse(&digested.to_json()), Some(digested));
        for bad in [
            "",
            "AB",
            &"AB".repeat(32),
            &"ab".repeat(31),
            &"xy".repeat(32),
        ] {
            let raw = format!(r#"{{"size": 1, "{DIGEST_KEY}": "{bad}"}}"#);
            let parsed = ObjectInfo::parse(raw.as_bytes()).expect("still an object.info");
            assert_eq!(parsed.digest, None, "{bad:?} is no digest");
        }
        let raw = format!(r#"{{"size": 1, "{DIGEST_KEY}": 7}}"#);
        assert_eq!(
            ObjectInfo::parse(raw.as_bytes()).map(|i| i.digest),
            Some(None)
        );
        assert_eq!(ObjectInfo::parse(br#"{"size": -1}"#), None);
        assert!(ObjectInfo::parse(br#"{"size": 9007199254740991}"#).is_some());
        assert_eq!(ObjectInfo::parse(br#"{"size": 9007199254740992}"#), None);
        assert_eq!(
            ObjectInfo::parse(br#"{"size": 18446744073709551615}"#),
            None
        );
        assert_eq!(ObjectInfo::parse(br#"{"creation-boot-id": "x"}"#), None);
        assert_eq!(parse_size(b"12345"), Some(12345));
        assert_eq!(parse_size(b" 7\n"), Some(7));
        assert_eq!(parse_size(b"-1"), None);
        assert_eq!(parse_size(b"1.5"), None);
        assert_eq!(parse_size(b""), None);
    }
}
