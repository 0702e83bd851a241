//! What the cockpit knows about the cluster: the entities of the watch (its initial state,
//! then every change), plus the Raft status of the node it talks to. Pure data; the terminal
//! loop feeds it.

use std::collections::BTreeMap;

use percy_client::proto::{
    event, Agent, ClusterStatusResponse, Definition, DefinitionRun, Event, Lock, Task,
};

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
            Some(event::Value::DefinitionRun(r)) => {
                self.runs.insert(key, r.clone());
            }
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

    /// The run of a definition, if it ever ran or was steered.
    pub fn run(&self, name: &str) -> Option<&DefinitionRun> {
        self.runs.get(name)
    }
}
