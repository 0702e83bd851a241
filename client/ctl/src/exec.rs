//! `percyctl exec`: run a command on an executor (`percyctl worker --accept-exec`), stream its
//! output live, exit with its exit code. An exec is a task that requires `percy.exec` (its
//! durable record: request, executor, exit code, output tail); its live output goes from the
//! executor to the node this caller attached to, from memory (`ExecService`).
//!
//! Exit codes: the remote command's (a signal n as 128+n, a timeout as 124); 130 when
//! cancelled (Ctrl-C); 255 when the exec could not run or was lost (its executor died);
//! otherwise percyctl's own (1 refused, 2 usage or connection).

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use futures::StreamExt;
use percy_client::proto::event::Value as EventValue;
use percy_client::proto::{Agent, AgentStatus, ExecChunk, Task, TaskSpec};
use percy_client::{Client, Consistency, EntityKind, Event, TaskFilter, TaskStatus, WatchOptions};
use percy_worker::{ExecRequest, EXEC_AGENT_LABEL, EXEC_CAPABILITY};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::exec_rank::{matches, rank, AgentLoadFigures, Candidate};
use crate::output::{print_line, table};
use crate::{args, Ctx, Refused};

/// Exit code of an exec that was cancelled (as a shell reports Ctrl-C).
pub const EXIT_CANCELLED: u8 = 130;
/// Exit code of an exec that could not run or was lost (as `ssh` reports its own failures).
pub const EXIT_LOST: u8 = 255;
/// How often the caller reads the exec's record while it runs, besides watching it for the
/// end (a safety net under the watch).
const POLL: Duration = Duration::from_millis(250);
/// How long to wait for the last live chunks once the record says the exec ended.
const DRAIN_AFTER_END: Duration = Duration::from_secs(5);
/// The same for `exec logs -f`, which may have attached after the publisher's end.
const LOGS_DRAIN_AFTER_END: Duration = Duration::from_secs(1);

/// Leave percyctl with this code, without an error line (the remote command's exit code).
#[derive(Debug)]
pub struct ExitWith(pub u8);

impl std::fmt::Display for ExitWith {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit code {}", self.0)
    }
}

impl std::error::Error for ExitWith {}

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// The output of an exec: its recorded tail, or (-f) live while it runs (from the
    /// moment of the attach; the tail instead if nothing came live), then its exit code.
    Logs {
        /// The exec id (`percyctl exec --detach` printed it).
        id: String,
        /// Follow: stream the output live until the exec ends, then exit with its code.
        #[arg(short, long)]
        follow: bool,
    },
    /// Execs, newest first.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Where to run: an executor's agent name, or a label selector (`os=linux`,
    /// `arch=x86_64,role=build`). With --parallel: once for all commands, or once per command.
    /// With --auto: the labels an executor must have.
    #[arg(long = "on", value_name = "TARGET")]
    on: Vec<String>,
    /// Pick the executor: the required labels (--on) first, then the lowest load (tasks and
    /// execs it runs now); says which and why on stderr.
    #[arg(long)]
    auto: bool,
    /// With --auto: print the ranking of the executors on stderr.
    #[arg(long, requires = "auto")]
    explain: bool,
    /// Run the commands given as arguments at once, spread over the executors (each a shell
    /// line), then print a table; exit 0 only if all succeeded.
    #[arg(long, conflicts_with_all = ["all", "detach"])]
    parallel: bool,
    /// Run the command on every executor (that --on selects), then print a table.
    #[arg(long, conflicts_with = "detach")]
    all: bool,
    /// Do not wait: print the exec id (see `percyctl exec logs ID -f`).
    #[arg(long)]
    detach: bool,
    /// Kill the command after this long (exit code 124). Within `exec` this flag bounds the
    /// remote command; it shadows the global request --timeout (PERCY_TIMEOUT still sets that).
    #[arg(long, value_parser = args::positive_duration)]
    timeout: Option<Duration>,
    /// Working directory on the executor.
    #[arg(long)]
    cwd: Option<String>,
    /// Environment variable for the command (repeatable).
    #[arg(long = "env", value_name = "K=V", value_parser = args::key_value)]
    env: Vec<(String, String)>,
    /// Run it again elsewhere if its executor dies mid-run (an exec is not re-run otherwise:
    /// it may not be idempotent).
    #[arg(long)]
    retry: bool,
    /// With --parallel: the commands, one shell line each.
    #[arg(value_name = "COMMANDS")]
    commands: Vec<String>,
    /// The command and its arguments, after `--`.
    #[arg(last = true, value_name = "CMD")]
    argv: Vec<String>,
}

pub async fn run(ctx: &Ctx, args: Args) -> anyhow::Result<()> {
    match args.command {
        Some(Command::Logs { id, follow }) => logs(ctx, &id, follow).await,
        Some(Command::List { limit }) => list(ctx, limit).await,
        None => run_execs(ctx, args.run).await,
    }
}

/// What one exec is asked to do.
struct Planned {
    command: Vec<String>,
    selector: HashMap<String, String>,
    /// Where it was routed, for the table (`--on` target or the chosen executor).
    target: String,
}

async fn run_execs(ctx: &Ctx, run: RunArgs) -> anyhow::Result<()> {
    if run.parallel {
        if !run.argv.is_empty() {
            bail!("--parallel takes its commands as arguments, not after `--`");
        }
        if run.commands.is_empty() {
            bail!("--parallel needs at least one command");
        }
        if run.on.len() > 1 && run.on.len() != run.commands.len() {
            bail!(
                "--parallel with {} commands takes one --on for all or one per command, not {}",
                run.commands.len(),
                run.on.len()
            );
        }
    } else {
        if !run.commands.is_empty() {
            bail!(
                "the command goes after `--` (percyctl exec --on TARGET -- CMD ARGS…); \
                 several commands need --parallel"
            );
        }
        if run.argv.iter().all(|w| w.trim().is_empty()) {
            bail!("empty command: percyctl exec --on TARGET -- CMD ARGS…");
        }
        if run.on.len() > 1 {
            bail!("one --on per exec (several only with --parallel)");
        }
    }
    if !run.auto && !run.all && !run.parallel && run.on.is_empty() {
        bail!("say where to run it: --on TARGET, --auto, or --all");
    }
    let executors = executors(&ctx.client).await?;
    let mut planned = Vec::new();
    if run.all {
        let required = match run.on.first() {
            Some(target) => target_selector(target)?,
            None => HashMap::new(),
        };
        let chosen: Vec<&Candidate> = executors.iter().filter(|c| matches(c, &required)).collect();
        if chosen.is_empty() {
            return Err(no_executor(run.on.first().map(String::as_str)));
        }
        for c in chosen {
            planned.push(Planned {
                command: run.argv.clone(),
                selector: by_name(&c.name),
                target: c.name.clone(),
            });
        }
    } else if run.parallel {
        let mut extra = HashMap::<String, usize>::new();
        for (i, line) in run.commands.iter().enumerate() {
            if line.trim().is_empty() {
                bail!("empty command (argument {} of --parallel)", i + 1);
            }
            let target = run.on.get(i).or(run.on.first());
            let required = match target {
                Some(t) => target_selector(t)?,
                None => HashMap::new(),
            };
            // Spread: the lowest load, counting what this run already put there.
            let ranked = rank(&executors, &required, &extra);
            let Some(best) = ranked.first() else {
                return Err(no_executor(target.map(String::as_str)));
            };
            *extra.entry(best.name.clone()).or_default() += 1;
            planned.push(Planned {
                command: vec![line.clone()],
                selector: by_name(&best.name),
                target: best.name.clone(),
            });
        }
    } else if run.auto {
        let required = match run.on.first() {
            Some(t) => target_selector(t)?,
            None => HashMap::new(),
        };
        let ranked = rank(&executors, &required, &HashMap::new());
        if run.explain {
            let mut labels: Vec<String> =
                required.iter().map(|(k, v)| format!("{k}={v}")).collect();
            labels.sort();
            eprintln!(
                "percyctl: executors by load per core, then running work (required labels: {}):",
                if labels.is_empty() {
                    "none".to_owned()
                } else {
                    labels.join(",")
                }
            );
            for (i, c) in ranked.iter().enumerate() {
                eprintln!("  {}. {}", i + 1, c.explain());
            }
        }
        let Some(best) = ranked.first() else {
            return Err(no_executor(run.on.first().map(String::as_str)));
        };
        let why = match best.load_per_core() {
            Some(per_core) => format!("load {per_core:.2}/core"),
            None => format!("load unknown, running {}", best.running()),
        };
        eprintln!(
            "percyctl: --auto chose {} ({why}, the lowest of {} matching executor{})",
            best.name,
            ranked.len(),
            if ranked.len() == 1 { "" } else { "s" }
        );
        planned.push(Planned {
            command: run.argv.clone(),
            selector: by_name(&best.name),
            target: best.name.clone(),
        });
    } else {
        let target = &run.on[0];
        let selector = target_selector(target)?;
        if !executors.iter().any(|c| matches(c, &selector)) {
            return Err(no_executor(Some(target)));
        }
        planned.push(Planned {
            command: run.argv.clone(),
            selector,
            target: target.clone(),
        });
    }

    let options = Options {
        timeout: run.timeout,
        cwd: run.cwd.clone(),
        env: run.env.iter().cloned().collect(),
        retry: run.retry,
    };
    if run.detach {
        let p = &planned[0];
        let id = new_exec_id();
        // The executor publishes the output to a node even so, where `exec logs -f` attaches
        // to follow it live (the node drops it while nobody is attached).
        let (relay, _stream) = ctx
            .client
            .attach_exec(&id)
            .await
            .context("finding a node to relay the exec's output")?;
        submit(&ctx.client, &id, p, &options, Some(relay)).await?;
        return ctx
            .out
            .emit(&serde_json::json!({ "id": id }), || id.clone());
    }
    if planned.len() == 1 && !run.parallel && !run.all {
        let p = &planned[0];
        let code = run_one(&ctx.client, p, &options, Prefix::None).await?;
        return exit_with(code);
    }
    run_many(ctx, planned, &options).await
}

struct Options {
    timeout: Option<Duration>,
    cwd: Option<String>,
    env: BTreeMap<String, String>,
    retry: bool,
}

fn exit_with(code: u8) -> anyhow::Result<()> {
    if code == 0 {
        Ok(())
    } else {
        Err(ExitWith(code).into())
    }
}

fn no_executor(target: Option<&str>) -> anyhow::Error {
    Refused(match target {
        Some(t) => format!(
            "no active executor matches {t:?} (start one with `percyctl worker --accept-exec`)"
        ),
        None => "no active executor (start one with `percyctl worker --accept-exec`)".into(),
    })
    .into()
}

/// `NAME` → the executor's name label; `k=v,k2=v2` → those labels.
fn target_selector(target: &str) -> anyhow::Result<HashMap<String, String>> {
    let target = target.trim();
    if target.is_empty() {
        bail!("empty --on target");
    }
    if !target.contains('=') {
        return Ok(by_name(target));
    }
    target
        .split(',')
        .map(|pair| args::key_value(pair).map_err(|e| anyhow::anyhow!("--on {target:?}: {e}")))
        .collect()
}

fn by_name(name: &str) -> HashMap<String, String> {
    HashMap::from([(EXEC_AGENT_LABEL.to_owned(), name.to_owned())])
}

/// Active executors with their load: what each reported with its heartbeats (the leader's
/// figures: this read is linearizable, so it is answered by the leader) and the tasks and
/// execs each holds now.
async fn executors(client: &Client) -> anyhow::Result<Vec<Candidate>> {
    let agents = crate::agent::list_from_leader(client, false)
        .await
        .context("listing executors")?;
    let mut load = HashMap::<u64, usize>::new();
    for status in [TaskStatus::Claimed, TaskStatus::Working] {
        let filter = TaskFilter {
            status: Some(status),
            ..Default::default()
        };
        for task in client
            .list_tasks(&filter, Consistency::Linearizable)
            .await?
            .tasks
        {
            *load.entry(task.assignee).or_default() += 1;
        }
    }
    Ok(agents
        .agents
        .into_iter()
        .filter(is_executor)
        .map(|a: Agent| Candidate {
            held: load.get(&a.id).copied().unwrap_or(0),
            max_concurrent: a.max_concurrent,
            load: a.load.as_ref().map(AgentLoadFigures::from),
            labels: a.labels.into_iter().collect(),
            name: a.name,
            routed: 0,
        })
        .collect())
}

fn is_executor(agent: &Agent) -> bool {
    agent.status == AgentStatus::Active as i32
        && agent.capabilities.iter().any(|c| c == EXEC_CAPABILITY)
}

fn new_exec_id() -> String {
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

async fn submit(
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
enum Prefix {
    /// As they come, byte for byte (a single exec).
    None,
    /// Line by line, each prefixed (`[node] `), for several execs at once.
    Node(String),
}

/// Submits one exec, streams its output, and returns its exit code.
async fn run_one(
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
async fn pump(
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

fn write_chunk(prefix: &Prefix, partial: &mut [Vec<u8>; 2], fd: u32, data: &[u8]) {
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

fn write_to(to_stderr: bool, data: &[u8]) -> std::io::Result<()> {
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
async fn wait_for_end(
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

fn is_terminal(status: TaskStatus) -> bool {
    matches!(
        status,
        TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled
    )
}

/// The exec's state word, as `exec list` shows it.
fn state_of(task: &Task) -> &'static str {
    match TaskStatus::try_from(task.status).unwrap_or(TaskStatus::Unspecified) {
        TaskStatus::Ready | TaskStatus::Blocked => "pending",
        TaskStatus::Claimed | TaskStatus::Working => "running",
        TaskStatus::Completed => match task.result.as_ref().and_then(|r| r.exit_code) {
            Some(0) => "succeeded",
            _ => "failed",
        },
        TaskStatus::Failed if task.error.starts_with(percy_worker::LOST_EXEC_PREFIX) => "lost",
        TaskStatus::Failed => "failed",
        TaskStatus::Cancelled => "cancelled",
        TaskStatus::Unspecified => "unknown",
    }
}

/// The exit code an ended exec stands for; says on stderr why when it did not run to an
/// exit of its own (when `tell`).
fn exit_code_of(task: &Task, tell: bool) -> u8 {
    match TaskStatus::try_from(task.status).unwrap_or(TaskStatus::Unspecified) {
        TaskStatus::Completed => {
            let code = task.result.as_ref().and_then(|r| r.exit_code).unwrap_or(-1);
            u8::try_from(code).unwrap_or(EXIT_LOST)
        }
        TaskStatus::Cancelled => {
            if tell {
                eprintln!("percyctl: exec {} was cancelled: {}", task.id, task.error);
            }
            EXIT_CANCELLED
        }
        _ => {
            if tell {
                eprintln!(
                    "percyctl: exec {} {}: {}",
                    task.id,
                    state_of(task),
                    task.error
                );
            }
            EXIT_LOST
        }
    }
}

#[derive(Serialize)]
struct Row {
    command: String,
    node: String,
    exit_code: u8,
    state: String,
    duration_ms: u64,
}

/// Several execs at once (`--parallel`, `--all`): prefixed live output, then the table.
async fn run_many(ctx: &Ctx, planned: Vec<Planned>, options: &Options) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut runs = tokio::task::JoinSet::new();
    for (i, p) in planned.into_iter().enumerate() {
        let client = ctx.client.clone();
        let options = Options {
            timeout: options.timeout,
            cwd: options.cwd.clone(),
            env: options.env.clone(),
            retry: options.retry,
        };
        runs.spawn(async move {
            let began = Instant::now();
            let line = ExecRequest {
                command: p.command.clone(),
                ..Default::default()
            }
            .shell_line();
            let code = run_one(&client, &p, &options, Prefix::Node(p.target.clone())).await;
            (i, line, p.target, code, began.elapsed())
        });
    }
    let mut rows = Vec::new();
    while let Some(joined) = runs.join_next().await {
        let (i, command, node, code, took) = joined.context("an exec's runner panicked")?;
        let code = match code {
            Ok(code) => code,
            Err(err) => {
                eprintln!("percyctl: {command:?} on {node}: {err:#}");
                EXIT_LOST
            }
        };
        rows.push((
            i,
            Row {
                command,
                node,
                exit_code: code,
                state: if code == 0 { "succeeded" } else { "failed" }.into(),
                duration_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
            },
        ));
    }
    rows.sort_by_key(|(i, _)| *i);
    let rows: Vec<Row> = rows.into_iter().map(|(_, r)| r).collect();
    let wall = started.elapsed();
    let sum: u64 = rows.iter().map(|r| r.duration_ms).sum();
    let wall_ms = u64::try_from(wall.as_millis()).unwrap_or(u64::MAX).max(1);
    let failed = rows.iter().filter(|r| r.exit_code != 0).count();
    let json = serde_json::json!({
        "execs": &rows,
        "wall_ms": wall_ms,
        "sum_ms": sum,
        "speedup": sum as f64 / wall_ms as f64,
        "failed": failed,
    });
    ctx.out.emit(&json, || {
        let body = table(
            &["command", "node", "exit code", "duration"],
            rows.iter().map(|r| {
                vec![
                    r.command.clone(),
                    r.node.clone(),
                    r.exit_code.to_string(),
                    format!("{:.2}s", r.duration_ms as f64 / 1000.0),
                ]
            }),
        );
        format!(
            "{body}\nwall time {:.2}s, sum of durations {:.2}s (speedup {:.2}x); {} of {} failed",
            wall_ms as f64 / 1000.0,
            sum as f64 / 1000.0,
            sum as f64 / wall_ms as f64,
            failed,
            rows.len()
        )
    })?;
    if failed > 0 {
        return Err(ExitWith(1).into());
    }
    Ok(())
}

async fn logs(ctx: &Ctx, id: &str, follow: bool) -> anyhow::Result<()> {
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
async fn follow_live(ctx: &Ctx, id: &str, relay: &str) -> anyhow::Result<usize> {
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
async fn wait_until_ended(client: &Client, id: &str) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(POLL);
    loop {
        tick.tick().await;
        let t = exec_task(client, id).await?;
        if TaskStatus::try_from(t.status).is_ok_and(is_terminal) {
            return Ok(());
        }
    }
}

fn print_tail(task: &Task) -> anyhow::Result<()> {
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

async fn exec_task(client: &Client, id: &str) -> anyhow::Result<Task> {
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
struct ListedExec {
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

async fn list(ctx: &Ctx, limit: usize) -> anyhow::Result<()> {
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
