//! What applying a command answers. Stored in sessions, so it is plain data.

use serde::{Deserialize, Serialize};

use crate::agent::{Agent, AgentId};
use crate::config::ConfigEntry;
use crate::definition::{ApplySummary, Definition};
use crate::definition_run::{DefinitionRun, Iteration, SteeringMessage};
use crate::error::CommandError;
use crate::lock::LockGrant;
use crate::message::Message;
use crate::task::{Task, TaskId};
use crate::token::Token;

pub type Response = Result<Outcome, CommandError>;

/// What an agent lost when it expired or deregistered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Released {
    pub agent_id: AgentId,
    pub requeued_tasks: Vec<TaskId>,
    pub released_locks: Vec<String>,
    /// Lock requests granted to waiters because of this release.
    pub granted: Vec<LockGrant>,
}

/// What a change to one task did to the rest of the DAG.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cascade {
    /// Dependents that became ready.
    pub unblocked: Vec<TaskId>,
    /// Dependents cancelled because a dependency failed or was cancelled.
    pub cancelled: Vec<TaskId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    AgentRegistered {
        agent: Agent,
        created: bool,
    },
    AgentDeregistered(Released),
    AgentsExpired(Vec<Released>),
    AgentsCheckpointed {
        updated: u32,
    },

    TaskSubmitted(Task),
    PlanSubmitted {
        plan_id: String,
        tasks: Vec<Task>,
    },
    /// `None`: nothing claimable for this agent right now (claim-next only).
    TaskClaimed(Option<Task>),
    /// Start, complete, fail, cancel, requeue.
    TaskUpdated {
        task: Task,
        cascade: Cascade,
    },

    LocksAcquired(Vec<LockGrant>),
    /// Queued behind a conflicting holder; `position` is 1-based in the FIFO.
    LockQueued {
        position: u32,
        queued_revision: u64,
    },
    LocksReleased {
        released: Vec<String>,
        granted: Vec<LockGrant>,
    },

    ConfigPut(ConfigEntry),
    ConfigDeleted {
        key: String,
        revision: u64,
    },

    DefinitionsApplied(ApplySummary),
    DefinitionUpdated(Definition),

    MessageSent {
        message: Message,
        dropped: u64,
    },

    Ticked {
        expired_lock_holders: u32,
        expired_waiters: u32,
        expired_sessions: u32,
        granted: Vec<LockGrant>,
    },

    TokenCreated(Token),
    TokenRevoked(Token),

    /// Claimed (or claimed again by the same runner); the runner's `run_token` is in it.
    RunClaimed(DefinitionRun),
    IterationStarted(Iteration),
    IterationFinished(Iteration),
    RunReleased(DefinitionRun),
    SteeringQueued(SteeringMessage),

    /// `CompleteAndClaimNext`: the completed task, its cascade, and the next task, already
    /// working (`None`: nothing claimable for this agent right now).
    TaskCompletedClaimedNext {
        task: Task,
        cascade: Cascade,
        /// Boxed: two whole tasks would make every `Outcome` twice as large.
        next: Option<Box<Task>>,
    },
}
