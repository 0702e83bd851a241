//! Definition loops (`percyctl worker --definitions`): the worker also runs the definitions
//! whose capabilities and selector it matches, each in a loop of iterations.
//!
//! A scan every [`LOOP_SCAN_INTERVAL`] looks for running definitions with a `command` that
//! nobody runs, and claims them (the state machine lets one runner hold a definition at a
//! time, fenced by a run token). Each claimed definition gets a loop task ([`run_loop`]):
//! start an iteration (the state machine numbers it and composes its prompt, steering
//! messages included), run `sh -c command` with the prompt on stdin, report how it ended,
//! pause for `interval`, again. The scan also notices a definition that was stopped and
//! stops its loop: SIGTERM to the command, SIGKILL after [`STOP_GRACE`], the iteration
//! reported as stopped and the run released. Worker shutdown does the same for every loop,
//! so another worker takes them over at once; an expired agent kills its commands and
//! reports nothing (its run token is stale anyway).

mod iteration;
pub mod llm_output;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::WorkerConfig;
use percy_client::proto::{Agent, DesiredState};
use percy_client::{Client, Consistency, RunClaim};
use percy_statemachine::LoopSpec;

pub(crate) use iteration::run_loop;

/// How often the worker looks for definitions to run and for its loops to stop.
pub const LOOP_SCAN_INTERVAL: Duration = Duration::from_secs(1);
/// How long a stopped iteration's command gets between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// Why loops are being stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoopStop {
    None,
    /// Stopped definition or worker shutdown: end the iteration gently, report, release.
    Stop,
    /// The agent expired: kill, report nothing.
    Expired,
}

/// What every loop of one incarnation shares.
pub(crate) struct LoopEnv {
    pub client: Client,
    pub agent: Agent,
    pub config: Arc<WorkerConfig>,
}

/// Whether an agent with `capabilities` and `labels` may run a definition with `spec`.
pub fn agent_matches(agent: &Agent, spec: &LoopSpec) -> bool {
    spec.capabilities
        .iter()
        .all(|capability| agent.capabilities.contains(capability))
        && spec
            .selector
            .iter()
            .all(|(key, value)| agent.labels.get(key) == Some(value))
}

struct RunningLoop {
    stop: watch::Sender<LoopStop>,
    handle: JoinHandle<()>,
}

/// Scans and claims until `stop` says otherwise, then stops every loop and waits for them.
pub(crate) async fn supervise(env: Arc<LoopEnv>, mut stop: watch::Receiver<LoopStop>) {
    let mut loops: HashMap<String, RunningLoop> = HashMap::new();
    let mut scan = tokio::time::interval(LOOP_SCAN_INTERVAL);
    scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = scan.tick() => {}
            _ = stop.changed() => {}
        }
        let why = *stop.borrow();
        if why != LoopStop::None {
            for running in loops.values() {
                running.stop.send_replace(why);
            }
            for (name, running) in loops.drain() {
                if let Err(err) = running.handle.await {
                    tracing::error!(definition = %name, error = %err, "a definition loop panicked");
                }
            }
            return;
        }
        loops.retain(|_, running| !running.handle.is_finished());
        if let Err(err) = scan_once(&env, &mut loops).await {
            tracing::debug!(error = %err, "definition scan failed; trying again");
        }
    }
}

async fn scan_once(
    env: &Arc<LoopEnv>,
    loops: &mut HashMap<String, RunningLoop>,
) -> Result<(), percy_client::ClientError> {
    let definitions = env
        .client
        .list_definitions(Consistency::Serializable)
        .await?
        .definitions;
    let runs = env.client.list_runs(Consistency::Serializable).await?.runs;
    let me = env.agent.id;
    for definition in &definitions {
        let running = definition.desired == DesiredState::Running as i32;
        if let Some(mine) = loops.get(&definition.name) {
            if !running {
                tracing::info!(definition = %definition.name, "definition stopped: stopping its loop");
                mine.stop.send_replace(LoopStop::Stop);
            }
            continue;
        }
        if !running {
            continue;
        }
        let Some(current) = definition.history.last() else {
            continue;
        };
        let Ok(spec) = LoopSpec::parse(&definition.name, &current.spec_json) else {
            continue;
        };
        if spec.command.is_none() || !agent_matches(&env.agent, &spec) {
            continue;
        }
        let runner = runs
            .iter()
            .find(|run| run.name == definition.name)
            .and_then(|run| run.runner.as_ref());
        if runner.is_some_and(|runner| runner.agent_id != me) {
            continue;
        }
        match env.client.claim_run(&definition.name, me).await {
            Ok(response) => {
                let Some(run_token) = response
                    .run
                    .and_then(|run| run.runner)
                    .map(|runner| runner.run_token)
                else {
                    continue;
                };
                let claim = RunClaim {
                    name: definition.name.clone(),
                    agent_id: me,
                    run_token,
                };
                tracing::info!(definition = %claim.name, run_token, "running definition");
                let (stop, stop_rx) = watch::channel(LoopStop::None);
                let handle = tokio::spawn(run_loop(env.clone(), claim, stop_rx));
                loops.insert(definition.name.clone(), RunningLoop { stop, handle });
            }
            // Someone else was quicker, or the definition changed: the next scan looks again.
            Err(err) => {
                tracing::debug!(definition = %definition.name, error = %err, "claim refused")
            }
        }
    }
    Ok(())
}
