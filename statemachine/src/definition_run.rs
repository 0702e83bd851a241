//! Definitions that run: one *run* per definition that has ever been claimed — who runs it
//! (one runner cluster-wide, fenced like a task claim), its recent iterations and the steering
//! messages waiting for the next one.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::agent::AgentId;

/// The worker agent currently running a definition's loop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Runner {
    pub agent_id: AgentId,
    pub agent_name: String,
    pub node: String,
    /// The revision of the claim: every iteration command must present it, so a runner that
    /// lost the run (its agent expired, another took over) cannot record anything.
    pub run_token: u64,
    pub claimed_at_ms: u64,
}

/// A message an operator sent to a running definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SteeringMessage {
    /// The revision that accepted it (arrival order).
    pub id: u64,
    pub from: String,
    pub body: String,
    pub sent_at_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum IterationStatus {
    Running,
    /// Exit 0 and no `is_error` result.
    Succeeded,
    /// Non-zero exit, timeout, or a result that says `is_error`.
    Failed,
    /// Ended by `stop` (SIGTERM, then SIGKILL).
    Stopped,
    /// Its runner went away before it finished (expired, deregistered, or started another).
    Lost,
}

impl IterationStatus {
    pub fn name(self) -> &'static str {
        match self {
            IterationStatus::Running => "running",
            IterationStatus::Succeeded => "succeeded",
            IterationStatus::Failed => "failed",
            IterationStatus::Stopped => "stopped",
            IterationStatus::Lost => "lost",
        }
    }
}

/// What a runner reports when an iteration's command ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IterationReport {
    /// `None`: killed by a signal (timeout or stop).
    pub exit_code: Option<i32>,
    pub duration_ms: u64,
    /// The end of stdout/stderr, at most [`crate::limits::MAX_ITERATION_OUTPUT_LEN`].
    pub output_tail: String,
    /// From a Claude Code / codex JSON result, when the output had one.
    pub result_text: Option<String>,
    pub is_error: bool,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Millionths of a US dollar (the state is `Eq`, so no floats).
    pub cost_micros: u64,
    /// The command was stopped (desired state stopped, or the worker shut down).
    pub stopped: bool,
    pub timed_out: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Iteration {
    /// 1, 2, 3, … per definition; never reused.
    pub number: u64,
    pub agent_id: AgentId,
    pub agent_name: String,
    pub node: String,
    pub started_at_ms: u64,
    pub ended_at_ms: Option<u64>,
    pub status: IterationStatus,
    /// The spec's prompt followed by the steering messages below.
    pub prompt: String,
    /// The steering messages this iteration delivered, in arrival order.
    pub messages: Vec<SteeringMessage>,
    /// Set when it ended with a report (not for `Lost`).
    pub report: Option<IterationReport>,
}

/// The run state of one definition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefinitionRun {
    pub name: String,
    pub runner: Option<Runner>,
    /// The number the next iteration gets.
    pub next_number: u64,
    /// The number of the first iteration since the definition was last started, for
    /// `max_iterations`.
    pub first_number_of_start: u64,
    /// Oldest first, at most [`crate::limits::MAX_ITERATIONS_KEPT`].
    pub iterations: VecDeque<Iteration>,
    /// Waiting for the next iteration, in arrival order.
    pub pending: Vec<SteeringMessage>,
    pub revision: u64,
}

impl DefinitionRun {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            next_number: 1,
            first_number_of_start: 1,
            ..Self::default()
        }
    }

    /// The run as a watch event carries it: every field, but only the newest
    /// [`EVENT_ITERATIONS`] iterations — a change touches at most those (a start closes the
    /// previous one and opens the next), and carrying all 20 with their prompts and output in
    /// every event would fill the server's watch history with copies of the same iterations.
    pub fn for_event(&self) -> DefinitionRun {
        let skip = self.iterations.len().saturating_sub(EVENT_ITERATIONS);
        DefinitionRun {
            name: self.name.clone(),
            runner: self.runner.clone(),
            next_number: self.next_number,
            first_number_of_start: self.first_number_of_start,
            iterations: self.iterations.iter().skip(skip).cloned().collect(),
            pending: self.pending.clone(),
            revision: self.revision,
        }
    }

    /// The iteration still running, if any (only the newest can be).
    pub fn open_iteration(&self) -> Option<&Iteration> {
        self.iterations
            .back()
            .filter(|iteration| iteration.status == IterationStatus::Running)
    }
}

/// Iterations a [`DefinitionRun`] watch event carries (the newest ones).
pub const EVENT_ITERATIONS: usize = 2;

/// The prompt an iteration sends: the spec's prompt, then each steering message.
pub fn compose_prompt(base: &str, messages: &[SteeringMessage]) -> String {
    let mut prompt = base.to_owned();
    for message in messages {
        if !prompt.is_empty() && !prompt.ends_with('\n') {
            prompt.push('\n');
        }
        prompt.push_str(&format!(
            "\n[steering message from {}]\n{}\n",
            message.from, message.body
        ));
    }
    prompt
}
