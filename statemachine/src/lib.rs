//! Percy's replicated state machine.
//!
//! Every `percyd` node feeds the same [`Command`]s, in Raft log order, to
//! [`StateMachine::apply`] and so reaches the same state and gives the same [`Response`]s.
//!
//! Architecture invariant: this crate does no I/O. No clock (time arrives as the leader's
//! `now_ms` stamp inside each apply), no randomness, no threads, no async runtime, no storage,
//! no network. Iteration order is always deterministic (`BTreeMap`, never `HashMap` for state).
//!
//! For the API edge (checks to run before proposing, so bad input costs no Raft round trip):
//! [`validate_command`] / [`validate()`] (everything checkable without state: sizes, names, lock
//! paths, plan duplicates and cycles, definition JSON), [`normalize_lock_path`],
//! [`canonical_definition_spec`]. For the log and snapshots: [`encode_command`],
//! [`decode_command`], [`StateMachine::snapshot`], [`StateMachine::restore`].
//!
//! Where the rules had to be made precise, the decision is written down next to the code:
//! fencing tokens, re-acquire, fairness and time in `machine/locks.rs`; claim tokens and
//! cascades in `machine/claims.rs`; exactly-once sessions in `machine/sessions.rs`.

pub mod agent;
mod canonical;
pub mod codec;
pub mod command;
pub mod config;
pub mod definition;
pub mod definition_run;
pub mod error;
pub mod event;
pub mod limits;
pub mod lock;
pub mod loop_spec;
mod machine;
pub mod message;
mod path;
pub mod response;
pub mod task;
pub mod token;
pub mod validate;

pub use agent::{Agent, AgentId, AgentLoad, AgentStatus, CheckpointedLoad};
pub use canonical::{canonical_definition_spec, CanonicalSpec};
pub use codec::{decode_command, encode_command, CodecError, FORMAT_VERSION};
pub use command::{Command, Op, SessionRef};
pub use config::ConfigEntry;
pub use definition::{ApplySummary, Definition, DefinitionRevision, DefinitionSpec, DesiredState};
pub use definition_run::{
    compose_prompt, DefinitionRun, Iteration, IterationReport, IterationStatus, Runner,
    SteeringMessage,
};
pub use error::{CommandError, ErrorKind};
pub use event::{EntityKind, EntityValue, Event};
pub use lock::{Lock, LockGrant, LockHolder, LockMode, LockWaiter};
pub use loop_spec::{parse_duration_ms, LoopSpec};
pub use machine::{Applied, StateMachine, TaskFilter, TaskPage};
pub use message::{Message, Recipient};
pub use path::{lock_paths_conflict, normalize_lock_path};
pub use response::{Cascade, Outcome, Released, Response};
pub use task::{Task, TaskId, TaskResult, TaskSpec, TaskStatus, EXEC_CAPABILITY, LOST_EXEC_PREFIX};
pub use token::{Role, Token, TokenId, TokenSpec};
pub use validate::{validate, validate_command};
