//! The client's tests (and percyctl's, through `#[path]`) run against the workspace test kit's
//! in-process cluster (`percy-testkit`): real gRPC on loopback, real storage in a temp dir,
//! on a runtime of its own, stopped on drop.

pub use percy_testkit::TestCluster;
