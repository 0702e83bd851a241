//! The agents, by id and by name.

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::agent::{Agent, AgentId, AgentStatus};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AgentRegistry {
    /// Every incarnation ever registered (ids are never reused).
    by_id: BTreeMap<AgentId, Agent>,
    /// Name → newest incarnation of that name.
    newest_by_name: BTreeMap<String, AgentId>,
}

impl AgentRegistry {
    pub fn get(&self, id: AgentId) -> Option<&Agent> {
        self.by_id.get(&id)
    }

    pub fn get_mut(&mut self, id: AgentId) -> Option<&mut Agent> {
        self.by_id.get_mut(&id)
    }

    pub fn by_name(&self, name: &str) -> Option<&Agent> {
        self.newest_by_name
            .get(name)
            .and_then(|id| self.by_id.get(id))
    }

    /// The agent with that id if it is active.
    pub fn active(&self, id: AgentId) -> Option<&Agent> {
        self.get(id)
            .filter(|agent| agent.status == AgentStatus::Active)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Agent> {
        self.by_id.values()
    }

    /// In id order, from the first id above `after` (from the start when `None`).
    pub fn after(&self, after: Option<AgentId>) -> impl Iterator<Item = &Agent> {
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.by_id
            .range((from, Bound::Unbounded))
            .map(|(_, agent)| agent)
    }

    /// Every incarnation, expired and deregistered ones included.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Adds a new incarnation; it becomes the newest one of its name. Incarnations are added
    /// in id order (ids are revisions), so a restore that inserts in id order rebuilds the same
    /// name index.
    pub fn insert(&mut self, agent: Agent) {
        self.newest_by_name.insert(agent.name.clone(), agent.id);
        self.by_id.insert(agent.id, agent);
    }

    pub fn newest_by_name(&self) -> &BTreeMap<String, AgentId> {
        &self.newest_by_name
    }
}
