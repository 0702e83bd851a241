//! Typed methods of [`crate::Client`], one file per `percy.v1` service. Each returns the
//! proto response, which carries the `ResponseHeader` (answering node, leader, revision).

mod agents;
mod cluster;
mod config;
mod definition_runs;
mod definitions;
mod exec;
mod locks;
mod messages;
mod paging;
mod plans;
mod tasks;
mod tokens;

pub use definition_runs::RunClaim;
pub use locks::LockRequest;
pub use messages::BROADCAST;
pub use tasks::TaskFilter;
