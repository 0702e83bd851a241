//! Events: what an apply changed, at which revision. The server fans them out to watchers.

use serde::{Deserialize, Serialize};

use crate::agent::Agent;
use crate::config::ConfigEntry;
use crate::definition::Definition;
use crate::definition_run::DefinitionRun;
use crate::lock::Lock;
use crate::message::Message;
use crate::task::Task;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EntityKind {
    Agent,
    Task,
    Lock,
    Config,
    Definition,
    Message,
    /// A definition's run: runner, iterations, waiting steering messages.
    DefinitionRun,
}

/// The entity as it is after the change (a definition run with only its newest iterations:
/// [`crate::DefinitionRun::for_event`]).
// Boxing the large variants would change the public shape other crates match on; an event is
// short-lived, so the size difference does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntityValue {
    Agent(Agent),
    Task(Task),
    Lock(Lock),
    Config(ConfigEntry),
    Definition(Definition),
    Message(Message),
    DefinitionRun(DefinitionRun),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Revision of the command that made the change (several events may share one).
    pub revision: u64,
    pub kind: EntityKind,
    /// Agent id (decimal), task id, lock path, config key, definition name (also of a definition run), or
    /// `<recipient>/<message id>` for messages.
    pub key: String,
    /// `None` when the entity was removed (a released lock, a deleted config key).
    pub value: Option<EntityValue>,
}
