//! The server's integration tests start clusters and wait with the workspace's test kit
//! (`percy-testkit`); this module only names what they use.

#![allow(unused_imports)] // each test binary uses its own subset

pub use percy_testkit::inprocess::{
    agreed_leader, config, peers_of, slots, start, start_all, Slot,
};
pub use percy_testkit::{channel, eventually, metric, SETTLE};

/// Real `percyd` processes.
pub mod procs {
    pub use percy_testkit::process::*;
}
