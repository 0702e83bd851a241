//! The full pipeline example (`tests/examples/09_full_pipeline.rs`) runs to the end and exits
//! 0: three nodes, three git workers with a scripted LLM, a six-task plan merged into `main`
//! one fenced merge per task, and `main` building. Needs `sh`.

mod runtime_common;

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use percy_tests::binaries::build_binary;
use runtime_common::{serial, GroupGuard};

/// The example under test.
const EXAMPLE: &str = "09_full_pipeline";
/// The example takes seconds; it allows its plan 90 s, plus starting and stopping.
const EXAMPLE_TIMEOUT: Duration = Duration::from_secs(180);
/// What the example prints on its way, in this order.
const MILESTONES: [&str; 5] = [
    "plan pipeline finished: 6 completed",
    "ok: one `merged` line per task in the worker logs",
    "ok: exactly one merge commit per task on main",
    "ok: main builds with every module",
    "done",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_full_pipeline_example_merges_every_task_and_main_builds() -> Result<()> {
    let _serial = serial().await;
    let example = build_binary(
        &["build", "-p", "percy-tests", "--example", EXAMPLE],
        &format!("examples/{EXAMPLE}"),
        "PERCY_PIPELINE_EXAMPLE_BIN",
    )?;
    let started = Instant::now();
    // In a process group of its own, so that the nodes and workers it started die with it
    // if it hangs (the guard kills the group; the example's own guards cannot run then).
    let child = tokio::process::Command::new(&example)
        .process_group(0)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", example.display()))?;
    let pgid = child
        .id()
        .and_then(|pid| libc::pid_t::try_from(pid).ok())
        .context("the example has no pid")?;
    let _group = GroupGuard(vec![pgid]);
    let output = tokio::time::timeout(EXAMPLE_TIMEOUT, child.wait_with_output())
        .await
        .with_context(|| format!("{EXAMPLE} still running after {EXAMPLE_TIMEOUT:?}"))??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report = || {
        format!(
            "{EXAMPLE} exited with {}\nstdout:\n{stdout}\nstderr:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
    };
    ensure!(output.status.success(), "{}", report());
    let mut rest: &str = &stdout;
    for milestone in MILESTONES {
        let at = rest
            .find(milestone)
            .with_context(|| format!("{milestone:?} missing (or out of order)\n{}", report()))?;
        rest = &rest[at + milestone.len()..];
    }
    println!("{EXAMPLE}: ok in {:.1?}", started.elapsed());
    Ok(())
}
