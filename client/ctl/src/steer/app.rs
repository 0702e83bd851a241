//! The cockpit's state and key handling, without a terminal: which view, which row is
//! selected, what is expanded, the filter and the input box. Keys go in, an [`Action`] comes
//! out; the terminal loop carries actions out (injecting a message, quitting).

use std::collections::BTreeSet;

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::model::Model;

/// Iterations shown under a loop in the tree: the most recent ones, newest first.
pub const TREE_ITERATIONS: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// Definitions → loop → iterations, with the detail pane.
    Tree,
    /// Nodes, agents, tasks, locks, plans.
    Cluster,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Normal,
    /// Typing the `/` filter.
    Filter,
    /// Typing a steering message for the selected definition.
    Input,
}

/// One line of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Row {
    Definition(String),
    Loop(String),
    Iteration(String, u64),
}

impl Row {
    /// The definition a row belongs to.
    pub fn definition(&self) -> &str {
        match self {
            Row::Definition(name) | Row::Loop(name) | Row::Iteration(name, _) => name,
        }
    }

    /// The key under which a row's expansion is remembered.
    fn expansion_key(&self) -> Option<String> {
        match self {
            Row::Definition(name) => Some(format!("d/{name}")),
            Row::Loop(name) => Some(format!("l/{name}")),
            Row::Iteration(..) => None,
        }
    }
}

/// What the terminal loop must do after a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    None,
    Quit,
    /// Send `text` as a steering message to definition `name`.
    Inject {
        name: String,
        text: String,
    },
}

#[derive(Debug, Clone)]
pub struct App {
    pub model: Model,
    pub view: View,
    pub mode: Mode,
    /// The selected row, remembered by identity so that live updates do not move it.
    pub selected: Option<Row>,
    /// Collapsed rows (everything is expanded by default).
    pub collapsed: BTreeSet<String>,
    pub filter: String,
    pub input: String,
    /// Scroll offset of the detail pane.
    pub scroll: u16,
    /// Shown on top while the connection is lost.
    pub banner: Option<String>,
    /// The last thing done or refused (an injected message, an error).
    pub status: String,
}

impl App {
    pub fn new(model: Model) -> Self {
        Self {
            model,
            view: View::Tree,
            mode: Mode::Normal,
            selected: None,
            collapsed: BTreeSet::new(),
            filter: String::new(),
            input: String::new(),
            scroll: 0,
            banner: None,
            status: String::new(),
        }
    }

    /// The visible tree rows: definitions whose name contains the filter, each with its loop
    /// and the loop's most recent iterations (newest first) unless collapsed.
    pub fn rows(&self) -> Vec<Row> {
        let mut rows = Vec::new();
        for name in self.model.definitions.keys() {
            if !self.filter.is_empty() && !name.contains(&self.filter) {
                continue;
            }
            let definition = Row::Definition(name.clone());
            let open = !self.is_collapsed(&definition);
            rows.push(definition);
            if !open {
                continue;
            }
            let looped = Row::Loop(name.clone());
            let loop_open = !self.is_collapsed(&looped);
            rows.push(looped);
            if !loop_open {
                continue;
            }
            if let Some(run) = self.model.run(name) {
                for iteration in run.iterations.iter().rev().take(TREE_ITERATIONS) {
                    rows.push(Row::Iteration(name.clone(), iteration.number));
                }
            }
        }
        rows
    }

    fn is_collapsed(&self, row: &Row) -> bool {
        row.expansion_key()
            .is_some_and(|key| self.collapsed.contains(&key))
    }

    /// Index of the selected row among `rows` (the first row when the selection is gone).
    pub fn selected_index(&self, rows: &[Row]) -> Option<usize> {
        if rows.is_empty() {
            return None;
        }
        let Some(selected) = &self.selected else {
            return Some(0);
        };
        let exact = rows.iter().position(|row| row == selected);
        // An iteration that scrolled out of the tree (newer ones arrived): its loop.
        let fallback = || {
            let looped = Row::Loop(selected.definition().to_owned());
            rows.iter().position(|row| *row == looped)
        };
        Some(exact.or_else(fallback).unwrap_or(0))
    }

    /// The selected row, as it is displayed.
    pub fn current(&self) -> Option<Row> {
        let rows = self.rows();
        self.selected_index(&rows).map(|i| rows[i].clone())
    }

    fn select(&mut self, rows: &[Row], index: usize) {
        if let Some(row) = rows.get(index) {
            if self.selected.as_ref() != Some(row) {
                self.scroll = 0;
            }
            self.selected = Some(row.clone());
        }
    }

    /// Handles one key press.
    pub fn on_key(&mut self, key: KeyEvent) -> Action {
        if key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL) {
            return Action::Quit;
        }
        match self.mode {
            Mode::Filter => {
                match key.code {
                    KeyCode::Enter => self.mode = Mode::Normal,
                    KeyCode::Esc => {
                        self.filter.clear();
                        self.mode = Mode::Normal;
                    }
                    KeyCode::Backspace => {
                        self.filter.pop();
                    }
                    KeyCode::Char(c) => self.filter.push(c),
                    _ => {}
                }
                Action::None
            }
            Mode::Input => match key.code {
                KeyCode::Enter => {
                    let text = std::mem::take(&mut self.input);
                    self.mode = Mode::Normal;
                    match (self.current(), text.trim().is_empty()) {
                        (Some(row), false) => Action::Inject {
                            name: row.definition().to_owned(),
                            text,
                        },
                        _ => Action::None,
                    }
                }
                KeyCode::Esc => {
                    self.input.clear();
                    self.mode = Mode::Normal;
                    Action::None
                }
                KeyCode::Backspace => {
                    self.input.pop();
                    Action::None
                }
                KeyCode::Char(c) => {
                    self.input.push(c);
                    Action::None
                }
                _ => Action::None,
            },
            Mode::Normal => self.on_normal_key(key.code),
        }
    }

    fn on_normal_key(&mut self, code: KeyCode) -> Action {
        let rows = self.rows();
        let index = self.selected_index(&rows);
        match code {
            KeyCode::Char('q') | KeyCode::Esc => return Action::Quit,
            KeyCode::Tab => {
                self.view = match self.view {
                    View::Tree => View::Cluster,
                    View::Cluster => View::Tree,
                }
            }
            KeyCode::Up | KeyCode::Char('k') => {
                if let Some(i) = index {
                    self.select(&rows, i.saturating_sub(1));
                }
            }
            KeyCode::Down | KeyCode::Char('j') => {
                if let Some(i) = index {
                    self.select(&rows, (i + 1).min(rows.len() - 1));
                }
            }
            KeyCode::Right | KeyCode::Char('l') => {
                if let Some(key) = index.and_then(|i| rows[i].expansion_key()) {
                    self.collapsed.remove(&key);
                }
            }
            KeyCode::Left | KeyCode::Char('h') => {
                if let Some(i) = index {
                    match rows[i].expansion_key() {
                        Some(key) => {
                            self.collapsed.insert(key);
                        }
                        // On an iteration: collapse its loop and select it.
                        None => {
                            let looped = Row::Loop(rows[i].definition().to_owned());
                            if let Some(key) = looped.expansion_key() {
                                self.collapsed.insert(key);
                            }
                            self.selected = Some(looped);
                        }
                    }
                }
            }
            KeyCode::PageDown => self.scroll = self.scroll.saturating_add(10),
            KeyCode::PageUp => self.scroll = self.scroll.saturating_sub(10),
            KeyCode::Char('/') => self.mode = Mode::Filter,
            KeyCode::Char('i') if index.is_some() && self.view == View::Tree => {
                self.mode = Mode::Input;
            }
            _ => {}
        }
        Action::None
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use percy_client::proto::{
        Definition, DefinitionRevision, DefinitionRun, Iteration, IterationStatus,
    };

    use super::*;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    /// Two definitions; `writer` has six iterations, the newest running.
    pub fn sample_model() -> Model {
        let mut model = Model::default();
        for name in ["reviewer", "writer"] {
            model.definitions.insert(
                name.into(),
                Definition {
                    name: name.into(),
                    history: vec![DefinitionRevision {
                        id: "ab".repeat(32),
                        spec_json: r#"{"command":"claude -p","prompt":"Improve the README."}"#
                            .into(),
                        revision: 3,
                        applied_at_ms: 1_700_000_000_000,
                    }],
                    desired: 1,
                    create_revision: 3,
                    revision: 3,
                },
            );
        }
        let iterations = (1..=6)
            .map(|number| Iteration {
                number,
                agent_id: 7,
                agent_name: "loop-a".into(),
                node: "host1".into(),
                started_at_ms: 1_700_000_000_000 + number * 1_000,
                ended_at_ms: if number == 6 {
                    0
                } else {
                    1_700_000_000_500 + number * 1_000
                },
                status: if number == 6 {
                    IterationStatus::Running as i32
                } else {
                    IterationStatus::Succeeded as i32
                },
                prompt: "Improve the README.".into(),
                ..Iteration::default()
            })
            .collect();
        model.runs.insert(
            "writer".into(),
            DefinitionRun {
                name: "writer".into(),
                next_number: 7,
                first_number_of_start: 1,
                iterations,
                ..DefinitionRun::default()
            },
        );
        model
    }

    #[test]
    fn the_tree_shows_the_four_newest_iterations_newest_first() {
        let app = App::new(sample_model());
        let rows = app.rows();
        let numbers: Vec<u64> = rows
            .iter()
            .filter_map(|r| match r {
                Row::Iteration(_, n) => Some(*n),
                _ => None,
            })
            .collect();
        assert_eq!(numbers, [6, 5, 4, 3]);
        assert_eq!(rows[0], Row::Definition("reviewer".into()));
    }

    #[test]
    fn moving_collapsing_and_expanding() {
        let mut app = App::new(sample_model());
        app.on_key(key(KeyCode::Down));
        app.on_key(key(KeyCode::Down));
        assert_eq!(app.current(), Some(Row::Definition("writer".into())));
        app.on_key(key(KeyCode::Left));
        assert_eq!(app.rows().len(), 3, "writer collapsed");
        app.on_key(key(KeyCode::Right));
        app.on_key(key(KeyCode::Down));
        app.on_key(key(KeyCode::Down));
        assert_eq!(app.current(), Some(Row::Iteration("writer".into(), 6)));
        // Left on an iteration collapses its loop and selects it.
        app.on_key(key(KeyCode::Left));
        assert_eq!(app.current(), Some(Row::Loop("writer".into())));
        assert_eq!(app.rows().len(), 4);
        // Down at the end stays at the end; up at the top stays at the top.
        for _ in 0..10 {
            app.on_key(key(KeyCode::Down));
        }
        assert_eq!(app.current(), Some(Row::Loop("writer".into())));
        for _ in 0..10 {
            app.on_key(key(KeyCode::Up));
        }
        assert_eq!(app.current(), Some(Row::Definition("reviewer".into())));
    }

    #[test]
    fn the_filter_narrows_the_tree_by_name_and_esc_clears_it() {
        let mut app = App::new(sample_model());
        app.on_key(key(KeyCode::Char('/')));
        for c in "writ".chars() {
            app.on_key(key(KeyCode::Char(c)));
        }
        assert!(app.rows().iter().all(|r| r.definition() == "writer"));
        // `q` while typing is text, not quit.
        assert_eq!(app.on_key(key(KeyCode::Char('q'))), Action::None);
        assert!(app.rows().is_empty());
        app.on_key(key(KeyCode::Esc));
        assert_eq!(app.mode, Mode::Normal);
        assert!(app.filter.is_empty());
        assert_eq!(app.on_key(key(KeyCode::Char('q'))), Action::Quit);
    }

    #[test]
    fn the_input_box_injects_into_the_selected_definition() {
        let mut app = App::new(sample_model());
        app.selected = Some(Row::Iteration("writer".into(), 5));
        app.on_key(key(KeyCode::Char('i')));
        assert_eq!(app.mode, Mode::Input);
        for c in "use tabs".chars() {
            app.on_key(key(KeyCode::Char(c)));
        }
        assert_eq!(
            app.on_key(key(KeyCode::Enter)),
            Action::Inject {
                name: "writer".into(),
                text: "use tabs".into()
            }
        );
        assert_eq!(app.mode, Mode::Normal);
        assert!(app.input.is_empty());
        // Empty input sends nothing; Esc cancels.
        app.on_key(key(KeyCode::Char('i')));
        assert_eq!(app.on_key(key(KeyCode::Enter)), Action::None);
        app.on_key(key(KeyCode::Char('i')));
        app.on_key(key(KeyCode::Char('x')));
        app.on_key(key(KeyCode::Esc));
        assert_eq!(app.mode, Mode::Normal);
    }

    #[test]
    fn tab_switches_views_and_ctrl_c_quits_in_any_mode() {
        let mut app = App::new(sample_model());
        app.on_key(key(KeyCode::Tab));
        assert_eq!(app.view, View::Cluster);
        app.on_key(key(KeyCode::Tab));
        assert_eq!(app.view, View::Tree);
        app.on_key(key(KeyCode::Char('/')));
        assert_eq!(
            app.on_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Action::Quit
        );
    }

    #[test]
    fn the_selection_follows_its_row_when_new_iterations_arrive() {
        let mut app = App::new(sample_model());
        app.selected = Some(Row::Iteration("writer".into(), 5));
        let run = app.model.runs.get_mut("writer").unwrap();
        run.iterations.push(Iteration {
            number: 7,
            ..Iteration::default()
        });
        assert_eq!(app.current(), Some(Row::Iteration("writer".into(), 5)));
        // Once it is no longer among the four newest, its loop is selected.
        for number in 8..=9 {
            let run = app.model.runs.get_mut("writer").unwrap();
            run.iterations.push(Iteration {
                number,
                ..Iteration::default()
            });
        }
        assert_eq!(app.current(), Some(Row::Loop("writer".into())));
    }
}
