//! Percy's test kit: what every crate's tests start and wait for, in one place.
//!
//! - [`inprocess`]: nodes in the test's own process on loopback ports bound before they start
//!   (so the ports are theirs): [`TestCluster`] (its own runtime: usable from plain `#[test]`s
//!   and async tests alike) and, for tests that place nodes one by one, [`inprocess::Slot`]s.
//! - [`process`]: real `percyd` processes on ports the kernel picks (`--listen 127.0.0.1:0
//!   --address-file`), forming a cluster by `AddNode` — no test races another for a port.
//! - [`wait`]: [`eventually`] and the generous deadlines a loaded 2-core CI machine needs.
//! - [`grpc`]: a lazy channel to a node, and a node's Prometheus metrics.
//! - [`proxy`]: a TCP proxy per directed link whose directions pass, hang or reset (the
//!   fault-injection suite's network, `tests/src/cluster.rs`).
//! - [`launch`]: starting one `percyd` process and learning its port, the one way every
//!   harness above does it, and `percyctl bench --local` too. It alone is built without the
//!   default feature `harness` (it needs only std and libc), so the bench, a product, can use it.
//!
//! Everything started here is stopped on drop.

pub mod launch;

#[cfg(feature = "harness")]
pub mod binaries;
#[cfg(feature = "harness")]
pub mod grpc;
#[cfg(feature = "harness")]
pub mod inprocess;
#[cfg(feature = "harness")]
pub mod process;
#[cfg(feature = "harness")]
pub mod proxy;
#[cfg(feature = "harness")]
pub mod wait;

#[cfg(feature = "harness")]
pub use grpc::{channel, metric};
#[cfg(feature = "harness")]
pub use inprocess::TestCluster;
#[cfg(feature = "harness")]
pub use wait::{eventually, try_eventually, SETTLE};
