//! `exec logs` (the recorded tail, or live with -f) and `exec list`.

use std::collections::HashMap;
use std::time::Instant;

use percy_client::proto::Task;
use percy_client::{Client, Consistency, TaskFilter, TaskStatus};
use percy_worker::{ExecRequest, EXEC_CAPABILITY};
use serde::Serialize;

use crate::output::{print_line, table};
use crate::{Ctx, Refused};

use super::{
    exit_code_of, exit_with, is_terminal, state_of, write_chunk, Prefix, LOGS_DRAIN_AFTER_END, POLL,
};

pub(super) async fn logs(ctx: &Ctx, id: &str, follow: bool) -> anyhow::Result<()> {
    let task = exec_task(&ctx.client, id).await?;
    let status = TaskStatus::try_from(task.status).unwrap_or(TaskStatus::Unspecified);
    if follow && !is_terminal(status) {
        let relay = ExecRequest::decode(&task.payload)
            .ok()
            .and_then(|request| request.relay);
        let streamed = match relay {
            Some(relay) => follow_live(ctx, id, &relay).await?,
            None => 0,
        };
        // After the publisher's eof the executor still has to report the end.
        wait_until_ended(&ctx.client, id).await?;
        let task = exec_task(&ctx.client, id).await?;
        // The live output already went out; the tail would repeat it.
        if streamed == 0 {
            print_tail(&task)?;
        }
        return exit_with(exit_code_of(&task, true));
    }
    print_tail(&task)?;
    if follow {
        return exit_with(exit_code_of(&task, true));
    }
    Ok(())
}

/// Attaches to the node the exec's output is published to (its request names it) and copies
/// the chunks to stdout/stderr, from now on, until the exec ends. Returns the bytes copied
/// (0: nothing live, e.g. the node could not be reached — the caller prints the tail).
pub(super) async fn follow_live(ctx: &Ctx, id: &str, relay: &str) -> anyhow::Result<usize> {
    let attached = match Client::connect_secure(
        &[relay.to_owned()],
        ctx.client.retry_policy(),
        ctx.client.security(),
    )
    .await
    {
        Ok(client) => client.attach_exec(id).await.map(|(_, s)| s).ok(),
        Err(_) => None,
    };
    let Some(mut stream) = attached else {
        eprintln!(
            "percyctl: cannot attach to {id}'s live output at {relay}; its tail follows at the end"
        );
        wait_until_ended(&ctx.client, id).await?;
        return Ok(0);
    };
    let mut streamed = 0usize;
    let mut tick = tokio::time::interval(POLL);
    let mut ended_at: Option<Instant> = None;
    loop {
        tokio::select! {
            message = stream.message() => match message {
                Ok(Some(chunk)) if chunk.eof => break,
                Ok(Some(chunk)) => {
                    streamed += chunk.data.len();
                    write_chunk(&Prefix::None, &mut [Vec::new(), Vec::new()], chunk.fd, &chunk.data);
                }
                Ok(None) => break,
                Err(status) => {
                    eprintln!("percyctl: the live output of {id} broke ({}); waiting for its end", status.message());
                    wait_until_ended(&ctx.client, id).await?;
                    break;
                }
            },
            _ = tick.tick() => {
                // Its executor hands over every chunk before it reports the end, so once the
                // record says so, what is left is queued here already (or never comes: we
                // attached after the publisher's eof).
                match ended_at {
                    Some(at) if at.elapsed() >= LOGS_DRAIN_AFTER_END => break,
                    Some(_) => {}
                    None => {
                        let t = exec_task(&ctx.client, id).await?;
                        if TaskStatus::try_from(t.status).is_ok_and(is_terminal) {
                            ended_at = Some(Instant::now());
                        }
                    }
                }
            }
        }
    }
    Ok(streamed)
}

/// Polls the exec's record until it ended.
pub(super) async fn wait_until_ended(client: &Client, id: &str) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(POLL);
    loop {
        tick.tick().await;
        let t = exec_task(client, id).await?;
        if TaskStatus::try_from(t.status).is_ok_and(is_terminal) {
            return Ok(());
        }
    }
}

pub(super) fn print_tail(task: &Task) -> anyhow::Result<()> {
    let tail = task
        .result
        .as_ref()
        .map(|r| r.output_tail.clone())
        .unwrap_or_default();
    if !tail.is_empty() {
        print_line(&tail)?;
    }
    Ok(())
}

pub(super) async fn exec_task(client: &Client, id: &str) -> anyhow::Result<Task> {
    let reply = client
        .get_task(id, Consistency::Linearizable)
        .await
        .map_err(|e| match e.code() {
            tonic::Code::NotFound => anyhow::Error::from(Refused(format!("no exec {id:?}"))),
            _ => anyhow::Error::from(e),
        })?;
    let task = reply.task.unwrap_or_default();
    if !task.requires.iter().any(|c| c == EXEC_CAPABILITY) {
        return Err(Refused(format!("task {id:?} is not an exec")).into());
    }
    Ok(task)
}

#[derive(Serialize)]
pub(super) struct ListedExec {
    id: String,
    command: String,
    state: String,
    executor: String,
    exit_code: Option<i32>,
    summary: String,
    error: String,
    created_at_ms: u64,
    updated_at_ms: u64,
}

pub(super) async fn list(ctx: &Ctx, limit: usize) -> anyhow::Result<()> {
    let tasks = ctx
        .client
        .list_tasks(&TaskFilter::default(), Consistency::Linearizable)
        .await?;
    let agents = ctx
        .client
        .list_agents(true, Consistency::Linearizable)
        .await?;
    let names: HashMap<u64, String> = agents.agents.into_iter().map(|a| (a.id, a.name)).collect();
    let mut execs: Vec<Task> = tasks
        .tasks
        .into_iter()
        .filter(|t| t.requires.iter().any(|c| c == EXEC_CAPABILITY))
        .collect();
    execs.sort_by_key(|t| std::cmp::Reverse(t.create_revision));
    execs.truncate(limit);
    let listed: Vec<ListedExec> = execs
        .iter()
        .map(|t| ListedExec {
            id: t.id.clone(),
            command: t.title.clone(),
            state: state_of(t).into(),
            executor: names.get(&t.assignee).cloned().unwrap_or_default(),
            exit_code: t.result.as_ref().and_then(|r| r.exit_code),
            summary: t
                .result
                .as_ref()
                .map(|r| r.summary.clone())
                .unwrap_or_default(),
            error: t.error.clone(),
            created_at_ms: t.created_at_ms,
            updated_at_ms: t.updated_at_ms,
        })
        .collect();
    ctx.out.emit(&listed, || {
        table(
            &["id", "state", "exit", "executor", "command"],
            listed.iter().map(|e| {
                vec![
                    e.id.clone(),
                    e.state.clone(),
                    e.exit_code.map(|c| c.to_string()).unwrap_or_default(),
                    e.executor.clone(),
                    e.command.clone(),
                ]
            }),
        )
    })
}
