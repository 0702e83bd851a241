//! One incarnation of the worker: the life of one agent registration. It heartbeats, wakes on
//! the watch, claims while it has room, runs attempts, and ends in one of two ways:
//!
//! - the cluster says the agent expired: every running command is killed (its claim token is
//!   stale, whatever it produces cannot be reported) and the worker registers again;
//! - shutdown: no more claims, running commands get the grace period, then are killed and
//!   their tasks failed; the agent's locks are released and it deregisters.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, MissedTickBehavior};
use tonic::Code;

use crate::attempt::{run_attempt, AttemptEnv, AttemptOutcome, Finished, Interrupt};
use crate::feed::{Feed, Wake};
use crate::heartbeat::beat_until_expired;
use crate::inbox::Inbox;
use crate::loops::{supervise, LoopEnv, LoopStop};
use crate::machine_load::Running;
use crate::shutdown::Shutdown;
use crate::WorkerSummary;
use crate::EXEC_CAPABILITY;
use percy_client::proto::Agent;

/// Safety net under the watch: look for claimable tasks this often even without an event
/// (a missed wake-up then costs at most this long, never a stuck task).
pub const CLAIM_RECHECK_INTERVAL: Duration = Duration::from_secs(5);

/// How an incarnation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IncarnationEnd {
    /// The agent is no longer active; the reason is for the log.
    Expired(String),
    /// Shut down as asked; whether the agent could be deregistered.
    ShutDown { deregistered: bool },
}

/// A registered agent and everything that lives as long as its registration.
pub struct Incarnation {
    env: Arc<AttemptEnv>,
    agent: Agent,
    heartbeat_interval: Duration,
    feed: Feed,
    inbox: Inbox,
    running: JoinSet<Finished>,
    /// What `running` holds, as tasks and execs: reported with the heartbeats.
    counts: Arc<Running>,
    interrupt: watch::Sender<Interrupt>,
    /// The definition loops (`--definitions`), and how to stop them.
    loops: Option<(JoinHandle<()>, watch::Sender<LoopStop>)>,
}

impl Incarnation {
    /// `from_revision`: the registration's revision + 1 (where the watch starts).
    pub fn new(
        env: Arc<AttemptEnv>,
        agent: Agent,
        heartbeat_interval: Duration,
        from_revision: u64,
        inbox: Inbox,
    ) -> Incarnation {
        let feed = Feed::open(env.client.clone(), agent.clone(), from_revision);
        Incarnation {
            env,
            agent,
            heartbeat_interval,
            feed,
            inbox,
            running: JoinSet::new(),
            counts: Arc::default(),
            interrupt: watch::channel(Interrupt::None).0,
            loops: None,
        }
    }

    pub async fn run(
        mut self,
        shutdown: &mut Shutdown,
        summary: &mut WorkerSummary,
    ) -> IncarnationEnd {
        let mut heartbeat = AbortOnDrop(tokio::spawn(beat_until_expired(
            self.env.client.clone(),
            self.agent.id,
            self.heartbeat_interval,
            self.counts.clone(),
        )));
        if self.env.config.definitions {
            let (stop, stop_rx) = watch::channel(LoopStop::None);
            let env = Arc::new(LoopEnv {
                client: self.env.client.clone(),
                agent: self.agent.clone(),
                config: self.env.config.clone(),
            });
            self.loops = Some((tokio::spawn(supervise(env, stop_rx)), stop));
        }
        // A worker with neither --exec nor --accept-exec runs definitions only: it claims no
        // tasks (an exec-only worker claims execs, by id: see `claim_while_room`).
        let claims_tasks = self.env.config.runs_tasks() || self.env.config.accept_exec;
        let mut recheck = tokio::time::interval(CLAIM_RECHECK_INTERVAL);
        recheck.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // The first tick is immediate: look for work that was ready before we registered.
        let mut want_claim = false;
        let mut grace_deadline: Option<Instant> = None;
        loop {
            if grace_deadline.is_none() && shutdown.is_requested() {
                let grace = self.env.config.task_grace;
                tracing::info!(
                    running = self.running.len(),
                    ?grace,
                    "shutting down: no more claims; letting running tasks finish"
                );
                grace_deadline = Some(Instant::now() + grace);
                // Completions stop claiming the next task too.
                self.env.claiming.store(false, Ordering::SeqCst);
                // Loops stop at once (gently), so another worker takes them over.
                if let Some((_, stop)) = &self.loops {
                    stop.send_replace(LoopStop::Stop);
                }
            }
            if grace_deadline.is_some() && self.running.is_empty() {
                return self.deregister().await;
            }
            if grace_deadline.is_none() && want_claim && claims_tasks {
                want_claim = false;
                if let Err(reason) = self.claim_while_room().await {
                    return self.expire(reason, summary).await;
                }
            }
            let killing = grace_deadline.filter(|_| *self.interrupt.borrow() == Interrupt::None);
            tokio::select! {
                () = shutdown.requested(), if grace_deadline.is_none() => {}
                ended = &mut heartbeat.0 => {
                    let reason = ended.unwrap_or_else(|e| format!("the heartbeat task failed: {e}"));
                    return self.expire(reason, summary).await;
                }
                wake = self.feed.next() => match wake {
                    Wake::Claimable => want_claim = true,
                    Wake::AgentInactive(reason) => return self.expire(reason, summary).await,
                    Wake::Message(message) => {
                        tracing::info!(from = %message.from, id = message.id, "message received");
                        if let Err(err) = self.inbox.append(&message).await {
                            tracing::warn!(inbox = %self.inbox.path().display(), error = %err, "could not write to the inbox");
                        }
                    }
                },
                Some(done) = self.running.join_next() => {
                    match done {
                        Ok(Finished { outcome, next }) => {
                            summary.record(Ok(outcome));
                            // The completion claimed this agent's next task in the same
                            // write: it is ours and working, whatever else happened since
                            // (even a shutdown: it then gets the grace period like any other).
                            match next {
                                Some(task) => self.spawn_attempt(task),
                                None => want_claim = true,
                            }
                        }
                        Err(panicked) => {
                            summary.record(Err(panicked));
                            want_claim = true;
                        }
                    }
                }
                _ = recheck.tick() => want_claim = true,
                () = sleep_until_some(killing) => {
                    tracing::warn!(running = self.running.len(), "grace period over: killing the remaining tasks");
                    self.interrupt.send_replace(Interrupt::Shutdown);
                }
            }
        }
    }

    /// Claims tasks until the agent is full or nothing is claimable. `Err` when the agent
    /// turned out to be no longer active.
    async fn claim_while_room(&mut self) -> Result<(), String> {
        let env = self.env.clone();
        let client = &env.client;
        let agent_id = self.agent.id;
        while self.running.len() < self.agent.max_concurrent.max(1) as usize {
            // A worker without a task command runs execs only: claim-next could hand it a
            // task without requirements, which it has nothing to run with.
            let claimed = if !self.env.config.runs_tasks() {
                crate::exec_claim::claim_exec(client, &self.agent).await
            } else {
                // Claimed and started in one write: the attempt runs it straight away.
                client.claim_next_started(agent_id).await
            };
            match claimed {
                Ok(response) => {
                    let Some(task) = response.task else {
                        return Ok(());
                    };
                    tracing::info!(
                        task_id = %task.id,
                        title = %task.title,
                        attempt = task.attempts,
                        claim_token = task.claim_token,
                        "claimed task"
                    );
                    self.spawn_attempt(task);
                }
                // The cluster counts a task we no longer track (e.g. a report that was
                // applied but whose answer was lost); the task finishes on its own terms.
                Err(err) if err.code() == Code::ResourceExhausted => {
                    tracing::debug!(error = %err, "the cluster says this agent is full");
                    return Ok(());
                }
                Err(err) if matches!(err.code(), Code::FailedPrecondition | Code::NotFound) => {
                    // Most likely the agent is no longer active; the heartbeat reply is the
                    // authority on that.
                    return match client.heartbeat(agent_id).await {
                        Ok(reply) if reply.must_reregister => Err(err.to_string()),
                        Err(beat) if beat.code() == Code::NotFound => Err(beat.to_string()),
                        _ => {
                            tracing::warn!(error = %err, "claim refused");
                            Ok(())
                        }
                    };
                }
                Err(err) => {
                    // The re-check interval tries again.
                    tracing::warn!(error = %err, "claim failed");
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Runs an attempt at `task`, which this agent holds.
    fn spawn_attempt(&mut self, task: percy_client::proto::Task) {
        let counted = self
            .counts
            .enter(task.requires.iter().any(|c| c == EXEC_CAPABILITY));
        let attempt = run_attempt(self.env.clone(), task, self.interrupt.subscribe());
        self.running.spawn(async move {
            let _counted = counted;
            attempt.await
        });
    }

    /// The agent expired: kill what runs (its tokens are stale) and wait for it to stop.
    async fn expire(mut self, reason: String, summary: &mut WorkerSummary) -> IncarnationEnd {
        tracing::warn!(
            agent_id = self.agent.id,
            %reason,
            running = self.running.len(),
            "the agent expired: stopping its work"
        );
        self.env.claiming.store(false, Ordering::SeqCst);
        self.interrupt.send_replace(Interrupt::Expired);
        self.stop_loops(LoopStop::Expired).await;
        // A task a late completion claimed is not run: its token is as stale as the rest.
        while let Some(done) = self.running.join_next().await {
            summary.record(done.map(|finished| finished.outcome));
        }
        IncarnationEnd::Expired(reason)
    }

    /// Stops the definition loops and waits until each has ended (and, unless the agent
    /// expired, reported its iteration and released its run).
    async fn stop_loops(&mut self, why: LoopStop) {
        if let Some((handle, stop)) = self.loops.take() {
            stop.send_replace(why);
            if let Err(err) = handle.await {
                tracing::error!(error = %err, "the definition loops panicked");
            }
        }
    }

    /// Nothing runs any more: release the agent's locks and deregister.
    async fn deregister(mut self) -> IncarnationEnd {
        self.stop_loops(LoopStop::Stop).await;
        let client = &self.env.client;
        let agent_id = self.agent.id;
        match client.release_all_locks(agent_id).await {
            Ok(released) if !released.released.is_empty() => {
                tracing::info!(locks = ?released.released, "released the agent's locks");
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "could not release the agent's locks"),
        }
        match client.deregister_agent(agent_id).await {
            Ok(_) => {
                tracing::info!(agent_id, name = %self.agent.name, "deregistered");
                IncarnationEnd::ShutDown { deregistered: true }
            }
            Err(err) => {
                // Its TTL expires it anyway; that releases whatever is left.
                tracing::warn!(agent_id, error = %err, "could not deregister; the agent will expire");
                IncarnationEnd::ShutDown {
                    deregistered: false,
                }
            }
        }
    }
}

impl WorkerSummary {
    fn record(&mut self, done: Result<AttemptOutcome, tokio::task::JoinError>) {
        match done {
            Ok(outcome) => match outcome {
                AttemptOutcome::Completed => self.completed += 1,
                AttemptOutcome::Failed(_) => self.failed += 1,
                AttemptOutcome::Lost(_) => self.lost += 1,
                AttemptOutcome::Abandoned => self.abandoned += 1,
            },
            // A panicking attempt is a bug; its claim lapses with the agent or is retried.
            Err(err) => {
                tracing::error!(error = %err, "a task attempt panicked");
                self.lost += 1;
            }
        }
    }
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The heartbeat task stops with the incarnation, however it ends.
struct AbortOnDrop(JoinHandle<String>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
