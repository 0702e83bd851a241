//! Every cluster example (`tests/examples/NN_*.rs`) runs to the end and exits 0 (the full
//! pipeline, 09, has its own test: `runtime_pipeline.rs`).

mod runtime_common;

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use percy_tests::binaries::{build_binary, profile_dir};
use runtime_common::serial;

/// The examples, in order.
const EXAMPLES: [&str; 8] = [
    "01_single_node",
    "02_two_nodes",
    "03_task_lifecycle",
    "04_worker",
    "05_dependencies",
    "06_locks",
    "07_heartbeat",
    "08_merge",
];
/// One example may take this long on a loaded machine (they take seconds).
const EXAMPLE_TIMEOUT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_runs_and_exits_0() -> Result<()> {
    let _serial = serial().await;
    build_binary(
        &["build", "-p", "percy-tests", "--examples"],
        "examples/01_single_node",
        "PERCY_EXAMPLES_PREBUILT",
    )?;
    let dir = profile_dir()?.join("examples");
    for name in EXAMPLES {
        let started = Instant::now();
        let child = tokio::process::Command::new(dir.join(name))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting example {name}"))?;
        // A hung example is killed (kill_on_drop) when the timeout drops it.
        let output = tokio::time::timeout(EXAMPLE_TIMEOUT, child.wait_with_output())
            .await
            .with_context(|| format!("example {name} still running after {EXAMPLE_TIMEOUT:?}"))??;
        let status = output.status;
        let stdout = String::from_utf8_lossy(&output.stdout);
        ensure!(
            status.success() && stdout.trim_end().ends_with("done"),
            "example {name} exited with {status}\nstdout:\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        println!("{name}: ok in {:.1?}", started.elapsed());
    }
    Ok(())
}
