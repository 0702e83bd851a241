//! `percyctl`: the command-line client of Percy, in the style of etcdctl and kubectl.
//!
//! Exit codes: 0 success; 1 the server refused (bad input, failed precondition, not found, …)
//! or the outcome is negative (nothing to claim, a plan that did not complete); 2 usage or
//! connection errors. Errors are one line on stderr: `error: <what failed>: <why>`.

mod agent;
mod args;
mod bench;
mod certs;
mod chat;
mod cluster;
mod config;
mod connect;
mod definition;
mod exec;
mod exec_rank;
mod iterations;
mod lock;
mod mcp;
mod merge;
mod output;
mod plan;
mod program_path;
mod snapshot;
mod steer;
mod task;
mod token;
mod views;
mod watch;
mod worker;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use percy_client::{Client, ClientError, RetryPolicy};

use crate::output::Output;
// Plan files and manifests are parsed by their own crate (the fuzz targets call it too).
use percy_files as files;

/// Exit code when the server refused the request or the result is negative.
const EXIT_REFUSED: u8 = 1;
/// Exit code for usage errors and an unreachable cluster.
const EXIT_USAGE: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "percyctl",
    version,
    about = "Command-line client for Percy, the coordination service for clusters of coding agents"
)]
struct Cli {
    /// Comma-separated list of percyd endpoints (host:port); any node will do.
    #[arg(
        long,
        global = true,
        env = "PERCY_ENDPOINTS",
        default_value = "127.0.0.1:7070",
        value_delimiter = ','
    )]
    endpoints: Vec<String>,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value = "table")]
    output: output::Format,
    /// How long a request may keep retrying through failures before giving up.
    #[arg(
        long,
        global = true,
        env = "PERCY_TIMEOUT",
        default_value = "10s",
        value_parser = args::duration
    )]
    timeout: Duration,
    #[command(flatten)]
    connect: connect::Flags,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Raft status of the nodes, membership changes.
    #[command(subcommand)]
    Cluster(cluster::Command),
    /// Register agents, heartbeat, list.
    #[command(subcommand)]
    Agent(agent::Command),
    /// Submit, claim and drive tasks.
    #[command(subcommand)]
    Task(task::Command),
    /// Submit a DAG of tasks from a file, show and follow its progress.
    #[command(subcommand)]
    Plan(plan::Command),
    /// Path locks with fencing tokens.
    #[command(subcommand)]
    Lock(lock::Command),
    /// The replicated key/value configuration, with compare-and-set.
    #[command(subcommand)]
    Config(config::Command),
    /// Create or update agent definitions from a file.
    Apply(definition::ApplyArgs),
    /// Agent definitions.
    #[command(subcommand, alias = "def")]
    Definition(definition::Command),
    /// Messages to agents.
    #[command(subcommand)]
    Chat(chat::Command),
    /// Print events as they happen.
    Watch(watch::Args),
    /// Watch and steer running definitions (a TUI); `steer inject NAME TEXT` sends a message.
    Steer(steer::Args),
    /// Run tasks with a command, as an agent, until SIGTERM.
    Worker(worker::Args),
    /// Run a command on an executor (`worker --accept-exec`), streaming its output; exits
    /// with its exit code. Also `--auto`, `--parallel`, `--all`, `exec logs`, `exec list`.
    Exec(exec::Args),
    /// Merge a branch into a target branch (in memory, compare-and-swap on the ref).
    Merge(merge::Args),
    /// Serve the Model Context Protocol on stdin/stdout as agent NAME, for LLM coding CLIs
    /// (`claude mcp add percy -- percyctl mcp --agent NAME`).
    Mcp(mcp::Args),
    /// Load generator: claims, CAS, locks, reads, heartbeats, restart (like `nats bench`).
    Bench(percy_bench::Args),
    /// Access tokens of a cluster started with `percyd --auth` (admin token needed).
    #[command(subcommand)]
    Token(token::Command),
    /// Backups: save a consistent image of the cluster's state, inspect a saved one
    /// (`percyd restore` seeds a new cluster from it).
    #[command(subcommand)]
    Snapshot(snapshot::Command),
    /// Development TLS certificates (a CA, one per node, an admin client certificate).
    #[command(subcommand)]
    Certs(certs::Command),
}

/// What every subcommand needs.
pub struct Ctx {
    pub client: Client,
    pub out: Output,
    /// Calls carry a token: the cluster names message senders itself.
    pub has_token: bool,
}

/// A negative outcome that is not a transport problem (exit code 1).
#[derive(Debug)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The worker reports what it does (claimed, completed, failed) at info; the benchmark's
    // workers (`bench pipeline`) would print a line per task, so there only warnings.
    let default_filter = match &cli.command {
        Command::Bench(_) => "warn",
        _ => "warn,percy_worker=info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal, not in a redirected log.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let endpoints = cli.endpoints.join(",");
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(run(cli)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The remote command's exit code: no error line of ours.
        Err(err) if err.downcast_ref::<exec::ExitWith>().is_some() => ExitCode::from(
            err.downcast_ref::<exec::ExitWith>()
                .map_or(EXIT_USAGE, |e| e.0),
        ),
        Err(err) => {
            let code = exit_code(&err);
            if code == EXIT_USAGE && is_unreachable(&err) {
                eprintln!("error: {err:#} (endpoints: {endpoints})");
            } else {
                eprintln!("error: {err:#}");
            }
            ExitCode::from(code)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // Certificates are made before any cluster exists.
    if let Command::Certs(cmd) = cli.command {
        return certs::run(cmd);
    }
    // Inspecting a file needs no cluster either.
    if let Command::Snapshot(snapshot::Command::Inspect { file }) = &cli.command {
        return snapshot::inspect(output::Output { format: cli.output }, file);
    }
    let policy = RetryPolicy::default().with_deadline(cli.timeout);
    let security = cli.connect.security()?;
    let ctx = Ctx {
        client: Client::connect_secure(&cli.endpoints, policy, &security)
            .await
            // A bad --endpoints is a usage error (exit 2), not a refusal by the cluster.
            .map_err(|err| anyhow::anyhow!("--endpoints: {err}"))?,
        has_token: cli.connect.has_token(),
        out: Output { format: cli.output },
    };
    match cli.command {
        Command::Cluster(cmd) => cluster::run(&ctx, cmd).await,
        Command::Agent(cmd) => agent::run(&ctx, cmd).await,
        Command::Task(cmd) => task::run(&ctx, cmd).await,
        Command::Plan(cmd) => plan::run(&ctx, cmd).await,
        Command::Lock(cmd) => lock::run(&ctx, cmd).await,
        Command::Config(cmd) => config::run(&ctx, cmd).await,
        Command::Apply(args) => definition::apply(&ctx, args).await,
        Command::Definition(cmd) => definition::run(&ctx, cmd).await,
        Command::Chat(cmd) => chat::run(&ctx, cmd).await,
        Command::Watch(args) => watch::run(&ctx, args).await,
        Command::Steer(args) => steer::run(&ctx, args).await,
        Command::Worker(args) => worker::run(&ctx, args).await,
        Command::Exec(args) => exec::run(&ctx, args).await,
        Command::Merge(args) => merge::run(&ctx, args).await,
        Command::Mcp(args) => mcp::run(&ctx, args).await,
        Command::Bench(args) => bench::run(&ctx, args).await,
        Command::Token(cmd) => token::run(&ctx, cmd).await,
        Command::Snapshot(cmd) => snapshot::run(&ctx, cmd).await,
        Command::Certs(_) => unreachable!("handled before connecting"),
    }
}

fn exit_code(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if let Some(client_error) = cause.downcast_ref::<ClientError>() {
            return if client_error.is_refusal() {
                EXIT_REFUSED
            } else {
                EXIT_USAGE
            };
        }
        if cause.is::<Refused>() {
            return EXIT_REFUSED;
        }
    }
    EXIT_USAGE
}

fn is_unreachable(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<ClientError>()
            .is_some_and(|e| e.code() == tonic::Code::Unavailable)
    })
}

#[cfg(test)]
mod tests {
    use anyhow::Context;
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    /// The global connection flags must not collide with subcommand arguments of the same
    /// name (`config get KEY` vs `--key`, `task fail --token` vs `percyctl --token`).
    #[test]
    fn connection_flags_parse_beside_same_named_arguments() {
        let cli = Cli::try_parse_from([
            "percyctl", "--token", "t", "--cacert", "ca", "--cert", "c", "--key", "k", "config",
            "get", "some-key",
        ])
        .unwrap();
        assert!(cli.connect.has_token());
        let cli = Cli::try_parse_from([
            "percyctl", "--token", "t", "task", "fail", "t1", "--agent", "a", "--token", "7",
            "--error", "x",
        ])
        .unwrap();
        assert!(matches!(cli.command, Command::Task(_)));
    }

    /// Every option and positional of every help page says what it is for.
    #[test]
    fn every_argument_of_every_command_has_a_description() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in command.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                // A blank description is none (`help = ""`, an empty doc line).
                let said = |text: Option<&clap::builder::StyledStr>| {
                    text.is_some_and(|t| !t.to_string().trim().is_empty())
                };
                if !builtin && !said(arg.get_help()) && !said(arg.get_long_help()) {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in command.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut command = Cli::command();
        command.build();
        let mut missing = Vec::new();
        walk(&command, "percyctl", &mut missing);
        assert!(
            missing.is_empty(),
            "arguments without help:\n{}",
            missing.join("\n")
        );
    }

    #[test]
    fn refusals_exit_1_and_connection_problems_exit_2() {
        let refused = anyhow::Error::from(ClientError::from(tonic::Status::failed_precondition(
            "task is claimed",
        )))
        .context("claim task t1");
        assert_eq!(exit_code(&refused), EXIT_REFUSED);
        let negative: anyhow::Result<()> = Err(Refused("nothing to claim".into()).into());
        assert_eq!(
            exit_code(&negative.context("claim").unwrap_err()),
            EXIT_REFUSED
        );
        let unreachable = anyhow::Error::from(ClientError::from(tonic::Status::unavailable(
            "tcp connect error",
        )));
        assert_eq!(exit_code(&unreachable), EXIT_USAGE);
        assert!(is_unreachable(&unreachable));
        assert_eq!(
            exit_code(&anyhow::anyhow!("cannot read plan.toml")),
            EXIT_USAGE
        );
    }

    #[test]
    fn errors_print_the_whole_chain_on_one_line() {
        let err = anyhow::Error::from(ClientError::from(tonic::Status::not_found("no task t9")))
            .context("get task t9");
        assert_eq!(format!("{err:#}"), "get task t9: NOT_FOUND: no task t9");
    }
}
