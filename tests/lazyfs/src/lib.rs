//! percy-lazyfs: a FUSE filesystem for the fault suite's power-loss nemesis. It keeps every
//! write in memory and makes it durable only when the file (or, for entries, the directory) is
//! `fsync`ed; [`Mounted::power_cut`] then drops everything unsynced, as a power cut would.
//!
//! - `content.rs` — a file's bytes, copy-on-write chunks.
//! - `model.rs` — the pure model: current and durable trees, the POSIX rules (tested in
//!   `model_tests.rs`).
//! - `fs.rs` — the FUSE adapter: kernel requests as model calls.
//! - `mount.rs` — mounting, the power switch ([`Mounted::power_cut`]), unmounting.
//! - `backing.rs` — the backing directory the tree is loaded from and saved to.

mod backing;
mod content;
mod error;
mod fs;
pub mod model;
#[cfg(test)]
mod model_tests;
mod mount;

pub use error::LazyFsError;
pub use mount::Mounted;
