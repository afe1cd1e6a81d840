//! Entry names: what a caller may call an entry.

use crate::error::{Error, Result};

/// The longest name a Linux file system takes for one path component.
pub const MAX_NAME_LEN: usize = 255;

/// Check that `name` can name an entry in `objects/`: a single, ordinary
/// path component that does not collide with anonymous `uuid-*` entries.
///
/// # Errors
///
/// [`Error::InvalidName`] with the reason.
///
/// # Examples
///
/// ```
/// assert!(fscache::validate_name("gcc-13-build-7f3a").is_ok());
/// assert!(fscache::validate_name("../etc").is_err());
/// assert!(fscache::validate_name("uuid-0123").is_err());
/// ```
pub fn validate_name(name: &str) -> Result<&str> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name == "." || name == ".." {
        "it names a directory itself"
    } else if name.contains('/') {
        "it contains `/`"
    } else if name.contains('\0') {
        "it contains NUL"
    } else if name.len() > MAX_NAME_LEN {
        "it is longer than 255 bytes"
    } else if name.starts_with("uuid-") {
        "names starting with `uuid-` are reserved for anonymous entries"
    } else {
        return Ok(name);
    };
    Err(Error::InvalidName {
        name: name.to_owned(),
        reason,
    })
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn every_rejected_form_names_its_reason() {
        for (bad, why) in [
            ("", "empty"),
            (".", "directory"),
            ("..", "directory"),
            ("a/b", "`/`"),
            ("/abs", "`/`"),
            ("a\0b", "NUL"),
            ("uuid-x", "reserved"),
        ] {
            match validate_name(bad) {
                Err(Error::InvalidName { name, reason }) => {
                    assert_eq!(name, bad);
                    assert!(reason.contains(why), "{bad:?}: {reason}");
                }
                other => panic!("{bad:?} was accepted: {other:?}"),
            }
        }
        assert!(validate_name(&"x".repeat(256)).is_err());
        assert!(validate_name(&"x".repeat(255)).is_ok());
        for good in [
            "a",
            "...",
            "uuid",
            "UUID-x",
            "object.lock",
            "with space",
            "ünïcode",
        ] {
            assert!(validate_name(good).is_ok(), "{good:?}");
        }
    }
}
