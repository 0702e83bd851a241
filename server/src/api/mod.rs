//! The public `percy.v1` gRPC services, one file per service. Each handler checks its input,
//! turns it into an `Op` (validated by the state machine's stateless `validate` before anything
//! is proposed), proposes it or reads after the barrier, and converts the outcome back.
//! Handlers never touch Raft or storage directly: `edge` is their only path to both.

pub mod agent;
pub mod cluster;
pub mod config;
pub mod definition;
pub mod definition_run;
mod edge;
pub mod exec;
pub mod lock;
pub mod message;
mod paging;
pub mod plan;
pub mod task;
pub mod token;
pub mod watch;

pub(crate) use edge::{
    observe, read, required, required_id, session, stamp_routing, unexpected, write,
    write_authorized,
};
