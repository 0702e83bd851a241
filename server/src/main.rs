//! `percyd`: parses the command line, starts one node, and stops it gracefully on SIGTERM or
//! SIGINT. Every error is one line on stderr and a non-zero exit.

use std::io::IsTerminal;

use anyhow::Context;
use clap::Parser;
use percy_server::{Cli, Node};
use tracing_subscriber::EnvFilter;

/// mimalloc instead of glibc's malloc: allocation was ~7 % of a node's CPU samples (request
/// and response buffers, HTTP/2 frames), and mimalloc's thread-local free lists halve that.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    let cli = Cli::parse();
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
            eprintln!("percyd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = cli.into_config()?;
    let mut node = Node::start(config).await?;
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
