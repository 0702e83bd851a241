//! Percy client library: a [`Client`] that talks to any node of a Percy cluster, retries
//! through failures with exactly-once semantics for writes, and exposes every `percy.v1`
//! RPC as a typed method; the watch stream; an agent's keep-alive stream. It depends on
//! nothing a program talking to Percy would not need: the worker runtime (`percy-worker`),
//! the git pipeline (`percy-git`), the CLI (`percyctl`) and the load generator
//! (`percy-bench`) are crates of their own. See ARCHITECTURE.md for the code map.
//!
//! ```no_run
//! # async fn demo() -> Result<(), percy_client::ClientError> {
//! use percy_client::{Client, Consistency};
//! let client = Client::connect(&["127.0.0.1:7070".to_owned()]).await?;
//! let tasks = client.list_tasks(&Default::default(), Consistency::Linearizable).await?;
//! println!("{} tasks at revision {}", tasks.tasks.len(), tasks.header.map_or(0, |h| h.revision));
//! # Ok(()) }
//! ```

mod api;
mod client;
mod endpoints;
mod error;
mod keep_alive;
pub mod retry;
mod security;
mod session;
mod watch;

pub use api::{LockRequest, RunClaim, TaskFilter, BROADCAST};
pub use client::Client;
pub use endpoints::CONNECT_TIMEOUT;
pub use error::ClientError;
pub use keep_alive::KeepAlive;
pub use percy_proto::backup;
pub use percy_proto::code_name;
pub use percy_proto::paging;
pub use percy_proto::v1 as proto;
pub use percy_proto::v1::{Consistency, EntityKind, Event, LockMode, TaskStatus};
pub use retry::RetryPolicy;
pub use security::{Security, TlsOptions};
pub use watch::{EventStream, WatchOptions};
