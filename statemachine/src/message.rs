//! Messages between agents and operators (node chat, steering), in bounded mailboxes.

use serde::{Deserialize, Serialize};

use crate::agent::AgentId;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Recipient {
    Agent(AgentId),
    /// Every agent; kept in the broadcast mailbox.
    Broadcast,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The revision that sent it; increasing, so a reader can ask for "after id N".
    pub id: u64,
    /// Free-form sender name (an agent name or an operator).
    pub from: String,
    pub to: Recipient,
    pub body: String,
    pub sent_at_ms: u64,
}
