//! Commands: everything that changes the replicated state goes through the Raft log as one of
//! these. A command is data only; [`crate::StateMachine::apply`] gives it meaning.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::agent::{AgentId, AgentLoad};
use crate::definition::{DefinitionSpec, DesiredState};
use crate::definition_run::IterationReport;
use crate::lock::LockMode;
use crate::message::Recipient;
use crate::task::{TaskId, TaskResult, TaskSpec};
use crate::token::{TokenId, TokenSpec};

/// Identifies a request for exactly-once retries (Raft dissertation §6.3, with RIFL-style
/// acknowledgements so one client may have many requests in flight).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SessionRef {
    /// Chosen at random by the client library when it starts.
    pub client_id: u64,
    /// Per client, starting at 1, one per logical request (retries reuse it).
    pub seq: u64,
    /// The client has received the responses of every seq below this one, so the state
    /// machine may forget them.
    pub acked_below: u64,
}

/// One entry of the replicated log's payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    pub session: Option<SessionRef>,
    pub op: Op,
}

impl Command {
    /// A command without exactly-once tracking (monitor proposals, tests).
    pub fn new(op: Op) -> Self {
        Self { session: None, op }
    }
    pub fn with_session(op: Op, session: SessionRef) -> Self {
        Self {
            session: Some(session),
            op,
        }
    }
}

/// The operations. Adding a variant at the end keeps old logs and snapshots readable; never
/// reorder or remove one (the encoding is positional), bump [`crate::codec::FORMAT_VERSION`]
/// instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Register by name; a live agent of that name is refreshed (same id, new fields).
    RegisterAgent {
        name: String,
        node: String,
        capabilities: BTreeSet<String>,
        labels: BTreeMap<String, String>,
        /// 0 means 1.
        max_concurrent: u32,
        /// 0 means [`crate::limits::DEFAULT_AGENT_TTL_MS`].
        ttl_ms: u64,
    },
    /// The agent leaves: its tasks are requeued (no attempt counted), its locks released.
    DeregisterAgent {
        agent_id: AgentId,
    },
    /// Proposed by the leader's liveness monitor. Ids that are no longer active are skipped.
    ExpireAgents {
        agent_ids: Vec<AgentId>,
    },
    /// Occasional liveness checkpoint from the leader's in-memory heartbeat table.
    CheckpointAgents {
        last_seen_ms: Vec<(AgentId, u64)>,
    },

    SubmitTask(TaskSpec),
    /// All tasks or none: duplicate ids, unknown dependencies and cycles reject the whole plan.
    SubmitPlan {
        /// Generated (`plan-<revision>`) when `None`.
        plan_id: Option<String>,
        tasks: Vec<TaskSpec>,
    },
    /// Claim one named task. With `expected_revision`, only if the task is still at it (CAS).
    ClaimTask {
        task_id: TaskId,
        agent_id: AgentId,
        expected_revision: Option<u64>,
    },
    /// Claim the best ready task this agent can run: highest priority, then oldest.
    ClaimNext {
        agent_id: AgentId,
    },
    StartTask {
        task_id: TaskId,
        agent_id: AgentId,
        claim_token: u64,
    },
    CompleteTask {
        task_id: TaskId,
        agent_id: AgentId,
        claim_token: u64,
        result: TaskResult,
    },
    /// Requeue while attempts < max_attempts, else `Failed` (dependents cancelled).
    FailTask {
        task_id: TaskId,
        agent_id: AgentId,
        claim_token: u64,
        error: String,
    },
    /// Operator cancel of a non-terminal task; dependents are cancelled too.
    CancelTask {
        task_id: TaskId,
        reason: String,
    },
    /// Operator requeue of a held task (the holder's token becomes stale).
    RequeueTask {
        task_id: TaskId,
        reason: String,
    },

    /// All paths or none. `wait_ms: None` fails at once on conflict; `Some(ms)` queues (FIFO)
    /// and the grant happens in the apply that frees the paths.
    AcquireLocks {
        agent_id: AgentId,
        paths: Vec<String>,
        mode: LockMode,
        task_id: Option<TaskId>,
        ttl_ms: Option<u64>,
        wait_ms: Option<u64>,
    },
    /// Releases the agent's hold on these paths, and drops its queued requests for them.
    ReleaseLocks {
        agent_id: AgentId,
        paths: Vec<String>,
    },
    ReleaseAllLocks {
        agent_id: AgentId,
    },

    /// `expected_revision: Some(0)` means "only if absent".
    PutConfig {
        key: String,
        value: Vec<u8>,
        expected_revision: Option<u64>,
    },
    DeleteConfig {
        key: String,
        expected_revision: Option<u64>,
    },

    ApplyDefinitions {
        definitions: Vec<DefinitionSpec>,
    },
    SetDefinitionState {
        name: String,
        desired: DesiredState,
    },

    SendMessage {
        from: String,
        to: Recipient,
        body: String,
    },

    /// Time passes: expire lock TTLs, lock waits past their deadline, idle sessions. Proposed
    /// by the leader when something is due (and harmless when nothing is).
    Tick,

    /// A new access token (its secret's hash only). `bootstrap`: only if no token was ever
    /// created (the cluster's first admin token).
    CreateToken {
        spec: TokenSpec,
        bootstrap: bool,
    },
    /// Deletes a token: every node refuses it once it has applied this.
    RevokeToken {
        token_id: TokenId,
    },

    /// A worker takes over the loop of a running definition: one runner cluster-wide, until
    /// its agent expires or deregisters or it releases the run. The run token is this revision.
    ClaimDefinitionRun {
        name: String,
        agent_id: AgentId,
    },
    /// The runner starts the next iteration: the state machine numbers it and composes its
    /// prompt (spec prompt + the steering messages waiting, which it consumes).
    StartIteration {
        name: String,
        agent_id: AgentId,
        run_token: u64,
    },
    /// The runner reports how iteration `number` ended.
    FinishIteration {
        name: String,
        agent_id: AgentId,
        run_token: u64,
        number: u64,
        report: IterationReport,
    },
    /// The runner gives the loop up (shutdown, or the definition was stopped).
    ReleaseDefinitionRun {
        name: String,
        agent_id: AgentId,
        run_token: u64,
    },
    /// A steering message for a definition's next iteration.
    SteerDefinition {
        name: String,
        from: String,
        body: String,
    },

    /// Occasional checkpoint of the loads agents reported with their heartbeats, from the
    /// leader's in-memory table (like `CheckpointAgents`). Ids that are not active are skipped,
    /// and loads of agents no longer active are dropped.
    CheckpointAgentLoads {
        loads: Vec<(AgentId, AgentLoad)>,
    },

    /// Claim-next, and the task is working at once: claim and start in one write (a worker
    /// that runs what it claims straight away). The claim token is this revision, as with
    /// `ClaimNext`; the task goes from ready to working without a claimed step.
    ClaimNextStarted {
        agent_id: AgentId,
    },
    /// `CompleteTask`, then `ClaimNextStarted` for the same agent, in one write: the job
    /// queue's "acknowledge and fetch the next". Refused as a whole (nothing completed,
    /// nothing claimed) when the completion would be.
    CompleteAndClaimNext {
        task_id: TaskId,
        agent_id: AgentId,
        claim_token: u64,
        result: TaskResult,
    },
}
