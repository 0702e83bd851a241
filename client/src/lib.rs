//! Percy client library: a [`Client`] that talks to any node of a Percy cluster, retries
//! through failures with exactly-once semantics for writes, and exposes every `percy.v1`
//! RPC as a typed method; the watch stream; plan and manifest files. See ARCHITECTURE.md
//! for the code map.
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
mod document;
mod endpoints;
mod error;
pub mod git;
mod keep_alive;
pub mod manifest;
pub mod plan;
pub mod retry;
mod session;
mod watch;
pub mod worker;

pub use api::{LockRequest, TaskFilter, BROADCAST};
pub use client::Client;
pub use document::{DocumentError, Format};
pub use endpoints::CONNECT_TIMEOUT;
pub use error::{code_name, ClientError};
pub use keep_alive::KeepAlive;
pub use percy_proto::v1 as proto;
pub use percy_proto::v1::{Consistency, EntityKind, Event, LockMode, TaskStatus};
pub use retry::RetryPolicy;
pub use watch::{EventStream, WatchOptions};
