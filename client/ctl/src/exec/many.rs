//! Several execs at once (`--parallel`, `--all`): prefixed live output, then a table.

use std::time::Instant;

use anyhow::Context as _;
use percy_worker::ExecRequest;
use serde::Serialize;

use crate::output::table;
use crate::Ctx;

use super::{run_one, ExitWith, Options, Planned, Prefix, EXIT_LOST};

#[derive(Serialize)]
pub(super) struct Row {
    command: String,
    node: String,
    exit_code: u8,
    state: String,
    duration_ms: u64,
}

/// Several execs at once (`--parallel`, `--all`): prefixed live output, then the table.
pub(super) async fn run_many(
    ctx: &Ctx,
    planned: Vec<Planned>,
    options: &Options,
) -> anyhow::Result<()> {
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
