//! The application-specific boot id that tags entries.
//!
//! The kernel's boot id is secret-ish and shared by every program; what we
//! store is HMAC-SHA256(key = kernel boot id, message = application id),
//! first 16 bytes, with the UUID version-4 bits forced, exactly as osbuild
//! computes it, so that both tag entries of one boot identically.

use std::path::Path;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::error::{IoContext, Op, Result};

const KERNEL_BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// The application-specific boot id for `app_id` given the kernel's boot id
/// (the text of `/proc/sys/kernel/random/boot_id`; surrounding white space
/// is stripped): 32 lowercase hex digits.
///
/// # Examples
///
/// ```
/// let id = fscache::app_boot_id("my-build-tool", "a2cc35b3-7a92-474a-8985-d89d6db8ec5c\n");
/// assert_eq!(id.len(), 32);
/// assert_eq!(&id[12..13], "4"); // a version-4 UUID
/// ```
pub fn app_boot_id(app_id: &str, kernel_boot_id: &str) -> String {
    let key = kernel_boot_id.trim_matches([' ', '\t', '\r', '\n']);
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(app_id.as_bytes());
    let digest = mac.finalize().into_bytes();
    let mut h = [0u8; 16];
    h.copy_from_slice(&digest[..16]);
    h[6] = (h[6] & 0x0f) | 0x40;
    // osbuild derives the variant byte from byte 6 (already rewritten), not
    // byte 8; we match it so that both compute the same id.
    h[8] = (h[6] & 0x3f) | 0x80;
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// The application-specific boot id of the running boot.
pub(crate) fn current(app_id: &str) -> Result<String> {
    let kernel = std::fs::read_to_string(KERNEL_BOOT_ID)
        .at(Op::ReadBootId, || Path::new(KERNEL_BOOT_ID).to_owned())?;
    Ok(app_boot_id(app_id, &kernel))
}
