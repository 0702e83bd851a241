//! percy-lazyfs: a FUSE filesystem for the fault suite's power-loss nemesis. It keeps every
//! write in memory and makes it durable only when the file (or, for entries, the directory) is
//! `fsync`ed; [`Mounted::power_cut`] then drops everything unsynced, as a power cut would.
//!
//! - `content.rs` — a file's bytes, copy-on-write chunks.
//! - `model.rs` — the pure model: current and durable trees, the POSIX rules (tested in
//!   `model_tests.rs`).

mod content;
pub mod model;
#[cfg(test)]
mod model_tests;
