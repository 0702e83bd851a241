//! Access tokens: who may call the public API, and as what. The state machine keeps only the
//! SHA-256 hash of each token's secret (the API edge makes the secret, hashes it and shows it to
//! the creator once), so neither the log nor a snapshot holds a usable credential.

use serde::{Deserialize, Serialize};

/// Identifies a token (stable, never reused; assigned in creation order from 1).
pub type TokenId = u64;

/// What a token may do (the access model is in ARCHITECTURE.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Everything: membership, tokens, config, definitions, cancel/requeue, and acting for any
    /// agent.
    Admin,
    /// Submit tasks and plans, send messages, read everything.
    Operator,
    /// Bound to one agent name: register as it, heartbeat, claim and drive its own tasks, its
    /// own locks, its inbox, read state.
    Agent,
    /// Read only.
    Reader,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Agent => "agent",
            Role::Reader => "reader",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Role::Admin),
            "operator" => Ok(Role::Operator),
            "agent" => Ok(Role::Agent),
            "reader" => Ok(Role::Reader),
            other => Err(format!(
                "unknown role {other:?} (admin, operator, agent or reader)"
            )),
        }
    }
}

/// What a `CreateToken` command asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenSpec {
    pub role: Role,
    /// The agent name an `Agent` token acts as; `None` for every other role.
    pub agent: Option<String>,
    /// A label for listings; empty = the agent name, or `<role>-<id>`.
    pub name: String,
    /// SHA-256 of the secret.
    pub secret_sha256: [u8; 32],
}

/// A token as the state keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    pub id: TokenId,
    pub role: Role,
    pub agent: Option<String>,
    pub name: String,
    pub secret_sha256: [u8; 32],
    pub created_revision: u64,
    pub created_ms: u64,
}
