//! Plan files (`percyctl plan submit plan.toml`): a list of tasks with dependencies, and the
//! topological order used to show a plan's DAG.
//!
//! ```toml
//! id = "release-1.2"          # optional; generated when absent
//! [[tasks]]
//! id = "build"
//! title = "Build the binaries"
//! requires = ["rust"]
//! selector = { os = "linux" }
//! [[tasks]]
//! id = "test"
//! title = "Run the tests"
//! depends_on = ["build"]
//! ```
//!
//! In YAML the same, or just the list of tasks. Only the file's own consistency is checked
//! here (duplicate ids, self-dependencies); the server validates the DAG as a whole, since a
//! task may depend on one submitted earlier.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use percy_proto::v1::{Task, TaskSpec};
use serde::{Deserialize, Deserializer};

use crate::document::{read_document, DocumentError};

/// The key holding the task list.
const TASKS_KEY: &str = "tasks";

/// A parsed plan file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanFile {
    /// The plan id; `None` lets the server generate one.
    #[serde(default)]
    pub id: Option<String>,
    pub tasks: Vec<PlanTask>,
}

/// One task of a plan file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanTask {
    /// Empty = generated (but then nothing in the file can depend on it).
    #[serde(default)]
    pub id: String,
    pub title: String,
    #[serde(default)]
    pub description: String,
    /// Opaque input handed to the worker (UTF-8 text in a plan file).
    #[serde(default)]
    pub payload: Option<String>,
    /// Capabilities the agent must have (all of them).
    #[serde(default)]
    pub requires: Vec<String>,
    /// Labels the agent must carry.
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// `None` = the server's default.
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// How long one attempt may run, e.g. "30m".
    #[serde(default, deserialize_with = "deserialize_duration")]
    pub timeout: Option<Duration>,
}

/// Why a plan file was rejected.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Document(#[from] DocumentError),
    #[error("the plan has no tasks")]
    Empty,
    #[error("task id {0:?} appears more than once in the plan")]
    DuplicateId(String),
    #[error("task {0:?} depends on itself")]
    SelfDependency(String),
    /// 0 on the wire means "the server's default", so it is refused rather than coerced.
    #[error("task {0:?}: {1} must be more than zero (leave it out for the default)")]
    Zero(String, &'static str),
}

impl PlanFile {
    /// Reads a `.toml`, `.yaml` or `.yml` plan file and checks it.
    pub fn from_path(path: &Path) -> Result<PlanFile, PlanError> {
        let plan: PlanFile = read_document(path, TASKS_KEY)?;
        plan.validate()?;
        Ok(plan)
    }

    /// Parses plan text in the given format and checks it: what `from_path` does after
    /// reading the file (the tests and the fuzz target `plan` call it directly).
    pub fn parse(text: &str, format: crate::document::Format) -> Result<PlanFile, PlanError> {
        let plan: PlanFile = crate::document::parse_document(text, format, "plan", TASKS_KEY)?;
        plan.validate()?;
        Ok(plan)
    }

    fn validate(&self) -> Result<(), PlanError> {
        if self.tasks.is_empty() {
            return Err(PlanError::Empty);
        }
        for task in &self.tasks {
            if task.max_attempts == Some(0) {
                return Err(PlanError::Zero(task.title.clone(), "max_attempts"));
            }
            if task.timeout.is_some_and(|t| t.is_zero()) {
                return Err(PlanError::Zero(task.title.clone(), "timeout"));
            }
        }
        let mut seen = HashSet::new();
        for task in self.tasks.iter().filter(|t| !t.id.is_empty()) {
            if !seen.insert(task.id.as_str()) {
                return Err(PlanError::DuplicateId(task.id.clone()));
            }
            if task.depends_on.contains(&task.id) {
                return Err(PlanError::SelfDependency(task.id.clone()));
            }
        }
        Ok(())
    }

    /// The tasks as the API takes them.
    pub fn task_specs(&self) -> Vec<TaskSpec> {
        self.tasks.iter().map(PlanTask::to_spec).collect()
    }
}

impl PlanTask {
    pub fn to_spec(&self) -> TaskSpec {
        TaskSpec {
            id: self.id.clone(),
            title: self.title.clone(),
            description: self.description.clone(),
            payload: self.payload.clone().unwrap_or_default().into_bytes(),
            requires: self.requires.clone(),
            selector: self.selector.clone().into_iter().collect(),
            priority: self.priority,
            depends_on: self.depends_on.clone(),
            max_attempts: self.max_attempts.unwrap_or(0),
            timeout_ms: self
                .timeout
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        }
    }
}

fn deserialize_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    let text: Option<String> = Option::deserialize(deserializer)?;
    text.map(|t| {
        humantime::parse_duration(&t).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {t:?} (try \"90s\", \"30m\"): {e}"
            ))
        })
    })
    .transpose()
}

/// Orders a plan's tasks so that every task comes after its dependencies (Kahn's algorithm),
/// keeping the given order among independent tasks. Dependencies outside `tasks` are
/// ignored; tasks on a cycle (which the server never accepts) come last, in the given order.
pub fn topological_order(tasks: &[Task]) -> Vec<&Task> {
    let index: HashMap<&str, usize> = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.id.as_str(), i))
        .collect();
    let mut pending: Vec<usize> = tasks
        .iter()
        .map(|t| {
            t.depends_on
                .iter()
                .filter(|d| index.contains_key(d.as_str()))
                .count()
        })
        .collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); tasks.len()];
    for (i, task) in tasks.iter().enumerate() {
        for dep in &task.depends_on {
            if let Some(&d) = index.get(dep.as_str()) {
                dependents[d].push(i);
            }
        }
    }
    // A BTreeSet of indexes is a priority queue that yields the earliest ready task first.
    let mut ready: BTreeSet<usize> = (0..tasks.len()).filter(|&i| pending[i] == 0).collect();
    let mut order = Vec::with_capacity(tasks.len());
    let mut placed = vec![false; tasks.len()];
    while let Some(i) = ready.pop_first() {
        order.push(&tasks[i]);
        placed[i] = true;
        for &dependent in &dependents[i] {
            pending[dependent] -= 1;
            if pending[dependent] == 0 {
                ready.insert(dependent);
            }
        }
    }
    order.extend(
        tasks
            .iter()
            .zip(&placed)
            .filter(|(_, &p)| !p)
            .map(|(t, _)| t),
    );
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::Format;

    const TOML_PLAN: &str = r#"
id = "release"

[[tasks]]
id = "build"
title = "Build"
requires = ["rust"]
selector = { os = "linux" }
priority = 5
max_attempts = 2
timeout = "90s"
payload = "make all"

[[tasks]]
id = "test"
title = "Test"
description = "run the suite"
depends_on = ["build"]
"#;

    const YAML_LIST: &str = r#"
- id: build
  title: Build
  requires: [rust]
  selector: {os: linux}
  priority: 5
  max_attempts: 2
  timeout: 90s
  payload: make all
- id: test
  title: Test
  description: run the suite
  depends_on: [build]
"#;

    #[test]
    fn toml_plans_parse_into_specs() {
        let plan = PlanFile::parse(TOML_PLAN, Format::Toml).unwrap();
        assert_eq!(plan.id.as_deref(), Some("release"));
        let specs = plan.task_specs();
        assert_eq!(specs.len(), 2);
        assert_eq!(specs[0].requires, vec!["rust"]);
        assert_eq!(
            specs[0].selector.get("os").map(String::as_str),
            Some("linux")
        );
        assert_eq!(specs[0].priority, 5);
        assert_eq!(specs[0].max_attempts, 2);
        assert_eq!(specs[0].timeout_ms, 90_000);
        assert_eq!(specs[0].payload, b"make all");
        assert_eq!(specs[1].depends_on, vec!["build"]);
        assert_eq!(specs[1].max_attempts, 0, "absent means the server default");
    }

    #[test]
    fn a_yaml_list_equals_the_toml_plan_without_an_id() {
        let yaml = PlanFile::parse(YAML_LIST, Format::Yaml).unwrap();
        let toml = PlanFile::parse(TOML_PLAN, Format::Toml).unwrap();
        assert_eq!(yaml.id, None);
        assert_eq!(yaml.tasks, toml.tasks);
    }

    #[test]
    fn yaml_mappings_carry_an_id() {
        let text = "id: p1\ntasks:\n  - {id: a, title: A}\n";
        let plan = PlanFile::parse(text, Format::Yaml).unwrap();
        assert_eq!(plan.id.as_deref(), Some("p1"));
        assert_eq!(plan.tasks[0].title, "A");
    }

    #[test]
    fn bad_plans_are_rejected_with_a_reason() {
        let cases = [
            ("tasks = []", Format::Toml, "no tasks"),
            ("- {id: a}\n", Format::Yaml, "title"),
            ("- {id: a, title: A, colour: red}\n", Format::Yaml, "colour"),
            ("- {id: a, title: A, timeout: soon}\n", Format::Yaml, "soon"),
            (
                "- {id: a, title: A}\n- {id: a, title: B}\n",
                Format::Yaml,
                "more than once",
            ),
            (
                "- {id: a, title: A, depends_on: [a]}\n",
                Format::Yaml,
                "depends on itself",
            ),
            ("[[tasks]]\nid = 3\ntitle = \"x\"", Format::Toml, "string"),
        ];
        for (text, format, expected) in cases {
            let err = PlanFile::parse(text, format).unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }

    #[test]
    fn plans_load_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plan.yml");
        std::fs::write(&path, YAML_LIST).unwrap();
        assert_eq!(PlanFile::from_path(&path).unwrap().tasks.len(), 2);
    }

    fn task(id: &str, deps: &[&str]) -> Task {
        Task {
            id: id.to_owned(),
            depends_on: deps.iter().map(|d| (*d).to_owned()).collect(),
            ..Task::default()
        }
    }

    fn ids(order: Vec<&Task>) -> Vec<&str> {
        order.into_iter().map(|t| t.id.as_str()).collect()
    }

    #[test]
    fn topological_order_puts_dependencies_first() {
        let tasks = [
            task("deploy", &["test", "docs"]),
            task("test", &["build"]),
            task("docs", &[]),
            task("build", &["external"]),
        ];
        assert_eq!(
            ids(topological_order(&tasks)),
            vec!["docs", "build", "test", "deploy"]
        );
    }

    #[test]
    fn topological_order_keeps_cycles_instead_of_dropping_them() {
        let tasks = [task("a", &["b"]), task("b", &["a"]), task("c", &[])];
        assert_eq!(ids(topological_order(&tasks)), vec!["c", "a", "b"]);
    }
}
