//! Percy's Jepsen-style fault-injection suite.
//!
//! - [`history`]: what clients and the nemesis did, on one clock, as JSON lines.
//! - [`checker`]: verdicts over histories (linearizability, claims, locks, queue, watch).
//! - [`proxy`]: a TCP proxy per directed peer link, whose directions pass, hang or reset
//!   (percy-testkit's).
//! - [`cluster`]: real `percyd` processes (started by percy-testkit's `launch`) behind those
//!   proxies; kill, restart, pause, power cuts.
//! - [`binaries`]: the workspace's `percyd` and `percyctl`, prebuilt or built once.
//! - [`nemesis`]: the faults, and the seeded schedule that injects and heals them.
//! - [`fenced`]: the fenced resource the lock workload writes to.
//! - [`duplicate`]: calls sent twice with one session header, as a lost answer's retry is.
//! - [`workload`]: what the clients do; [`run`]: one run from start to verdict.
//!
//! See the crate README for the history format and how to run the soaks.

pub use percy_testkit::{binaries, proxy};
pub mod checker;
pub mod cluster;
pub mod duplicate;
pub mod fenced;
pub mod history;
pub mod nemesis;
pub mod run;
pub mod workload;
