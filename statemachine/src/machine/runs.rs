//! Definition runs: one runner per running definition, fenced like a task claim; iterations
//! numbered here (so no number is recorded twice, whoever runs the loop); steering messages
//! queued and consumed, in arrival order, into the next iteration's prompt.
//!
//! The runner's lease is its agent's: when the agent expires or deregisters, the run is free
//! (`runs_lose_agent`, called by `retire_agents`) and its open iteration is marked lost; any
//! matching worker may then claim it and goes on at the next number.

use crate::agent::AgentId;
use crate::definition::DesiredState;
use crate::definition_run::{
    compose_prompt, DefinitionRun, Iteration, IterationReport, IterationStatus, Runner,
    SteeringMessage,
};
use crate::error::CommandError;
use crate::limits::{
    MAX_ITERATIONS_KEPT, MAX_ITERATION_OUTPUT_LEN, MAX_MESSAGE_LEN, MAX_PENDING_STEERING_MESSAGES,
};
use crate::loop_spec::LoopSpec;
use crate::response::{Outcome, Response};

use super::ctx::Ctx;
use super::ready_index::agent_can_run;
use super::StateMachine;

impl StateMachine {
    /// The loop settings of a definition that can run now: it exists, its desired state is
    /// running and its current spec has a `command`.
    fn runnable_spec(&self, name: &str) -> Result<LoopSpec, CommandError> {
        let definition = self
            .definitions
            .get(name)
            .ok_or_else(|| CommandError::not_found(format!("definition {name} not found")))?;
        if definition.desired != DesiredState::Running {
            return Err(CommandError::precondition(format!(
                "definition {name} is stopped"
            )));
        }
        let current = definition
            .history
            .last()
            .ok_or_else(|| CommandError::precondition(format!("definition {name} has no spec")))?;
        let spec = LoopSpec::parse(name, &current.spec_json)?;
        if spec.command.is_none() {
            return Err(CommandError::precondition(format!(
                "definition {name} has no `command` to run"
            )));
        }
        Ok(spec)
    }

    /// The run, checked against the runner presenting `agent_id` and `run_token`.
    fn fenced_run(
        &self,
        name: &str,
        agent_id: AgentId,
        run_token: u64,
    ) -> Result<&DefinitionRun, CommandError> {
        let run = self
            .runs
            .get(name)
            .ok_or_else(|| CommandError::not_found(format!("definition {name} has no run")))?;
        match &run.runner {
            Some(runner) if runner.agent_id == agent_id && runner.run_token == run_token => Ok(run),
            _ => Err(CommandError::precondition(format!(
                "run token {run_token} of agent {agent_id} is stale: definition {name} is not \
                 run by it any more"
            ))),
        }
    }

    /// Takes the run of a definition. The same runner asking again gets its claim back
    /// (a retried claim); anyone else is refused while a runner holds it.
    pub(super) fn claim_definition_run(
        &mut self,
        ctx: &mut Ctx,
        name: &str,
        agent_id: AgentId,
    ) -> Response {
        let spec = self.runnable_spec(name)?;
        if let Some(run) = self.runs.get(name) {
            if has_run_its_course(run, spec.max_iterations) {
                return Err(CommandError::precondition(format!(
                    "definition {name} has run its max_iterations ({}); start it again",
                    spec.max_iterations
                )));
            }
        }
        let agent = self.active_agent(agent_id)?;
        if !agent_can_run(agent, &spec.capabilities, &spec.selector) {
            return Err(CommandError::precondition(format!(
                "agent {} lacks the capabilities or labels definition {name} asks for",
                agent.name
            )));
        }
        if let Some(runner) = self.runs.get(name).and_then(|run| run.runner.as_ref()) {
            if runner.agent_id == agent_id {
                return Ok(Outcome::RunClaimed(self.runs[name].clone()));
            }
            return Err(CommandError::precondition(format!(
                "definition {name} is run by agent {} ({}) on {}",
                runner.agent_id, runner.agent_name, runner.node
            )));
        }
        let runner = Runner {
            agent_id,
            agent_name: agent.name.clone(),
            node: agent.node.clone(),
            run_token: ctx.revision,
            claimed_at_ms: ctx.now_ms,
        };
        let run = self
            .runs
            .entry(name.to_owned())
            .or_insert_with(|| DefinitionRun::new(name));
        run.runner = Some(runner);
        run.revision = ctx.revision;
        ctx.run_changed(run);
        Ok(Outcome::RunClaimed(run.clone()))
    }

    /// Numbers the next iteration and composes its prompt from the spec and the steering
    /// messages waiting (which it consumes). An iteration the runner left open is lost.
    pub(super) fn start_iteration(
        &mut self,
        ctx: &mut Ctx,
        name: &str,
        agent_id: AgentId,
        run_token: u64,
    ) -> Response {
        let spec = self.runnable_spec(name)?;
        let run = self.fenced_run(name, agent_id, run_token)?;
        if has_run_its_course(run, spec.max_iterations) {
            return Err(CommandError::precondition(format!(
                "definition {name} has run its max_iterations ({})",
                spec.max_iterations
            )));
        }
        let Some(run) = self.runs.get_mut(name) else {
            return Err(CommandError::not_found(format!(
                "definition {name} has no run"
            )));
        };
        let Some(runner) = run.runner.clone() else {
            return Err(CommandError::precondition(format!(
                "definition {name} has no runner"
            )));
        };
        close_open_iteration(run, ctx.now_ms, IterationStatus::Lost, None);
        let messages = std::mem::take(&mut run.pending);
        let iteration = Iteration {
            number: run.next_number,
            agent_id,
            agent_name: runner.agent_name,
            node: runner.node,
            started_at_ms: ctx.now_ms,
            ended_at_ms: None,
            status: IterationStatus::Running,
            prompt: compose_prompt(&spec.prompt, &messages),
            messages,
            report: None,
        };
        run.next_number += 1;
        run.iterations.push_back(iteration.clone());
        while run.iterations.len() > MAX_ITERATIONS_KEPT {
            run.iterations.pop_front();
        }
        run.revision = ctx.revision;
        ctx.run_changed(run);
        Ok(Outcome::IterationStarted(iteration))
    }

    /// Records how an iteration ended. When it was the last of `max_iterations`, the
    /// definition is stopped (the loop is done; `start` runs it again).
    pub(super) fn finish_iteration(
        &mut self,
        ctx: &mut Ctx,
        name: &str,
        agent_id: AgentId,
        run_token: u64,
        number: u64,
        report: IterationReport,
    ) -> Response {
        let run = self.fenced_run(name, agent_id, run_token)?;
        match run.open_iteration() {
            Some(open) if open.number == number => {}
            _ => {
                return Err(CommandError::precondition(format!(
                    "iteration {number} of definition {name} is not running"
                )))
            }
        }
        if report.output_tail.len() > MAX_ITERATION_OUTPUT_LEN
            || report
                .result_text
                .as_ref()
                .is_some_and(|text| text.len() > MAX_ITERATION_OUTPUT_LEN)
        {
            return Err(CommandError::invalid(format!(
                "output tail and result text are at most {MAX_ITERATION_OUTPUT_LEN} bytes each"
            )));
        }
        let Some(run) = self.runs.get_mut(name) else {
            return Err(CommandError::not_found(format!(
                "definition {name} has no run"
            )));
        };
        let status = if report.stopped {
            IterationStatus::Stopped
        } else if report.exit_code == Some(0) && !report.is_error && !report.timed_out {
            IterationStatus::Succeeded
        } else {
            IterationStatus::Failed
        };
        close_open_iteration(run, ctx.now_ms, status, Some(report));
        run.revision = ctx.revision;
        ctx.run_changed(run);
        let finished = run.iterations.back().cloned();
        self.stop_if_done(ctx, name);
        match finished {
            Some(iteration) => Ok(Outcome::IterationFinished(iteration)),
            None => Err(CommandError::not_found(format!(
                "iteration {number} of definition {name} not found"
            ))),
        }
    }

    /// The runner gives the run up (shutdown, or the definition was stopped); an iteration it
    /// left open is lost.
    pub(super) fn release_definition_run(
        &mut self,
        ctx: &mut Ctx,
        name: &str,
        agent_id: AgentId,
        run_token: u64,
    ) -> Response {
        self.fenced_run(name, agent_id, run_token)?;
        let Some(run) = self.runs.get_mut(name) else {
            return Err(CommandError::not_found(format!(
                "definition {name} has no run"
            )));
        };
        close_open_iteration(run, ctx.now_ms, IterationStatus::Lost, None);
        run.runner = None;
        run.revision = ctx.revision;
        ctx.run_changed(run);
        let released = run.clone();
        self.stop_if_done(ctx, name);
        Ok(Outcome::RunReleased(released))
    }

    /// Queues a steering message for the definition's next iteration (running or not: a
    /// stopped definition gets it when it starts again).
    pub(super) fn steer_definition(
        &mut self,
        ctx: &mut Ctx,
        name: &str,
        from: String,
        body: String,
    ) -> Response {
        if !self.definitions.contains_key(name) {
            return Err(CommandError::not_found(format!(
                "definition {name} not found"
            )));
        }
        if body.trim().is_empty() {
            return Err(CommandError::invalid("a steering message needs a body"));
        }
        if body.len() > MAX_MESSAGE_LEN {
            return Err(CommandError::invalid(format!(
                "a steering message is at most {MAX_MESSAGE_LEN} bytes (this one is {})",
                body.len()
            )));
        }
        let pending = self.runs.get(name).map_or(0, |run| run.pending.len());
        if pending >= MAX_PENDING_STEERING_MESSAGES {
            return Err(CommandError::exhausted(format!(
                "definition {name} already has {pending} steering messages waiting for its \
                 next iteration"
            )));
        }
        let message = SteeringMessage {
            id: ctx.revision,
            from,
            body,
            sent_at_ms: ctx.now_ms,
        };
        let run = self
            .runs
            .entry(name.to_owned())
            .or_insert_with(|| DefinitionRun::new(name));
        run.pending.push(message.clone());
        run.revision = ctx.revision;
        ctx.run_changed(run);
        Ok(Outcome::SteeringQueued(message))
    }

    /// A definition (re)started: `max_iterations` counts from its next iteration.
    pub(super) fn run_restarted(&mut self, ctx: &mut Ctx, name: &str) {
        if let Some(run) = self.runs.get_mut(name) {
            run.first_number_of_start = run.next_number;
            run.revision = ctx.revision;
            ctx.run_changed(run);
        }
    }

    /// The agent left (expired or deregistered): the runs it held are free again.
    pub(super) fn runs_lose_agent(&mut self, ctx: &mut Ctx, agent_id: AgentId) {
        let mut freed = Vec::new();
        for run in self.runs.values_mut() {
            if run
                .runner
                .as_ref()
                .is_some_and(|runner| runner.agent_id == agent_id)
            {
                close_open_iteration(run, ctx.now_ms, IterationStatus::Lost, None);
                run.runner = None;
                run.revision = ctx.revision;
                ctx.run_changed(run);
                freed.push(run.name.clone());
            }
        }
        for name in freed {
            self.stop_if_done(ctx, &name);
        }
    }

    /// A loop that has started its `max_iterations` and has none running is done: the
    /// definition is stopped (`start` runs it again), so no worker keeps claiming it.
    fn stop_if_done(&mut self, ctx: &mut Ctx, name: &str) {
        let max_iterations = self
            .definitions
            .get(name)
            .and_then(|definition| definition.history.last())
            .and_then(|current| LoopSpec::parse(name, &current.spec_json).ok())
            .map_or(0, |spec| spec.max_iterations);
        let done = self.runs.get(name).is_some_and(|run| {
            run.open_iteration().is_none() && has_run_its_course(run, max_iterations)
        });
        if !done {
            return;
        }
        if let Some(definition) = self.definitions.get_mut(name) {
            if definition.desired != DesiredState::Stopped {
                definition.desired = DesiredState::Stopped;
                definition.revision = ctx.revision;
                ctx.definition_changed(definition);
            }
        }
    }
}

/// Whether the loop has started all `max_iterations` (0: never) since it was last started.
fn has_run_its_course(run: &DefinitionRun, max_iterations: u64) -> bool {
    max_iterations > 0 && run.next_number - run.first_number_of_start >= max_iterations
}

fn close_open_iteration(
    run: &mut DefinitionRun,
    now_ms: u64,
    status: IterationStatus,
    report: Option<IterationReport>,
) {
    if let Some(open) = run
        .iterations
        .back_mut()
        .filter(|iteration| iteration.status == IterationStatus::Running)
    {
        open.status = status;
        open.ended_at_ms = Some(now_ms);
        open.report = report;
    }
}
