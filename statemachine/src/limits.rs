//! Every limit the state machine enforces, in one place. The API edge checks the same constants
//! before proposing, so a bad request is refused without a Raft round trip; apply checks them
//! again because the log is the last line of defence (and a replayed log must refuse the same
//! things it refused the first time).

/// Longest agent name, task id/title, plan id, config key, definition name (bytes).
pub const MAX_NAME_LEN: usize = 256;
/// Longest task description (bytes).
pub const MAX_DESCRIPTION_LEN: usize = 64 * 1024;
/// Largest task payload (bytes).
pub const MAX_PAYLOAD_LEN: usize = 1024 * 1024;
/// Largest task result summary / output tail / error text (bytes).
pub const MAX_RESULT_LEN: usize = 64 * 1024;
/// Largest config value (bytes).
pub const MAX_CONFIG_VALUE_LEN: usize = 256 * 1024;
/// Largest canonical definition spec (bytes).
pub const MAX_DEFINITION_SPEC_LEN: usize = 256 * 1024;
/// Most definitions in one `apply`.
pub const MAX_DEFINITIONS_PER_APPLY: usize = 1_000;
/// Most revisions kept per definition (oldest dropped first).
pub const MAX_DEFINITION_REVISIONS: usize = 32;
/// Most tasks in one plan.
pub const MAX_PLAN_TASKS: usize = 10_000;
/// Most direct dependencies of one task.
pub const MAX_DEPENDENCIES: usize = 1_000;
/// Most capabilities of an agent or requirements of a task; most labels / selector entries.
pub const MAX_CAPABILITIES: usize = 64;
pub const MAX_LABELS: usize = 64;
/// Longest capability, label key or label value (bytes).
pub const MAX_LABEL_LEN: usize = 128;
/// Upper bound of `max_concurrent` and `max_attempts`.
pub const MAX_CONCURRENT_TASKS: u32 = 1_024;
pub const MAX_ATTEMPTS: u32 = 100;
/// Default `max_attempts` when a task does not say.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Default agent TTL (no heartbeat for this long → expired) and its bounds.
pub const DEFAULT_AGENT_TTL_MS: u64 = 10_000;
pub const MIN_AGENT_TTL_MS: u64 = 1_000;
pub const MAX_AGENT_TTL_MS: u64 = 24 * 3_600_000;
/// Agent loads in one `CheckpointAgentLoads` (the leader splits a larger table).
pub const MAX_LOADS_PER_CHECKPOINT: usize = 10_000;
/// Lock paths: longest path, most components, most paths in one acquire.
pub const MAX_LOCK_PATH_LEN: usize = 4_096;
pub const MAX_LOCK_PATH_DEPTH: usize = 64;
pub const MAX_LOCK_PATHS_PER_ACQUIRE: usize = 256;
/// Most queued (waiting) acquire requests cluster-wide.
pub const MAX_LOCK_WAITERS: usize = 10_000;
/// Longest lock TTL and longest wait.
pub const MAX_LOCK_TTL_MS: u64 = 7 * 24 * 3_600_000;
pub const MAX_LOCK_WAIT_MS: u64 = 3_600_000;
/// Messages: longest body, mailbox capacity per recipient (oldest dropped first).
pub const MAX_MESSAGE_LEN: usize = 16 * 1024;
pub const MAILBOX_CAPACITY: usize = 256;
/// Sessions: idle time after which a client session is forgotten, and how many responses one
/// session may keep for requests the client has not acknowledged yet.
pub const SESSION_IDLE_TIMEOUT_MS: u64 = 10 * 60_000;
pub const MAX_SESSION_INFLIGHT: usize = 4_096;
/// Most sessions kept at once; the least recently used one is dropped beyond this.
pub const MAX_SESSIONS: usize = 100_000;
/// Most access tokens at once (each is a few hundred bytes of state on every node).
pub const MAX_TOKENS: usize = 10_000;
/// Definition loops: longest `prompt` in a spec, longest per-iteration `timeout`.
pub const MAX_LOOP_PROMPT_LEN: usize = 64 * 1024;
pub const MAX_LOOP_ITERATION_TIMEOUT_MS: u64 = 24 * 3_600_000;
/// Iterations kept per definition (oldest dropped first).
pub const MAX_ITERATIONS_KEPT: usize = 20;
/// Largest output tail and result text kept per iteration (bytes; the worker sends the end).
pub const MAX_ITERATION_OUTPUT_LEN: usize = 16 * 1024;
/// Most steering messages waiting for a definition's next iteration.
pub const MAX_PENDING_STEERING_MESSAGES: usize = 16;
/// Most tasks the state holds (they are never removed). Indexes store a task's position in
/// 32 bits, which keeps them small at a million tasks; a node would need hundreds of gigabytes
/// of memory long before this.
pub const MAX_TASKS: usize = u32::MAX as usize;
