//! The `fscache` command.
fn main() {}
