//! percyd: Percy's replicated service. See ARCHITECTURE.md for the code map.
//!
//! The spine (ARCHITECTURE.md, Design §1): `api` (one module per public service) → `api::edge` (validate,
//! then `propose` or `read`) → openraft (`network`, `raft_service`) → `storage` →
//! `percy_statemachine`. Start a node in-process with [`Node::start`].

mod api;
mod auth;
mod batcher;
mod cluster_identity;
pub mod config;
mod context;
mod convert;
#[cfg(test)]
mod durability_tests;
mod exec_relay;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod http;
mod liveness;
mod metrics;
mod network;
mod node;
mod propose;
mod raft_service;
mod read;
mod reflection;
mod relay;
mod removal;
pub mod restore;
mod snapshot_policy;
mod state;
pub mod storage;
mod tagged_stream;
#[cfg(test)]
mod test_cluster;
pub mod tls;
pub mod types;
mod vote_guard;
mod watch;
mod wire;

pub use auth::bootstrap::{admin_token_path, ADMIN_TOKEN_FILE};
pub use config::{Cli, NodeConfig};
pub use node::{Node, NodeError, NodeHandle, PUBLIC_MAX_MESSAGE_BYTES};
