//! placeholder
pub mod archive;
