//! Drawing the cockpit: the tree and the detail pane (or the cluster view), the input box,
//! the filter, the connection banner. Everything is computed from the [`App`] alone, so the
//! same state always draws the same screen (the snapshot tests rely on it).

use percy_client::proto::{DefinitionRun, Iteration, IterationStatus};
use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, List, ListItem, ListState, Paragraph, Wrap};
use ratatui::Frame;

use super::app::{App, Mode, Row, View};
use crate::iterations::{cost, duration, status_name};
use crate::views::{agent_status_name, desired_state_name, lock_mode_name, task_status_name};

pub fn draw(frame: &mut Frame, app: &App) {
    let mut constraints = Vec::new();
    if app.banner.is_some() {
        constraints.push(Constraint::Length(1));
    }
    constraints.push(Constraint::Min(3));
    constraints.push(Constraint::Length(if app.mode == Mode::Input {
        3
    } else {
        1
    }));
    let areas = Layout::default()
        .direction(Direction::Vertical)
        .constraints(constraints)
        .split(frame.area());
    let mut next = 0;
    if let Some(banner) = &app.banner {
        frame.render_widget(
            Paragraph::new(banner.as_str()).style(Style::default().fg(Color::White).bg(Color::Red)),
            areas[0],
        );
        next = 1;
    }
    match app.view {
        View::Tree => draw_tree_view(frame, app, areas[next]),
        View::Cluster => draw_cluster_view(frame, app, areas[next]),
    }
    draw_bottom(frame, app, areas[next + 1]);
}

fn status_color(status: i32) -> Color {
    match IterationStatus::try_from(status) {
        Ok(IterationStatus::Running) => Color::Cyan,
        Ok(IterationStatus::Succeeded) => Color::Green,
        Ok(IterationStatus::Failed) => Color::Red,
        Ok(IterationStatus::Stopped) => Color::Magenta,
        _ => Color::DarkGray,
    }
}

fn draw_tree_view(frame: &mut Frame, app: &App, area: Rect) {
    let halves = Layout::default()
        .direction(Direction::Horizontal)
        .constraints([Constraint::Percentage(35), Constraint::Percentage(65)])
        .split(area);
    let rows = app.rows();
    let items: Vec<ListItem> = rows.iter().map(|row| tree_item(app, row)).collect();
    let title = if app.filter.is_empty() {
        " definitions ".to_owned()
    } else {
        format!(" definitions /{} ", app.filter)
    };
    let list = List::new(items)
        .block(Block::default().borders(Borders::ALL).title(title))
        .highlight_style(Style::default().bg(Color::DarkGray))
        .highlight_symbol("› ");
    let mut state = ListState::default();
    state.select(app.selected_index(&rows));
    frame.render_stateful_widget(list, halves[0], &mut state);

    let (title, lines) = match app.current() {
        Some(row) => detail(app, &row),
        None => (
            " nothing to show ".to_owned(),
            vec![Line::from(
                "No definitions. Apply some: percyctl apply -f agents.toml",
            )],
        ),
    };
    let detail = Paragraph::new(lines)
        .block(Block::default().borders(Borders::ALL).title(title))
        .wrap(Wrap { trim: false })
        .scroll((app.scroll, 0));
    frame.render_widget(detail, halves[1]);
}

fn tree_item<'a>(app: &App, row: &Row) -> ListItem<'a> {
    let model = &app.model;
    match row {
        Row::Definition(name) => {
            let desired = model
                .definitions
                .get(name)
                .map_or(0, |definition| definition.desired);
            let color = if desired == 1 {
                Color::Green
            } else {
                Color::DarkGray
            };
            ListItem::new(Line::from(vec![
                Span::styled(name.clone(), Style::default().add_modifier(Modifier::BOLD)),
                Span::raw(" "),
                Span::styled(desired_state_name(desired), Style::default().fg(color)),
            ]))
        }
        Row::Loop(name) => {
            let run = model.run(name);
            let runner = run
                .and_then(|r| r.runner.as_ref())
                .map_or_else(|| "idle".to_owned(), |r| format!("on {}", r.agent_name));
            let count = run.map_or(0, |r| r.next_number.saturating_sub(1));
            ListItem::new(Line::from(format!("  loop: {count} iterations, {runner}")))
        }
        Row::Iteration(name, number) => {
            let iteration = model
                .run(name)
                .and_then(|run| run.iterations.iter().find(|i| i.number == *number));
            let status = iteration.map_or(0, |i| i.status);
            let newest = model
                .run(name)
                .and_then(|run| run.iterations.last())
                .map(|i| i.number)
                == Some(*number);
            let mut style = Style::default().fg(status_color(status));
            if newest {
                style = style.add_modifier(Modifier::BOLD);
            }
            ListItem::new(Line::from(vec![
                Span::raw("    "),
                Span::styled(format!("#{number} {}", status_name(status)), style),
            ]))
        }
    }
}

fn heading(text: &str) -> Line<'static> {
    Line::from(Span::styled(
        format!("── {text} "),
        Style::default()
            .fg(Color::Yellow)
            .add_modifier(Modifier::BOLD),
    ))
}

fn text_lines(text: &str) -> Vec<Line<'static>> {
    text.lines()
        .map(|line| Line::from(line.to_owned()))
        .collect()
}

fn detail(app: &App, row: &Row) -> (String, Vec<Line<'static>>) {
    let model = &app.model;
    let name = row.definition();
    let run = model.run(name);
    match row {
        Row::Definition(_) => {
            let mut lines = Vec::new();
            let Some(definition) = model.definitions.get(name) else {
                return (format!(" {name} "), lines);
            };
            lines.push(Line::from(format!(
                "desired: {}",
                desired_state_name(definition.desired)
            )));
            match run.and_then(|r| r.runner.as_ref()) {
                Some(runner) => {
                    lines.push(Line::from(format!(
                        "runner:  {} (agent {}, run token {})",
                        runner.agent_name, runner.agent_id, runner.run_token
                    )));
                    lines.push(Line::from(format!("node:    {}", runner.node)));
                }
                None => lines.push(Line::from("runner:  none")),
            }
            if let Some(current) = definition.history.last() {
                lines.push(Line::from(format!(
                    "id:      {} (revision {})",
                    current.id.chars().take(12).collect::<String>(),
                    current.revision
                )));
                lines.push(heading("spec"));
                let pretty = serde_json::from_str::<serde_json::Value>(&current.spec_json)
                    .ok()
                    .and_then(|v| serde_json::to_string_pretty(&v).ok())
                    .unwrap_or_else(|| current.spec_json.clone());
                lines.extend(text_lines(&pretty));
            }
            (format!(" definition {name} "), lines)
        }
        Row::Loop(_) => (format!(" loop of {name} "), loop_detail(app, name, run)),
        Row::Iteration(_, number) => {
            let iteration = run.and_then(|r| r.iterations.iter().find(|i| i.number == *number));
            match iteration {
                Some(iteration) => (
                    format!(" {name} #{number} "),
                    iteration_detail(iteration, run),
                ),
                None => (format!(" {name} #{number} "), vec![Line::from("gone")]),
            }
        }
    }
}

fn loop_detail(app: &App, name: &str, run: Option<&DefinitionRun>) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    let prompt = app
        .model
        .definitions
        .get(name)
        .and_then(|d| d.history.last())
        .and_then(|current| serde_json::from_str::<serde_json::Value>(&current.spec_json).ok())
        .and_then(|spec| {
            spec.get("prompt")
                .and_then(|p| p.as_str())
                .map(str::to_owned)
        })
        .unwrap_or_default();
    let Some(run) = run else {
        lines.push(Line::from("never ran"));
        return lines;
    };
    let finished: Vec<&Iteration> = run
        .iterations
        .iter()
        .filter(|i| i.ended_at_ms != 0 && i.report.is_some())
        .collect();
    let durations: Vec<f64> = finished
        .iter()
        .filter_map(|i| i.report.as_ref().map(|r| r.duration_ms as f64))
        .collect();
    let tokens: Vec<f64> = finished
        .iter()
        .filter_map(|i| {
            i.report
                .as_ref()
                .map(|r| (r.input_tokens + r.output_tokens) as f64)
        })
        .collect();
    let (mean_d, sd_d) = mean_stddev(&durations);
    let (mean_t, sd_t) = mean_stddev(&tokens);
    lines.push(Line::from(format!(
        "iterations: {} (last {} kept)",
        run.next_number.saturating_sub(1),
        run.iterations.len()
    )));
    lines.push(Line::from(format!(
        "duration:   mean {}, stddev {}",
        duration(mean_d as u64),
        duration(sd_d as u64)
    )));
    lines.push(Line::from(format!(
        "tokens:     mean {mean_t:.0}, stddev {sd_t:.0}"
    )));
    let total_cost: u64 = run
        .iterations
        .iter()
        .filter_map(|i| i.report.as_ref().map(|r| r.cost_micros))
        .sum();
    lines.push(Line::from(format!(
        "cost:       {} (kept iterations)",
        cost(total_cost)
    )));
    lines.push(Line::from(format!(
        "waiting steering messages: {}",
        run.pending.len()
    )));
    for message in &run.pending {
        lines.push(Line::from(format!("  {}: {}", message.from, message.body)));
    }
    lines.push(heading("prompt"));
    lines.extend(text_lines(&prompt));
    lines
}

fn mean_stddev(values: &[f64]) -> (f64, f64) {
    if values.is_empty() {
        return (0.0, 0.0);
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    (mean, variance.sqrt())
}

fn iteration_detail(iteration: &Iteration, _run: Option<&DefinitionRun>) -> Vec<Line<'static>> {
    let mut lines = vec![Line::from(vec![
        Span::raw("status: "),
        Span::styled(
            status_name(iteration.status),
            Style::default().fg(status_color(iteration.status)),
        ),
        Span::raw(format!(
            "   agent: {} on {}",
            iteration.agent_name, iteration.node
        )),
    ])];
    if let Some(report) = &iteration.report {
        lines.push(Line::from(format!(
            "exit: {}   duration: {}   tokens: {} in / {} out   cost: {}{}",
            report
                .exit_code
                .map_or_else(|| "-".to_owned(), |c| c.to_string()),
            duration(report.duration_ms),
            report.input_tokens,
            report.output_tokens,
            cost(report.cost_micros),
            if report.is_error { "   is_error" } else { "" }
        )));
    }
    lines.push(heading("prompt"));
    lines.extend(text_lines(&iteration.prompt));
    if !iteration.messages.is_empty() {
        lines.push(heading("steering messages"));
        for message in &iteration.messages {
            lines.push(Line::from(format!("{}: {}", message.from, message.body)));
        }
    }
    if let Some(report) = &iteration.report {
        lines.push(heading("conversation"));
        lines.extend(conversation(&report.output_tail));
        if let Some(result) = &report.result_text {
            lines.push(heading("result"));
            lines.extend(text_lines(result));
        }
    }
    lines
}

/// The output as a conversation: Claude `stream-json` lines become `assistant:` / `tool:` /
/// `result:` lines; anything else is shown as it is.
fn conversation(output: &str) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    for raw in output.lines() {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(raw.trim()) else {
            lines.push(Line::from(raw.to_owned()));
            continue;
        };
        match value.get("type").and_then(|t| t.as_str()) {
            Some("assistant") | Some("user") => {
                let who = value["type"].as_str().unwrap_or_default().to_owned();
                let content = value["message"]["content"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                for part in content {
                    match part.get("type").and_then(|t| t.as_str()) {
                        Some("text") => lines.push(Line::from(format!(
                            "{who}: {}",
                            part["text"].as_str().unwrap_or_default()
                        ))),
                        Some("tool_use") => lines.push(Line::from(Span::styled(
                            format!("tool: {}", part["name"].as_str().unwrap_or_default()),
                            Style::default().fg(Color::Blue),
                        ))),
                        Some("tool_result") => lines.push(Line::from(Span::styled(
                            "tool result".to_owned(),
                            Style::default().fg(Color::Blue),
                        ))),
                        _ => {}
                    }
                }
            }
            Some("result") => {}
            Some("system") => lines.push(Line::from(Span::styled(
                "(session started)".to_owned(),
                Style::default().fg(Color::DarkGray),
            ))),
            _ => lines.push(Line::from(raw.to_owned())),
        }
    }
    lines
}

fn draw_cluster_view(frame: &mut Frame, app: &App, area: Rect) {
    let model = &app.model;
    let mut lines: Vec<Line> = Vec::new();
    lines.push(heading("nodes"));
    match &model.cluster {
        Some(status) => {
            for member in &status.members {
                let role = if member.id == status.leader_id {
                    "leader"
                } else if member.voter {
                    "voter"
                } else {
                    "learner"
                };
                lines.push(Line::from(format!(
                    "node {}  {}  {}",
                    member.id, member.addr, role
                )));
            }
            lines.push(Line::from(format!(
                "term {}  commit {}  applied {}",
                status.term, status.commit_index, status.applied_index
            )));
        }
        None => lines.push(Line::from("(status unknown)")),
    }
    lines.push(heading("agents"));
    for agent in model.agents.values().filter(|a| a.status == 1) {
        let current: Vec<&str> = model
            .tasks
            .values()
            .filter(|t| t.assignee == agent.id && (t.status == 3 || t.status == 4))
            .map(|t| t.id.as_str())
            .collect();
        let labels: Vec<String> = {
            let mut labels: Vec<String> = agent
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            labels.sort();
            labels
        };
        lines.push(Line::from(format!(
            "{} (id {})  {}  [{}]  task: {}",
            agent.name,
            agent.id,
            agent_status_name(agent.status),
            labels.join(","),
            if current.is_empty() {
                "-".to_owned()
            } else {
                current.join(",")
            }
        )));
    }
    lines.push(heading("tasks by state"));
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    for task in model.tasks.values() {
        *counts.entry(task_status_name(task.status)).or_default() += 1;
    }
    let summary: Vec<String> = counts.iter().map(|(s, n)| format!("{s} {n}")).collect();
    lines.push(Line::from(if summary.is_empty() {
        "no tasks".to_owned()
    } else {
        summary.join("   ")
    }));
    lines.push(heading("locks"));
    if model.locks.is_empty() {
        lines.push(Line::from("no locks held"));
    }
    for lock in model.locks.values() {
        let holders: Vec<String> = lock
            .holders
            .iter()
            .map(|h| format!("agent {} (fencing {})", h.agent_id, h.fencing_token))
            .collect();
        lines.push(Line::from(format!(
            "{}  {}  {}",
            lock.path,
            lock_mode_name(lock.mode),
            holders.join(", ")
        )));
    }
    lines.push(heading("plans"));
    let mut plans: std::collections::BTreeMap<&str, (usize, usize)> = Default::default();
    for task in model.tasks.values().filter(|t| !t.plan_id.is_empty()) {
        let entry = plans.entry(task.plan_id.as_str()).or_default();
        entry.1 += 1;
        if task.status == 5 {
            entry.0 += 1;
        }
    }
    if plans.is_empty() {
        lines.push(Line::from("no plans"));
    }
    for (plan, (done, total)) in plans {
        lines.push(Line::from(format!("{plan}  {done}/{total} completed")));
    }
    frame.render_widget(
        Paragraph::new(lines)
            .block(Block::default().borders(Borders::ALL).title(" cluster "))
            .wrap(Wrap { trim: false })
            .scroll((app.scroll, 0)),
        area,
    );
}

fn draw_bottom(frame: &mut Frame, app: &App, area: Rect) {
    match app.mode {
        Mode::Input => {
            let target = app
                .current()
                .map(|row| row.definition().to_owned())
                .unwrap_or_default();
            frame.render_widget(
                Paragraph::new(format!("{}▏", app.input)).block(
                    Block::default()
                        .borders(Borders::ALL)
                        .title(format!(" steer {target} (enter sends, esc cancels) ")),
                ),
                area,
            );
        }
        Mode::Filter => frame.render_widget(Paragraph::new(format!("/{}▏", app.filter)), area),
        Mode::Normal => {
            let help = "↑↓ move  ←→ collapse/expand  / filter  i steer  tab cluster  pgup/pgdn scroll  q quit";
            let line = if app.status.is_empty() {
                help.to_owned()
            } else {
                format!("{}  │  {help}", app.status)
            };
            frame.render_widget(
                Paragraph::new(line).style(Style::default().fg(Color::DarkGray)),
                area,
            );
        }
    }
}
