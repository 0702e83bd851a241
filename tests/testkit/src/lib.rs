//! Percy's test kit: what every crate's tests start and wait for, in one place.
//!
//! - [`inprocess`]: nodes in the test's own process on loopback ports bound before they start
//!   (so the ports are theirs): [`TestCluster`] (its own runtime: usable from plain `#[test]`s
//!   and async tests alike) and, for tests that place nodes one by one, [`inprocess::Slot`]s.
//! - [`process`]: real `percyd` processes on ports the kernel picks (`--listen 127.0.0.1:0
//!   --address-file`), forming a cluster by `AddNode` — no test races another for a port.
//! - [`wait`]: [`eventually`] and the generous deadlines a loaded 2-core CI machine needs.
//! - [`grpc`]: a lazy channel to a node, and a node's Prometheus metrics.
//!
//! Everything started here is stopped on drop. The fault-injection suite's cluster (with its
//! proxies, in `tests/src/`) builds on percyd processes too but is the suite's own.

pub mod binaries;
pub mod grpc;
pub mod inprocess;
pub mod process;
pub mod wait;

pub use grpc::{channel, metric};
pub use inprocess::TestCluster;
pub use wait::{eventually, try_eventually, SETTLE};
