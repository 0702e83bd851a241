//! The snapshot image: the entities only. Indexes are rebuilt on restore, the same way every
//! time, so a restored machine equals the one that was snapshotted.

use serde::{Deserialize, Serialize};

use crate::agent::{Agent, AgentId, CheckpointedLoad};
use crate::codec::CodecError;
use crate::config::ConfigEntry;
use crate::definition::Definition;
use crate::definition_run::DefinitionRun;
use crate::lock::{Lock, LockWaiter};
use crate::message::Recipient;
use crate::task::Task;
use crate::token::Token;

use super::messages::Mailbox;
use super::sessions::{Session, SessionTable};
use super::task_store::TaskStore;
use super::tokens::TokenTable;
use super::StateMachine;

#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(Serialize))]
pub(crate) struct StateImage {
    revision: u64,
    clock_ms: u64,
    last_fencing_token: u64,
    /// In id order.
    agents: Vec<Agent>,
    /// In creation order.
    #[serde(deserialize_with = "tasks_at_full_capacity")]
    tasks: Vec<Task>,
    locks: Vec<Lock>,
    /// In FIFO order.
    waiters: Vec<LockWaiter>,
    config: Vec<ConfigEntry>,
    definitions: Vec<Definition>,
    mailboxes: Vec<(Recipient, Mailbox)>,
    sessions: Vec<Session>,
}

/// Tasks reserved at once when decoding, at most: enough for a million without growing.
/// serde's own `Vec` decoding reserves at most a megabyte and doubles from there, which at a
/// million tasks copied the vector eight times and faulted in every copy's fresh pages (most
/// of a restart's samples in a profile, and memory the allocator kept afterwards). Bounded,
/// because the length comes from the input: a corrupt one must not reserve gigabytes.
const PREALLOCATED_TASKS_AT_MOST: usize = 2 << 20;

/// Decodes the task list into a vector of its announced length (up to the bound above).
fn tasks_at_full_capacity<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<Task>, D::Error> {
    struct Tasks;
    impl<'de> serde::de::Visitor<'de> for Tasks {
        type Value = Vec<Task>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a sequence of tasks")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Vec<Task>, A::Error> {
            let announced = seq.size_hint().unwrap_or(0);
            let mut tasks = Vec::with_capacity(announced.min(PREALLOCATED_TASKS_AT_MOST));
            while let Some(task) = seq.next_element()? {
                tasks.push(task);
            }
            Ok(tasks)
        }
    }
    deserializer.deserialize_seq(Tasks)
}

/// The access tokens, encoded after the [`StateImage`]: snapshots written before tokens existed
/// end where the image ends, and still restore (with no tokens).
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct TokenImage {
    last_token_id: u64,
    /// In id order.
    tokens: Vec<Token>,
}

impl TokenImage {
    pub fn of(machine: &StateMachine) -> Self {
        Self {
            last_token_id: machine.tokens.last_id(),
            tokens: machine.tokens.iter().cloned().collect(),
        }
    }
}

/// Definition runs, encoded after the [`TokenImage`]: older snapshots end before it and
/// restore with no runs.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct RunImage {
    /// [`RUN_SECTION_TAG`] when written. An empty list alone would be one byte, and a snapshot
    /// that lost exactly its last byte would then read as an older one without the section;
    /// with the tag, a cut section is a decode error.
    tag: [u8; 4],
    /// In name order.
    runs: Vec<DefinitionRun>,
}

const RUN_SECTION_TAG: [u8; 4] = *b"RUNS";

impl RunImage {
    pub fn of(machine: &StateMachine) -> Self {
        Self {
            tag: RUN_SECTION_TAG,
            runs: machine.runs.values().cloned().collect(),
        }
    }

    /// Absent (an older snapshot) or tagged.
    fn check(&self) -> Result<(), String> {
        if self.tag == RUN_SECTION_TAG || (self.tag == [0; 4] && self.runs.is_empty()) {
            Ok(())
        } else {
            Err("the definition runs section has a bad tag".to_string())
        }
    }
}

/// The agents' checkpointed loads, encoded after the [`RunImage`]: older snapshots end
/// before it and restore with no loads (the next checkpoint fills them in).
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct LoadImage {
    /// [`LOAD_SECTION_TAG`] when written (a cut section is then a decode error, as for runs).
    tag: [u8; 4],
    /// In agent id order.
    loads: Vec<(AgentId, CheckpointedLoad)>,
}

const LOAD_SECTION_TAG: [u8; 4] = *b"LOAD";

impl LoadImage {
    pub fn of(machine: &StateMachine) -> Self {
        Self {
            tag: LOAD_SECTION_TAG,
            loads: machine
                .agent_loads
                .iter()
                .map(|(id, load)| (*id, *load))
                .collect(),
        }
    }

    /// Absent (an older snapshot) or tagged.
    fn check(&self) -> Result<(), String> {
        if self.tag == LOAD_SECTION_TAG || (self.tag == [0; 4] && self.loads.is_empty()) {
            Ok(())
        } else {
            Err("the agent loads section has a bad tag".to_string())
        }
    }
}

/// The [`StateImage`] of a machine, encoded from the machine itself: field for field the same
/// serde shape, so the bytes decode as a `StateImage` (a sequence encodes the same from an
/// iterator as from a `Vec`). Encoding a snapshot through an owned image first copied every
/// entity — a second whole state in memory while the snapshot is built, in a million small
/// allocations freed afterwards, which the allocator largely kept.
pub(crate) struct StateImageOf<'a>(pub &'a StateMachine);

impl Serialize for StateImageOf<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let machine = self.0;
        let mut image = serializer.serialize_struct("StateImage", 11)?;
        image.serialize_field("revision", &machine.revision)?;
        image.serialize_field("clock_ms", &machine.clock_ms)?;
        image.serialize_field("last_fencing_token", &machine.locks.last_fencing_token())?;
        image.serialize_field("agents", &Each(|| machine.agents.iter()))?;
        image.serialize_field("tasks", &Each(|| machine.tasks.iter()))?;
        image.serialize_field("locks", &Each(|| machine.locks.locks()))?;
        image.serialize_field("waiters", &Each(|| machine.locks.waiters()))?;
        image.serialize_field("config", &Each(|| machine.config.values()))?;
        image.serialize_field("definitions", &Each(|| machine.definitions.values()))?;
        image.serialize_field("mailboxes", &Each(|| machine.mailboxes.iter()))?;
        image.serialize_field("sessions", &Each(|| machine.sessions.iter()))?;
        image.end()
    }
}

/// A sequence encoded from the items a closure iterates over. The length is counted first (a
/// second pass over references): postcard writes it ahead of the items, and not every
/// collection's iterator knows its length exactly.
struct Each<F>(F);

impl<F, I> Serialize for Each<F>
where
    F: Fn() -> I,
    I: Iterator,
    I::Item: Serialize,
{
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = serializer.serialize_seq(Some((self.0)().count()))?;
        for item in (self.0)() {
            seq.serialize_element(&item)?;
        }
        seq.end()
    }
}

impl StateImage {
    /// An owned copy of the image: what older builds encoded, for the tests that write their
    /// snapshots (and the check that [`StateImageOf`] encodes the same bytes).
    #[cfg(test)]
    pub fn of(machine: &StateMachine) -> Self {
        Self {
            revision: machine.revision,
            clock_ms: machine.clock_ms,
            last_fencing_token: machine.locks.last_fencing_token(),
            agents: machine.agents.iter().cloned().collect(),
            tasks: machine.tasks.iter().cloned().collect(),
            locks: machine.locks.locks().cloned().collect(),
            waiters: machine.locks.waiters().cloned().collect(),
            config: machine.config.values().cloned().collect(),
            definitions: machine.definitions.values().cloned().collect(),
            mailboxes: machine
                .mailboxes
                .iter()
                .map(|(recipient, mailbox)| (recipient.clone(), mailbox.clone()))
                .collect(),
            sessions: machine.sessions.iter().cloned().collect(),
        }
    }

    /// Rebuilds the machine and its indexes. Duplicate keys, or a state that fails the
    /// invariants, mean the image is corrupt.
    pub fn into_machine(
        self,
        tokens: TokenImage,
        runs: RunImage,
        loads: LoadImage,
    ) -> Result<StateMachine, CodecError> {
        let corrupt = |what: String| CodecError::Corrupt(format!("snapshot: {what}"));
        let mut machine = StateMachine {
            revision: self.revision,
            clock_ms: self.clock_ms,
            ..StateMachine::default()
        };
        for agent in self.agents {
            if machine.agents.get(agent.id).is_some() {
                return Err(corrupt(format!("agent {} appears twice", agent.id)));
            }
            machine.agents.insert(agent);
        }
        machine.tasks = TaskStore::from_tasks(self.tasks).map_err(corrupt)?;
        for lock in self.locks {
            if machine.locks.get(&lock.path).is_some() {
                return Err(corrupt(format!("lock {} appears twice", lock.path)));
            }
            for holder in lock.holders {
                machine
                    .locks
                    .insert_holder(&lock.path, lock.mode, holder, lock.revision);
            }
        }
        machine
            .locks
            .set_last_fencing_token(self.last_fencing_token);
        for waiter in self.waiters {
            if machine.locks.waiter(waiter.queued_revision).is_some() {
                return Err(corrupt(format!(
                    "lock request {} appears twice",
                    waiter.queued_revision
                )));
            }
            machine.locks.add_waiter(waiter);
        }
        for entry in self.config {
            if machine.config.insert(entry.key.clone(), entry).is_some() {
                return Err(corrupt("a config key appears twice".to_string()));
            }
        }
        for definition in self.definitions {
            if machine
                .definitions
                .insert(definition.name.clone(), definition)
                .is_some()
            {
                return Err(corrupt("a definition appears twice".to_string()));
            }
        }
        for (recipient, mailbox) in self.mailboxes {
            if machine.mailboxes.insert(recipient, mailbox).is_some() {
                return Err(corrupt("a mailbox appears twice".to_string()));
            }
        }
        let session_count = self.sessions.len();
        machine.sessions = SessionTable::from_sessions(self.sessions);
        if machine.sessions.len() != session_count {
            return Err(corrupt("a session appears twice".to_string()));
        }
        machine.tokens =
            TokenTable::from_parts(tokens.tokens, tokens.last_token_id).map_err(corrupt)?;
        runs.check().map_err(corrupt)?;
        for run in runs.runs {
            if machine.runs.insert(run.name.clone(), run).is_some() {
                return Err(corrupt("a definition run appears twice".to_string()));
            }
        }
        loads.check().map_err(corrupt)?;
        for (id, load) in loads.loads {
            if machine.agent_loads.insert(id, load).is_some() {
                return Err(corrupt(format!("agent {id}'s load appears twice")));
            }
        }
        machine.check_invariants().map_err(corrupt)?;
        Ok(machine)
    }
}

#[cfg(test)]
impl StateImage {
    /// Makes the first task "held" by nobody, which decodes fine but breaks the invariants.
    pub fn corrupt_first_task_for_tests(&mut self) {
        if let Some(task) = self.tasks.first_mut() {
            task.status = crate::task::TaskStatus::Claimed;
            task.assignee = None;
        }
    }
}
