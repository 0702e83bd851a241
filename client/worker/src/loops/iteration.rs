//! One definition's loop on this worker: iterations under the run token until the definition
//! stops, its `max_iterations` are done, the run is lost, or the worker stops the loop.

use std::ffi::OsString;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tonic::Code;

use super::llm_output::parse_llm_output;
use super::{LoopEnv, LoopStop, STOP_GRACE};
use crate::executor::{execute, ExecEnd, ExecOutcome, Execution};
use crate::running;
use crate::tail::truncate_at_char;
use percy_client::proto::IterationReport;
use percy_client::{Consistency, RunClaim};
use percy_statemachine::limits::MAX_ITERATION_OUTPUT_LEN;
use percy_statemachine::LoopSpec;

/// Bytes of stdout kept while an iteration runs: enough for the final JSON result line of an
/// LLM CLI, which comes last.
const LOOP_STDOUT_BYTES: usize = 256 * 1024;
/// Pause after a call the cluster did not answer before trying again.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Runs the loop of `claim` until it ends; releases the run unless the agent expired.
pub(crate) async fn run_loop(
    env: Arc<LoopEnv>,
    claim: RunClaim,
    mut stop: watch::Receiver<LoopStop>,
) {
    let released = loop {
        if *stop.borrow() != LoopStop::None {
            break true;
        }
        let spec = match current_spec(&env, &claim.name).await {
            Some(spec) => spec,
            None => {
                if pause(&mut stop, RETRY_PAUSE).await {
                    break true;
                }
                continue;
            }
        };
        let iteration = match env.client.start_iteration(&claim).await {
            Ok(response) => response.iteration.unwrap_or_default(),
            Err(err) if err.is_refusal() => {
                // Stopped, done with max_iterations, or no longer ours.
                tracing::info!(definition = %claim.name, reason = %err, "definition loop ends");
                break err.code() != Code::FailedPrecondition || !is_stale(&err.to_string());
            }
            Err(err) => {
                tracing::warn!(definition = %claim.name, error = %err, "cannot start an iteration yet");
                if pause(&mut stop, RETRY_PAUSE).await {
                    break true;
                }
                continue;
            }
        };
        tracing::info!(definition = %claim.name, number = iteration.number, "iteration started");
        let started = Instant::now();
        let outcome = run_command(
            &env,
            &claim,
            &spec,
            iteration.number,
            &iteration.prompt,
            &mut stop,
        )
        .await;
        let why = *stop.borrow();
        if why == LoopStop::Expired {
            return;
        }
        let report = report_of(outcome, started.elapsed());
        tracing::info!(
            definition = %claim.name,
            number = iteration.number,
            exit_code = ?report.exit_code,
            is_error = report.is_error,
            "iteration ended"
        );
        match env
            .client
            .finish_iteration(&claim, iteration.number, report)
            .await
        {
            Ok(_) => {}
            Err(err) if err.is_refusal() => {
                tracing::warn!(definition = %claim.name, error = %err, "iteration not recorded: the run is no longer ours");
                return;
            }
            Err(err) => {
                tracing::warn!(definition = %claim.name, error = %err, "could not record the iteration");
            }
        }
        if why != LoopStop::None {
            break true;
        }
        if pause(&mut stop, Duration::from_millis(spec.interval_ms)).await {
            break true;
        }
    };
    if released && *stop.borrow() != LoopStop::Expired {
        match env.client.release_run(&claim).await {
            Ok(_) => tracing::info!(definition = %claim.name, "released the definition"),
            Err(err) => tracing::debug!(definition = %claim.name, error = %err, "release refused"),
        }
    }
}

/// A refusal that says the run token is stale (nothing to release).
fn is_stale(message: &str) -> bool {
    message.contains("stale")
}

/// The definition's loop settings now (a new spec applies from the next iteration).
async fn current_spec(env: &LoopEnv, name: &str) -> Option<LoopSpec> {
    let definition = env
        .client
        .get_definition(name, Consistency::Serializable)
        .await
        .ok()?
        .definition?;
    let current = definition.history.last()?;
    LoopSpec::parse(name, &current.spec_json).ok()
}

/// Sleeps for `duration`; `true` when the loop was told to stop meanwhile.
async fn pause(stop: &mut watch::Receiver<LoopStop>, duration: Duration) -> bool {
    if duration.is_zero() {
        return *stop.borrow() != LoopStop::None;
    }
    let told = tokio::select! {
        () = tokio::time::sleep(duration) => false,
        _ = stop.wait_for(|why| *why != LoopStop::None) => true,
    };
    told || *stop.borrow() != LoopStop::None
}

async fn run_command(
    env: &LoopEnv,
    claim: &RunClaim,
    spec: &LoopSpec,
    number: u64,
    prompt: &str,
    stop: &mut watch::Receiver<LoopStop>,
) -> Result<ExecOutcome, String> {
    let text = |key: &str, value: String| (key.to_owned(), OsString::from(value));
    let execution = Execution {
        command: spec.command.clone().unwrap_or_default(),
        env: vec![
            text("PERCY_DEFINITION", claim.name.clone()),
            text("PERCY_ITERATION", number.to_string()),
            text("PERCY_RUN_TOKEN", claim.run_token.to_string()),
            text("PERCY_AGENT_ID", env.agent.id.to_string()),
            text("PERCY_AGENT_NAME", env.agent.name.clone()),
            text("PERCY_ENDPOINTS", env.client.endpoints().join(",")),
        ],
        stdin: prompt.as_bytes().to_vec(),
        workdir: env.config.workdir.clone(),
        timeout: (spec.timeout_ms > 0).then(|| Duration::from_millis(spec.timeout_ms)),
        record_in: Some(running::records_dir(
            &env.config.inbox_dir,
            &env.config.name,
        )),
        task_id: format!("definition {} iteration {number}", claim.name),
        stdout_tail_bytes: LOOP_STDOUT_BYTES,
        stop_grace: Some(STOP_GRACE),
        live: None,
    };
    let kill = async {
        let _ = stop.wait_for(|why| *why != LoopStop::None).await;
    };
    execute(execution, kill).await.map_err(|e| e.to_string())
}

/// The iteration record of what the command did.
fn report_of(outcome: Result<ExecOutcome, String>, elapsed: Duration) -> IterationReport {
    let duration_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(error) => {
            return IterationReport {
                exit_code: None,
                duration_ms,
                output_tail: tail_of(&error),
                is_error: true,
                ..IterationReport::default()
            }
        }
    };
    let stdout = outcome.stdout.text();
    let stderr = outcome.stderr.text();
    let mut output = stdout.clone();
    if !stderr.trim().is_empty() {
        output.push_str("\n[stderr]\n");
        output.push_str(&stderr);
    }
    let llm = parse_llm_output(&stdout).unwrap_or_default();
    let (exit_code, stopped, timed_out) = match outcome.end {
        ExecEnd::Exited(code) => (Some(code), false, false),
        ExecEnd::Signalled(_) => (None, false, false),
        ExecEnd::TimedOut(_) => (None, false, true),
        ExecEnd::Killed => (None, true, false),
    };
    IterationReport {
        exit_code,
        duration_ms,
        output_tail: tail_of(&output),
        result_text: llm
            .result_text
            .map(|text| truncate_at_char(&text, MAX_ITERATION_OUTPUT_LEN).to_owned()),
        is_error: llm.is_error,
        input_tokens: llm.input_tokens,
        output_tokens: llm.output_tokens,
        cost_micros: llm.cost_micros,
        stopped,
        timed_out,
    }
}

/// The last [`MAX_ITERATION_OUTPUT_LEN`] bytes of `text`, on a character boundary.
fn tail_of(text: &str) -> String {
    if text.len() <= MAX_ITERATION_OUTPUT_LEN {
        return text.to_owned();
    }
    let mut start = text.len() - MAX_ITERATION_OUTPUT_LEN;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tail::Tail;

    fn outcome(end: ExecEnd, stdout: &str) -> ExecOutcome {
        let mut out = Tail::new(LOOP_STDOUT_BYTES);
        out.push(stdout.as_bytes());
        ExecOutcome {
            end,
            stdout: out,
            stderr: Tail::new(16),
        }
    }

    #[test]
    fn a_zero_exit_with_an_error_result_is_reported_as_an_error() {
        let line = r#"{"type":"result","is_error":true,"result":"no","usage":{"input_tokens":1,"output_tokens":2},"total_cost_usd":0.5}"#;
        let report = report_of(
            Ok(outcome(ExecEnd::Exited(0), line)),
            Duration::from_millis(7),
        );
        assert_eq!(report.exit_code, Some(0));
        assert!(report.is_error);
        assert_eq!(report.cost_micros, 500_000);
        assert_eq!(report.duration_ms, 7);
    }

    #[test]
    fn stopped_and_timed_out_commands_say_so() {
        let report = report_of(Ok(outcome(ExecEnd::Killed, "")), Duration::ZERO);
        assert!(report.stopped && report.exit_code.is_none());
        let report = report_of(
            Ok(outcome(ExecEnd::TimedOut(Duration::from_secs(1)), "")),
            Duration::ZERO,
        );
        assert!(report.timed_out);
    }

    #[test]
    fn the_output_tail_is_bounded_on_a_character_boundary() {
        let text = "é".repeat(MAX_ITERATION_OUTPUT_LEN);
        let tail = tail_of(&text);
        assert!(tail.len() <= MAX_ITERATION_OUTPUT_LEN && tail.starts_with('é'));
    }
}
