//! Rendering snapshots of the cockpit on ratatui's `TestBackend` (no terminal): the tree with
//! an iteration's detail, the input box, the filter, the banner, the cluster view.

use percy_client::proto::{IterationReport, SteeringMessage};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

use super::app::tests::sample_model;
use super::app::{App, Mode, Row, View};
use super::render::draw;

fn screen(app: &App, width: u16, height: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("test backend");
    terminal.draw(|frame| draw(frame, app)).expect("draw");
    let buffer = terminal.backend().buffer().clone();
    let mut text = String::new();
    for y in 0..buffer.area.height {
        let line: String = (0..buffer.area.width)
            .map(|x| buffer[(x, y)].symbol().to_owned())
            .collect();
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

fn steered_app() -> App {
    let mut model = sample_model();
    let run = model.runs.get_mut("writer").expect("writer runs");
    let iteration = &mut run.iterations[4];
    iteration.messages = vec![SteeringMessage {
        id: 40,
        from: "alice".into(),
        body: "use tabs".into(),
        sent_at_ms: 0,
    }];
    iteration.prompt = "Improve the README.\n\n[steering message from alice]\nuse tabs\n".into();
    iteration.report = Some(IterationReport {
        exit_code: Some(0),
        duration_ms: 2_300,
        output_tail: concat!(
            r#"{"type":"system","subtype":"init"}"#,
            "\n",
            r#"{"type":"assistant","message":{"content":[{"type":"text","text":"Switching to tabs."},{"type":"tool_use","name":"Edit"}]}}"#,
            "\n",
            r#"{"type":"result","result":"README uses tabs now"}"#,
            "\n"
        )
        .into(),
        result_text: Some("README uses tabs now".into()),
        input_tokens: 1200,
        output_tokens: 345,
        cost_micros: 12_500,
        ..IterationReport::default()
    });
    let mut app = App::new(model);
    app.selected = Some(Row::Iteration("writer".into(), 5));
    app
}

#[test]
fn tree_and_iteration_detail() {
    insta::assert_snapshot!(screen(&steered_app(), 100, 28));
}

#[test]
fn input_box_while_typing() {
    let mut app = steered_app();
    app.mode = Mode::Input;
    app.input = "and add tests".into();
    insta::assert_snapshot!(screen(&app, 100, 28));
}

#[test]
fn loop_detail_with_statistics_and_a_banner() {
    let mut app = steered_app();
    app.selected = Some(Row::Loop("writer".into()));
    app.banner = Some(" connection lost: no node answers — reconnecting in 1.0s ".into());
    insta::assert_snapshot!(screen(&app, 100, 24));
}

#[test]
fn filter_and_a_narrow_terminal_reflow() {
    let mut app = steered_app();
    app.mode = Mode::Filter;
    app.filter = "rev".into();
    app.selected = None;
    insta::assert_snapshot!(screen(&app, 60, 16));
}

#[test]
fn cluster_view() {
    let mut app = steered_app();
    app.view = View::Cluster;
    insta::assert_snapshot!(screen(&app, 100, 24));
}
