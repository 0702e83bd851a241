//! `percyd`: parses the command line, starts one node, and stops it gracefully on SIGTERM or
//! SIGINT. Every error is one line on stderr and a non-zero exit.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use percy_server::config::{Command, RestoreArgs};
use percy_server::{Cli, Node};
use tracing_subscriber::EnvFilter;

/// mimalloc instead of glibc's malloc: allocation was ~7 % of a node's CPU samples (request
/// and response buffers, HTTP/2 frames), and mimalloc's thread-local free lists halve that.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How often percyd lets mimalloc run its delayed purges (see [`spawn_allocator_purge_tick`]).
const ALLOCATOR_PURGE_TICK: Duration = Duration::from_secs(1);

/// Log filter when RUST_LOG is unset: our own progress, and only openraft's warnings (its info
/// level narrates every election and membership step).
const DEFAULT_LOG_FILTER: &str = "info,openraft=warn";

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER)),
        )
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal, not in a redirected log.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let mut cli = Cli::parse();
    spawn_allocator_purge_tick();
    if let Some(Command::Restore(args)) = cli.command.take() {
        return restore(args);
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(threads) = cli.worker_threads {
        runtime.worker_threads(threads.into());
    }
    let runtime = match runtime.build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("percyd: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("percyd: {}", one_line(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// mimalloc returns freed memory to the OS in purges it delays (1 s) and then runs only when
/// some thread frees a page of its own. A node that went quiet after a burst — the tens of
/// megabytes of buffers a snapshot of a million tasks uses — kept them until a thread
/// happened to exit (~10 s later, when tokio retires an idle blocking thread): 60 % above
/// its settled size meanwhile. This thread gives the purges a clock; it sleeps otherwise.
fn spawn_allocator_purge_tick() {
    let spawned = std::thread::Builder::new()
        .name("allocator-purge".into())
        .spawn(|| loop {
            std::thread::sleep(ALLOCATOR_PURGE_TICK);
            // SAFETY: mi_collect takes no arguments to get wrong and may be called from any
            // thread at any time; `false` only runs what is due (no forced purge).
            unsafe { libmimalloc_sys::mi_collect(false) };
        });
    if let Err(e) = spawned {
        tracing::warn!("no allocator purge thread ({e}): freed memory returns to the OS later");
    }
}

/// The error and its causes on one line, each cause once: many of our errors put their source
/// in their own message *and* expose it as `source()`, and `{:#}` would print it twice
/// ("File exists (os error 17): File exists (os error 17)").
fn one_line(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let cause = cause.to_string();
        if text.ends_with(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}

/// `percyd restore`: one line on stdout when the data dir is seeded, one on stderr otherwise.
fn restore(args: RestoreArgs) -> std::process::ExitCode {
    match percy_server::restore::restore(&args.from, &args.data_dir, args.node_id, &args.peers) {
        Ok(r) => {
            println!(
                "restored revision {} of cluster {} into {} as node {} of new cluster {}",
                r.revision,
                r.old_cluster_id,
                r.data_dir.display(),
                r.node_id,
                r.cluster_id
            );
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("percyd restore: {}", one_line(&anyhow::Error::from(e)));
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let address_file = cli.address_file.clone();
    let config = cli.into_config()?;
    if config.is_exposed() {
        tracing::warn!(
            listen = %config.listen,
            tls = config.tls.is_some(),
            auth = config.auth,
            "--insecure: listening beyond loopback without TLS and --auth; anyone who reaches \
             this port can act as any agent"
        );
    }
    let mut node = Node::start(config).await?;
    if let Some(path) = &address_file {
        write_address_file(path, node.addr())?;
    }
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = sigterm.recv() => tracing::info!("SIGTERM"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT"),
        result = node.serving() => return result.map_err(anyhow::Error::from),
    }
    node.shutdown().await;
    Ok(())
}

/// Writes `addr` to `path` through a temporary file and a rename, so a reader polling for the
/// file never sees it half written.
fn write_address_file(path: &std::path::Path, addr: std::net::SocketAddr) -> anyhow::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = std::path::PathBuf::from(temporary);
    std::fs::write(&temporary, format!("{addr}\n"))
        .with_context(|| format!("writing --address-file {}", temporary.display()))?;
    std::fs::rename(&temporary, path)
        .with_context(|| format!("writing --address-file {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot create data directory /x: {source}")]
    struct Repeats {
        source: std::io::Error,
    }

    #[test]
    fn each_cause_is_printed_once() {
        // EEXIST (17 on Linux): "File exists (os error 17)".
        let io = std::io::Error::from_raw_os_error(17);
        let err = anyhow::Error::from(Repeats { source: io }).context("opening storage");
        let text = one_line(&err);
        assert_eq!(text.matches("os error 17").count(), 1, "{text}");
        assert!(text.starts_with("opening storage: cannot create data directory /x: "));
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(one_line(&plain), "outer: inner");
    }
}
