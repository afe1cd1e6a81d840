//! Named crash points for the crash-matrix tests.
//!
//! With the `failpoints` feature, `failpoint!("name")` kills the process with
//! `SIGKILL` when the environment variable `FSCACHE_FAILPOINT` equals
//! `name`; the test then checks what a survivor finds. Without the feature
//! the macro expands to nothing.

/// Every crash point, in the order an operation reaches them. The crash
/// matrix test walks this list, so a new point is tested once it is here.
pub const ALL: &[&str] = &[
    "anon-before-mkdir",
    "anon-after-mkdir",
    "store-after-data",
    "commit-after-measure",
    "put-before-rename",
    "size-after-rename",
    "commit-after-info",
    "commit-after-rename",
    "give-back-after-info-unlink",
    "remove-after-info",
    "remove-before-lock",
    "evict-after-info",
    "sweep-after-lock",
    "info-after-temp",
];

/// Crash points that only a full cache with a live reservation reaches,
/// which the crash matrix's script (whose entries must all survive) cannot
/// make: each has a test of its own in `tests/reserve.rs`.
pub const FULL_CACHE: &[&str] = &["evict-into-before-record", "remover-before-remove"];

#[cfg(feature = "failpoints")]
#[doc(hidden)]
pub fn hit(name: &str) {
    use std::sync::OnceLock;
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    let armed = ARMED.get_or_init(|| std::env::var("FSCACHE_FAILPOINT").ok());
    if armed.as_deref() == Some(name) {
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    }
}

/// Crash here when the test armed this point (feature `failpoints`).
#[cfg(feature = "failpoints")]
#[macro_export]
#[doc(hidden)]
macro_rules! failpoint {
    ($name:literal) => {
        $crate::failpoint::hit($name)
    };
}

/// Compiled out without the `failpoints` feature.
#[cfg(not(feature = "failpoints"))]
#[macro_export]
#[doc(hidden)]
macro_rules! failpoint {
    ($name:literal) => {};
}
