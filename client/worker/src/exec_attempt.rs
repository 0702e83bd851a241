//! One claimed exec (a task requiring `percy.exec`, see `exec_request`): run the requested
//! command under the same executor as tasks (own process group, supervisor, crash record,
//! timeout), publish its output live to the node the caller attached to, kill it when the
//! exec is cancelled, and report how it ended. Any exit is a completed exec whose result
//! carries the exit code (a signal as 128+n, a timeout as 124, like `timeout(1)`): the
//! command ran, and the caller decides what its code means. Only a request that cannot run
//! fails the task.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use percy_client::proto::{ExecChunk, Task, TaskResult, TaskStatus};
use percy_client::{Client, Consistency};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use crate::attempt::{report, AttemptEnv, AttemptOutcome, Interrupt};
use crate::exec_request::ExecRequest;
use crate::executor::{execute, ExecEnd, Execution};
use crate::running;
use crate::tail::SUMMARY_MAX_BYTES;

/// Output chunks between the command's pipes and the publisher.
const LIVE_QUEUE_CHUNKS: usize = 32;
/// How often the executor looks whether its exec was cancelled.
pub const CANCEL_POLL: Duration = Duration::from_millis(300);
/// Exit code of an exec that outlived its timeout (as `timeout(1)` reports it).
pub const TIMED_OUT_EXIT_CODE: i32 = 124;
/// How long the publisher may take to hand over its last chunks after the command ended.
const PUBLISH_FINISH_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the exec `task`; see the module documentation.
pub async fn run_exec(
    env: &AttemptEnv,
    task: &Task,
    interrupt: &mut watch::Receiver<Interrupt>,
) -> AttemptOutcome {
    let request = match ExecRequest::decode(&task.payload) {
        Ok(request) => request,
        Err(err) => return fail(env, task, &err.to_string()).await,
    };
    match env
        .client
        .start_task(&task.id, env.agent_id, task.claim_token)
        .await
    {
        Ok(_) => tracing::info!(exec_id = %task.id, command = ?request.command, "running exec"),
        Err(err) if err.is_refusal() => return AttemptOutcome::Lost(err.to_string()),
        Err(err) => {
            tracing::warn!(exec_id = %task.id, error = %err, "could not mark the exec running")
        }
    }

    let (live, chunks) = mpsc::channel(LIVE_QUEUE_CHUNKS);
    let publisher = tokio::spawn(publish(
        env.client.clone(),
        request.relay.clone(),
        task.id.clone(),
        chunks,
    ));
    let mut vars: Vec<(String, OsString)> = vec![
        ("PERCY_EXEC_ID".into(), task.id.clone().into()),
        ("PERCY_AGENT_NAME".into(), env.agent_name.clone().into()),
    ];
    vars.extend(
        request
            .env
            .iter()
            .map(|(k, v)| (k.clone(), OsString::from(v))),
    );
    let execution = Execution {
        command: request.shell_line(),
        env: vars,
        stdin: Vec::new(),
        workdir: request
            .cwd
            .as_ref()
            .map(PathBuf::from)
            .or_else(|| env.config.workdir.clone()),
        timeout: crate::attempt::task_timeout(task, env.config.default_timeout),
        record_in: Some(running::records_dir(
            &env.config.inbox_dir,
            &env.config.name,
        )),
        task_id: task.id.clone(),
        stdout_tail_bytes: crate::tail::STDOUT_TAIL_BYTES,
        stop_grace: None,
        live: Some(live),
    };
    let kill = async {
        tokio::select! {
            _ = interrupt.wait_for(|i| *i != Interrupt::None) => {}
            () = cancelled(&env.client, &task.id) => {}
        }
    };
    let executed = execute(execution, kill).await;
    // Every sender is gone once the readers ended: the publisher sends eof and ends.
    match tokio::time::timeout(PUBLISH_FINISH_TIMEOUT, publisher).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(reason))) => {
            tracing::warn!(exec_id = %task.id, %reason, "the live output did not reach the caller")
        }
        Ok(Err(_)) | Err(_) => {
            tracing::warn!(exec_id = %task.id, "the live output publisher did not finish")
        }
    }
    let interrupted = *interrupt.borrow();
    if interrupted == Interrupt::Expired {
        return AttemptOutcome::Abandoned;
    }
    let outcome = match executed {
        Ok(outcome) => outcome,
        Err(err) => return fail(env, task, &format!("could not run the command: {err}")).await,
    };
    let (exit_code, summary) = match outcome.end {
        ExecEnd::Exited(code) => (code, format!("exit code {code}")),
        ExecEnd::Signalled(signal) => (128 + signal, format!("killed by signal {signal}")),
        ExecEnd::TimedOut(after) => (
            TIMED_OUT_EXIT_CODE,
            format!("timed out after {}", humantime::format_duration(after)),
        ),
        ExecEnd::Killed => match interrupted {
            // Cancelled: the task says so already; nothing to report.
            Interrupt::None => return AttemptOutcome::Lost("cancelled".into()),
            _ => (
                128 + libc::SIGKILL,
                "killed: the worker shut down".to_owned(),
            ),
        },
    };
    let mut tail = outcome.stdout.text();
    let stderr = outcome.stderr.text();
    if !stderr.is_empty() {
        tail.push_str("\n[stderr]\n");
        tail.push_str(&stderr);
    }
    let result = TaskResult {
        summary: truncate(summary, SUMMARY_MAX_BYTES),
        branch: String::new(),
        exit_code: Some(exit_code),
        output_tail: tail,
    };
    let sent = report(|| {
        env.client
            .complete_task(&task.id, env.agent_id, task.claim_token, result.clone())
    })
    .await;
    match sent {
        Ok(_) => AttemptOutcome::Completed,
        Err(err) => AttemptOutcome::Lost(err.to_string()),
    }
}

fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

async fn fail(env: &AttemptEnv, task: &Task, error: &str) -> AttemptOutcome {
    let sent = report(|| {
        env.client
            .fail_task(&task.id, env.agent_id, task.claim_token, error)
    })
    .await;
    match sent {
        Ok(_) => AttemptOutcome::Failed(error.to_owned()),
        Err(err) => AttemptOutcome::Lost(err.to_string()),
    }
}

/// Resolves once the exec is cancelled (or gone).
async fn cancelled(client: &Client, exec_id: &str) {
    let mut tick = tokio::time::interval(CANCEL_POLL);
    loop {
        tick.tick().await;
        match client.get_task(exec_id, Consistency::Serializable).await {
            Ok(reply) => {
                if reply
                    .task
                    .is_some_and(|t| t.status == TaskStatus::Cancelled as i32)
                {
                    return;
                }
            }
            Err(err) if err.code() == tonic::Code::NotFound => return,
            Err(_) => {}
        }
    }
}

/// Forwards the command's output to the relay node, and always drains `chunks`: a relay
/// that cannot be reached must not block the command.
async fn publish(
    client: Client,
    relay: Option<String>,
    exec_id: String,
    mut chunks: mpsc::Receiver<(u32, Vec<u8>)>,
) -> Result<(), String> {
    let Some(relay) = relay else {
        while chunks.recv().await.is_some() {}
        return Ok(());
    };
    let relay_client = match Client::connect_secure(
        std::slice::from_ref(&relay),
        client.retry_policy(),
        client.security(),
    )
    .await
    {
        Ok(c) => c,
        Err(err) => {
            while chunks.recv().await.is_some() {}
            return Err(format!("cannot reach {relay}: {err}"));
        }
    };
    let (outbound, stream) = mpsc::channel::<ExecChunk>(LIVE_QUEUE_CHUNKS);
    let call =
        tokio::spawn(async move { relay_client.publish_exec(ReceiverStream::new(stream)).await });
    let mut connected = true;
    while let Some((fd, data)) = chunks.recv().await {
        if !connected {
            continue;
        }
        let chunk = ExecChunk {
            exec_id: exec_id.clone(),
            fd,
            data,
            eof: false,
        };
        if outbound.send(chunk).await.is_err() {
            connected = false;
        }
    }
    if connected {
        let _ = outbound
            .send(ExecChunk {
                exec_id: exec_id.clone(),
                fd: 1,
                data: Vec::new(),
                eof: true,
            })
            .await;
    }
    drop(outbound);
    match call.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => Err(err.to_string()),
        Err(err) => Err(err.to_string()),
    }
}
