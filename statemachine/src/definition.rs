//! Declarative agent definitions (`percyctl apply -f`): content-addressed specs with history.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DesiredState {
    Running,
    Stopped,
}

/// What `apply` receives for one definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefinitionSpec {
    pub name: String,
    /// A JSON document; stored in canonical form (sorted keys, no insignificant whitespace).
    pub spec_json: String,
    /// `None` keeps the current desired state (`Running` for a new definition).
    pub desired: Option<DesiredState>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefinitionRevision {
    /// Hex SHA-256 of the canonical spec.
    pub id: String,
    pub spec_json: String,
    pub revision: u64,
    pub applied_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Definition {
    pub name: String,
    /// Newest last; at most [`crate::limits::MAX_DEFINITION_REVISIONS`].
    pub history: Vec<DefinitionRevision>,
    pub desired: DesiredState,
    pub create_revision: u64,
    pub revision: u64,
}

/// The answer to an `apply`: which names were created, updated (new revision) or unchanged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplySummary {
    pub created: Vec<String>,
    pub updated: Vec<String>,
    pub unchanged: Vec<String>,
}
