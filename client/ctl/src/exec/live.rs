//! One exec: submitted with a fresh id, its output streamed live from the relay node, its record
//! turned into an exit code.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use futures::StreamExt;
use percy_client::proto::event::Value as EventValue;
use percy_client::proto::{ExecChunk, TaskSpec};
use percy_client::{Client, Consistency, EntityKind, Event, TaskStatus, WatchOptions};
use percy_worker::{ExecRequest, EXEC_CAPABILITY};
use tokio::sync::mpsc;

use super::{exit_code_of, is_terminal, Options, Planned, DRAIN_AFTER_END, POLL};

pub(super) fn new_exec_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    // Unique enough across callers: the clock in ns, this process, and a counter.
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!(
        "exec-{:x}-{:x}{n}",
        (nanos % (1u128 << 64)) as u64,
        std::process::id()
    )
}

pub(super) async fn submit(
    client: &Client,
    id: &str,
    planned: &Planned,
    options: &Options,
    relay: Option<String>,
) -> anyhow::Result<u64> {
    let request = ExecRequest {
        command: planned.command.clone(),
        cwd: options.cwd.clone(),
        env: options.env.clone(),
        relay,
    };
    let line = request.shell_line();
    let title: String = line.chars().take(200).collect();
    let spec = TaskSpec {
        id: id.to_owned(),
        title,
        payload: request.encode(),
        requires: vec![EXEC_CAPABILITY.to_owned()],
        selector: planned.selector.clone(),
        max_attempts: if options.retry { 2 } else { 1 },
        timeout_ms: options
            .timeout
            .map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        ..Default::default()
    };
    let submitted = client
        .submit_task(spec)
        .await
        .context("submitting the exec")?;
    Ok(submitted.header.map_or(0, |h| h.revision))
}

/// How live output lines are written.
#[derive(Clone)]
pub(super) enum Prefix {
    /// As they come, byte for byte (a single exec).
    None,
    /// Line by line, each prefixed (`[node] `), for several execs at once.
    Node(String),
}

/// Submits one exec, streams its output, and returns its exit code.
pub(super) async fn run_one(
    client: &Client,
    planned: &Planned,
    options: &Options,
    prefix: Prefix,
) -> anyhow::Result<u8> {
    let id = new_exec_id();
    let (relay, stream) = client
        .attach_exec(&id)
        .await
        .context("attaching to the exec's output")?;
    let submitted = submit(client, &id, planned, options, Some(relay.clone())).await?;
    let (done_tx, done_rx) = mpsc::channel::<Result<(), String>>(1);
    let pump = tokio::spawn(pump(stream, prefix, done_tx));
    wait_for_end(client, &id, submitted, pump, done_rx, &relay).await
}

/// Copies the live chunks to stdout/stderr until the publisher's eof; says on `done` how
/// the stream ended.
pub(super) async fn pump(
    mut stream: tonic::Streaming<ExecChunk>,
    prefix: Prefix,
    done: mpsc::Sender<Result<(), String>>,
) {
    let mut partial: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    let result = loop {
        match stream.message().await {
            Ok(Some(chunk)) => {
                if chunk.eof {
                    break Ok(());
                }
                write_chunk(&prefix, &mut partial, chunk.fd, &chunk.data);
            }
            Ok(None) => break Ok(()),
            Err(status) => break Err(status.message().to_owned()),
        }
    };
    if let Prefix::Node(_) = prefix {
        for (i, rest) in partial.iter_mut().enumerate() {
            if !rest.is_empty() {
                rest.push(b'\n');
                let data = std::mem::take(rest);
                write_chunk(&prefix, &mut [Vec::new(), Vec::new()], i as u32 + 1, &data);
            }
        }
    }
    let _ = done.send(result).await;
}

pub(super) fn write_chunk(prefix: &Prefix, partial: &mut [Vec<u8>; 2], fd: u32, data: &[u8]) {
    let to_stderr = fd == 2;
    let written = match prefix {
        Prefix::None => write_to(to_stderr, data),
        Prefix::Node(node) => {
            let pending = &mut partial[usize::from(to_stderr)];
            pending.extend_from_slice(data);
            let mut out = Vec::new();
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                out.extend_from_slice(format!("[{node}] ").as_bytes());
                out.extend_from_slice(&line);
            }
            write_to(to_stderr, &out)
        }
    };
    if let Err(e) = written {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
    }
}

pub(super) fn write_to(to_stderr: bool, data: &[u8]) -> std::io::Result<()> {
    if to_stderr {
        let mut err = std::io::stderr().lock();
        err.write_all(data)?;
        err.flush()
    } else {
        let mut out = std::io::stdout().lock();
        out.write_all(data)?;
        out.flush()
    }
}

/// Waits until the exec's record says it ended (Ctrl-C cancels it), lets the live output
/// finish, and turns the record into an exit code.
///
/// The end is seen on a watch of the exec's task from the revision that submitted it (0 =
/// from now), so the caller returns as soon as the executor reported, not at the next look
/// at the record; the record is still read every [`POLL`] as a safety net.
pub(super) async fn wait_for_end(
    client: &Client,
    id: &str,
    submitted: u64,
    pump: tokio::task::JoinHandle<()>,
    mut done: mpsc::Receiver<Result<(), String>>,
    relay: &str,
) -> anyhow::Result<u8> {
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    let mut cancelling = false;
    let mut stream_end: Option<Result<(), String>> = None;
    let mut tick = tokio::time::interval(POLL);
    let mut ends = client.watch(WatchOptions {
        start_revision: submitted,
        kinds: vec![EntityKind::Task],
        key_prefix: id.to_owned(),
        task_statuses: vec![
            TaskStatus::Completed,
            TaskStatus::Failed,
            TaskStatus::Cancelled,
        ],
        initial_state: false,
    });
    let mut watching = true;
    let task = loop {
        tokio::select! {
            _ = &mut ctrl_c, if !cancelling => {
                cancelling = true;
                eprintln!("percyctl: cancelling exec {id}");
                client.cancel_exec(id, "Ctrl-C in percyctl exec").await.context("cancelling")?;
            }
            end = done.recv(), if stream_end.is_none() => {
                stream_end = Some(end.unwrap_or(Ok(())));
            }
            event = ends.next(), if watching => match event {
                Some(Ok(Event { key, value: Some(EventValue::Task(task)), .. }))
                    if key == id && TaskStatus::try_from(task.status).is_ok_and(is_terminal) =>
                {
                    break task;
                }
                Some(Ok(_)) => {}
                // The watch gave up (compacted, no node for a while): the poll goes on.
                Some(Err(_)) | None => watching = false,
            },
            _ = tick.tick() => {
                let reply = client.get_task(id, Consistency::Linearizable).await
                    .with_context(|| format!("waiting for exec {id}"))?;
                if let Some(task) = reply.task {
                    if TaskStatus::try_from(task.status).is_ok_and(is_terminal) {
                        break task;
                    }
                }
            }
        }
    };
    if stream_end.is_none() {
        stream_end = tokio::time::timeout(DRAIN_AFTER_END, done.recv())
            .await
            .ok()
            .flatten();
    }
    pump.abort();
    if let Some(Err(reason)) = &stream_end {
        eprintln!(
            "percyctl: the live output of {id} via {relay} broke ({reason}); \
             its recorded tail: percyctl exec logs {id}"
        );
    }
    Ok(exit_code_of(&task, true))
}
