//! The atomics the crate shares between threads, swapped for loom's under
//! `cfg(loom)` so that the model tests in `tests/loom.rs` explore them.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU8, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU8, Ordering};
