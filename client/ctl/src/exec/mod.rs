//! `percyctl exec`: run a command on an executor (`percyctl worker --accept-exec`), stream its
//! output live, exit with its exit code. An exec is a task that requires `percy.exec` (its
//! durable record: request, executor, exit code, output tail); its live output goes from the
//! executor to the node this caller attached to, from memory (`ExecService`).
//!
//! Exit codes: the remote command's (a signal n as 128+n, a timeout as 124); 130 when
//! cancelled (Ctrl-C); 255 when the exec could not run or was lost (its executor died);
//! otherwise percyctl's own (1 refused, 2 usage or connection).
//!
//! `plan` turns the arguments into execs on executors and starts them, `live` runs one exec
//! with its output streamed, `many` runs several at once and prints the table, `logs` shows
//! an exec's output and lists execs.

mod live;
mod logs;
mod many;
mod plan;

use live::{new_exec_id, run_one, submit, write_chunk, Prefix};
use logs::{list, logs};
use many::run_many;
use plan::run_execs;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use percy_client::proto::Task;
use percy_client::TaskStatus;

use crate::{args, Ctx};

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
