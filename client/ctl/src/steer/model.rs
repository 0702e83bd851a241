//! What the cockpit knows about the cluster: the entities of the watch (its initial state,
//! then every change), plus the Raft status of the node it talks to. Pure data; the terminal
//! loop feeds it.

use std::collections::BTreeMap;

use percy_client::proto::{
    event, Agent, ClusterStatusResponse, Definition, DefinitionRun, Event, Lock, Task,
};

/// Iterations the cluster keeps per definition (`MAX_ITERATIONS_KEPT` of the state machine).
const RUN_ITERATIONS_KEPT: usize = 20;

#[derive(Debug, Default, Clone)]
pub struct Model {
    pub definitions: BTreeMap<String, Definition>,
    pub runs: BTreeMap<String, DefinitionRun>,
    pub agents: BTreeMap<u64, Agent>,
    pub tasks: BTreeMap<String, Task>,
    pub locks: BTreeMap<String, Lock>,
    pub cluster: Option<ClusterStatusResponse>,
    /// The revision of the last event applied.
    pub revision: u64,
}

impl Model {
    /// Applies one watch event (the entity as it is now, or its removal).
    pub fn apply(&mut self, event: &Event) {
        self.revision = self.revision.max(event.revision);
        let key = event.key.clone();
        match &event.value {
            Some(event::Value::Definition(d)) => {
                self.definitions.insert(key, d.clone());
            }
            Some(event::Value::DefinitionRun(r)) => self.merge_run(key, r),
            Some(event::Value::Agent(a)) => {
                self.agents.insert(a.id, a.clone());
            }
            Some(event::Value::Task(t)) => {
                self.tasks.insert(key, t.clone());
            }
            Some(event::Value::Lock(l)) => {
                self.locks.insert(key, l.clone());
            }
            Some(event::Value::Config(_)) | Some(event::Value::Message(_)) => {}
            None => {
                // Only locks (released) and config keys (deleted) disappear.
                self.locks.remove(&key);
            }
        }
    }

    /// A run event carries only the newest iterations (the initial state carries them all):
    /// the iterations it has replace those of the same number, older ones are kept, and the
    /// server's bound (the last 20) is kept too.
    fn merge_run(&mut self, key: String, run: &DefinitionRun) {
        let mut merged = run.clone();
        if let Some(known) = self.runs.get(&key) {
            let first_new = run.iterations.first().map_or(u64::MAX, |i| i.number);
            let mut iterations: Vec<_> = known
                .iterations
                .iter()
                .filter(|i| i.number < first_new)
                .cloned()
                .collect();
            iterations.extend(run.iterations.iter().cloned());
            let excess = iterations.len().saturating_sub(RUN_ITERATIONS_KEPT);
            iterations.drain(..excess);
            merged.iterations = iterations;
        }
        self.runs.insert(key, merged);
    }

    /// The run of a definition, if it ever ran or was steered.
    pub fn run(&self, name: &str) -> Option<&DefinitionRun> {
        self.runs.get(name)
    }
}

#[cfg(test)]
mod tests {
    use percy_client::proto::{DefinitionRun, Iteration};

    use super::*;

    fn run_event(numbers: std::ops::RangeInclusive<u64>) -> Event {
        Event {
            revision: *numbers.end(),
            kind: 7,
            key: "writer".into(),
            deleted: false,
            value: Some(event::Value::DefinitionRun(DefinitionRun {
                name: "writer".into(),
                iterations: numbers
                    .map(|number| Iteration {
                        number,
                        status: 1,
                        ..Iteration::default()
                    })
                    .collect(),
                ..DefinitionRun::default()
            })),
        }
    }

    #[test]
    fn run_events_with_the_newest_iterations_merge_into_what_is_known() {
        let mut model = Model::default();
        model.apply(&run_event(1..=20));
        model.apply(&run_event(20..=21));
        let numbers: Vec<u64> = model.runs["writer"]
            .iterations
            .iter()
            .map(|i| i.number)
            .collect();
        assert_eq!(numbers, (2..=21).collect::<Vec<_>>());
    }
}
