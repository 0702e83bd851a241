//! How definition runs and their iterations print (`percyctl definition iterations`, the
//! steer TUI's detail pane).

use percy_client::proto::{DefinitionRun, Iteration, IterationStatus, SteeringMessage};
use serde::Serialize;

use crate::output::table;
use crate::views::timestamp;

pub fn status_name(status: i32) -> &'static str {
    match IterationStatus::try_from(status) {
        Ok(IterationStatus::Running) => "running",
        Ok(IterationStatus::Succeeded) => "succeeded",
        Ok(IterationStatus::Failed) => "failed",
        Ok(IterationStatus::Stopped) => "stopped",
        Ok(IterationStatus::Lost) => "lost",
        _ => "unknown",
    }
}

/// `$0.0123` from millionths of a dollar.
pub fn cost(micros: u64) -> String {
    format!("${}.{:04}", micros / 1_000_000, (micros % 1_000_000) / 100)
}

/// `1.2s`, `3m04s`.
pub fn duration(ms: u64) -> String {
    if ms < 60_000 {
        format!("{}.{}s", ms / 1_000, (ms % 1_000) / 100)
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1_000)
    }
}

#[derive(Debug, Serialize)]
pub struct SteeringView {
    pub id: u64,
    pub from: String,
    pub body: String,
    pub sent: String,
}

impl From<&SteeringMessage> for SteeringView {
    fn from(m: &SteeringMessage) -> Self {
        Self {
            id: m.id,
            from: m.from.clone(),
            body: m.body.clone(),
            sent: timestamp(m.sent_at_ms),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct IterationView {
    pub number: u64,
    pub status: &'static str,
    pub agent_id: u64,
    pub agent: String,
    pub node: String,
    pub started: String,
    pub ended: String,
    pub duration_ms: u64,
    pub exit_code: Option<i32>,
    pub is_error: bool,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: f64,
    pub prompt: String,
    pub messages: Vec<SteeringView>,
    pub result: Option<String>,
    pub output_tail: String,
}

impl From<&Iteration> for IterationView {
    fn from(i: &Iteration) -> Self {
        let report = i.report.clone().unwrap_or_default();
        Self {
            number: i.number,
            status: status_name(i.status),
            agent_id: i.agent_id,
            agent: i.agent_name.clone(),
            node: i.node.clone(),
            started: timestamp(i.started_at_ms),
            ended: timestamp(i.ended_at_ms),
            duration_ms: report.duration_ms,
            exit_code: report.exit_code,
            is_error: report.is_error,
            input_tokens: report.input_tokens,
            output_tokens: report.output_tokens,
            cost_usd: report.cost_micros as f64 / 1_000_000.0,
            prompt: i.prompt.clone(),
            messages: i.messages.iter().map(SteeringView::from).collect(),
            result: report.result_text,
            output_tail: report.output_tail,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct RunView {
    pub name: String,
    pub runner: Option<String>,
    pub node: Option<String>,
    pub run_token: Option<u64>,
    pub next_number: u64,
    pub pending: Vec<SteeringView>,
    pub iterations: Vec<IterationView>,
}

impl From<&DefinitionRun> for RunView {
    fn from(r: &DefinitionRun) -> Self {
        Self {
            name: r.name.clone(),
            runner: r.runner.as_ref().map(|x| x.agent_name.clone()),
            node: r.runner.as_ref().map(|x| x.node.clone()),
            run_token: r.runner.as_ref().map(|x| x.run_token),
            next_number: r.next_number,
            pending: r.pending.iter().map(SteeringView::from).collect(),
            iterations: r.iterations.iter().map(IterationView::from).collect(),
        }
    }
}

/// One line per iteration, newest first.
pub fn iterations_table(run: &DefinitionRun) -> String {
    table(
        &[
            "#", "status", "agent", "node", "started", "duration", "exit", "tokens", "cost",
            "msgs", "result",
        ],
        run.iterations.iter().rev().map(|i| {
            let report = i.report.clone().unwrap_or_default();
            let result: String = report
                .result_text
                .unwrap_or_default()
                .lines()
                .next()
                .unwrap_or_default()
                .chars()
                .take(48)
                .collect();
            vec![
                i.number.to_string(),
                status_name(i.status).to_owned(),
                i.agent_name.clone(),
                i.node.clone(),
                timestamp(i.started_at_ms),
                if i.ended_at_ms == 0 {
                    "-".to_owned()
                } else {
                    duration(report.duration_ms)
                },
                report
                    .exit_code
                    .map_or_else(|| "-".to_owned(), |c| c.to_string()),
                format!("{}/{}", report.input_tokens, report.output_tokens),
                cost(report.cost_micros),
                i.messages.len().to_string(),
                result,
            ]
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_and_time_print_compactly() {
        assert_eq!(cost(12_300), "$0.0123");
        assert_eq!(cost(2_500_000), "$2.5000");
        assert_eq!(duration(1_234), "1.2s");
        assert_eq!(duration(184_000), "3m04s");
    }
}
